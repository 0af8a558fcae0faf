import json

from finetune.tasks.chat import TASK, ChatData, conversations, translation


def test_sentences_are_distinct_long_enough_and_kept_under_their_first_topic(tmp_path):
    (tmp_path / "a.yml").write_text("conversations:\n- - Hello\n  - Hello there, how are you?\n- - What is a  computer?\n  - A machine.\n")
    (tmp_path / "b.yml").write_text("conversations:\n- - hello there, how are you?\n  - I am fine, thank you.\n")
    assert translation.english_sentences([tmp_path / "a.yml", tmp_path / "b.yml"]) == {
        "a": ["Hello there, how are you?", "What is a computer?"], "b": ["I am fine, thank you."]}


def test_the_engine_translates_offline_without_the_post_edit_that_mangles_no_into_nao():
    to_portuguese = translation.english_to_portuguese()
    assert to_portuguese("The children were playing happily in the garden.") == "As crianças estavam brincando alegremente no jardim."


def test_the_builtin_asks_for_english_from_the_translated_side_in_held_out_topics(monkeypatch):
    monkeypatch.setattr(translation, "english_to_portuguese", lambda: str.upper)  # the engine is tested above; 30 s for all
    frame = TASK.read(ChatData(source=translation.SOURCE)).frame
    pairs = [json.loads(text) for text in frame["input"]]
    assert all(conversations.problem(turns) is None and len(turns) == 2 for turns in pairs)
    english = [turns[1]["content"] for turns in pairs]
    assert [turns[0]["content"] for turns in pairs] == [f"Translate this Portuguese text into English:\n\n{e.upper()}" for e in english]
    assert len(english) == len(set(english)) > 1000  # the clean side is each distinct English sentence, the model's target
    assert frame.groupby("origin")["split"].nunique().max() == 1 and set(frame["split"]) == {"train", "val", "test"}

"""Speech recognition (finetune/tasks/speech-recognition/): error rates against known values, a tiny Whisper taught to
transcribe tones through the real stages (before/after on the same clips and on "real" recordings, int8, the report,
predict and serve), preprocess's drops, and the builtin cards phrases."""
import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from finetune import inference, paths, search
from finetune.data import speech
from finetune.data.tables import ROW
from finetune.errors import UserError
from finetune.tasks import get_task
from stages import compress, ensemble, evaluate, explain, ingest, preprocess, report, train
from tests.support.data import TONES, tone
from tests.support.params import load, tiny_speech_params
from tests.support.predicting import b64, served

TASK = get_task("speech-recognition")
TRANSCRIBE = importlib.import_module("finetune.tasks.speech-recognition.transcribe")
SOURCES = importlib.import_module("finetune.tasks.speech-recognition.sources")


def test_word_and_character_error_rates_match_known_values_after_whispers_normaliser():
    table = TRANSCRIBE.counts(["the cat sat on the mat", "Ten of clubs."], ["the cat sit on mat", "10 of clubs"])
    assert table[:, :2].tolist() == [[2, 6], [0, 3]]  # sat -> sit, one "the" deleted; "Ten of clubs." is "10 of clubs"
    assert table[0, 2:].tolist() == [5, 22]  # characters: "a" -> "i", "the " deleted
    assert TRANSCRIBE.rates(table) == {"wer": round(2 / 9, 4), "cer": round(5 / 33, 4)}  # errors over ALL words, not a mean of clips
    many = TRANSCRIBE.counts(["the red fox runs"] * 40, ["the red fox runs"] * 30 + ["the bed fox"] * 10)
    assert many[:, 0].sum() == 20 and TRANSCRIBE.rates(many)["wer"] == 0.125
    scored = TRANSCRIBE.scored(many)
    assert scored["ci95"]["wer"]["low"] < 0.125 < scored["ci95"]["wer"]["high"]
    worse = TRANSCRIBE.counts(["the red fox runs"] * 40, ["the"] * 40)
    comparison = TRANSCRIBE.compare(many, worse)
    assert comparison["wer"]["difference"] == round(0.125 - 0.75, 4) and comparison["wer"]["verdict"] == "better"


def _write_tones(root: Path, name: str, count: int, seed: int) -> Path:
    """A table of tone clips (root/<name>/*.wav) whose transcript names the pitch: "low tone", "mid tone", "high tone"."""
    folder = root / name
    folder.mkdir(parents=True)
    rows = []
    for i in range(count):
        label = list(TONES)[i % 3]
        soundfile.write(folder / f"{i:03d}.wav", tone(label, 0.3 + 0.05 * (i % 7), 16_000, seed * 1000 + i), 16_000)
        rows.append({"audio": f"{name}/{i:03d}.wav", "transcript": f"{label} tone"})
    pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)
    return root / f"{name}.csv"


@pytest.mark.xdist_group("speech")
def test_a_tiny_whisper_learns_to_transcribe_tones_through_the_stages(workdir, tiny_speech_whisper):
    _write_tones(Path("data/raw"), "tones", 60, seed=0)
    _write_tones(Path("data/raw"), "real", 9, seed=7)
    params = load(tiny_speech_params(tiny_speech_whisper))
    for stage in (ingest, preprocess, train, evaluate):
        stage.run(params)
    metrics = json.loads(paths.METRICS.read_text())
    transcripts = pd.read_csv(paths.EVALUATION / "transcripts.csv")
    recount = TRANSCRIBE.counts(transcripts["reference"].tolist(), transcripts["fine_tuned"].fillna("").tolist())
    assert metrics["wer"] == TRANSCRIBE.rates(recount)["wer"]  # the metric is the transcripts' own
    assert metrics["wer"] <= 0.25 < metrics["baseline"]["wer"]  # random weights write nothing right; trained, the pitch is heard
    assert metrics["vs_pretrained"]["wer"]["verdict"] == "better" and metrics["clips"] == len(transcripts) == 12
    assert set(metrics["clips_per_second"]) == {"fine_tuned", "fine_tuned_beam", "pretrained"} and metrics["beam"]["beams"] == 2
    real = metrics["real_speech"]
    assert real["fine_tuned"]["clips"] == 9 and real["fine_tuned"]["wer"] < real["pretrained"]["wer"]
    assert len(pd.read_csv(paths.EVALUATION / "real_speech.csv")) == 9

    compress.run(params)
    compressed = json.loads(paths.COMPRESS_METRICS.read_text())
    assert "pruning is not built" in compressed["skipped"]["prune"]
    int8 = compressed["models"]["int8"]
    assert int8["size_mb"] < compressed["models"]["fp32"]["size_mb"] and int8["wer"] <= metrics["wer"] + 0.25
    for stage, metrics_file in ((ensemble, paths.ENSEMBLE_METRICS), (explain, paths.EXPLAIN_METRICS)):
        stage.run(params)
        assert "speech recogni" in json.loads(metrics_file.read_text())["skipped"]  # the stage says why it does not apply
    report.run(params)
    page = paths.REPORT_HTML.read_text()
    assert "Real speech" in page and "Test clips, most word errors first" in page and "data:audio/wav;base64," in page

    new = Path("new")
    new.mkdir()
    soundfile.write(new / "high.wav", tone("high", 0.5, 16_000, seed=99), 16_000)
    soundfile.write(new / "long.wav", tone("low", 1.5, 16_000, seed=98), 16_000)
    (new / "notes.txt").write_text("not audio")
    for folder in (paths.MODEL, paths.COMPRESSED / "int8"):
        predicted = inference.load(folder).predict(new, batch_size=4)
        assert predicted.table["input"].map(lambda p: Path(p).name).tolist() == ["high.wav"]
        assert {(Path(b.content).name, b.problem.split(";")[0]) for b in predicted.bad} == {
            ("long.wav", "clip is 1.50 s long"), ("notes.txt", "not an audio file (.txt)")}
    assert inference.load(paths.MODEL).predict(new).table["transcript"].tolist() == ["high tone"]
    answer = served(inference.load(paths.MODEL), [{"audio": b64(new / "high.wav")}])
    assert [row["transcript"] for row in answer["predictions"]] == ["high tone"]  # `finetune serve`: the clip's bytes in the request

    # search: trials train on the prepared clips and are ranked by val loss (lower is better)
    searching = tiny_speech_params(tiny_speech_whisper, train={"epochs": 4})
    searching["search"] = {"method": "grid", "trials": 2, "study": "speech", "metric": "loss", "pruner": {"enabled": False},
                           "space": {"train.learning_rate": {"choice": [1e-2, 1e-7]}}}
    searched = load(searching)
    study = search.run_search(searched, lambda number: search.run_trial(searched, number), log=lambda _: None)
    assert study.best_params == {"train.learning_rate": 1e-2} and study.best_value < min(t.value for t in study.trials if t.number != study.best_trial.number)


def test_preprocess_drops_clips_longer_than_the_window_wordless_transcripts_and_repeats(workdir, tiny_speech_whisper):
    csv = _write_tones(Path("data/raw"), "tones", 12, seed=0)
    soundfile.write("data/raw/tones/long.wav", tone("low", 1.4, 16_000, seed=5), 16_000)
    soundfile.write("data/raw/tones/hum.wav", tone("mid", 0.5, 16_000, seed=6), 16_000)
    shutil.copy("data/raw/tones/000.wav", "data/raw/tones/again.wav")
    extra = pd.DataFrame([{"audio": "tones/long.wav", "transcript": "low tone"}, {"audio": "tones/hum.wav", "transcript": "..."},
                          {"audio": "tones/again.wav", "transcript": "low tone"}])
    pd.concat([pd.read_csv(csv), extra]).to_csv(csv, index=False)
    params = load(tiny_speech_params(tiny_speech_whisper))
    ingest.run(params)
    summary = preprocess.run(params)
    assert summary["dropped"] == {"clip is 1.40 s long, longer than preprocess.window_seconds 1": 1,
                                  "the transcript has no words (after Whisper's normaliser)": 1, "the same clip as an earlier row": 1}
    assert pd.read_csv("data/quarantine/preprocess.csv")["clip"].map(lambda p: Path(p).name).tolist() == ["long.wav", "hum.wav", "again.wav"]
    assert sum(split["clips"] for split in summary["splits"].values()) == 12
    prepared = pd.concat(pd.read_parquet(f"data/prepared/{name}.parquet") for name in ("train", "val", "test"))
    assert sorted(prepared["transcript"].unique()) == ["high tone", "low tone", "mid tone"]
    notimestamps, eos = 29, 27  # the tiny tokenizer's ids: <|notimestamps|>, a token per character (" " as "\u0120"), <|endoftext|>
    assert all(labels[0] == notimestamps and labels[-1] == eos and len(labels) == len(text) + 3
               for labels, text in zip(prepared["labels"], prepared["transcript"]))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng (make setup installs it where apt can)")
def test_the_builtin_cards_are_phrases_of_the_grammar_said_by_speakers_held_out_whole(monkeypatch, workdir):
    monkeypatch.setattr(SOURCES, "SPEAKERS", ("m1", "f2", "klatt"))
    monkeypatch.setattr(SOURCES, "PHRASES", 3)
    monkeypatch.setattr(SOURCES, "PIPER_PHRASES", 2)
    frame = SOURCES.read(TASK.sections["data"]()).frame
    neural = frame["origin"].str.startswith("cards: piper joe")
    assert len(frame) == 11 and neural.sum() == 2 and (frame.loc[neural, "split"] == "test").all()  # piper's voice: test only
    words = {w for text in frame["label"] for w in text.split()}
    assert words <= set(SOURCES.RANKS) | set(SOURCES.SUITS) | {"of"}
    speakers = frame["origin"].str.split(" ").str[1]
    assert (frame.groupby(speakers)["split"].nunique() == 1).all() and frame[ROW].tolist() == list(range(1, 12))  # a speaker's every clip in one split
    assert SOURCES.read(TASK.sections["data"]()).frame["input"].tolist() == frame["input"].tolist()  # deterministic: DVC's cache stays valid
    lengths = [soundfile.info(io.BytesIO(c)).duration for c in frame["input"]]
    assert max(lengths) < TASK.sections["preprocess"]().window_seconds


def test_a_card_phrase_is_a_sentence_of_the_cards_grammar():
    rng = np.random.default_rng(0)
    for _ in range(200):
        words = SOURCES.card_phrase(rng).split()
        cards = " ".join(words).split(" of ")
        assert 2 <= len(words) <= 9 and all(w in SOURCES.RANKS or w in SOURCES.SUITS or w == "of" for w in words)
        assert len(cards) <= 4


def test_rehearsal_adds_general_english_to_train_alone_leaving_out_clips_longer_than_the_window(monkeypatch, workdir, tiny_speech_whisper):
    _write_tones(Path("data/raw"), "tones", 12, seed=0)
    wav = io.BytesIO()
    soundfile.write(wav, tone("low", 0.5, 16_000, seed=3), 16_000, format="WAV")
    long = io.BytesIO()
    soundfile.write(long, tone("low", 1.5, 16_000, seed=4), 16_000, format="WAV")
    asked = []

    def general_english(count, data):
        asked.append(count)
        return pd.DataFrame({"input": [wav.getvalue(), long.getvalue()], "label": ["a cat sat", "on a mat"], "origin": ["rehearsal: a", "rehearsal: b"]})
    monkeypatch.setattr(SOURCES, "general_english", general_english)
    plain = load(tiny_speech_params(tiny_speech_whisper))
    ingest.run(plain)
    before = preprocess.run(plain)["splits"]
    after = preprocess.run(load(tiny_speech_params(tiny_speech_whisper, preprocess={"rehearsal": 2})))["splits"]
    assert asked == [2] and after["train"]["clips"] == before["train"]["clips"] + 1  # the 1.5 s clip does not fit the 1 s window
    assert after["val"] == before["val"] and after["test"] == before["test"]
    assert "a cat sat" in pd.read_parquet("data/prepared/train.parquet")["transcript"].tolist()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng (make setup installs it where apt can)")
def test_rehearsal_sentences_are_plain_english_said_by_train_speakers_only():
    data = TASK.sections["data"]()
    frame = SOURCES.general_english(6, data)
    assert len(frame) == 6 and all(SOURCES._PLAIN.fullmatch(text) and 4 <= len(text.split()) <= 16 for text in frame["label"])
    train_speakers = {speaker for speaker, split in speech.speaker_splits(data).items() if split == "train"}
    assert set(frame["origin"].str.split(" ").str[1]) <= train_speakers  # no test voice is heard in training
    assert SOURCES.general_english(6, data)["input"].tolist() == frame["input"].tolist()  # deterministic
    with pytest.raises(UserError, match="chatterbot-corpus holds"):
        SOURCES.general_english(100_000, data)

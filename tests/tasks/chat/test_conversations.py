"""Conversations in the formats users bring, and the rules a trainable one follows (each broken rule named)."""
import importlib

import pytest

conversations = importlib.import_module("finetune.tasks.chat.conversations")

U, A, S = ({"role": role, "content": f"a {role} turn"} for role in ("user", "assistant", "system"))


@pytest.mark.parametrize("messages, reason", [
    ([U, A], None), ([S, U, A, U, A], None),
    ([], "no turns"), ("hello", "no turns"),
    ([U, {"role": "bot", "content": "hi"}], "turn 2: role 'bot' is not one of system, user, assistant"),
    ([U, {"role": "assistant", "content": "  "}], "turn 2 (assistant) is empty"),
    ([U, {"role": "assistant"}], "turn 2 is not a {role, content} object"),
    ([A, U], "turn 1 is assistant: expected user (turns alternate, user first)"),
    ([U, U, A], "turn 2 is user: expected assistant"),
    ([U, S, A], "turn 2 is system: only the first turn may be a system turn"),
    ([S, U], "the last turn is not the assistant's"),
])
def test_what_makes_a_conversation_trainable(messages, reason):
    found = conversations.problem(messages)
    assert (found is None) if reason is None else found.startswith(reason), found


def test_the_three_formats_become_turns():
    assert conversations.from_record({"messages": [U, A]}, "prompt", "response") == [U, A]
    alpaca = conversations.from_record({"instruction": "Translate", "input": "Olá", "output": "Hello"}, "prompt", "response")
    assert alpaca == [{"role": "user", "content": "Translate\n\nOlá"}, {"role": "assistant", "content": "Hello"}]
    assert conversations.from_record({"instruction": "Say hi", "input": "", "output": "Hi"}, "p", "r")[0]["content"] == "Say hi"
    assert conversations.from_record({"q": "2+2?", "a": "4"}, "q", "a") == [{"role": "user", "content": "2+2?"},
                                                                         {"role": "assistant", "content": "4"}]
    with pytest.raises(KeyError, match="keys found: text"):
        conversations.from_record({"text": "no format"}, "prompt", "response")


def test_chatterbot_dialogues_alternate_and_end_with_a_reply(tmp_path):
    topic = tmp_path / "greetings.yml"
    topic.write_text("categories:\n- greetings\nconversations:\n- - Hello\n  - Hi\n  - How are you?\n- - Good night\n- - Bye\n  - See you\n")
    dialogues = conversations.chatterbot_dialogues(topic)
    assert [[turn["content"] for turn in d] for d in dialogues] == [["Hello", "Hi"], ["Bye", "See you"]]
    assert all(conversations.problem(d) is None for d in dialogues)

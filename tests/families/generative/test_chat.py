"""`finetune chat`: the history goes back to the model through its template each turn, /reset and /system start over,
a history longer than the context loses its oldest exchange, and a scripted session prints each turn and reply."""
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.errors import UserError
from finetune.families.generative import chat
from tests.support.repos import PROJECT


@pytest.fixture
def session(tiny_chat_lm):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_chat_lm), AutoTokenizer.from_pretrained(tiny_chat_lm)
    return chat.Session(model, tokenizer, "be brief", max_new_tokens=4, temperature=0.0)


def test_the_history_is_sent_with_every_turn_and_reset_keeps_the_system_prompt(session):
    first = session.ask("to be or not")
    session.ask("the slings and")
    assert [turn["role"] for turn in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[1]["content"] == first
    session.history.append({"role": "user", "content": "third"})
    prompt = session.prompt()
    assert prompt.startswith("<|im_start|>system\nbe brief<|im_end|>") and prompt.endswith("<|im_start|>assistant\n")
    assert "to be or not" in prompt and "the slings and" in prompt and "third" in prompt
    session.reset()
    assert session.history == [] and session.system == "be brief"
    session.reset("be kind")
    assert session.prompt() == "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>assistant\n"


def test_a_history_longer_than_the_context_loses_its_oldest_exchange(session):
    long = "to be or not to be " * 10
    session.history = [{"role": "user", "content": long}, {"role": "assistant", "content": long},
                       {"role": "user", "content": long}, {"role": "assistant", "content": long}, {"role": "user", "content": "last"}]
    session.settings["max_new_tokens"] = session.model.config.max_position_embeddings - 60
    session.prompt()
    assert [turn["content"] for turn in session.history] == ["last"]  # both older exchanges dropped, the new turn kept


def test_a_model_without_a_chat_template_is_refused(tiny_causal_lm):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_causal_lm), AutoTokenizer.from_pretrained(tiny_causal_lm)
    with pytest.raises(UserError, match="no chat template"):
        chat.Session(model, tokenizer)


def test_a_scripted_session_prints_every_turn_with_its_reply(tiny_chat_lm, tmp_path):
    script = tmp_path / "turns.txt"
    script.write_text("to be or not\n/reset\n\nthe slings and\n/system be kind\n")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "chat", "--model", str(tiny_chat_lm), "--prompts", str(script),
                           "--max-new-tokens", "3", "--temperature", "0"], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "user: to be or not" and lines[1].startswith("assistant: ")
    assert "(history cleared)" in lines and "user: the slings and" in lines and lines[-1].startswith("(system prompt: be kind")
    missing = subprocess.run([sys.executable, "-m", "flows.cli", "chat", "--model", str(tiny_chat_lm), "--prompts", "nope.txt"],
                             cwd=PROJECT, capture_output=True, text=True)
    assert missing.returncode == 2 and "--prompts nope.txt: no such file" in missing.stderr

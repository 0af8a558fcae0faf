"""finetune/families/generative/generation.py and the `python -m finetune.families.generative.generate` CLI on the tiny Llama (random weights, or a copy
that memorised LM_TEXT, so greedy decoding has a known right answer)."""
from __future__ import annotations

import argparse
import copy
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from finetune.errors import UserError
from finetune.families.generative.generate import load
from finetune.families.generative.generation import complete, distinct_n, forced_run, generate, repetition_rate, timed
from tests.support.data import LM_TEXT

PROMPT = "to be or not"
REPEATING = "the question whether tis nobler in the mind\nto be or not to be that is"  # the memorised model repeats bits of it


@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    return load(str(tiny_causal_lm), trust_remote_code=False)


@pytest.fixture(scope="module")
def memorised(lm):
    """The tiny Llama trained until it reproduces LM_TEXT (60 full-batch steps, < 1 s)."""
    model, tokenizer = copy.deepcopy(lm[0]).train(), lm[1]
    ids = tokenizer(LM_TEXT, return_tensors="pt").input_ids
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def sample(model, tokenizer, seed: int, prompt: str = PROMPT, **settings) -> str:
    settings = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 1.0} | settings
    return generate(model, tokenizer, prompt, seed=seed, **settings)


def test_sampling_is_reproducible_by_seed(lm):
    first = sample(*lm, seed=0)
    assert len(first) > 0 and sample(*lm, seed=0) == first
    assert sample(*lm, seed=1) != first  # temperature 1 over a random model's flat distribution: seeds diverge at once


def test_sampling_is_temperature_and_top_p_only(lm):
    """Equal to plain model.generate seeded alike with top-k off; the library's default top-k 50 would change it."""
    model, tokenizer = lm
    inputs = tokenizer(PROMPT, return_tensors="pt")

    def plain(**top_k) -> str:
        transformers.set_seed(5)
        output = model.generate(**inputs, max_new_tokens=16, do_sample=True, temperature=0.7, top_p=0.9, **top_k)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    ours = sample(model, tokenizer, seed=5, temperature=0.7, top_p=0.9)
    assert ours == plain(top_k=0) != plain()


def test_greedy_equals_plain_generate_and_ignores_the_seed(memorised):
    model, tokenizer = memorised
    text = sample(model, tokenizer, seed=0, temperature=0.0)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    plain = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert text == tokenizer.decode(plain[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.startswith(" to be that is the question")  # the memorised continuation: KV-cached decoding is right
    assert sample(model, tokenizer, seed=1, temperature=0.0) == text


def test_prompt_lookup_keeps_the_greedy_text_in_fewer_forwards_and_sampling_seeded(memorised):
    model, tokenizer = memorised
    forwards = []
    hook = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        texts = {}
        for lookup in (0, 10):
            forwards.clear()
            texts[lookup] = sample(model, tokenizer, seed=0, prompt=REPEATING, temperature=0.0, max_new_tokens=24, min_new_tokens=24,
                                   prompt_lookup=lookup)
            texts[f"{lookup} forwards"] = len(forwards)
    finally:
        hook.remove()
    assert texts[10] == texts[0]
    assert texts["0 forwards"] == 24 and texts["10 forwards"] < 24  # some drafts copied from the prompt were kept
    drawn = [sample(model, tokenizer, seed=4, temperature=1.0, max_new_tokens=24, prompt_lookup=10) for _ in range(2)]
    assert drawn[0] == drawn[1]


def test_prompt_longer_than_context_refused(lm):
    length = len(lm[1](LM_TEXT).input_ids)
    assert 64 < length < 128
    with pytest.raises(UserError, match=re.escape(f"prompt {LM_TEXT[:60]!r} is {length} tokens") + ".*context of 128 tokens"):
        sample(*lm, seed=0, prompt=LM_TEXT, max_new_tokens=64)
    assert sample(*lm, seed=0, prompt=LM_TEXT, max_new_tokens=128 - length)  # exactly the context fits


@pytest.mark.parametrize("settings, message", [({"max_new_tokens": 0}, "max_new_tokens is 0"),
                                               ({"temperature": -0.5}, "temperature is -0.5"),
                                               ({"temperature": float("nan")}, "temperature is nan"),
                                               ({"top_p": float("nan")}, "top_p is nan"),
                                               ({"top_p": 0.0}, "top_p is 0.0"), ({"top_p": 1.5}, "top_p is 1.5"),
                                               ({"prompt_lookup": -1}, "prompt_lookup is -1"), ({"prompt": ""}, "the prompt is empty")])
def test_bad_settings_and_empty_prompt_refused(lm, settings, message):
    with pytest.raises(UserError, match=re.escape(message)):
        sample(*lm, seed=0, **settings)


def test_tokenizer_without_eos_refused(lm, tiny_causal_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="no EOS token"):
        sample(lm[0], tokenizer, seed=0)


def test_tokenizer_eos_stops_a_model_without_one_and_pads_silently(lm, tiny_causal_lm, monkeypatch, caplog):
    """A model whose generation config names no EOS stops at the tokenizer's; a tokenizer without pad uses EOS, quietly."""
    model = lm[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    tokenizer.pad_token = None
    first = model.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=1, do_sample=False)[0, -1].item()
    assert sample(model, tokenizer, seed=0, temperature=0.0) == tokenizer.decode([first] * 16)  # greedy loops, no EOS
    monkeypatch.setattr(model.generation_config, "eos_token_id", None)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)  # now the first greedy token is the EOS: stop there
    with caplog.at_level(logging.WARNING, logger="transformers"):
        assert sample(model, tokenizer, seed=0, temperature=0.0) == tokenizer.decode([first])
    assert not caplog.records


def test_complete_says_whether_a_stop_token_ended_the_text_or_max_new_tokens_did(memorised, monkeypatch):
    """What evaluate counts as "ended_at_stop_token" (a chat model still closing its turn)."""
    model, tokenizer = memorised
    greedy = dict(max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0)
    text, stopped = complete(model, tokenizer, PROMPT, **greedy)
    assert not stopped and text == generate(model, tokenizer, PROMPT, **greedy)  # the memorised text runs on
    inputs = tokenizer(PROMPT, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    cut = next(i for i in range(2, 16) if ids[i] not in ids[:i])  # a token it first writes at position cut
    monkeypatch.setattr(model.generation_config, "eos_token_id", [ids[cut]])  # a list, as chat models give several stop ids
    assert complete(model, tokenizer, PROMPT, **greedy) == (tokenizer.decode(ids[:cut + 1], skip_special_tokens=True), True)


def test_a_forced_run_times_exactly_max_new_tokens(lm, monkeypatch):
    model, tokenizer = lm
    first = model.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=1, do_sample=False)[0, -1].item()
    monkeypatch.setattr(model.generation_config, "eos_token_id", first)  # greedy would stop after 1 token
    lengths, original = [], model.generate

    def spy(**kwargs):
        output = original(**kwargs)
        lengths.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output
    monkeypatch.setattr(model, "generate", spy)
    sample(model, tokenizer, seed=0, temperature=0.0, max_new_tokens=8)
    result = timed({"run": forced_run(model, tokenizer, PROMPT, max_new_tokens=8)}, 8, repeats=2)["run"]
    assert lengths == [1, 8, 8, 8]  # plain greedy stops at EOS; the warm-up and both timed runs make 8
    assert result["new_tokens"] == 8 and result["repeats"] == 2
    assert result["tokens_per_second"] == pytest.approx(8 / result["seconds"])


def test_distinct_n():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == 3 / 7  # a b c among 7 tokens
    assert distinct_n(texts, 2) == 3 / 5  # ab ba ab | ab bc: no "b a" across the two texts
    assert distinct_n(["x y z"], 3) == 1.0
    assert distinct_n(["a"], 2) == 0.0 and distinct_n([], 1) == 0.0


def test_repetition_rate():
    texts = ["the cat the cat the cat", "the cat sat"]
    assert repetition_rate(texts, n=2) == 3 / 7  # 3 of text 1's 5 bigrams repeat; text 2's "the cat" is not a repeat
    assert repetition_rate(texts) == 1 / 3  # 4-grams: text 1 has 3 (the third repeats the first), text 2 none
    assert repetition_rate(["a b c d e"], n=2) == 0.0 and repetition_rate([""]) == 0.0


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finetune.families.generative.generate", *args], check=False, capture_output=True, text=True, timeout=120)


def test_cli_streams_the_seeded_continuation(lm, tiny_causal_lm):
    done = cli("--model", str(tiny_causal_lm), PROMPT, "--max-new-tokens", "12", "--seed", "3")
    assert done.returncode == 0, done.stderr
    expected = sample(*lm, seed=3, max_new_tokens=12, temperature=0.8, top_p=0.95, prompt_lookup=10)  # the CLI's defaults
    assert done.stdout == expected + "\n" and expected.strip()
    count = int(re.search(r"(\d+) new tokens in [\d.]+ s: [\d.]+ tokens/s", done.stderr).group(1))
    assert 1 <= count <= 12


def pickled_weights(tmp_path, tiny_causal_lm) -> Path:
    """The tiny LM with its weights as pytorch_model.bin: a pickle that runs code when unpickled without weights_only."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_causal_lm, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"payload": argparse.Namespace(command="echo owned")}, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("which, message", [("missing", "does not exist"), ("bert", "holds no causal-LM head"),
                                            ("pickle", "model.safetensors")])
def test_cli_refuses_a_directory_without_a_causal_lm(tmp_path, tiny_model, tiny_causal_lm, which, message):
    """Each refusal is one line naming the folder; a pickle is never opened (it raised UnpicklingError's traceback)."""
    folder = {"missing": tmp_path / "nowhere", "bert": tiny_model}.get(which) or pickled_weights(tmp_path, tiny_causal_lm)
    done = cli("--model", str(folder), PROMPT)
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]  # torch may log import-time warnings (torchao's) before it
    assert last.startswith("error: ") and str(folder) in last and message in last
    assert "Traceback" not in done.stderr

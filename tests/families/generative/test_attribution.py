"""finetune/families/generative/attribution.py on the tiny Llama: one score per prompt token from both captum methods, feature ablation equal
to ablating by hand, IG complete, a leading BOS (any special token) never scored or deleted, and the deletion test finding the one prompt
token that a briefly trained copy of the model depends on."""
import html
import re

import numpy as np
import pytest
import torch
from tokenizers import processors
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.errors import UserError
from finetune.families.generative import attribution as explain
from finetune.families.generative.report import attribution_html
from tests.support.data import LM_TEXT

FILLERS, KEY, ANSWER, OTHERWISE = list(range(30, 50)), 60, 63, 64  # token ids of the trained case (all in the tiny vocabulary)


@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    return AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval(), AutoTokenizer.from_pretrained(tiny_causal_lm)


@pytest.fixture(scope="module")
def example(lm):
    """10 prompt tokens of LM_TEXT and the model's greedy 4-token continuation."""
    model, tokenizer = lm
    prompt = tokenizer(LM_TEXT)["input_ids"][:10]
    with torch.no_grad():
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    return prompt, generated[0, len(prompt):].tolist()


def log_probs(model, prompt: list[int], continuation: list[int]) -> np.ndarray:
    """By hand, independently of the module: log p of each continuation token after the prompt."""
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1:-1].gather(-1, ids[0, len(prompt):, None])[:, 0].numpy()


@pytest.fixture(scope="module")
def key_model(tiny_causal_lm):
    """A copy of the tiny LM trained (80 Adam steps, ~4 s) on prompts of 5-9 filler tokens with the KEY token inserted
    in half of them: the answer is ANSWER when KEY is in the prompt, OTHERWISE when not. So in a prompt with KEY,
    that one token drives the continuation and the fillers do not matter."""
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        rows = []
        for has_key in rng.integers(2, size=32):
            prompt = rng.choice(FILLERS, int(rng.integers(5, 10))).tolist()
            if has_key:
                prompt.insert(int(rng.integers(len(prompt) + 1)), KEY)
            rows.append(prompt + [ANSWER if has_key else OTHERWISE])
        width = max(map(len, rows))
        ids, mask = torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):  # left-padded: the answer is always the last position
            ids[i, width - len(row):], mask[i, width - len(row):] = torch.tensor(row), 1
        labels = torch.full_like(ids, -100)
        labels[:, -1] = ids[:, -1]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("method", explain.METHODS)
def test_both_methods_give_one_score_per_prompt_token(lm, example, method):
    model, tokenizer = lm
    prompt, continuation = example
    result = explain.attribute(model, tokenizer, prompt, continuation, method, steps=128)
    assert result.scores.shape == (10,) and result.per_token.shape == (4, 10) and result.attributed.all()
    assert result.scores == pytest.approx(result.per_token.sum(axis=0), abs=1e-5)
    assert np.isfinite(result.scores).all() and np.abs(result.scores).max() > 1e-3
    assert result.baseline_id == tokenizer.pad_token_id  # the tiny tokenizer has no unk token
    if method == "feature_ablation":
        assert result.convergence_delta is None
    else:  # completeness: the scores add up to log p(cont | prompt) - log p(cont | all-baseline prompt), up to the delta
        gap = log_probs(model, prompt, continuation).sum() - log_probs(model, [result.baseline_id] * 10, continuation).sum()
        assert result.scores.sum() - gap == pytest.approx(result.convergence_delta, abs=1e-4)
        assert abs(result.convergence_delta) < 0.05 * abs(gap)  # 128 steps: ~1 % here (9 % at 64, 27 % at 16 steps)


@pytest.mark.parametrize("baseline_id", [None, 42])
def test_feature_ablation_equals_ablating_each_token_by_hand(lm, example, baseline_id):
    model, tokenizer = lm
    prompt, continuation = example
    result = explain.attribute(model, tokenizer, prompt, continuation, "feature_ablation", baseline_id=baseline_id)
    assert result.baseline_id == (tokenizer.pad_token_id if baseline_id is None else baseline_id)
    full = log_probs(model, prompt, continuation)
    for i in range(len(prompt)):
        ablated = prompt[:i] + [result.baseline_id] + prompt[i + 1:]
        drops = full - log_probs(model, ablated, continuation)
        assert result.per_token[:, i] == pytest.approx(drops, abs=1e-4)
        assert result.scores[i] == pytest.approx(drops.sum(), abs=1e-4)


@pytest.mark.parametrize("method", explain.METHODS)
def test_a_leading_bos_is_neither_scored_nor_deleted(tiny_causal_lm, lm, method):
    model, _ = lm
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)  # a copy that adds BOS, as Llama-style tokenizers do
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, bos)])
    prompt = tokenizer(LM_TEXT)["input_ids"][:7]
    assert prompt[0] == bos and bos not in prompt[1:]
    continuation = tokenizer(" that is", add_special_tokens=False)["input_ids"]
    # any special token is kept out the same way (a chat template's turn markers): one in the middle
    marked = explain.attributed_positions(tokenizer, prompt[:3] + [tokenizer.eos_token_id] + prompt[3:])
    assert marked.tolist() == [False, True, True, False, True, True, True, True]
    result = explain.attribute(model, tokenizer, prompt, continuation, method, steps=8)
    assert result.attributed.tolist() == [False] + [True] * 6
    assert result.scores.shape == (7,) and result.scores[0] == 0 and not result.per_token[:, 0].any() and result.scores[1:].any()
    if method == "feature_ablation":  # the BOS stays in place while the others are ablated
        ablated = prompt[:1] + [result.baseline_id] + prompt[2:]
        assert result.scores[1] == pytest.approx((log_probs(model, prompt, continuation) - log_probs(model, ablated, continuation)).sum(), abs=1e-4)
    # deleting every deletable token, top or random, leaves exactly the BOS: a random draw never picks it
    faithful = explain.faithfulness(model, prompt, continuation, result.scores, 6, 3, 0, deletable=result.attributed)
    assert faithful["deleted"] == [1, 2, 3, 4, 5, 6]
    assert faithful["random_drop"] == pytest.approx(faithful["top_drop"], abs=1e-9)
    assert faithful["top_drop"] == pytest.approx(log_probs(model, prompt, continuation).sum() - log_probs(model, prompt[:1], continuation).sum(), abs=1e-4)
    with pytest.raises(UserError, match="k=7 must be between 1 and 6"):
        explain.faithfulness(model, prompt, continuation, result.scores, 7, 3, 0, deletable=result.attributed)


def test_faithfulness_finds_the_one_token_the_continuation_depends_on(key_model, lm):
    _, tokenizer = lm
    prompt, where = [31, 44, 38, KEY, 47, 30, 42, 35], 3
    assert log_probs(key_model, prompt, [ANSWER])[0] > -0.1  # the trained rule holds...
    assert log_probs(key_model, prompt[:where] + prompt[where + 1:], [OTHERWISE])[0] > -0.1  # ...and flips without KEY
    for method in explain.METHODS:  # baseline: a filler (the pad token was never seen in a prompt: it acts like a KEY here)
        scores = explain.attribute(key_model, tokenizer, prompt, [ANSWER], method, steps=64, baseline_id=FILLERS[0]).scores
        assert int(np.argmax(scores)) == where, (method, scores)
        faithful = explain.faithfulness(key_model, prompt, [ANSWER], scores, 1, 20, seed=0)
        assert faithful["deleted"] == [where] and faithful["top_beats_random"]
        assert faithful["top_drop"] > 3 and faithful["top_drop"] > 2 * faithful["random_drop"]
        assert len(faithful["top_curve"]) == len(faithful["random_curve"]) == 1
    misleading = explain.faithfulness(key_model, prompt, [ANSWER], -scores, 2, 20, seed=0)  # ranks KEY last
    assert where not in misleading["deleted"] and misleading["top_drop"] < 0.1 and not misleading["top_beats_random"]
    assert len(misleading["top_curve"]) == 2 and misleading["top_curve"][-1] == misleading["top_drop"]


def test_random_deletion_is_seeded(key_model):
    prompt, scores = [31, 44, 38, KEY, 47, 30, 42, 35], np.zeros(8)
    runs = [explain.faithfulness(key_model, prompt, [ANSWER], scores, 2, 5, seed=seed)["random_curve"] for seed in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.parametrize("call, message", [
    (lambda m, t, p, c: explain.attribute(m, t, p, c, "lime"), "method 'lime' is not one of feature_ablation, layer_integrated_gradients"),
    (lambda m, t, p, c: explain.attribute(m, t, p, c, "layer_integrated_gradients", steps=0), "steps=0: integrated gradients needs at least 1 step"),
    (lambda m, t, p, c: explain.attribute(m, t, p, []), "continuation_ids is empty"),
    (lambda m, t, p, c: explain.attribute(m, t, p + [10 ** 6], c), r"prompt_ids holds token ids outside the model's vocabulary \[0, \d+\): \[1000000\]"),
    (lambda m, t, p, c: explain.faithfulness(m, p, c, np.zeros(len(p)), 0, 5, 0), "faithfulness k=0 must be between 1 and 9"),
    (lambda m, t, p, c: explain.faithfulness(m, p, c, np.zeros(3), 1, 5, 0), r"scores \(3,\) and deletable \(10,\) must have one value per prompt token \(10\)"),
    (lambda m, t, p, c: explain.faithfulness(m, p, c, np.zeros(len(p)), 1, 0, 0), "random_draws=0: expected at least 1"),
])
def test_bad_input_is_refused(lm, example, call, message):
    with pytest.raises(UserError, match=message):
        call(*lm, *example)


def test_the_report_shades_the_prompt_and_shows_the_continuation_after_it(lm):
    _, tokenizer = lm
    prompt = tokenizer("to be <or>")["input_ids"]
    continuation = tokenizer(" not to", add_special_tokens=False)["input_ids"]
    scores = np.zeros(len(prompt))
    scores[:3] = [9.0, -0.5, 1.0]  # the first token plays a BOS: its score is neither shown nor part of the scale
    attributed = np.arange(len(prompt)) > 0
    page = attribution_html([tokenizer.decode([token]) for token in prompt], scores.tolist(), attributed.tolist(), tokenizer.decode(continuation))
    assert page.startswith(f'<p style="white-space:pre-wrap"><span class="muted">{tokenizer.decode(prompt[:1])}</span>')
    assert '<span title="-0.5000" style="background:rgba(200,40,40,0.42)">' in page  # red, half the largest |score|
    assert '<span title="+1.0000" style="background:rgba(22,140,60,0.85)">' in page  # green, the largest |score|
    assert "+9.0000" not in page and "<or>" not in page  # token text is escaped
    assert html.unescape(re.sub("<[^>]+>", "", page)) == tokenizer.decode(prompt + continuation)  # every token once, spaces kept
    assert page.endswith('<b style="text-decoration:underline"> not to</b></p>')

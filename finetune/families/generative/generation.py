"""Text generation from a causal LM, the diversity measures of generated text, and decoding speed.

- `generate`: one prompt (batch 1), Hugging Face `model.generate` with the KV cache; sampling with temperature and
  nucleus (top_p) when temperature > 0, greedy when it is 0; seeded, so the same seed gives the same text on the same
  machine and library versions. Top-k is switched off (the library's default would silently keep only 50 tokens):
  temperature and top_p alone shape the distribution; other settings in the model's generation_config.json (a
  repetition penalty, its EOS ids) still apply; the tokenizer's EOS stops generation when the model's generation
  config names none, and is the pad id when the tokenizer has no pad. Returns the continuation only.
  `prompt_lookup` k > 0: prompt lookup decoding (transformers' `prompt_lookup_num_tokens`): when the last few tokens
  appeared earlier in the prompt or the text so far, the k tokens that followed them there are proposed and checked in
  ONE forward; the longest prefix the model itself would have chosen is kept. Greedy: the same text; sampling: the same
  distribution (a draft token is kept only if it equals the token sampled at its place), not the same seeded text as
  without it. On a CPU a forward of k tokens costs little more than one (reading the weights dominates): SmolLM2 made
  1.1-1.5x more tokens/s with k = 10 (BENCHMARKS.md). The CLI uses it; evaluate and the timing below do not.
  Refused before any work, as a UserError: a tokenizer without EOS (generation could not stop), an empty prompt,
  a prompt whose tokens plus max_new_tokens do not fit the model's context, and out-of-range settings.
- `distinct_n`, `repetition_rate`: diversity of generated texts over whitespace tokens (definitions in their docstrings).
- `forced_run` + `timed`: greedy decoding speed at a forced length, models timed in turns, the median of a few rounds.
- `prompts`: what evaluate, explain and compress generate from: evaluate.prompts, or with `auto` the openings of
  held-out test documents that preprocess kept in the layout (`openings`), so a corpus of Python docs is not prompted
  with "ROMEO." (issue 39).
Limits: no batching, no beam search; a model whose config names no context length is not length-checked.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import transformers

from finetune import paths
from finetune.errors import UserError
from finetune.families.generative.models import context_length
from finetune.io import read_json


def generate(model, tokenizer, prompt: str, **settings) -> str:
    """The continuation of prompt (without the prompt); `complete`'s settings."""
    return complete(model, tokenizer, prompt, **settings)[0]


def complete(model, tokenizer, prompt: str, *, max_new_tokens: int, temperature: float, top_p: float, seed: int,
             streamer=None, min_new_tokens: int | None = None, prompt_lookup: int = 0) -> tuple[str, bool]:
    """The continuation of prompt (without the prompt), streamed to streamer (e.g. a TextStreamer) as it comes, and
    whether the model ended it with a stop token (for a chat model: its end of turn) rather than running out of
    max_new_tokens. min_new_tokens keeps generating past EOS up to that many tokens (for timing at a fixed length)."""
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens is {max_new_tokens}: expected a whole number >= 1")
    if not temperature >= 0:  # written so that NaN fails too (NaN < 0 is False)
        raise UserError(f"temperature is {temperature}: expected a number >= 0 (0 = greedy)")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p is {top_p}: expected a number in (0, 1]")
    if prompt_lookup < 0:
        raise UserError(f"prompt_lookup is {prompt_lookup}: expected a whole number >= 0 (0 = off)")
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer ({type(tokenizer).__name__}) has no EOS token: generation could not stop; "
                        "set eos_token in its tokenizer_config.json")
    # a prompt rendered through a chat template already starts with the BOS the template writes: do not add a second
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not (tokenizer.bos_token and prompt.startswith(tokenizer.bos_token)))
    inputs = inputs.to(model.device)
    length, context = inputs["input_ids"].shape[1], context_length(model.config)
    if length == 0:
        raise UserError("the prompt is empty (0 tokens): give some text to continue")
    if context and length + max_new_tokens > context:
        raise UserError(f"prompt {prompt[:60]!r} is {length} tokens; with max_new_tokens {max_new_tokens} that is "
                        f"{length + max_new_tokens}, more than the model's context of {context} tokens")
    decoding = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {"do_sample": False}
    if prompt_lookup:
        decoding["prompt_lookup_num_tokens"] = prompt_lookup
    special = {"pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    if model.generation_config.eos_token_id is None:  # else keep the model's own (it may list several stop ids)
        special["eos_token_id"] = tokenizer.eos_token_id
    transformers.set_seed(seed)  # seeds torch's global generator, which sampling draws from
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, use_cache=True,
                                streamer=streamer, **decoding, **special)
    new = output[0, length:].tolist()
    stops = special.get("eos_token_id", model.generation_config.eos_token_id)
    stopped = bool(new) and new[-1] in (stops if isinstance(stops, list) else [stops])
    return tokenizer.decode(new, skip_special_tokens=True), stopped


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = text.split()
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams, counted over the whitespace tokens of every text together
    (n-grams never span two texts; an n-gram in two texts counts once in the numerator). 0 when there is no n-gram.
    1 means no n-gram ever repeats; low values mean repetitive or mode-collapsed text."""
    if n < 1:
        raise ValueError(f"n is {n}: expected >= 1")
    grams = [gram for text in texts for gram in _ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Share of n-grams (whitespace tokens) that repeat an n-gram seen EARLIER IN THE SAME TEXT, over all texts'
    n-grams together: the looping a model falls into ("the cat the cat the cat"). Repeats across texts are not
    counted (that is distinct_n's job). 0 when there is no n-gram."""
    if n < 1:
        raise ValueError(f"n is {n}: expected >= 1")
    repeats = total = 0
    for text in texts:
        grams = _ngrams(text, n)
        repeats += len(grams) - len(set(grams))  # every occurrence after a gram's first is a repeat
        total += len(grams)
    return repeats / total if total else 0.0


def timed(runs: dict[str, Callable[[], object]], new_tokens: int, repeats: int) -> dict[str, dict]:
    """Tokens per second of each run (one that makes new_tokens tokens): the median wall time over repeats rounds
    after one warm-up each (first-call allocations, lazy inits). A round runs every contender once in turn, so a
    load change on a shared machine hits all of them alike and their ratios hold."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: {"tokens_per_second": new_tokens / statistics.median(times), "seconds": statistics.median(times),
                   "new_tokens": new_tokens, "repeats": repeats} for name, times in seconds.items()}


def forced_run(model, tokenizer, prompt: str, max_new_tokens: int) -> Callable[[], str]:
    """A greedy `generate` of exactly max_new_tokens tokens (EOS does not stop it, so a model that stops early is not
    flattered; tokenizing and decoding included), batch 1, KV cache: one contender for `timed`."""
    return lambda: generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=0,
                            min_new_tokens=max_new_tokens)


def prompts(evaluate, tokenizer) -> list[dict[str, str]]:
    """[{"prompt", "from"(, "reference")}]: evaluate.prompts, or with `auto` the first evaluate.prompt_tokens tokens of
    evaluate.auto_prompts test documents drawn with evaluate.seed (kept in their split order) from the layout's openings;
    an opening that carries the reply it should get (a chat's conversation up to its last reply) is a whole prompt,
    with that reply as its reference."""
    if evaluate.prompts != "auto":
        return [{"prompt": prompt, "from": f"evaluate.prompts[{i}]"} for i, prompt in enumerate(evaluate.prompts)]
    openings = read_json(paths.LABEL_MAP)["openings"]
    drawn = np.random.default_rng(evaluate.seed).choice(len(openings), size=min(evaluate.auto_prompts, len(openings)), replace=False)
    chosen = []
    for i in sorted(drawn):
        name, ids, *reply = openings[i]
        if reply:
            chosen.append({"prompt": tokenizer.decode(ids), "from": f"test conversation {name}", "reference": reply[0]})
        else:  # a cut through a multi-byte character decodes to U+FFFD: left out
            chosen.append({"prompt": tokenizer.decode(ids[:evaluate.prompt_tokens]).rstrip("\ufffd"),
                           "from": f"the opening of test document {name}"})
    return chosen

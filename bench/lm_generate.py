"""Decoding speed of our generation path vs plain Hugging Face `model.generate`, measured in the same run.

  ours (CLI)      : what `python -m finetune.families.generative.generate` runs: finetune.families.generative.generation.generate with the CLI's streamer and
                    prompt lookup decoding (10 draft tokens): argument checks, tokenizing, set_seed, TextStreamer decoding
                    every token, final decode; the streamer's prints go to a buffer (a terminal's speed is not ours to measure)
  ours (streamed) : the same without prompt lookup
  ours (no stream): the same without a streamer either
  plain           : model.generate on the already tokenized prompt
All greedy, batch 1, KV cache, exactly --max-new-tokens new tokens (min_new_tokens), median of --repeats runs
after one warm-up, the three interleaved (a load change hits all alike); prints tokens/s and each one's speed
relative to plain (only the ratios carry over to other machines). The model is loaded as the CLI loads it.

    python bench/lm_generate.py                       # a tiny random 2-layer Llama built into a temp dir
    python bench/lm_generate.py --model models/pretrained/smollm2-135m --max-new-tokens 64
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from finetune.families.generative.generate import counting_streamer, load
from finetune.families.generative.generation import generate, timed

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="a causal-LM directory (default: a tiny random Llama built for this run)")
parser.add_argument("--prompt", default="To be, or not to be, that is the question:")
parser.add_argument("--max-new-tokens", type=int, default=64)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()

with tempfile.TemporaryDirectory() as scratch:
    if args.model is None:
        from tests.support import build_tiny_causal_lm

        build_tiny_causal_lm(Path(scratch))
    model, tokenizer = load(args.model or scratch, trust_remote_code=False)
    n, ids = args.max_new_tokens, tokenizer(args.prompt, return_tensors="pt").to(model.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def plain():
        with torch.inference_mode():
            return model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=pad)

    greedy = {"max_new_tokens": n, "temperature": 0.0, "top_p": 1.0, "seed": 0, "min_new_tokens": n}
    reference = tokenizer.decode(plain()[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    same = generate(model, tokenizer, args.prompt, **greedy) == generate(model, tokenizer, args.prompt, prompt_lookup=10, **greedy) == reference
    streamer = counting_streamer(tokenizer)
    runs = {"ours (CLI)": lambda: generate(model, tokenizer, args.prompt, streamer=streamer, prompt_lookup=10, **greedy),
            "ours (streamed)": lambda: generate(model, tokenizer, args.prompt, streamer=streamer, **greedy),
            "ours (no stream)": lambda: generate(model, tokenizer, args.prompt, **greedy),
            "plain": plain}
    with contextlib.redirect_stdout(io.StringIO()):
        results = timed(runs, n, args.repeats)

print(f"{args.model or 'tiny random Llama'}: {model.num_parameters():,} parameters, "
      f"prompt {ids['input_ids'].shape[1]} tokens, {n} new tokens, {torch.get_num_threads()} threads, "
      f"median of {args.repeats}; same greedy text as plain: {same}")
print("path             | tokens/s | vs plain")
for name, result in results.items():
    print(f"{name:16s} | {result['tokens_per_second']:8.1f} | {result['tokens_per_second'] / results['plain']['tokens_per_second']:.3f}x")

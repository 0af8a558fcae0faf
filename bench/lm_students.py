"""Which layers should a causal LM's distilled student keep, and how far does distillation heal it (issue 36: the
default student, every other one of SmolLM2's 30 layers, had +1821 % perplexity after 32 steps)?

On a fine-tuned project (a folder with models/model and data/prepared/{train,val,test}.parquet of token blocks, e.g. the
one bench/lm_faithfulness.py leaves in /tmp), for students that keep KEEP of the teacher's layers:
1. before any training, the test perplexity of each selection rule:
   - alternating: every other layer ending with the top one (the compress stage's default before this bench);
   - block_influence: drop the layers whose output is most like their input (ShortGPT, Men et al. 2024: 1 - the mean
     cosine similarity of a layer's input and output hidden states over calibration tokens);
   - contiguous: drop the run of consecutive layers whose input and output are closest in angle (Gromov et al. 2024);
   - greedy: drop, one at a time, the layer whose removal raises the calibration loss least (a forward pass per
     candidate: the most expensive rule, and the most direct);
   - stage: what the compress stage does since (finetune/families/generative/distill.py's least_needed_layers): greedy
     on the first 4 train blocks, 3 layers a round;
2. then the chosen rules distilled with the compress stage's own loop (finetune/families/generative/distill.py) for
   STEPS steps of the config's batch over the train blocks, test perplexity after each budget.
Calibration blocks are train blocks; the test split is scored only.

    PYTHONPATH=. .venv/bin/python bench/lm_students.py --project /tmp/lm-faithfulness-shakespeare-XXXX [--keep 15] \\
        [--rules alternating stage] [--steps 32 96] [--heal alternating greedy] \\
        [--settings alpha=0.5,temperature=2 alpha=0,temperature=1,learning_rate=1e-3]

--settings: compress.distill fields changed from configs/lm.yaml's (batch 8, lr 5e-4, alpha 0.5, T 2), one healing run
of each rule per setting (the loss mix and the rate, side by side on the same student).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finetune.compression.distill import make_student, student_layers
from finetune.config.sections import Distill
from finetune.families.generative.compress import SELECTION_BLOCKS
from finetune.families.generative.distill import distill, least_needed_layers
from finetune.families.generative.scoring import summarize, token_scores


def blocks(project: Path, split: str) -> np.ndarray:
    return np.stack(pd.read_parquet(project / f"data/prepared/{split}.parquet", columns=["input_ids"])["input_ids"].to_numpy())


def perplexity(model, ids: np.ndarray) -> float:
    return summarize(token_scores(model, ids, 8)[0])["perplexity"]


def hidden_states(model, ids: np.ndarray) -> list[torch.Tensor]:
    """The input of every layer and the output of the last (depth + 1 tensors of tokens x hidden), over ids."""
    with torch.inference_mode():
        states = model(input_ids=torch.as_tensor(ids), output_hidden_states=True).hidden_states
    # hidden_states[-1] is after the final norm in Llama; the last layer's own output is what the rules compare
    return [s.flatten(0, 1).float() for s in states]


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)).mean() / math.pi)


def block_influence(states: list[torch.Tensor], depth: int, keep: int) -> list[int]:
    influence = [1 - float(torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1).mean()) for i in range(depth - 1)]
    influence.append(float("inf"))  # the last layer's output is only seen after the final norm: always kept
    return sorted(np.argsort(influence)[depth - keep:].tolist())


def contiguous(states: list[torch.Tensor], depth: int, keep: int) -> list[int]:
    n = depth - keep
    start = min(range(0, depth - n), key=lambda first: angle(states[first], states[first + n]))  # the top layer stays
    return [i for i in range(depth) if not start <= i < start + n]


def greedy(teacher, calibration: np.ndarray, depth: int, keep: int) -> list[int]:
    kept = list(range(depth))
    while len(kept) > keep:
        losses = {layer: perplexity(make_student(teacher, [i for i in kept if i != layer]), calibration) for layer in kept}
        kept.remove(min(losses, key=losses.get))
    return kept


def main(project: Path, keep: int, rules: list[str], steps: list[int], heal: list[str], settings: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_pretrained(project / "models/model").eval()
    depth = teacher.config.num_hidden_layers
    train, test = blocks(project, "train"), blocks(project, "test")
    calibration = train[np.random.default_rng(0).permutation(len(train))[:8]]
    reference = perplexity(teacher, test)
    print(f"teacher: {depth} layers, test perplexity {reference:.2f} ({len(test)} blocks); students keep {keep}")
    states = hidden_states(teacher, calibration)
    choose = {"alternating": lambda: student_layers(depth, None), "block_influence": lambda: block_influence(states, depth, keep),
              "contiguous": lambda: contiguous(states, depth, keep), "greedy": lambda: greedy(teacher, calibration, depth, keep),
              "stage": lambda: least_needed_layers(teacher, train[:SELECTION_BLOCKS], keep)}
    print("\n| rule | layers kept | selection seconds | test perplexity, no training | vs teacher |\n|---|---|---|---|---|")
    layers_of = {}
    for rule in rules:
        started = time.monotonic()
        layers_of[rule] = choose[rule]()
        seconds = time.monotonic() - started
        value = perplexity(make_student(teacher, layers_of[rule]), test)
        print(f"| {rule} | {layers_of[rule]} | {seconds:.0f} | {value:.2f} | {100 * (value / reference - 1):+.0f} % |", flush=True)
    lm_config = Distill(epochs=1, learning_rate=5e-4, batch_size=8)  # configs/lm.yaml's, epochs set per budget below
    print("\n| rule | setting | distillation steps | seconds | test perplexity | vs teacher |\n|---|---|---|---|---|---|")
    for rule, setting in ((rule, setting) for rule in heal for setting in settings):
        changes = {key: float(value) for key, value in (pair.split("=") for pair in setting.split(",") if pair)}
        config = lm_config.model_copy(update=changes)
        student, done = make_student(teacher, layers_of[rule]), 0
        for budget in steps:  # each budget continues the previous one's student (its own warm-up and decay)
            started = time.monotonic()
            trained = distill(teacher, student, train, config.model_copy(update={"epochs": (budget - done) * config.batch_size / len(train)}), seed=0)
            seconds, done = time.monotonic() - started, budget
            value = perplexity(student, test)
            print(f"| {rule} | {setting or 'configs/lm.yaml'} | {budget} ({trained['steps']} here) | {seconds:.0f} | {value:.2f} | {100 * (value / reference - 1):+.0f} % |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--keep", type=int, default=15)
    parser.add_argument("--rules", nargs="+", default=["alternating", "block_influence", "contiguous", "greedy", "stage"])
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--heal", nargs="*", default=["alternating", "greedy"])
    parser.add_argument("--settings", nargs="+", default=[""], help="compress.distill fields, key=value joined by commas")
    args = parser.parse_args()
    main(args.project, args.keep, args.rules, args.steps, args.heal, args.settings)

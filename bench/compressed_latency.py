"""Re-time the compress stage's models on a quiet machine: the teacher (named in reports/compress.json) and
every model in models/compressed, reloaded from disk, timed with the stage's own function (batch 1 and 32,
every model in turn within each round, median), ROUNDS times, printing each model's speed-up over the teacher
per round. Use it when the stage's numbers may have shared the CPU with something else: the stage times
once, at the end of a long run.

    python bench/compressed_latency.py [--rounds 3] [--threads 1 2]   # where `dvc repro` ran compress (~1 min a round)

--threads times every round at each thread count (how the ratios move with more threads); the default is torch's own.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from finetune import paths  # noqa: E402
from finetune.compression import quantize  # noqa: E402
from finetune.config.params import load_params
from finetune.config.sections import PRIMARY  # noqa: E402
from finetune.families.classification.compress import FOLDERS, LATENCY_BATCHES, latencies_ms  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402


def teacher_and_test():
    """(params, task, compress.json, teacher folder, processor, teacher, test split, layout) of this project's compress run."""
    params = load_params()
    task, result = get_task(params.task), read_json(paths.COMPRESS_METRICS)
    teacher_dir = paths.MODEL if result["teacher"] == PRIMARY else paths.MEMBER_MODELS / result["teacher"]
    processor = task.models.load_processor(str(teacher_dir), False)
    teacher = task.models.load_trained(str(teacher_dir), False).eval()
    return params, task, result, teacher_dir, processor, teacher, pd.read_parquet(paths.PREPARED / "test.parquet"), read_json(paths.LABEL_MAP)


def timed_rounds(runners: dict, reference: str, task, processor, test, layout, repeats: int, rounds: int, threads: list[int]) -> None:
    """Print each runner's median ms and speed-up over `reference` at batch 1 and 32, ROUNDS times at each thread count."""
    for round_ in range(rounds):
        for count in threads:
            torch.set_num_threads(count)
            ms = latencies_ms(runners, task, processor, test, layout, repeats)
            print(f"round {round_ + 1}, {count} thread(s): " + "   ".join(
                f"{name} " + " / ".join(f"b{size} {ms[name][size]:.1f} ms ({ms[reference][size] / ms[name][size]:.2f}x)" for size in LATENCY_BATCHES)
                for name in runners))


def main(rounds: int, threads: list[int]) -> None:
    params, task, result, _, processor, teacher, test, layout = teacher_and_test()
    compressor = task.compressor(teacher)
    models = {"teacher": teacher}
    for method, folder in FOLDERS.items():
        if (paths.COMPRESSED / folder).is_dir():
            models[method] = (compressor.load_quantized(paths.COMPRESSED / folder) if method == "int8"
                              else task.models.load_trained(str(paths.COMPRESSED / folder), False).eval())
    runners = {name: (lambda features, model=model: model(**features)) for name, model in models.items()}
    print(f"{params.task}, teacher {result['teacher']}, {params.compress.latency.repeats} repeats a round, torch {torch.__version__}, "
          f"CPU {quantize.cpu()}")
    timed_rounds(runners, "teacher", task, processor, test, layout, params.compress.latency.repeats, rounds, threads)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.threads)

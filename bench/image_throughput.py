"""Train-stage throughput on images vs a plain hand-written PyTorch training loop: what the pipeline costs.

Same model (params.yaml's train.model, e.g. EfficientNet-Lite0 with its ImageNet weights), same prepared
images (data/prepared from the image config: `make pipeline CONFIG=image`, or `dvc repro preprocess`),
same rows, batch size, optimiser (AdamW, lr), seed and online augmentation (the task's own dataset, so the
same seeded torchvision.transforms.v2 ops). Measured one after the other in the same process:
  pipeline   : finetune.training.fit, exactly what the train stage runs (Trainer, strategy, dvclive,
               checkpoints, a 64-row validation at the end of the epoch)
  hand loop  : DataLoader + forward/backward/AdamW step, nothing else; the batch in the same channels-last
               memory format the pipeline uses (so the ratio isolates the pipeline's own cost)
  hand NCHW  : the same loop as most hand-written scripts run it (default memory format), for reference
Prints images/s of each, the ratios, and the share of a step spent producing the batch (decode + augment +
collate, timed by iterating the training DataLoader alone).

    python bench/image_throughput.py [--rows 4096] [--epochs 1] [--rounds 3]

Each variant runs --rounds times, in turn (pipeline, hand loop, clipped hand loop, NCHW loop, pipeline, ...);
every round is printed and the best of each is compared (these machines are noisy: the same loop has
measured 134 and 150 images/s back to back).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import set_seed  # noqa: E402

from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import fit  # noqa: E402


def hand_loop(task, params, layout, processor, train: pd.DataFrame, channels_last: bool, clip: bool = False) -> float:
    """images/s of a plain loop: the task's dataset (same augmentation), AdamW, cross-entropy (+ gradient clipping)."""
    set_seed(params.train.seed)
    model = task.models.load_model(task.models.source(params.train.model), layout, params.train)
    if not channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    dataset = task.models.dataset(train, layout, processor, params.preprocess, seed=params.train.seed)
    collate = task.models.collator(processor)
    loader = torch.utils.data.DataLoader(dataset, batch_size=params.train.batch_size, shuffle=True, collate_fn=collate, drop_last=True,
                                         generator=torch.Generator().manual_seed(params.train.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.train.learning_rate, weight_decay=params.train.weight_decay)
    model.train()
    seen, start = 0, time.perf_counter()
    for epoch in range(args.epochs):
        dataset.epoch = epoch
        for batch in loader:
            pixels = batch["pixel_values"] if channels_last else batch["pixel_values"].contiguous()
            loss = model(pixel_values=pixels, labels=batch["labels"]).loss
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            seen += len(batch["labels"])
    return seen / (time.perf_counter() - start)


def loading_seconds(task, params, layout, processor, train: pd.DataFrame) -> float:
    """Seconds to produce every training batch of one epoch (decode, augment, normalise, collate) with no model."""
    dataset = task.models.dataset(train, layout, processor, params.preprocess, seed=params.train.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=params.train.batch_size, shuffle=True, collate_fn=task.models.collator(processor),
                                         drop_last=True)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main() -> None:
    params = load_params()
    task = get_task(params.task)
    layout = read_json(paths.LABEL_MAP)
    if "pixels" not in layout:
        sys.exit("data/prepared holds no images: switch to the image config first (make pipeline CONFIG=image, or dvc repro preprocess)")
    train = pd.read_parquet(paths.PREPARED / "train.parquet").sample(n=args.rows, random_state=0)
    val = pd.read_parquet(paths.PREPARED / "val.parquet").head(64)
    processor = task.models.load_processor(task.models.source(params.train.model), False)
    params = params.with_values({"train.epochs": args.epochs, "train.early_stopping.patience": 0, "train.eval_steps": None})

    def pipeline_run() -> float:
        with tempfile.TemporaryDirectory() as scratch:
            return fit(get_task(params.task), params, {"train": train, "val": val}, layout, Path(scratch) / "model", Path(scratch) / "live",
                       "bench image throughput")["train_samples_per_second"]

    variants = {"pipeline": pipeline_run, "hand": lambda: hand_loop(task, params, layout, processor, train, channels_last=True),
                "clipped": lambda: hand_loop(task, params, layout, processor, train, channels_last=True, clip=True),
                "plain": lambda: hand_loop(task, params, layout, processor, train, channels_last=False)}
    rounds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, measure in variants.items():
            rounds[name].append(measure())
    for name, values in rounds.items():
        print(f"{name:9s} images/s by round: {', '.join(f'{v:.1f}' for v in values)}")
    pipeline, hand, clipped, plain = (max(rounds[name]) for name in ("pipeline", "hand", "clipped", "plain"))
    loading = loading_seconds(task, params, layout, processor, train)
    steps = args.rows // params.train.batch_size * args.epochs
    step_seconds = args.rows * args.epochs / hand
    print(f"model {params.train.model}, {layout['pixels']['height']} px, batch {params.train.batch_size}, {args.rows} rows x {args.epochs} epoch(s), "
          f"{torch.get_num_threads()} threads")
    print(f"pipeline (train stage's fit)   {pipeline:7.1f} images/s")
    print(f"hand loop (channels-last)      {hand:7.1f} images/s   pipeline / hand loop = {pipeline / hand:.3f}")
    print(f"hand loop + gradient clipping  {clipped:7.1f} images/s   pipeline / clipped hand loop = {pipeline / clipped:.3f} "
          "(the Trainer clips at max_grad_norm 1.0)")
    print(f"hand loop (NCHW, as most do)   {plain:7.1f} images/s   pipeline / NCHW loop = {pipeline / plain:.3f}")
    print(f"producing the batches: {loading:.1f} s for {steps} steps = {100 * loading / step_seconds:.1f} % of the hand loop's time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main()

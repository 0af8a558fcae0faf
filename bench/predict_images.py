"""Prediction throughput of a trained image classifier: our `finetune predict` path vs a plain torchvision inference loop
on the same image files and the same trained network.

Measures, in one run (these machines are noisy: each timing is warmed up once, then taken 3 times and the median kept,
the loops taking turns in every repeat; every ratio compares numbers measured in this command):
  ours      : `finetune.inference.load(MODEL).predict(FOLDER, batch_size=64)` on a folder of N PNG files, images/s.
  reference : what a user would write by hand: the same network (`predictor.model`, loaded by our loader, in eval mode)
              fed the same files: PIL open + convert to the model's channel mode (grey expanded to 3 channels, as
              finetune/data/images.py ImageDataset does), torchvision.transforms.v2 Resize (shorter side, bicubic) +
              CenterCrop to the trained size (or a squash, as preprocess.resize says), ToImage, ToDtype(float32,
              scale=True), Normalize(the model's mean, std), batches of 64 stacked in the default memory format (NCHW),
              the model under torch.inference_mode(), softmax; images/s. Same process, same torch threads. Also the
              same loop with its batches made channels-last, as our collator makes them (so ours / that isolates
              our own overhead), and the plain loop's split (one pass: decode + transforms vs the network).
  Also: ratio ours / reference, the share of images whose labels agree (resizing details may differ slightly) and the
  largest probability difference; where one predictor.predict call spends its time (cProfile: read files, the
  ingest-style check, featurize, the network, how often an image is decoded), and cProfile's top 15 cumulative when
  ours is much slower (ratio < 0.8) or with --profile.
The model is a throwaway: a scratch copy of this commit (bench/scratch.py) runs `dvc repro train` with configs/image.yaml
(builtin:fashion-mnist + builtin:efficientnet-lite0 at 64 pixels; when /usr/share/datasets/fashion-mnist is missing,
data.source builtin:digits instead, said in the output), data.max_rows {train: 600, test: 200} and train.epochs 0.2
(about 30 s on 2 cores); its weights' quality is irrelevant to throughput. The N
images are the ingested rows' PNG bytes (data/ingested.parquet's `input`), in a seeded order, repeated to reach N.

    python bench/predict_images.py [--images 1000] [--keep DIR] [--profile]     # ~6 min on 2 cores (the network dominates)
"""
from __future__ import annotations

import os

os.environ.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scratch  # noqa: E402  bench/scratch.py (this script's folder is on sys.path)
import yaml  # noqa: E402

ROOT = scratch.ROOT
warnings.filterwarnings("ignore")

BATCH, REPEATS, SLOW = 64, 3, 0.8
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# the functions of one predictor.predict call whose cumulative time says where it goes (file:function, as cProfile names them)
STEPS = (("read files (read_unlabelled)", "sources.py", "unlabelled"),
         ("ingest-style check (check_images)", "images.py", "check_images"),
         ("featurize (decode, mode, resize)", "image-classification/__init__.py", "featurize"),
         ("  decode + normalise (normalized_image)", "images.py", "normalized_image"),
         ("  resize (resized)", "images.py", "resized"),
         ("PIL decode, all calls (images.py _open)", "images.py", "_open"),
         ("network + batches (predict_proba)", "classification/__init__.py", "predict_proba"),
         ("  batch items (ImageDataset.__getitem__)", "images.py", "__getitem__"),
         ("  forward passes (Module._call_impl)", "module.py", "_call_impl"))


def train_model(work: Path) -> tuple[Path, dict]:
    """`dvc repro train` (the real ingest, preprocess and train stages) in a scratch copy of this commit (bench/scratch.py):
    the image config on 600 train images for 0.2 epochs. (models/model, the params it was trained with)."""
    model = work / "models/model"
    if (model / "pipeline.json").is_file():
        print(f"model: reusing {model}")
        return model, yaml.safe_load((work / "params.yaml").read_text())
    params = yaml.safe_load((ROOT / "configs/image.yaml").read_text())
    source = params.get("data", {}).get("source", "builtin:fashion-mnist")
    if source == "builtin:fashion-mnist" and not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"data: {FASHION_MNIST} not found, so data.source builtin:digits instead of builtin:fashion-mnist")
        source = "builtin:digits"
    # a builtin with its own train/test split takes max_rows per split (val is carved from train); digits has none
    params.setdefault("data", {}).update(source=source, max_rows=600 if source == "builtin:digits" else {"train": 600, "val": None, "test": 200})
    params.setdefault("train", {})["epochs"] = 0.2
    scratch.repro(scratch.project(params, work, "predict-images-"), "train")
    return model, yaml.safe_load((work / "params.yaml").read_text())


def write_images(work: Path, count: int) -> tuple[Path, list[Path], int]:
    """`count` PNG files in work/bench-images: the ingested rows' image bytes in a seeded order, repeated to reach count
    (the folder, its files in the order predict reads them, the number of distinct images)."""
    stored = pd.read_parquet(work / "data/ingested.parquet", columns=["input"])["input"]
    picked = stored.sample(frac=1.0, random_state=0).tolist()
    folder = work / "bench-images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    files = []
    for i in range(count):
        files.append(folder / f"image-{i:05d}.png")
        files[-1].write_bytes(picked[i % len(picked)])
    return folder, sorted(files), min(count, len(picked))


def timed(runs: dict) -> dict:
    """{name: seconds of each of REPEATS calls, the runs taking turns}."""
    return scratch.taking_turns(runs, REPEATS)


def reference_loop(predictor, batch: int, channels_last: bool = False):
    """A plain torchvision inference loop over image files, as a user would write it around our trained network (batches
    in the default memory format, or channels-last as our collator makes them): run(files) -> probabilities (rows x
    classes); run.split(files) -> (seconds decoding + transforming, seconds in the net)."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    model, shape = predictor.model, predictor.layout["pixels"]
    size, channels = (shape["height"], shape["width"]), shape["channels"]
    squash = predictor.params.preprocess.resize == "squash"
    transform = v2.Compose([
        v2.Resize(size if squash else min(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        *([] if squash else [v2.CenterCrop(size)]),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        *([v2.Lambda(lambda x: x.expand(3, -1, -1))] if channels == 1 else []),  # pretrained nets read 3 channels
        v2.Normalize(mean=list(predictor.processor.mean), std=list(predictor.processor.std)),
    ])

    def tensors(files: list[Path]):
        pixels = torch.stack([transform(Image.open(f).convert("L" if channels == 1 else "RGB")) for f in files])
        return pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels

    def run(files: list[Path]) -> np.ndarray:
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(files), batch):
                logits = model(pixel_values=tensors(files[start:start + batch])).logits
                chunks.append(torch.softmax(logits.float(), dim=-1).numpy())
        return np.concatenate(chunks)

    def split(files: list[Path]) -> tuple[float, float]:
        inputs, network = 0.0, 0.0
        with torch.inference_mode():
            for start in range(0, len(files), batch):
                began = time.perf_counter()
                pixels = tensors(files[start:start + batch])
                mid = time.perf_counter()
                torch.softmax(model(pixel_values=pixels).logits.float(), dim=-1)
                inputs, network = inputs + mid - began, network + time.perf_counter() - mid
        return inputs, network

    run.split = split
    return run


def step_times(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    """(step, cumulative seconds, calls) of STEPS in a profile of one predict call (calls not counting recursive ones)."""
    rows = []
    for label, file, function in STEPS:
        found = [(value[3], value[0]) for (path, _, name), value in stats.stats.items()
                 if name == function and path.replace(os.sep, "/").endswith(file)]
        if found:
            # a recursive entry (Module._call_impl calls itself through submodules) counts its outermost calls only: the max
            rows.append((label, max(s for s, _ in found), max(c for _, c in found)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="PNG files predicted (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="train in this folder and keep it; a model already there is reused "
                                                  "(default: a temporary folder, removed)")
    parser.add_argument("--profile", action="store_true", help=f"print cProfile's top 15 even when ours/reference >= {SLOW}")
    args = parser.parse_args()
    import torch

    from finetune.inference import load

    total, load_before = time.perf_counter(), os.getloadavg()[0]
    work = args.keep or Path(tempfile.mkdtemp(prefix="predict-images-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model, params = train_model(work)
        folder, files, distinct = write_images(work, args.images)
        threads = torch.get_num_threads()

        predictor = load(model)
        shape = predictor.layout["pixels"]
        predicted = predictor.predict(folder, batch_size=BATCH)
        if len(predicted.table) != len(files) or predicted.bad:
            sys.exit(f"predict returned {len(predicted.table)} rows ({len(predicted.bad)} rejected) for {len(files)} images")
        reference, reference_cl = reference_loop(predictor, BATCH), reference_loop(predictor, BATCH, channels_last=True)
        probs = reference(files)
        assert torch.get_num_threads() == threads, "something changed torch's thread count"

        labels = predictor.layout["labels"]
        ours_labels = predicted.table["label"].to_numpy()
        reference_labels = np.asarray([labels[i] for i in probs.argmax(axis=1)])
        agree = float((ours_labels == reference_labels).mean())
        largest = float(np.abs(predicted.table[[f"prob_{name}" for name in labels]].to_numpy() - probs).max())

        every = timed({"ours": lambda: predictor.predict(folder, batch_size=BATCH), "reference": lambda: reference(files),
                       "reference_cl": lambda: reference_cl(files)})
        seconds = {name: statistics.median(values) for name, values in every.items()}
        best = {name: len(files) / min(values) for name, values in every.items()}
        ours, ref, ref_cl = (len(files) / seconds[name] for name in ("ours", "reference", "reference_cl"))
        inputs, network = reference.split(files)  # one pass: where the reference's own time goes

        print(f"{len(files)} PNG files ({distinct} distinct, {params['data']['source']}, {shape['height']}x{shape['width']}x"
              f"{shape['channels']} as trained, resize {predictor.params.preprocess.resize}), model {params['train']['model']}, "
              f"{threads} torch threads, batch {BATCH}, median of {REPEATS} after a warm-up, the three loops taking turns")
        print(f"predict  ours {ours:7.1f} images/s | torchvision loop {ref:7.1f} images/s | ours/reference {ours / ref:.2f}x "
              f"| the loop in channels-last {ref_cl:7.1f} images/s, ours/that {ours / ref_cl:.2f}x")
        print("seconds of each repeat (in turn): " + "; ".join(f"{name} {' '.join(f'{v:.2f}' for v in values)}"
                                                             for name, values in every.items())
              + f"; best of {REPEATS}: ours/reference {best['ours'] / best['reference']:.2f}x, ours/channels-last "
              f"{best['ours'] / best['reference_cl']:.2f}x")
        print(f"agreement: {agree:.1%} of labels equal ({int(round(agree * len(files)))}/{len(files)}), largest probability "
              f"difference {largest:.4f}")
        print(f"reference split (one pass): decode + transforms {inputs:.2f} s ({len(files) / inputs:.0f} images/s), network "
              f"{network:.2f} s ({len(files) / network:.0f} images/s)")

        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.runcall(predictor.predict, folder, BATCH)
        profiled = time.perf_counter() - start
        stats = pstats.Stats(profile, stream=sys.stdout)

        print()
        print(f"| measurement | images/s (median) | seconds per call | ratio | images/s (best of {REPEATS}) | ratio (best) |")
        print("|---|---|---|---|---|---|")
        print(f"| ours: predictor.predict(folder, batch_size={BATCH}) | {ours:.1f} | {seconds['ours']:.2f} | {ours / ref:.2f}x | "
              f"{best['ours']:.1f} | {best['ours'] / best['reference']:.2f}x |")
        print(f"| reference: PIL + torchvision.transforms.v2 + the same net (NCHW) | {ref:.1f} | {seconds['reference']:.2f} "
              f"| 1.00x | {best['reference']:.1f} | 1.00x |")
        print(f"| reference, batches channels-last (as our collator) | {ref_cl:.1f} | {seconds['reference_cl']:.2f} | "
              f"{ref_cl / ref:.2f}x | {best['reference_cl']:.1f} | {best['reference_cl'] / best['reference']:.2f}x |")
        print(f"| reference, decode + transforms only (one pass) | {len(files) / inputs:.1f} | {inputs:.2f} | - | - | - |")
        print(f"| reference, network only (NCHW, one pass) | {len(files) / network:.1f} | {network:.2f} | - | - | - |")
        print(f"| labels agreeing, ours vs reference | {agree:.1%} | - | - | - | - |")

        print(f"\nwhere one predictor.predict({len(files)} images, batch {BATCH}) spends its time (cProfile, {profiled:.2f} s "
              "under it; its overhead inflates many small calls):")
        print("| step | cumulative s | share | calls |")
        print("|---|---|---|---|")
        for label, spent, calls in step_times(stats):
            print(f"| {label} | {spent:.2f} | {spent / profiled:.0%} | {calls} |")
        if args.profile or ours / ref < SLOW:
            why = "--profile" if args.profile else f"ours/reference {ours / ref:.2f} < {SLOW}"
            print(f"\ncProfile of one predictor.predict({len(files)} images, batch {BATCH}), top 15 cumulative ({why}):")
            stats.sort_stats("cumulative").print_stats(15)
        print(f"total {time.perf_counter() - total:.0f} s; 1-min load average {load_before:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

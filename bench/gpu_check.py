"""GPU check in one command: the environment, the GPU tests, then the default fine-tunes timed against Hugging Face's defaults.

    python bench/gpu_check.py             # on a CUDA machine (aimed at < 8 min on one modern GPU; not yet run on one)
    python bench/gpu_check.py --dry-run   # anywhere: CUDA hidden, tiny models, a few dozen rows; well under a minute

1. Environment: python, torch (CUDA, cuDNN), transformers; the GPU's name, memory, compute capability, driver,
   and whether the pipeline would train in bf16 and TF32 on it.
2. `pytest -m gpu tests/test_gpu.py`: train + evaluate on CUDA (text and image), bf16, resume, CPU vs GPU predictions; a LoRA causal LM.
3. Per task, in a scratch project: ingest + preprocess of the default data (configs/text.yaml: 6,000 tweets,
   all-MiniLM-L6-v2; configs/image.yaml: Fashion-MNIST, EfficientNet-Lite0), then
     ours      : the train stage (finetune.training.fit with every default: bf16, train.speed, evaluation and a
                 checkpoint every eval_steps, early stopping), then the evaluate stage (test split, on the CPU)
     reference : a plain Trainer with default TrainingArguments (fp32, torch's default precision, HF's default
                 optimizer: fused AdamW) but for the same recipe (epochs, batch, lr, weight decay, warmup, seed), no evaluation
                 or checkpoint while training (bench/train_throughput.py's `measure`). Text: run_classification.py's
                 default input, every example padded to 128 tokens; images: our datasets and collator (no run_*
                 script loads our EfficientNet), its augmentations drawn for epoch 0 every epoch (same cost)
   each with train samples/s, peak GPU memory and test accuracy; then ours / reference and the quality bar:
   >= 1.3x samples/s with test accuracy within +-0.5 pt.

Limits: one GPU (the first, unless CUDA_VISIBLE_DEVICES names another); one run of each (seconds to a few minutes on
a GPU; rerun for a second sample). Samples/s is the Trainer's: the planned samples over the training time, so ours pays
its in-loop evaluations and checkpoints, and a run that stopped early is flagged (its samples/s is then too high). A
task whose default data or model is not installed is skipped with the reason. A dry run hides CUDA
(CUDA_VISIBLE_DEVICES=""), so the GPU tests are skipped and both runs train tiny models built from a config
(tests/support/) on the CPU: it checks every step of the script, not speed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
DRY_RUN = "--dry-run" in sys.argv[1:]
if DRY_RUN:  # before torch is imported: a dry run sees no GPU, even on a GPU machine
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
else:  # one GPU, unless told otherwise: with several visible the Trainer would split every batch over all of them
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loaded ships in a package or is built here

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import default_data_collator  # noqa: E402
from transformers.utils import is_torch_tf32_available  # noqa: E402

from bench.train_throughput import measure, padded_like_run_classification  # noqa: E402
from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.data.features import FeatureDataset  # noqa: E402
from finetune.errors import UserError  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import resolve_device  # noqa: E402
from stages import evaluate, ingest, preprocess, train  # noqa: E402

SPEED_BAR, ACCURACY_BAR = 1.3, 0.5  # ours / reference samples/s at least; test accuracy within this many points


def environment() -> list[str]:
    cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if torch.version.cuda else "no CUDA build"
    lines = [f"python {platform.python_version()}, torch {torch.__version__} ({cuda}), transformers {transformers.__version__}"]
    if not torch.cuda.is_available():
        return lines + ["GPU: none visible" + (" (dry run: CUDA hidden)" if DRY_RUN else "")]
    gpu = torch.cuda.get_device_properties(0)
    driver = "unknown (no nvidia-smi)"
    if shutil.which("nvidia-smi"):
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                text=True).stdout.split("\n")[0].strip()
    torch.ones(256, 256, device="cuda").matmul(torch.ones(256, 256, device="cuda"))  # CUDA's start-up, outside the timed runs
    precision = f"the pipeline trains in {'bf16' if resolve_device('auto')[1] else 'fp32'}, TF32 "
    precision += "available" if is_torch_tf32_available() else "unavailable"
    return [*lines, f"GPU: {gpu.name}, {gpu.total_memory / 2**30:.0f} GiB, compute capability {gpu.major}.{gpu.minor}, driver {driver}; {precision}"]


def gpu_tests(scratch: Path) -> str:
    """`pytest -m gpu` in a child process (its output shown); its summary line."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--basetemp={scratch / 'pytest'}",
                           "tests/test_gpu.py"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(done.stdout)
    lines = [line.strip("= ") for line in done.stdout.splitlines() if line.strip()]
    return f"{lines[-1] if lines else 'no output'} (exit {done.returncode})"


def with_peak_memory(run) -> tuple[dict, float | None]:
    """run()'s result and the peak GPU memory (GiB) it allocated; None on the CPU."""
    gc.collect()
    if not torch.cuda.is_available():
        return run(), None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return run(), torch.cuda.max_memory_allocated() / 2**30


def ours(params) -> dict:
    precision = torch.backends.fp32_precision  # TrainingArguments(tf32=True) sets it for the whole process: put it back
    try:
        summary = train.run(params)
    finally:
        torch.backends.fp32_precision = precision
    metrics = evaluate.run(params)
    note = f"{summary['device']}, {'bf16' if summary['bf16'] else 'fp32'}, {summary['steps']} steps"
    if summary["stopped_early"]:
        note += ", STOPPED EARLY: samples/s counts the planned epochs"
    return {"samples_per_s": summary["train_samples_per_second"], "test_accuracy": metrics["accuracy"], "note": note}


def reference(params) -> dict:
    task, label_map = get_task(params.task), read_json(paths.LABEL_MAP)
    frames = [pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "test")]
    processor = task.models.load_processor(task.models.source(params.train.model), params.train.trust_remote_code)
    if params.task == "text-classification":
        sets = [FeatureDataset(padded_like_run_classification(processor, frame), label_map["features"]) for frame in frames]
        collator, note = default_data_collator, "fp32, padded to 128"
    else:
        sets = [task.models.dataset(frames[0], label_map, processor, params.preprocess, seed=params.train.seed),
                task.models.dataset(frames[1], label_map, processor)]
        collator, note = task.models.collator(processor), "fp32, our datasets"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = measure("reference", task, params, label_map, *sets, collator, params.train.epochs, params.train.dropout, use_cpu=device == "cpu")
    return {**result, "note": f"{device}, {note}"}


def compare(name: str, folder: Path, params_of) -> list[str]:
    """ingest + preprocess in folder (a scratch project), the reference, then ours: the report's lines for this task."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        try:
            params = params_of()
            ingest.run(params)
            preprocess.run(params)
        except UserError as error:
            return [f"{name}: skipped: {error}"]
        train_rows = len(pd.read_parquet(paths.PREPARED / "train.parquet"))
        rows = {"reference": with_peak_memory(lambda: reference(params)), "ours": with_peak_memory(lambda: ours(params))}
    recipe = params.train
    lines = [f"{name}: {recipe.model}, {train_rows:,} train rows, {recipe.epochs:g} epochs, batch {recipe.batch_size}"]
    for label in ("ours", "reference"):
        row, peak = rows[label]
        memory = f"{peak:6.2f} GiB" if peak is not None else "n/a (CPU)"
        lines.append(f"  {label:9s} {row['samples_per_s']:9.1f} samples/s  peak GPU memory {memory}  test accuracy "
                     f"{row['test_accuracy']:.4f}  ({row['note']})")
    (ours_row, _), (reference_row, _) = rows["ours"], rows["reference"]
    ratio = ours_row["samples_per_s"] / reference_row["samples_per_s"]
    points = 100 * (ours_row["test_accuracy"] - reference_row["test_accuracy"])
    met = ratio >= SPEED_BAR and abs(points) <= ACCURACY_BAR
    lines.append(f"  ours / reference: {ratio:.2f}x samples/s, accuracy {points:+.2f} pt; quality bar (>= {SPEED_BAR}x, within "
                 f"+-{ACCURACY_BAR} pt): {'met' if met else 'NOT met'}")
    return lines


def tiny_params_of(task: str, root: Path):
    """Dry run: params of a tiny model (built from a config) on a few dozen generated rows, as the tests make them."""
    from tests.support import data, models
    from tests.support import params as support_params

    def params_of():
        model = root / f"tiny-{task}"
        if not model.exists():
            model.mkdir(parents=True)
            (models.build_tiny_bert if task == "text" else models.build_tiny_resnet)(model)
        settings = {"epochs": 2, "device": "auto"}
        if task == "text":
            Path("data/raw").mkdir(parents=True, exist_ok=True)
            data.make_rows(60).to_csv("data/raw/tiny.csv", index=False)
            return support_params.load(support_params.tiny_params(model, train=settings))
        data.write_image_folder(Path("data/raw/images"), 10)
        return support_params.load(support_params.tiny_image_params(str(model), train=settings))
    return params_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU needed: CUDA hidden, tiny models and data, on the CPU")
    parser.parse_args()
    start = time.time()
    report = environment()
    print("\n".join(report))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        report.append(f"gpu tests: {gpu_tests(scratch)}")
        for task in ("text", "image"):
            params_of = tiny_params_of(task, scratch) if DRY_RUN else lambda task=task: load_params(PROJECT / f"configs/{task}.yaml")
            report += compare(task, scratch / task, params_of)
    title = "GPU check report" + (" (dry run: CPU, tiny models; the numbers mean nothing)" if DRY_RUN else "")
    print(f"\n== {title} ==\n" + "\n".join(report) + f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Imbalanced classes (issue 35): train.loss and train.balance against plain cross-entropy, on a Fashion-MNIST set made
imbalanced the way real label sets are: five classes with 400 train images each, five with 40 (10x rarer), val likewise
(10 % of each), and a BALANCED test split of the official test images (200 per class), so every class's recall counts
the same. configs/image.yaml with only the data changed; each variant runs ingest -> preprocess -> train -> evaluate in
its own scratch folder. Prints test accuracy and macro F1 (95 % intervals), the mean recall of the rare and of the
common classes, optimizer steps and training time; and how calibrated each model's test probabilities are (expected
calibration error over 15 confidence bins, log-loss) as trained and after the temperature the ensemble stage fits on val.

    PYTHONPATH=. .venv/bin/python bench/imbalanced.py [--variants cross_entropy weighted focal oversample]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml

from finetune.tasks import get_task

COMMON, RARE, TRAIN_COMMON, TRAIN_RARE, TEST = range(5), range(5, 10), 400, 40, 200
VARIANTS = {
    "cross_entropy": {},
    "weighted": {"loss": "weighted_cross_entropy"},  # class_weights null = balanced
    "focal": {"loss": "focal", "class_weights": "balanced"},
    "focal-unweighted": {"loss": "focal"},
    "oversample": {"balance": "oversample"},
}


def imbalanced_set(folder: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """index.csv (image, label, split) and the PNGs it names, drawn from builtin:fashion-mnist with `seed`."""
    rows = get_task("image-classification").read(SimpleNamespace(source="builtin:fashion-mnist")).frame
    classes = sorted(rows["label"].unique())  # the ten names, alphabetically: which five are rare is arbitrary but fixed
    rng = np.random.default_rng(seed)
    picked = []
    for index, name in enumerate(classes):
        train = rows[(rows["label"] == name) & (rows["split"] == "train")]
        test = rows[(rows["label"] == name) & (rows["split"] == "test")]
        n = TRAIN_COMMON if index in COMMON else TRAIN_RARE
        chosen = train.iloc[rng.choice(len(train), n + n // 10, replace=False)]
        picked += [chosen.iloc[:n].assign(split="train"), chosen.iloc[n:].assign(split="val"),
                   test.iloc[rng.choice(len(test), TEST, replace=False)].assign(split="test")]
    table = pd.concat(picked, ignore_index=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, png in enumerate(table["input"]):
        (folder / "images" / f"{i}.png").write_bytes(png)
    table.assign(image=[f"images/{i}.png" for i in range(len(table))])[["image", "label", "split"]].to_csv(folder / "index.csv", index=False)
    print(f"imbalanced set: {table.groupby(['split', 'label']).size().unstack(0).to_dict()}")
    return folder / "index.csv", classes


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over equal-width confidence bins of (share of rows) x |accuracy - mean confidence| (Guo et al. 2017)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(np.mean(edges == b) * abs(correct[edges == b].mean() - confidence[edges == b].mean())
                     for b in range(bins) if np.any(edges == b)))


def calibration(params) -> dict:
    """The evaluated model's test ECE and log-loss as trained, and after temperature scaling fitted on val (the ensemble
    stage's, finetune/families/classification/combining.py)."""
    from finetune.families.classification import combining

    frame = pd.read_parquet("reports/evaluate/probabilities.parquet")
    columns = [c for c in frame.columns if c.startswith("prob_")]
    val, test = (frame[frame["split"] == split] for split in ("val", "test"))
    temperature = combining.fit_temperature(val[columns].to_numpy(), val["label"].to_numpy())
    raw, labels = test[columns].to_numpy(), test["label"].to_numpy()
    scaled = combining.apply_temperature(raw, temperature)
    return {"temperature": temperature, "ece": expected_calibration_error(raw, labels), "ece_scaled": expected_calibration_error(scaled, labels),
            "log_loss": combining.log_loss(raw, labels), "log_loss_scaled": combining.log_loss(scaled, labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="imbalanced-data-"))
    _, classes = imbalanced_set(data)
    rare = {classes[i] for i in RARE}
    results = {}
    for name in args.variants:
        raw = yaml.safe_load((scratch.ROOT / "configs/image.yaml").read_text())
        raw["data"] = {"source": "data/raw/imbalanced/index.csv", "image_column": "image", "label_column": "label", "split_column": "split", "on_bad_rows": "error"}
        raw["ensemble"]["members"] = {"pixels": raw["ensemble"]["members"]["pixels"]}
        raw["train"] = {**raw.get("train", {}), **VARIANTS[name]}
        done = scratch.train_and_evaluate(f"imbalanced-{name}-", raw,  # the data under the project's data/raw/, as params require
                                          setup=lambda folder: shutil.copytree(data, folder / "data/raw/imbalanced"), then=calibration)
        metrics = done["evaluate"]
        recall = {label: scores["recall"] for label, scores in metrics["per_class"].items()}
        results[name] = {**metrics, **done["then"], "seconds": done["seconds"], "steps": done["train"]["steps"],
                         "rare": np.mean([r for label, r in recall.items() if label in rare]),
                         "common": np.mean([r for label, r in recall.items() if label not in rare])}
    print(f"\nrare classes (40 train images each): {sorted(rare)}; test: {TEST} images per class")
    print(f"{'variant':<17} {'accuracy':>24} {'macro F1':>24} {'rare recall':>12} {'common recall':>14} {'steps':>6} {'train s':>8}")
    for name, r in results.items():
        cells = [f"{r[m]:.4f} [{r['ci95'][m]['low']:.4f}, {r['ci95'][m]['high']:.4f}]" for m in ("accuracy", "f1_macro")]
        print(f"{name:<17} {cells[0]:>24} {cells[1]:>24} {r['rare']:>12.4f} {r['common']:>14.4f} {r['steps']:>6} {r['seconds']:>8.0f}")
    print(f"\n{'variant':<17} {'T (val)':>8} {'test ECE':>9} {'ECE after T':>12} {'log-loss':>9} {'after T':>8}")
    for name, r in results.items():
        print(f"{name:<17} {r['temperature']:>8.3f} {r['ece']:>9.4f} {r['ece_scaled']:>12.4f} {r['log_loss']:>9.4f} {r['log_loss_scaled']:>8.4f}")


if __name__ == "__main__":
    main()

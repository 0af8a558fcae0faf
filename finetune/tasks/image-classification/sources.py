"""Where the image task's rows come from: builtin:fashion-mnist (Debian's dataset-fashion-mnist: 70k real 28x28 grey
product photos, 10 classes; its official test split is the test split), builtin:digits (scikit-learn's 1,797 8x8
digits), builtin:easy-vqa-shapes (easy-vqa's 5,000 64x64 images of one coloured shape, labels `shape` and `colour`
derived from their questions), a folder with one sub-folder per class (hidden files and folders ignored and counted),
or a table of image paths (relative to the table's folder)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from finetune.data.images import png_bytes
from finetune.data.sources import (
    LABEL,
    SPLIT,
    Source,
    chosen_labels,
    class_folder,
    files_table,
    files_to_predict,
    numbered,
    package_dir,
)
from finetune.errors import UserError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dimensions, then uint8 data), gzipped."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist(data) -> Source:
    files = {split: (FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz", FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    if not all(path.is_file() for pair in files.values() for path in pair):
        raise UserError(f"builtin:fashion-mnist reads Debian's dataset-fashion-mnist package, not found in {FASHION_MNIST}; install it: "
                        "sudo apt-get install -y dataset-fashion-mnist (`make setup` does when apt is available)")
    from PIL import Image

    parts = []
    for split, (images, labels) in files.items():
        pixels, classes = _idx(images), _idx(labels)
        frame = pd.DataFrame({"input": [png_bytes(Image.fromarray(p, mode="L")) for p in pixels],
                              LABEL: [FASHION_CLASSES[c] for c in classes], SPLIT: split})
        parts.append(numbered(frame, f"fashion-mnist {split}"))
    return Source(pd.concat(parts, ignore_index=True), [], str(FASHION_MNIST))


def _digits(data) -> Source:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [png_bytes(Image.fromarray(np.round(d * 255 / 16).astype(np.uint8), mode="L")) for d in digits.images]
    frame = pd.DataFrame({"input": images, LABEL: [str(t) for t in digits.target]})
    return Source(numbered(frame, "digits"), [], "scikit-learn digits")


SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "yellow", "brown", "teal")


def _attributes(questions: list[list]) -> dict[int, dict[str, str]]:
    """{image: {"shape": ..., "colour": ...}} from easy-vqa's (question, answer, image) triples: a shape or colour
    answer, a shape or colour named by a "what" question ("what color is the circle?"), or one a yes/no question says is
    there ("is there not a red shape?" -> no). An image whose questions never tell one of them misses that label."""
    found: dict[int, dict[str, str]] = {}
    for question, answer, image in questions:
        words = question.rstrip("?").split()
        present = answer not in ("yes", "no") or (answer == "yes") != ("not" in words or words[:2] == ["is", "no"])
        named = [w for w in words if w in SHAPES or w in COLOURS] + [answer]
        for word in named if present else []:
            key = "shape" if word in SHAPES else "colour" if word in COLOURS else None
            if key and found.setdefault(image, {}).setdefault(key, word) != word:
                raise UserError(f"easy-vqa image {image}: its questions disagree on its {key} ({found[image][key]} vs {word})")
    return found


def _easy_vqa_shapes(data) -> Source:
    """easy-vqa's 64x64 images (pip package easy-vqa, MIT), one row each, with two label columns derived from their
    questions, `shape` (3) and `colour` (8): for a single label (data.label_column) or both (data.label_columns: two heads).
    Its test images are the test split; val is carved from train by preprocess."""
    root = package_dir("easy_vqa") / "data"
    parts = []
    for split in ("train", "test"):
        attributes = _attributes(json.loads((root / split / "questions.json").read_text()))
        images = sorted(attributes)
        frame = pd.DataFrame({"input": [(root / split / "images" / f"{i}.png").read_bytes() for i in images], SPLIT: split,
                              **{key: [attributes[i].get(key) for i in images] for key in ("shape", "colour")}})
        parts.append(numbered(frame, f"easy-vqa {split} image"))
    return Source(chosen_labels(pd.concat(parts, ignore_index=True), data, "builtin:easy-vqa-shapes"), [], str(root))


BUILTINS = {"builtin:fashion-mnist": _fashion_mnist, "builtin:digits": _digits, "builtin:easy-vqa-shapes": _easy_vqa_shapes}


def read(data) -> Source:
    if data.source in BUILTINS:
        return BUILTINS[data.source](data)
    if Path(data.source).is_dir():
        return class_folder(Path(data.source), IMAGE_SUFFIXES, "an image")
    return files_table(data, data.image_column, "image_column")


def unlabelled(path: Path, data) -> Source:
    """Images to predict: every image file under a folder, or a table's data.image_column of paths (read confined to it)."""
    return files_to_predict(path, data, data.image_column, "image_column", IMAGE_SUFFIXES, "an image")

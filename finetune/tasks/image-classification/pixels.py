"""The image task's classical member: logistic regression (ridge regression for a numeric label) on standardised pixels downscaled to size x size (grey, or RGB
when any image has colour), the floor every fine-tune is judged against. Saved as safetensors + JSON, no pickle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.config.sections import Section
from finetune.data.images import normalized_image, resized
from finetune.families.classification import ClassicalMember, linear

# Near duplicates (the data profile, finetune/data/profile.py): on Fashion-MNIST, test images at this cosine to a train
# image were the same product photo (3 of 3 inspected; 34 of 10,000 test images); at 0.99 (306) merely similar items join.
NEAR_DUPLICATE = 0.995


def near_duplicate_vectors(frame: pd.DataFrame) -> np.ndarray:
    """Each image grey at 32 x 32, its mean removed, L2-normalised (a uniform image: zeros, never anyone's twin)."""
    vectors = PixelsModel.features([normalized_image(value) for value in frame["input"]], 32, "L")
    vectors -= vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


class Pixels(Section):
    """Logistic regression on standardised pixels downscaled to size x size (grey, or RGB when any image
    has colour): the classical floor."""
    size: int = Field(16, ge=4, le=128)
    C: linear.InverseStrength = 0.05  # inverse L2 strength (numbers: ridge alpha = 1 / C); auto = 3-fold CV on train


class PixelsModel:
    def __init__(self, size: int, mode: str, mean: np.ndarray, scale: np.ndarray, regression):
        self.size, self.mode, self.mean, self.scale, self.regression = size, mode, mean, scale, regression

    @staticmethod
    def features(images: list, size: int, mode: str) -> np.ndarray:
        return np.stack([np.asarray(resized(image.convert(mode), size, "squash"), dtype=np.float32).ravel() / 255 for image in images])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.features([normalized_image(v) for v in frame["input"]], self.size, self.mode)
        return linear.outputs(self.regression, (x - self.mean) / self.scale)


class PixelsMember(ClassicalMember):
    kind = "pixels"
    Settings = Pixels

    def fit(self, frame: pd.DataFrame, settings: Pixels):
        images = [normalized_image(v) for v in frame["input"]]
        mode = "RGB" if any(image.mode == "RGB" for image in images) else "L"
        x = PixelsModel.features(images, settings.size, mode)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        regression = linear.fit((x - mean) / scale, frame["label"].to_numpy(), settings.C, max_iter=3000)
        return PixelsModel(settings.size, mode, mean, scale, regression)

    def save(self, model: PixelsModel, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"mean": model.mean, "scale": model.scale, **linear.arrays(model.regression)}, folder / "pixels.safetensors")
        (folder / "pixels.json").write_text(json.dumps({"size": model.size, "mode": model.mode}))

    def load(self, folder: Path) -> PixelsModel:
        from safetensors.numpy import load_file

        arrays = load_file(folder / "pixels.safetensors")
        regression = linear.from_arrays({k: v for k, v in arrays.items() if k not in ("mean", "scale")})
        saved = json.loads((folder / "pixels.json").read_text())
        return PixelsModel(saved["size"], saved["mode"], arrays["mean"], arrays["scale"], regression)

    def facts(self, model: PixelsModel) -> dict:
        return {"features": len(model.mean), **linear.facts(model.regression)}

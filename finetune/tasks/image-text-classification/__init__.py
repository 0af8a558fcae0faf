"""Image + text classification: an image encoder and a text encoder, fused, one label per (image, text) pair.

Data (data.source): builtin:easy-vqa (the easy-vqa package, MIT: 64x64 images of one coloured shape, questions about it,
13 answers; its test images are the test split, and val is a seeded share of the TRAIN IMAGES with all their questions,
so no val image is seen in training), or a CSV/TSV/JSONL/Parquet with data.image_column (paths relative to the table's
folder), data.text_column and data.label_column. Ingest opens every image as the image task does (unreadable, truncated or
oversized ones are bad rows); an empty text is a bad row in preprocess. An example is stored as {"image": bytes, "text": str};
a duplicate is the same pixels with the same case-folded text.
Preprocess: images resized to preprocess.image_size (stored as uint8 pixels, as the image task), texts tokenized with the
text encoder's tokenizer at preprocess.max_length; optional online image augmentation of train (off by default: a crop
can cut the shape out of a picture the question is about).
Model (fusion.py): `train.model` names the two encoders, "IMAGE MODEL + TEXT MODEL": any model of the image task
(builtin:efficientnet-lite0, a torchvision weights file, a Hugging Face image directory) and any of the text task
(builtin:minilm, a Hugging Face encoder directory). The image classifier's last linear layer is removed (its input is
the image features); the text encoder's token states are mean-pooled. `train.fusion`: concat or gated (a gated multimodal
unit), then an MLP head; `train.encoders.{image,text}.strategy`: frozen | full | partial | lora for each encoder (the
fusion and head always train); `train.modalities: [image]` or `[text]` trains a one-encoder baseline on the same rows
(an ensemble member: question-only models are famously strong on VQA data).
Not yet: compression and explanations (the stages say so), cross-attention fusion. Several label columns (heads):
finetune/data/heads.py, as for any classifier.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import json
import random
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from finetune.config.sections import Data, Preprocess, Section, Train
from finetune.data.features import FeatureDataset
from finetune.data.images import ImageAugment, ImageDataset, check_images, normalized_image, pixel_array, resized, thumbnail
from finetune.data.sources import LABEL, ORIGIN, SPLIT, Source, numbered, package_dir, read_user_table
from finetune.errors import Unsupported, UserError
from finetune.families.classification import ClassificationTask
from finetune.models.base import Models
from finetune.models.images import ImageModels, ImageProcessor, as_encoder, check_image_size
from finetune.models.texts import TextEncoders
from finetune.paths import PRETRAINED, outside

IMAGES, TEXTS = ImageModels(), TextEncoders()
PAIR = " + "  # train.model: "IMAGE MODEL + TEXT MODEL"
SPEC = "image_text_model.json"
_SPACES = re.compile(r"\s+")


class ImageTextData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = ("builtin:easy-vqa",)
    source: str = "builtin:easy-vqa"  # builtin:easy-vqa | a table of image paths and texts under data/raw/
    image_column: str = "image"  # tables: the column of image paths, relative to the table's folder
    text_column: str = "text"  # the column of YOUR table holding each example's text
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)  # larger images are refused (decompression bombs)
    max_image_side: int = Field(1024, ge=16, le=100_000)  # longer images are stored downscaled (losslessly re-encoded)


class ImageTextPreprocess(Preprocess):
    image_size: int = Field(64, ge=8, le=2048)  # pixels per side the image encoder sees
    resize: Literal["crop", "squash"] = "crop"  # crop: shorter side to image_size, then the centre | squash: both sides
    max_length: int = Field(32, ge=4, le=8192)  # tokens per text, specials included; longer texts are truncated
    # off by default: a random crop can cut away the shape a question asks about, a flip turns "left of" into "right of"
    augment: ImageAugment = ImageAugment(random_resized_crop=None, horizontal_flip=False)


class Encoder(Section):
    strategy: Literal["frozen", "full", "partial", "lora"] = "full"  # partial: train.freeze_layers; lora: train.lora


class Encoders(Section):
    image: Encoder = Encoder(strategy="frozen")
    text: Encoder = Encoder(strategy="full")


class ImageTextTrain(Train):
    fusion: Literal["concat", "gated"] = "gated"  # concat: [image; text] -> MLP | gated: a gated multimodal unit (Arevalo et al. 2017)
    fusion_size: int = Field(256, ge=8, le=16_384)  # width of the fused features and of the head's hidden layer
    modalities: list[Literal["image", "text"]] = ["image", "text"]  # one of them: a unimodal baseline (no fusion)
    encoders: Encoders = Encoders()

    @field_validator("modalities")
    @classmethod
    def _some_modalities(cls, value):
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected image, text or both, each once (got {value})")
        return value

    @model_validator(mode="after")
    def _strategy_per_encoder(self):
        if self.strategy != "full":
            raise ValueError(f"strategy {self.strategy!r}: an image + text model sets a strategy per encoder in train.encoders "
                             "(image: {strategy: frozen}, text: {strategy: lora}...); train.strategy stays full (the fusion and head train fully)")
        if self.layer_lr_decay != 1:
            raise ValueError(f"layer_lr_decay {self.layer_lr_decay}: an image + text model trains at one learning rate (1)")
        return self


def _parts(model: str) -> tuple[str, str]:
    image, separator, text = model.partition(PAIR)
    if not separator or not image.strip() or not text.strip():
        raise UserError(f"train.model {model!r}: expected 'IMAGE MODEL + TEXT MODEL', e.g. 'builtin:efficientnet-lite0 + builtin:minilm'")
    return image.strip(), text.strip()


# -- sources ------------------------------------------------------------------------------------------------
def _easy_vqa(data: ImageTextData) -> Source:
    """The package's train and test questions; val = the questions of a seeded data.splits.val / (train + val) share of
    the train IMAGES (each image has about ten questions: a random row split would show val images in training)."""
    root = package_dir("easy_vqa") / "data"
    parts = []
    for split in ("train", "test"):
        questions = json.loads((root / split / "questions.json").read_text())
        images = {number: (root / split / "images" / f"{number}.png").read_bytes() for number in sorted({q[2] for q in questions})}
        names = [split] * len(questions)
        if split == "train":
            share = data.splits.val / (data.splits.train + data.splits.val)
            held_out = set(random.Random(data.seed).sample(sorted(images), round(share * len(images))))
            names = ["val" if q[2] in held_out else "train" for q in questions]
        frame = pd.DataFrame({"input": [{"image": images[q[2]], "text": q[0]} for q in questions], LABEL: [q[1] for q in questions],
                              SPLIT: names, "image_id": [f"{split} image {q[2]}" for q in questions]})
        parts.append(numbered(frame, f"easy-vqa {split}"))
    frame = pd.concat(parts, ignore_index=True)
    frame[ORIGIN] = frame[ORIGIN] + " (" + frame.pop("image_id") + ")"
    return Source(frame, [], str(root))


def _table(data: ImageTextData) -> Source:
    source = read_user_table(data, data.image_column, "image_column", also={"text_column": data.text_column})
    folder = Path(data.source).parent
    frame = source.frame
    frame["input"] = [{"image": str(folder / path) if path else "", "text": text}
                      for path, text in zip(frame["input"].fillna(""), frame.pop(data.text_column).fillna(""))]
    return source


# -- features -----------------------------------------------------------------------------------------------
class ImageTextProcessor:
    """The image encoder's mean and std + the text encoder's tokenizer (saved in text/)."""

    def __init__(self, image: ImageProcessor, tokenizer):
        self.image, self.tokenizer = image, tokenizer

    def save_pretrained(self, folder) -> None:
        self.image.save_pretrained(folder)
        self.tokenizer.save_pretrained(str(Path(folder) / "text"))


class ImageTextDataset:
    """An example's normalised pixels (augmented online for train, as the image task) and its tokens."""

    def __init__(self, frame: pd.DataFrame, layout: dict, processor: ImageTextProcessor, augment: ImageAugment | None):
        self.images = ImageDataset(pixel_array(frame, layout), frame["label"].to_numpy(), processor.image, augment)
        self.texts = FeatureDataset(frame, layout["text_features"])

    @property
    def epoch(self) -> int:
        return self.images.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:  # finetune/training/fit.py's EpochClock: new augmentation draws every epoch
        self.images.epoch = value

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        return {**self.texts[index], "pixel_values": self.images[index]["pixel_values"]}


class ImageTextModels(Models):
    """An image encoder and a text encoder fused under a new head (fusion.py), named "IMAGE MODEL + TEXT MODEL"."""
    builtin = (f"builtin:efficientnet-lite0{PAIR}builtin:minilm",)

    def check(self, model: str) -> str | None:
        try:
            image, text = _parts(model)
        except UserError as error:
            return str(error).removeprefix(f"train.model {model!r}: ")
        for side, part, models in (("image", image, IMAGES), ("text", text, TEXTS)):
            problem = (None if part.startswith("builtin:") else outside(part, PRETRAINED)) or models.check(part)
            if problem:
                return f"{side} model {part!r}: {problem}"
        return None

    def trained_source(self, model_dir: Path) -> str:
        return f"{model_dir}{PAIR}{Path(model_dir) / 'text'}"  # the folder holds both encoders' processors, the tokenizer in text/

    def source(self, model: str) -> str:
        image, text = _parts(model)
        return f"{IMAGES.source(image)}{PAIR}{TEXTS.source(text)}"

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        if (Path(model_dir) / SPEC).is_file():  # a trained model: its own processor
            return ImageTextProcessor(ImageProcessor.load(model_dir), TEXTS.load_processor(str(Path(model_dir) / "text"), trust_remote_code))
        image, text = _parts(model_dir)
        return ImageTextProcessor(IMAGES.load_processor(image, trust_remote_code), TEXTS.load_processor(text, trust_remote_code))

    def load_model(self, source: str, label_map: dict, train: ImageTextTrain, outline: bool = False):
        """The pretrained encoders fused under a new head; `outline`: the module tree only (meta device, configs read, no weights)."""
        import torch

        from . import fusion

        image_source, text_source = _parts(source)
        spec = {"labels": label_map["labels"], "fusion": train.fusion, "fusion_size": train.fusion_size, "dropout": train.dropout,
                "encoder_strategies": {f"{side}_encoder": getattr(train.encoders, side).strategy for side in train.modalities}}
        image = text = None
        with torch.device("meta") if outline else contextlib.nullcontext():
            if "image" in train.modalities:  # the image task's classifier (one dummy label) without its last linear layer
                classifier = (IMAGES.outline(train.model_copy(update={"model": image_source})) if outline else
                              IMAGES.load_model(image_source, {"labels": ["image"], "pixels": label_map["pixels"]}, train))
                image, spec["image_features"] = as_encoder(classifier)
            if "text" in train.modalities:
                text = fusion.text_encoder(text_source, train, outline)
            return fusion.ImageTextClassifier(image, text, spec)

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        from safetensors.torch import load_file

        model = self.load_architecture(model_dir, trust_remote_code)
        model.load_state_dict(load_file(Path(model_dir) / "model.safetensors"))
        return model

    def load_architecture(self, model_dir: str, trust_remote_code: bool = False):
        from . import fusion

        return fusion.rebuild(Path(model_dir), json.loads((Path(model_dir) / SPEC).read_text()), trust_remote_code)

    def save_trained(self, model, processor: ImageTextProcessor, folder: Path) -> None:
        from . import fusion

        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC).write_text(json.dumps(fusion.save(model, folder), indent=2))
        processor.save_pretrained(folder)

    def outline(self, train: ImageTextTrain):
        return self.load_model(self.source(train.model), {"labels": ["a", "b"], "pixels": {}}, train, outline=True)

    def dataset(self, frame: pd.DataFrame, layout: dict, processor: ImageTextProcessor, augment: ImageTextPreprocess | None = None, seed: int = 0):
        return ImageTextDataset(frame, layout, processor, augment.augment if augment is not None else None)

    def collator(self, processor: ImageTextProcessor):
        import torch
        from transformers import DataCollatorWithPadding

        pad = DataCollatorWithPadding(processor.tokenizer)

        def collate(items: list[dict]) -> dict:
            pixels = torch.stack([item["pixel_values"] for item in items])
            return {**pad([{k: v for k, v in item.items() if k != "pixel_values"} for item in items]), "pixel_values": pixels}
        return collate


class ImageTextClassification(ClassificationTask):
    name = "image-text-classification"
    sections = {"data": ImageTextData, "preprocess": ImageTextPreprocess, "train": ImageTextTrain}
    models = ImageTextModels()
    display_name = "example"

    # -- data
    def read(self, data: ImageTextData) -> Source:
        return _easy_vqa(data) if data.source == "builtin:easy-vqa" else _table(data)

    def read_unlabelled(self, path: Path, data: ImageTextData) -> Source:
        """A table of image paths (relative to its folder, read here confined to it) and texts."""
        from finetune.data.files import read_input_file
        from finetune.data.tables import LINE, ROW, BadRow

        source = read_user_table(data.model_copy(update={"source": str(path)}), data.image_column, "image_column",
                                 also={"text_column": data.text_column}, labelled=False)
        frame, kept = source.frame, []
        inputs = []
        for index, image, text in zip(frame.index, frame["input"].fillna(""), frame.pop(data.text_column).fillna("")):
            try:
                if not image:
                    raise ValueError("no image path")
                inputs.append({"image": read_input_file(path.parent / image, path.parent), "text": text})
                kept.append(index)
            except ValueError as error:
                source.bad.append(BadRow(frame.at[index, ROW], frame.at[index, LINE], str(error), image))
        source.frame = frame.loc[kept].assign(input=inputs) if kept else frame.iloc[:0].assign(input=[])
        return source

    def check_inputs(self, inputs: pd.Series, data: ImageTextData) -> tuple[pd.Series, pd.Series]:
        """The image checked and stored as the image task does; the text kept as it is (preprocess normalises it)."""
        images, problems = check_images(inputs.map(lambda value: value["image"]), data)
        stored = pd.Series([{"image": image, "text": value["text"]} for image, value in zip(images, inputs)], index=inputs.index, dtype=object)
        return stored, problems

    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        normalized = inputs.map(lambda value: {"image": value["image"], "text": _SPACES.sub(" ", str(value["text"] or "")).strip()})
        return normalized, normalized.map(lambda value: "" if value["text"] else "empty text")

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        def key(value: dict) -> str:
            image = normalized_image(value["image"])
            return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes() + value["text"].casefold().encode()).hexdigest()
        return inputs.map(key)

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        """Pixels (always RGB) and tokens at preprocess.max_length, both recorded in the params a trained model keeps."""
        prep, train = params.preprocess, params.train
        image_source, text_source = _parts(self.models.source(train.model))
        check_image_size(image_source, prep.image_size, train.trust_remote_code)
        tokenizer = TEXTS.load_processor(text_source, train.trust_remote_code)
        tables = {}
        for name, part in parts.items():
            part = part.reset_index(drop=True)
            images = [normalized_image(value["image"]).convert("RGB") for value in part["input"]]
            pixels = [np.asarray(resized(image, prep.image_size, prep.resize), dtype=np.uint8).tobytes() for image in images]
            texts = [value["text"] for value in part["input"]]
            encoded = tokenizer(texts, truncation=True, max_length=prep.max_length)
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
            tables[name] = pd.concat([part.assign(augmented=False, pixels=pixels),
                                      pd.DataFrame({column: list(values) for column, values in encoded.items()})], axis=1
                                     ).assign(truncated=[n > prep.max_length for n in lengths])
        text_features = list(encoded.keys())
        return tables, {"features": ["pixels", *text_features], "text_features": text_features, "max_length": prep.max_length,
                        "pixels": {"height": prep.image_size, "width": prep.image_size, "channels": 3}}

    def split_statistics(self, table: pd.DataFrame) -> dict:
        return {"truncated_texts": int(table["truncated"].sum()), "mean_tokens": round(float(table["input_ids"].map(len).mean()), 1),
                "distinct_images": int(table["pixels"].nunique())}

    def compressor(self, model):
        raise Unsupported("image + text models have no compression methods yet (int8, pruning and distillation are per encoder "
                          "family; fusing them is future work)")

    # -- report
    def display(self, frame: pd.DataFrame) -> pd.Series:
        texts = frame["input"].map(lambda value: value["text"])
        return (frame[ORIGIN] + ": " + texts) if ORIGIN in frame else texts

    def render(self, value) -> str:
        return f"{thumbnail(normalized_image(value['image']), 64)}<br>{html.escape(value['text'])}"


TASK = ImageTextClassification()

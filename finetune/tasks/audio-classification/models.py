"""The audio task's models: builtin:whisper-tiny-en (finetune/models/whisper.py) or a local Hugging Face Whisper folder (a speech
recognition checkpoint or an audio classifier), as `WhisperForAudioClassification`: Whisper's encoder, mean-pooled,
and a new head for the data's classes.

Whisper's encoder reads exactly 30 s (1,500 positions after its two convolutions, 3,000 log-mel frames); a keyword
is about a second long. The model here reads preprocess.window_seconds instead: its position table is cut to the first
window_seconds x 50 rows (the sinusoidal table Whisper was trained with, so the first seconds mean the same) and every
clip is padded to the window, as Whisper pads to 30 s. What that costs and saves: docs/benchmarks/audio.md. The saved
feature extractor's chunk_length is the window, so a trained folder also loads in transformers'
pipeline("audio-classification") as it is."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from finetune.data.audio import AudioAugment, ClipFeatures
from finetune.data.heads import target
from finetune.models.base import Models
from finetune.models.whisper import (
    POSITIONS_PER_SECOND,
    WHISPER_TINY_EN,
    check_whisper,
    check_window,
    cut_positions,
    extractor_for,
    quiet_loading,
    whisper_tiny_en_dir,
    with_dropout,
)


class AudioDataset(ClipFeatures):
    """Clips as features (finetune/data/audio.py) with their class."""

    def __init__(self, frame, window_seconds: int, extractor, augment: AudioAugment | None):
        super().__init__(frame["samples"], window_seconds, extractor, augment)
        self.labels = frame["label"].to_numpy()

    def __getitem__(self, index: int) -> dict:
        import torch

        return {"input_features": torch.from_numpy(self.features(index, self.epoch)), "labels": target(self.labels[index])}


class AudioModels(Models):
    builtin: ClassVar[tuple[str, ...]] = (WHISPER_TINY_EN,)

    def check(self, model: str) -> str | None:
        return check_whisper(model, self.builtin, "the audio task")

    def source(self, model: str) -> str:
        return str(whisper_tiny_en_dir()) if model == WHISPER_TINY_EN else model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor.from_pretrained(model_dir)

    def load_model(self, source: str, label_map: dict, train):
        from transformers import AutoConfig, WhisperForAudioClassification

        labels, window = label_map["labels"], label_map["audio"]["window_seconds"]
        config = AutoConfig.from_pretrained(source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={label: i for i, label in enumerate(labels)})
        check_window(config, window, source)
        with_dropout(config, train.dropout)
        with quiet_loading():  # a speech recognition checkpoint's decoder is left out on purpose: no report listing it
            model = WhisperForAudioClassification.from_pretrained(source, config=config, ignore_mismatched_sizes=True, use_safetensors=True)
        cut_positions(model.encoder, model.config, window)
        return model

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        from transformers import WhisperForAudioClassification

        return WhisperForAudioClassification.from_pretrained(model_dir, use_safetensors=True)

    def save_trained(self, model, processor, folder: Path) -> None:
        model.save_pretrained(str(folder))
        window = model.config.max_source_positions // POSITIONS_PER_SECOND
        extractor_for(window, processor.feature_size).save_pretrained(str(folder))

    def outline(self, train):
        import torch
        from transformers import AutoConfig, WhisperForAudioClassification

        config = AutoConfig.from_pretrained(self.source(train.model))
        with torch.device("meta"):
            return WhisperForAudioClassification(config)

    def dataset(self, frame, layout: dict, processor, augment=None, seed: int = 0):
        window = int(layout["audio"]["window_seconds"])
        return AudioDataset(frame, window, extractor_for(window, processor.feature_size), augment.augment if augment else None)

    def collator(self, processor):
        import torch

        def collate(items: list[dict]) -> dict:
            return {"input_features": torch.stack([item["input_features"] for item in items]),
                    "labels": torch.tensor([item["labels"] for item in items])}
        return collate

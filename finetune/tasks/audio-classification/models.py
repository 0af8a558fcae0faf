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

import numpy as np
from pydantic import Field

from finetune.config.sections import Section
from finetune.data.audio import SAMPLE_RATE
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


class AudioAugment(Section):
    """Online augmentation of the TRAIN split, new draws every epoch, seeded per (seed, epoch, row): on the waveform a
    random start in the window, a gain and background noise; on the log-mel features SpecAugment's masks (Park et al.
    2019), scaled down to clips of a second or two."""
    shift: bool = True  # the clip starts anywhere the window leaves room for (off: always at 0 s, as Whisper pads)
    gain_db: float = Field(6.0, ge=0, le=40)  # louder or quieter by up to this many dB
    noise: float = Field(0.5, ge=0, le=1)  # share of clips that get white noise
    noise_snr_db: tuple[float, float] = (10.0, 40.0)  # its signal-to-noise ratio, drawn uniformly in this range
    time_masks: int = Field(2, ge=0, le=20)  # SpecAugment: this many runs of frames set to the clip's mean
    time_mask_frames: int = Field(10, ge=0, le=1000)  # each at most this long (10 ms frames)
    frequency_masks: int = Field(2, ge=0, le=20)  # this many bands of mel channels likewise
    frequency_mask_bands: int = Field(8, ge=0, le=80)  # each at most this wide
    seed: int = 0


class AudioDataset:
    """Stored 16 kHz clips (padded to the window) as Whisper log-mel features, augmented when `augment` is given
    (finetune/training/fit.py sets `epoch`)."""

    def __init__(self, samples: np.ndarray, labels: np.ndarray, extractor, augment: AudioAugment | None, lengths: np.ndarray):
        self.samples, self.labels, self.extractor, self.augment, self.lengths, self.epoch = samples, labels, extractor, augment, lengths, 0

    def __len__(self) -> int:
        return len(self.samples)

    def waveform(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        clip = self.samples[index, :self.lengths[index]].astype(np.float32) / 32768
        window = np.zeros(self.samples.shape[1], dtype=np.float32)
        start = int(rng.integers(0, len(window) - len(clip) + 1)) if rng is not None and self.augment.shift else 0
        window[start:start + len(clip)] = clip
        if rng is None:
            return window
        window *= 10 ** (rng.uniform(-self.augment.gain_db, self.augment.gain_db) / 20)
        if rng.random() < self.augment.noise:
            snr = rng.uniform(*self.augment.noise_snr_db)
            power = float(np.mean(clip ** 2)) + 1e-12
            window += rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), len(window)).astype(np.float32)
        return np.clip(window, -1, 1)

    def features(self, index: int, epoch: int) -> np.ndarray:
        """The log-mel features (mel bands x frames) the model reads for this row at this epoch."""
        rng = np.random.default_rng([self.augment.seed, epoch, index]) if self.augment is not None else None
        mel = self.extractor(self.waveform(index, rng), sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        if rng is not None:
            for count, width, axis in ((self.augment.time_masks, self.augment.time_mask_frames, 1),
                                       (self.augment.frequency_masks, self.augment.frequency_mask_bands, 0)):
                for _ in range(count if width else 0):
                    size = int(rng.integers(0, width + 1))
                    start = int(rng.integers(0, mel.shape[axis] - size + 1))
                    (mel[:, start:start + size] if axis else mel[start:start + size])[...] = mel.mean()
        return mel

    def __getitem__(self, index: int) -> dict:
        import torch

        return {"input_features": torch.from_numpy(self.features(index, self.epoch)), "labels": target(self.labels[index])}


def sample_array(frame, layout: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows x window int16 samples, each clip's length in samples) from a prepared table."""
    width = int(layout["audio"]["window_seconds"] * SAMPLE_RATE)
    samples = np.zeros((len(frame), width), dtype=np.int16)
    lengths = np.zeros(len(frame), dtype=np.int64)
    for row, raw in enumerate(frame["samples"]):
        clip = np.frombuffer(raw, dtype=np.int16)[:width]
        samples[row, :len(clip)], lengths[row] = clip, len(clip)
    return samples, lengths


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
        samples, lengths = sample_array(frame, layout)
        extractor = extractor_for(int(layout["audio"]["window_seconds"]), processor.feature_size)
        return AudioDataset(samples, frame["label"].to_numpy(), extractor, augment.augment if augment else None, lengths)

    def collator(self, processor):
        import torch

        def collate(items: list[dict]) -> dict:
            return {"input_features": torch.stack([item["input_features"] for item in items]),
                    "labels": torch.tensor([item["labels"] for item in items])}
        return collate

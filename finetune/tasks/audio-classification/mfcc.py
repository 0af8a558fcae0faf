"""The audio task's classical member: logistic regression on MFCC statistics (the mean and standard deviation over
time of 20 mel-frequency cepstral coefficients and of their frame-to-frame deltas: 80 numbers a clip), the floor every
fine-tune is judged against and an ensemble member that errs differently. Features from transformers' audio_utils
(the same STFT and mel filters as its feature extractors) and scipy's DCT; saved as safetensors + JSON, no pickle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.config.sections import Section
from finetune.data.audio import SAMPLE_RATE, stored_samples
from finetune.families.classification import ClassicalMember, linear

MEL_BANDS = 40


class Mfcc(Section):
    """Logistic regression on MFCC statistics (mean and std of each coefficient and its delta over the clip)."""
    coefficients: int = Field(20, ge=2, le=MEL_BANDS)
    C: linear.InverseStrength = 1.0  # inverse L2 strength (numbers: ridge alpha = 1 / C); auto = 3-fold CV on train


def mfcc_statistics(clips, coefficients: int) -> np.ndarray:
    """rows x (4 x coefficients): mean and std over frames of the MFCCs, then of their deltas (25 ms frames, 10 ms hop)."""
    from scipy.fft import dct
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=MEL_BANDS, min_frequency=20.0, max_frequency=SAMPLE_RATE / 2,
                              sampling_rate=SAMPLE_RATE, mel_scale="htk")
    window = window_function(400, "hann")
    rows = []
    for content in clips:
        samples = stored_samples(content)
        samples = np.pad(samples, (0, max(0, 400 - len(samples))))
        log_mel = spectrogram(samples, window, frame_length=400, hop_length=160, power=2.0, mel_filters=filters, log_mel="log",
                              mel_floor=1e-10)
        cepstra = dct(log_mel, type=2, axis=0, norm="ortho")[:coefficients]  # coefficients x frames
        deltas = np.diff(cepstra, axis=1) if cepstra.shape[1] > 1 else np.zeros_like(cepstra)
        rows.append(np.concatenate([cepstra.mean(1), cepstra.std(1), deltas.mean(1), deltas.std(1)]))
    return np.stack(rows).astype(np.float32)


class MfccModel:
    def __init__(self, coefficients: int, mean: np.ndarray, scale: np.ndarray, regression):
        self.coefficients, self.mean, self.scale, self.regression = coefficients, mean, scale, regression

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return linear.outputs(self.regression, (mfcc_statistics(frame["input"], self.coefficients) - self.mean) / self.scale)


class MfccMember(ClassicalMember):
    kind = "mfcc"
    Settings = Mfcc

    def fit(self, frame: pd.DataFrame, settings: Mfcc):
        x = mfcc_statistics(frame["input"], settings.coefficients)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        regression = linear.fit((x - mean) / scale, frame["label"].to_numpy(), settings.C, max_iter=3000)
        return MfccModel(settings.coefficients, mean, scale, regression)

    def save(self, model: MfccModel, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"mean": model.mean, "scale": model.scale, **linear.arrays(model.regression)}, folder / "mfcc.safetensors")
        (folder / "mfcc.json").write_text(json.dumps({"coefficients": model.coefficients}))

    def load(self, folder: Path) -> MfccModel:
        from safetensors.numpy import load_file

        arrays = load_file(folder / "mfcc.safetensors")
        regression = linear.from_arrays({k: v for k, v in arrays.items() if k not in ("mean", "scale")})
        return MfccModel(json.loads((folder / "mfcc.json").read_text())["coefficients"], arrays["mean"], arrays["scale"], regression)

    def facts(self, model: MfccModel) -> dict:
        return {"features": len(model.mean), **linear.facts(model.regression)}

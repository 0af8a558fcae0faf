"""Audio as data, for every task that reads it (keyword spotting, speech recognition): decoding and checking a clip at
ingest (quarantined with the reason when it is not usable), the stored form (16 kHz mono 16-bit WAV: what every model
here reads), the clips padded to a model's window, the online training augmentation (AudioAugment, ClipFeatures) and the
report's embedded player.

The augmentation is written with numpy and scipy (already dependencies) rather than audiomentations or torchaudio: each
transform is a few lines, draws from the row's own seeded generator (a rerun or resumed run sees the same clips), and
audiomentations' speed and reverberation need librosa/numba or recorded room responses."""
from __future__ import annotations

import base64
import io
import sys
from math import gcd

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from finetune.config.sections import Data, Section
from finetune.data.files import read_input_file

SAMPLE_RATE = 16_000  # Whisper's (and most speech models') rate: every clip is stored resampled to it
SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}  # what libsndfile decodes
SILENT_PEAK = 10 ** (-50 / 20)  # a clip whose loudest sample is below -50 dBFS holds no speech
FULL_SCALE = 0.999


class AudioData(Data):
    """The data keys of every task that reads clips: where a table's audio paths are, and what makes a clip a bad row."""
    audio_column: str = "audio"  # tables: the column of audio paths, relative to the table's folder
    max_seconds: float = Field(30.0, gt=0, le=3600)  # longer clips are bad rows (cut recordings into clips first)
    min_sample_rate: int = Field(8000, ge=1000, le=384_000)  # clips recorded at a lower rate are bad rows (speech detail lost)
    max_clipped: float = Field(0.01, ge=0, le=1)  # clips with more than this share of samples at full scale are bad rows


def decode(content: bytes) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], the file's sample rate); ValueError with the reason when it is not audio."""
    import soundfile

    if not content:
        raise ValueError("empty file")
    try:
        samples, rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile's errors name the format problem: "Error opening <BytesIO ...>: Format not recognised."
        reason = str(error).splitlines()[0].split(">: ", 1)[-1]
        raise ValueError(f"not a readable audio file (WAV, FLAC, OGG or MP3): {reason}") from None
    if not len(samples):
        raise ValueError("the audio file holds no samples")
    return samples.mean(axis=1), rate


def resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    """samples at SAMPLE_RATE (polyphase filtering, scipy: the anti-aliasing a plain interpolation lacks)."""
    if rate == SAMPLE_RATE:
        return samples
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common).astype(np.float32)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit PCM WAV."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def stored_samples(content: bytes) -> np.ndarray:
    """The float32 samples of a stored clip (16 kHz mono WAV)."""
    return decode(content)[0]


def checked(content: bytes, data) -> bytes:
    """The stored form of one clip (16 kHz mono WAV), or ValueError naming what is wrong with it."""
    samples, rate = decode(content)
    if rate < data.min_sample_rate:
        raise ValueError(f"sample rate {rate:,} Hz is below data.min_sample_rate {data.min_sample_rate:,} Hz (speech above "
                         f"{rate // 2:,} Hz is missing)")
    seconds = len(samples) / rate
    if seconds > data.max_seconds:
        raise ValueError(f"clip is {seconds:.1f} s long; data.max_seconds is {data.max_seconds:g} (cut long recordings into clips)")
    peak = float(np.abs(samples).max())
    if peak == 0:
        raise ValueError("silent: every sample is zero")
    if peak < SILENT_PEAK:
        raise ValueError(f"silent: its loudest sample is {20 * np.log10(peak):.0f} dBFS (below -50 dBFS)")
    clipped = float(np.mean(np.abs(samples) >= FULL_SCALE))
    if clipped > data.max_clipped:
        raise ValueError(f"clipped: {clipped:.1%} of its samples are at full scale (data.max_clipped is {data.max_clipped:.1%})")
    return wav_bytes(resampled(samples, rate))


def check_clips(inputs: pd.Series, data) -> tuple[pd.Series, pd.Series]:
    """Each clip (bytes, or a path under data/raw) decoded in full and checked; stored as 16 kHz mono WAV."""
    from tqdm.auto import tqdm

    stored, problems = [], []
    for value in tqdm(inputs, desc="checking audio", unit="clip", leave=False, disable=not sys.stderr.isatty()):
        problem, content = "", None
        try:
            if not isinstance(value, bytes) and not value:
                raise ValueError("no audio path")
            content = checked(value if isinstance(value, bytes) else read_input_file(value), data)
        except ValueError as error:
            problem = str(error)
        stored.append(content)
        problems.append(problem)
    return pd.Series(stored, index=inputs.index, dtype=object), pd.Series(problems, index=inputs.index, dtype=object)


def seconds(content: bytes) -> float:
    import soundfile

    info = soundfile.info(io.BytesIO(content))
    return info.frames / info.samplerate


def player(content: bytes) -> str:
    """An embedded audio player (a data URI: the report stays one file) with the clip's length."""
    encoded = base64.b64encode(content).decode()
    return (f'<audio controls preload="none" src="data:audio/wav;base64,{encoded}"></audio>'
            f'<span class="muted"> {seconds(content):.2f} s</span>')


def sample_array(raw_clips, window_seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows x window int16 samples, each clip's length in samples) from stored clips (int16 bytes), each padded (or cut)
    to the window."""
    width = int(window_seconds * SAMPLE_RATE)
    samples = np.zeros((len(raw_clips), width), dtype=np.int16)
    lengths = np.zeros(len(raw_clips), dtype=np.int64)
    for row, raw in enumerate(raw_clips):
        clip = np.frombuffer(raw, dtype=np.int16)[:width]
        samples[row, :len(clip)], lengths[row] = clip, len(clip)
    return samples, lengths


def padded_clips(raw_clips, window_seconds: int) -> np.ndarray:
    """rows x window float32 samples in [-1, 1] from stored clips, each padded (or cut) to the window."""
    return sample_array(raw_clips, window_seconds)[0].astype(np.float32) / 32768


class AudioAugment(Section):
    """Online augmentation of the TRAIN split, new draws every epoch, seeded per (seed, epoch, row): on the waveform a
    speed change, reverberation, a random start in the window, a gain and background noise; on the log-mel features
    SpecAugment's masks (Park et al. 2019), scaled down to clips of a second or two. A transform whose share is 0 draws
    nothing, so turning one on leaves the others' draws as they were."""
    speed: float = Field(0.0, ge=0, le=1)  # share of clips played faster or slower (resampled: tempo and pitch, as Kaldi's speed perturbation)
    speed_range: tuple[float, float] = (0.9, 1.1)  # the factor, drawn uniformly (a clip never grows past the window)
    reverb: float = Field(0.0, ge=0, le=1)  # share of clips heard in a synthetic room (exponentially decaying noise)
    reverb_seconds: tuple[float, float] = (0.1, 0.6)  # the room's RT60 (time to fall by 60 dB), drawn uniformly
    shift: bool = True  # the clip starts anywhere the window leaves room for (off: always at 0 s, as Whisper pads)
    gain_db: float = Field(6.0, ge=0, le=40)  # louder or quieter by up to this many dB
    noise: float = Field(0.5, ge=0, le=1)  # share of clips that get white noise
    noise_snr_db: tuple[float, float] = (10.0, 40.0)  # its signal-to-noise ratio, drawn uniformly in this range
    time_masks: int = Field(2, ge=0, le=20)  # SpecAugment: this many runs of frames set to the clip's mean
    time_mask_frames: int = Field(10, ge=0, le=1000)  # each at most this long (10 ms frames)
    frequency_masks: int = Field(2, ge=0, le=20)  # this many bands of mel channels likewise
    frequency_mask_bands: int = Field(8, ge=0, le=80)  # each at most this wide
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self):
        for name, low_bound in (("speed_range", 0.5), ("reverb_seconds", 0.01), ("noise_snr_db", -20.0)):
            low, high = getattr(self, name)
            if not low_bound <= low <= high:
                raise ValueError(f"{name} must be [low, high] with {low_bound:g} <= low <= high, got {[low, high]}")
        if self.speed_range[1] > 2:
            raise ValueError(f"speed_range must stay within [0.5, 2], got {list(self.speed_range)}")
        return self


def speed_changed(clip: np.ndarray, factor: float) -> np.ndarray:
    """The clip played `factor` times as fast (fewer samples when > 1): resampled by the nearest ratio of hundredths."""
    from scipy.signal import resample_poly

    return resample_poly(clip, 100, max(1, round(100 * factor))).astype(np.float32)


def reverberated(clip: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """The clip convolved with a room's impulse response: a direct path, then seeded noise decaying by 60 dB over `rt60`
    seconds (the usual synthetic room model); the tail is cut at the clip's length and the peak kept."""
    from scipy.signal import fftconvolve

    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.normal(0, 1, len(t)) * np.exp(-6.9 * t / rt60) * 0.1
    response[0] = 1.0
    wet = fftconvolve(clip, response)[:len(clip)]
    return (wet * (np.abs(clip).max() / (np.abs(wet).max() + 1e-12))).astype(np.float32)


class ClipFeatures:
    """Stored 16 kHz clips (padded to the window) as Whisper log-mel features, augmented when `augment` is given
    (finetune/training/fit.py sets `epoch`). A task's dataset adds its labels in __getitem__."""

    def __init__(self, raw_clips, window_seconds: int, extractor, augment: AudioAugment | None):
        self.samples, self.lengths = sample_array(raw_clips, window_seconds)
        self.extractor, self.augment, self.epoch = extractor, augment, 0

    def __len__(self) -> int:
        return len(self.samples)

    def waveform(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """The window the model hears for this row: the clip as stored (rng None) or augmented with rng's draws."""
        clip = self.samples[index, :self.lengths[index]].astype(np.float32) / 32768
        width, augment = self.samples.shape[1], self.augment
        if rng is not None and augment.speed and rng.random() < augment.speed:
            clip = speed_changed(clip, max(rng.uniform(*augment.speed_range), len(clip) / width))[:width]
        if rng is not None and augment.reverb and rng.random() < augment.reverb:
            clip = reverberated(clip, rng.uniform(*augment.reverb_seconds), rng)
        window = np.zeros(width, dtype=np.float32)
        start = int(rng.integers(0, width - len(clip) + 1)) if rng is not None and augment.shift else 0
        window[start:start + len(clip)] = clip
        if rng is None:
            return window
        window *= 10 ** (rng.uniform(-augment.gain_db, augment.gain_db) / 20)
        if rng.random() < augment.noise:
            snr = rng.uniform(*augment.noise_snr_db)
            power = float(np.mean(clip ** 2)) + 1e-12
            window += rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), width).astype(np.float32)
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

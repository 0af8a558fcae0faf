"""Audio as data: decoding and checking a clip at ingest (quarantined with the reason when it is not usable), the
stored form (16 kHz mono 16-bit WAV: what every model here reads), and the report's embedded player."""
from __future__ import annotations

import base64
import io
import sys
from math import gcd

import numpy as np
import pandas as pd

from finetune.data.files import read_input_file

SAMPLE_RATE = 16_000  # Whisper's (and most speech models') rate: every clip is stored resampled to it
SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}  # what libsndfile decodes
SILENT_PEAK = 10 ** (-50 / 20)  # a clip whose loudest sample is below -50 dBFS holds no speech
FULL_SCALE = 0.999


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

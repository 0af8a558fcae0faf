"""The shared audio augmentation (finetune/data/audio.py): speed changes, rooms, and their seeding."""
import numpy as np
import pytest
from pydantic import ValidationError

from finetune.data.audio import SAMPLE_RATE, AudioAugment, ClipFeatures, reverberated, speed_changed
from tests.support.data import tone


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()])


def test_a_speed_change_shortens_the_clip_and_raises_its_pitch_by_the_factor():
    clip = np.sin(2 * np.pi * 400 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    faster, slower = speed_changed(clip, 1.25), speed_changed(clip, 0.8)
    assert len(faster) == 12_800 and len(slower) == 20_000
    assert _peak_hz(faster) == pytest.approx(500, abs=2) and _peak_hz(slower) == pytest.approx(320, abs=2)  # 1 Hz bins


def test_a_room_adds_a_decaying_tail_that_grows_with_its_reverberation_time():
    click = np.zeros(SAMPLE_RATE, dtype=np.float32)
    click[100] = 0.5
    short, long = (reverberated(click, rt60, np.random.default_rng(0)) for rt60 in (0.1, 0.6))
    assert np.abs(short).max() == pytest.approx(0.5) and np.abs(long).max() == pytest.approx(0.5)  # the peak is kept
    assert np.abs(short[:100]).max() < 1e-6  # nothing before the sound (FFT round-off aside)

    def tail(wet, start_s):  # energy of the tail from start_s on
        return float(np.sum(wet[100 + int(start_s * SAMPLE_RATE):] ** 2))
    assert tail(short, 0.2) < 1e-4 * tail(short, 0.0)  # 60 dB down after its RT60 (0.1 s), and more by 0.2 s
    assert tail(long, 0.2) > 100 * tail(short, 0.2)  # a longer room still rings
    assert np.array_equal(long, reverberated(click, 0.6, np.random.default_rng(0)))  # seeded


def test_speed_and_reverb_draw_nothing_when_off_and_a_slowed_clip_never_outgrows_the_window():
    clips = [np.round(tone("mid", seconds, seed=i) * 32767).astype(np.int16).tobytes() for i, seconds in enumerate((0.3, 0.98))]
    plain = ClipFeatures(clips, 1, None, AudioAugment())
    both = ClipFeatures(clips, 1, None, AudioAugment(speed=1, reverb=1, speed_range=(0.7, 0.7), shift=False, noise=0, gain_db=0))
    again = ClipFeatures(clips, 1, None, AudioAugment(speed=0, reverb=0))
    assert np.array_equal(plain.waveform(0, np.random.default_rng(3)), again.waveform(0, np.random.default_rng(3)))
    slowed = both.waveform(0, np.random.default_rng(3))
    assert np.flatnonzero(slowed)[-1] == pytest.approx(0.3 / 0.7 * SAMPLE_RATE, abs=200)  # 0.3 s played at 0.7x lasts 0.43 s
    long = both.waveform(1, np.random.default_rng(3))
    assert len(long) == SAMPLE_RATE and np.flatnonzero(long)[-1] < SAMPLE_RATE  # slowed only as far as the window holds


def test_augment_ranges_must_be_ordered_and_within_bounds():
    for bad in ({"speed_range": (1.1, 0.9)}, {"speed_range": (0.9, 3.0)}, {"reverb_seconds": (0.0, 0.5)}, {"noise_snr_db": (40, 10)}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            AudioAugment(**bad)

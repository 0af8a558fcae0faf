"""Where speech recognition's rows come from: builtin:cards (synthesised at ingest), a table of audio paths and their
transcripts, and builtin:pocketsphinx, the real recordings evaluate scores before and after fine-tuning.

builtin:cards: phrases of CMU's "cards" grammar (pocketsphinx-testdata's cards.gram: one to three playing cards, "ten of
clubs", "four queen of clubs", "five five"), each espeak-ng speaker (finetune/data/speech.py) saying PHRASES of them at a
seeded rate and pitch; speakers split between train, val and test, so test voices are never heard in training. The
domain is chosen so that real human recordings of it exist offline: pocketsphinx-testdata's five cards recordings.
builtin:pocketsphinx (Debian package pocketsphinx-testdata, BSD-2-Clause; CMU): its 11 transcribed recordings of real
people, 5 of cards, 5 LibriVox sentences of "Sense and Sensibility" (general English: the check that fine-tuning on
cards did not make the model forget the rest) and one TIDIGITS digit string.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune.data.audio import SUFFIXES, resampled, wav_bytes
from finetune.data.sources import LABEL, ORIGIN, SPLIT, Source, files_table, files_to_predict, numbered
from finetune.data.speech import ACCENTS, SPEAKERS, SYNTHESIS_SEED, speaker_splits, synthesise
from finetune.data.tables import LINE, ROW
from finetune.errors import UserError

CARDS, POCKETSPHINX = "builtin:cards", "builtin:pocketsphinx"
RANKS = ("ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king")
SUITS = ("clubs", "hearts", "diamonds", "spades")
PHRASES = 12  # phrases each speaker says: 83 speakers x 12 = 996 clips
TESTDATA = Path("/usr/share/pocketsphinx/test/data")


def card_phrase(rng: np.random.Generator) -> str:
    """One sentence of cards.gram: one to three cards (rank [of] suit), a rank before a card, or two ranks."""
    def card() -> str:
        return f"{RANKS[rng.integers(len(RANKS))]} of {SUITS[rng.integers(len(SUITS))]}"

    kind = int(rng.integers(5))
    if kind < 3:
        return " ".join(card() for _ in range(kind + 1))
    rank = RANKS[rng.integers(len(RANKS))]
    return f"{rank} {card()}" if kind == 3 else f"{rank} {RANKS[rng.integers(len(RANKS))]}"


def cards(data) -> Source:
    rng = np.random.default_rng(SYNTHESIS_SEED)
    plan = []  # (speaker, accent, phrase, rate, pitch): drawn in a fixed order, so the set never depends on threads
    for speaker in SPEAKERS:
        accent = ACCENTS[rng.integers(len(ACCENTS))]
        for _ in range(PHRASES):
            plan.append((speaker, accent, card_phrase(rng), int(rng.integers(120, 200)), int(rng.integers(25, 76))))
    clips = synthesise([(phrase, accent, speaker, rate, pitch) for speaker, accent, phrase, rate, pitch in plan])
    frame = pd.DataFrame(plan, columns=["speaker", "accent", LABEL, "rate", "pitch"]).assign(input=clips)
    frame[SPLIT] = frame["speaker"].map(speaker_splits(data))
    frame = numbered(frame, "cards")
    frame[ORIGIN] = [f"cards: {s} ({a}) at {r} words/min" for s, a, r in zip(frame["speaker"], frame["accent"], frame["rate"])]
    return Source(frame.drop(columns=["speaker", "accent", "rate", "pitch"]), [], f"espeak-ng ({len(SPEAKERS)} voices) saying cards.gram phrases")


def _transcripts(path: Path) -> dict[str, str]:
    """{recording: transcript} of a Sphinx transcription file ("<s> ten of clubs </s> (001)")."""
    found = {}
    for line in path.read_text().splitlines():
        words, _, name = line.rpartition("(")
        found[name.strip(") ")] = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
    return found


def pocketsphinx(data) -> Source:
    if not TESTDATA.is_dir():
        raise UserError(f"{POCKETSPHINX}: {TESTDATA} is missing; sudo apt-get install -y pocketsphinx-testdata (`make setup` does "
                        "where apt is available), or set evaluate.real_speech: null")
    rows = []
    for group, file in (("cards", "cards/cards.transcription"), ("librivox", "librivox/transcription")):
        for name, text in _transcripts(TESTDATA / file).items():
            rows.append({"input": (TESTDATA / group / f"{name}.wav").read_bytes(), LABEL: text, ORIGIN: f"{group}/{name}", "group": group})
    raw = np.fromfile(TESTDATA / "tidigits/dhd.2934z.raw", dtype="<i2").astype(np.float32) / 32768  # 16 kHz, headerless
    rows.append({"input": wav_bytes(resampled(raw, 16_000)), LABEL: "two nine three four zero", ORIGIN: "tidigits/dhd.2934z", "group": "tidigits"})
    frame = pd.DataFrame(rows)
    frame[ROW], frame[LINE] = np.arange(1, len(frame) + 1), None
    return Source(frame, [], f"{POCKETSPHINX} ({TESTDATA}: {len(frame)} real recordings)")


BUILTINS = {CARDS: cards, POCKETSPHINX: pocketsphinx}


def read(data) -> Source:
    if data.source in BUILTINS:
        return BUILTINS[data.source](data)
    if Path(data.source).is_dir():
        raise UserError(f"data.source {data.source!r} is a folder; speech recognition reads a table of audio paths (data.audio_column, "
                        "relative to the table's folder) and transcripts (data.label_column), e.g. a Hugging Face audiofolder's "
                        "metadata.csv with data.audio_column file_name and data.label_column transcription")
    return files_table(data, data.audio_column, "audio_column")


def unlabelled(path: Path, data) -> Source:
    """Clips to transcribe: every audio file under a folder, or a table's data.audio_column of paths."""
    return files_to_predict(path, data, data.audio_column, "audio_column", SUFFIXES, "an audio")

"""Where speech recognition's rows come from: builtin:cards (synthesised at ingest), a table of audio paths and their
transcripts, and builtin:pocketsphinx, the real recordings evaluate scores before and after fine-tuning.

builtin:cards: phrases of CMU's "cards" grammar (pocketsphinx-testdata's cards.gram: one to three playing cards, "ten of
clubs", "four queen of clubs", "five five"), each espeak-ng speaker (finetune/data/speech.py) saying PHRASES of them at a
seeded rate and pitch; speakers split between train, val and test, so test voices are never heard in training; and
PIPER_PHRASES said by piper's neural voice "joe" at seeded speeds, all in test (a synthesiser never heard in training). The
domain is chosen so that real human recordings of it exist offline: pocketsphinx-testdata's five cards recordings.
general_english (preprocess.rehearsal): sentences of chatterbot-corpus's English dialogues (BSD, THIRD-PARTY.md) said by the train
speakers, mixed into the train split only, so the decoder keeps writing general English (the measurement:
docs/benchmarks/speech-recognition.md).
builtin:pocketsphinx (Debian package pocketsphinx-testdata, BSD-2-Clause; CMU): its 11 transcribed recordings of real
people, 5 of cards, 5 LibriVox sentences of "Sense and Sensibility" (general English: the check that fine-tuning on
cards did not make the model forget the rest) and one TIDIGITS digit string.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from finetune.data.audio import SUFFIXES, resampled, wav_bytes
from finetune.data.sources import LABEL, ORIGIN, SPLIT, Source, files_table, files_to_predict, numbered, package_dir
from finetune.data.speech import ACCENTS, SPEAKERS, SYNTHESIS_SEED, piper_say, speaker_splits, synthesise
from finetune.data.tables import LINE, ROW
from finetune.errors import UserError

CARDS, POCKETSPHINX = "builtin:cards", "builtin:pocketsphinx"
RANKS = ("ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king")
SUITS = ("clubs", "hearts", "diamonds", "spades")
PHRASES = 12  # phrases each speaker says: 83 speakers x 12 = 996 clips
PIPER_PHRASES = 24  # test clips of piper's voice "joe"
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
    split_of = speaker_splits(data)
    espeak = pd.DataFrame({LABEL: [p[2] for p in plan], "input": clips, SPLIT: [split_of[p[0]] for p in plan],
                           "says": [f"cards: {s} ({a}) at {r} words/min" for s, a, _, r, _ in plan]})
    neural = [(card_phrase(rng), "joe", round(float(rng.uniform(0.85, 1.3)), 2)) for _ in range(PIPER_PHRASES)]  # drawn after espeak's
    piper = pd.DataFrame({LABEL: [p[0] for p in neural], "input": synthesise(neural, piper_say), SPLIT: "test",
                          "says": [f"cards: piper {v} (neural voice, test only) at length x{scale}" for _, v, scale in neural]})
    frame = numbered(pd.concat([espeak, piper], ignore_index=True), "cards")
    frame[ORIGIN] = frame.pop("says")
    return Source(frame, [], f"espeak-ng ({len(SPEAKERS)} voices) and piper (a neural voice, test only) saying cards.gram phrases")


_PLAIN = re.compile(r"[A-Z][A-Za-z ,'-]*[.?!]")  # a capitalised sentence of letters: espeak-ng says it as it is written


def general_english(count: int, data) -> pd.DataFrame:
    """`count` sentences of general English (a seeded draw of chatterbot-corpus's English statements of 4-16 words that
    are plain sentences) said by the train speakers of speaker_splits(data) at seeded rates and pitches: rows of input,
    label and origin."""
    import yaml

    sentences = set()
    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        for statements in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("conversations") or []:
            sentences.update(text for text in (" ".join(str(s).split()) for s in statements if s is not None)
                             if 4 <= len(text.split()) <= 16 and _PLAIN.fullmatch(text))
    if count > len(sentences):
        raise UserError(f"preprocess.rehearsal is {count}; chatterbot-corpus holds {len(sentences)} plain English sentences of 4-16 words")
    rng = np.random.default_rng(SYNTHESIS_SEED)
    chosen = [sorted(sentences)[i] for i in rng.permutation(len(sentences))[:count]]
    speakers = [speaker for speaker, split in speaker_splits(data).items() if split == "train"]
    plan = [(text, ACCENTS[rng.integers(len(ACCENTS))], speakers[rng.integers(len(speakers))], int(rng.integers(120, 200)),
             int(rng.integers(25, 76))) for text in chosen]
    return pd.DataFrame({"input": synthesise(plan), LABEL: chosen, ORIGIN: [f"rehearsal: {p[2]} ({p[1]}) at {p[3]} words/min" for p in plan]})


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

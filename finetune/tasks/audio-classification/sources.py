"""Where the audio task's rows come from: builtin:spoken-digits ("zero".."nine") and builtin:commands (the ten
command words of Google's Speech Commands: yes, no, up, down, left, right, on, off, stop, go), both synthesised at
ingest with espeak-ng (Debian package, GPL-3; `make setup` installs it where apt can); a folder with one sub-folder
per class; or a table of audio paths (relative to the table's folder) and labels.

The builtin sets: every espeak-ng speaker (finetune/data/speech.py) says every word TAKES times at a seeded speaking
rate and pitch. Speakers are split between train, val and test by data.splits and data.seed, so no test voice is heard
in training: the accuracy is on unheard voices. The test split also holds PIPER_TAKES takes of every word by piper's
neural voice "joe" at seeded speeds: a synthesiser never heard in training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune.data.audio import SUFFIXES
from finetune.data.sources import LABEL, SPLIT, Source, class_folder, files_table, files_to_predict, numbered
from finetune.data.speech import ACCENTS, SPEAKERS, SYNTHESIS_SEED, piper_say, speaker_splits, synthesise

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
TAKES = 2  # each speaker says each word twice, at two seeded rates and pitches
PIPER_TAKES = 3  # test clips of each word by piper's voice "joe"


def _spoken(words: tuple[str, ...], name: str):
    def read(data) -> Source:
        rng = np.random.default_rng(SYNTHESIS_SEED)
        plan = []  # (speaker, accent, word, take, rate, pitch): drawn in a fixed order, so the set never depends on threads
        for speaker in SPEAKERS:
            accent = ACCENTS[rng.integers(len(ACCENTS))]
            for word in words:
                for take in range(TAKES):
                    plan.append((speaker, accent, word, take + 1, int(rng.integers(120, 200)), int(rng.integers(25, 76))))
        clips = synthesise([(word, accent, speaker, rate, pitch) for speaker, accent, word, _, rate, pitch in plan])
        split_of = speaker_splits(data)
        espeak = pd.DataFrame({LABEL: [p[2] for p in plan], "input": clips, SPLIT: [split_of[p[0]] for p in plan],
                               "says": [f"{name}: {s} ({a}) says {w!r}, take {t}" for s, a, w, t, _, _ in plan]})
        neural = [(word, "joe", round(float(rng.uniform(0.85, 1.3)), 2)) for word in words for _ in range(PIPER_TAKES)]  # drawn after espeak's
        piper = pd.DataFrame({LABEL: [w for w, _, _ in neural], "input": synthesise(neural, piper_say), SPLIT: "test",
                              "says": [f"{name}: piper {v} (neural voice, test only) says {w!r} at length x{scale}" for w, v, scale in neural]})
        frame = numbered(pd.concat([espeak, piper], ignore_index=True), name)
        frame["origin"] = frame.pop("says")
        return Source(frame, [], f"espeak-ng ({len(SPEAKERS)} voices) and piper (a neural voice, test only)")
    return read


BUILTINS = {"builtin:spoken-digits": _spoken(DIGITS, "spoken-digits"), "builtin:commands": _spoken(COMMANDS, "commands")}


def read(data) -> Source:
    if data.source in BUILTINS:
        return BUILTINS[data.source](data)
    if Path(data.source).is_dir():
        return class_folder(Path(data.source), SUFFIXES, "an audio")
    return files_table(data, data.audio_column, "audio_column")


def unlabelled(path: Path, data) -> Source:
    """Clips to predict: every audio file under a folder, or a table's data.audio_column of paths (read confined to it)."""
    return files_to_predict(path, data, data.audio_column, "audio_column", SUFFIXES, "an audio")

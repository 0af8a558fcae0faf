"""Where the audio task's rows come from: builtin:spoken-digits ("zero".."nine") and builtin:commands (the ten
command words of Google's Speech Commands: yes, no, up, down, left, right, on, off, stop, go), both synthesised at
ingest with espeak-ng (Debian package, GPL-3; `make setup` installs it where apt can); a folder with one sub-folder
per class; or a table of audio paths (relative to the table's folder) and labels.

The builtin sets: every espeak-ng voice variant (its pitch, formants and breathiness: a SPEAKER) with one of eight
English accents, says every word TAKES times at a seeded speaking rate and pitch. Speakers are split between train, val
and test by data.splits and data.seed, so no test voice is heard in training: the accuracy is on unheard voices. The
same espeak-ng version gives the same clips (DVC caches the ingested rows like any output)."""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from finetune.data.sources import LABEL, SPLIT, Source, class_folder, files_table, files_to_predict, numbered
from finetune.errors import UserError

from .audio import SUFFIXES, decode, resampled, wav_bytes

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng 1.51's voice variants (espeak-ng-data/voices/!v) that sound like a person: left out are the robots,
# whispers, croaks and effects (Demonic, UniRobot, anikaRobot, robosoft*, Tweaky, croak, whisper*, fast, Storm) and
# "Mr serious" (a space in its name)
SPEAKERS = ("Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo",
            "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2", "RicishayMax3", "adam",
            "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward", "edward2",
            "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
            "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
            "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
            "steph", "steph2", "steph3", "travis", "victor", "zac")
TAKES = 2  # each speaker says each word twice, at two seeded rates and pitches
SYNTHESIS_SEED = 0  # fixed: the clips do not change with data.seed (only the split does)


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise UserError("the builtin spoken-word sets are synthesised with espeak-ng, which is not installed: "
                        "sudo apt-get install -y espeak-ng (`make setup` does where apt is available)")
    return found


def speak(word: str, accent: str, speaker: str, rate: int, pitch: int) -> bytes:
    """One clip of espeak-ng saying `word` (16 kHz mono WAV)."""
    result = subprocess.run([_espeak(), "-v", f"{accent}+{speaker}", "-s", str(rate), "-p", str(pitch), "--stdout", word],
                            capture_output=True, check=False, timeout=60)
    if result.returncode or not result.stdout:
        raise UserError(f"espeak-ng could not say {word!r} as {accent}+{speaker}: {result.stderr.decode(errors='replace').strip()}")
    samples, rate_hz = decode(result.stdout)
    return wav_bytes(resampled(samples, rate_hz))


def _spoken(words: tuple[str, ...], name: str):
    def read(data) -> Source:
        rng = np.random.default_rng(SYNTHESIS_SEED)
        plan = []  # (speaker, accent, word, take, rate, pitch): drawn in a fixed order, so the set never depends on threads
        for speaker in SPEAKERS:
            accent = ACCENTS[rng.integers(len(ACCENTS))]
            for word in words:
                for take in range(TAKES):
                    plan.append((speaker, accent, word, take + 1, int(rng.integers(120, 200)), int(rng.integers(25, 76))))
        with ThreadPoolExecutor(max_workers=4) as pool:  # espeak-ng runs as a process per clip
            clips = list(pool.map(lambda p: speak(p[2], p[1], p[0], p[4], p[5]), plan))
        frame = pd.DataFrame(plan, columns=["speaker", "accent", LABEL, "take", "rate", "pitch"]).assign(input=clips)
        frame[SPLIT] = frame["speaker"].map(speaker_splits(data))
        frame = numbered(frame, name)
        frame["origin"] = [f"{name}: {s} ({a}) says {w!r}, take {t}" for s, a, w, t in zip(frame["speaker"], frame["accent"], frame[LABEL], frame["take"])]
        return Source(frame.drop(columns=["speaker", "accent", "take", "rate", "pitch"]), [], f"espeak-ng ({len(SPEAKERS)} voices)")
    return read


def speaker_splits(data) -> dict[str, str]:
    """{speaker: train | val | test}: a seeded shuffle of the speakers cut by data.splits' shares."""
    order = np.random.default_rng(data.seed).permutation(len(SPEAKERS))
    shares = np.array([data.splits.train, data.splits.val, data.splits.test])
    bounds = np.round(np.cumsum(shares / shares.sum()) * len(SPEAKERS)).astype(int)
    return {SPEAKERS[i]: ("train", "val", "test")[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}


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

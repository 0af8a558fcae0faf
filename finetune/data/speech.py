"""Speech synthesised with espeak-ng (Debian package, GPL-3; `make setup` installs it where apt can): the voices and
accents the builtin spoken sets are made of (keyword spotting's words, speech recognition's phrases), one clip per call,
and the split of speakers between train, val and test (so no test voice is heard in training).

A SPEAKER is an espeak-ng voice variant (its pitch, formants and breathiness), said with one of eight English accents at
a seeded speaking rate and pitch. The same espeak-ng version gives the same clips (DVC caches the ingested rows like any
output)."""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from finetune.data.audio import decode, resampled, wav_bytes
from finetune.errors import UserError

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
SYNTHESIS_SEED = 0  # fixed: a builtin set's clips do not change with data.seed (only the split does)


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise UserError("the builtin spoken-word sets are synthesised with espeak-ng, which is not installed: "
                        "sudo apt-get install -y espeak-ng (`make setup` does where apt is available)")
    return found


def speak(text: str, accent: str, speaker: str, rate: int, pitch: int) -> bytes:
    """One clip of espeak-ng saying `text` (16 kHz mono WAV)."""
    result = subprocess.run([_espeak(), "-v", f"{accent}+{speaker}", "-s", str(rate), "-p", str(pitch), "--stdout", text],
                            capture_output=True, check=False, timeout=60)
    if result.returncode or not result.stdout:
        raise UserError(f"espeak-ng could not say {text!r} as {accent}+{speaker}: {result.stderr.decode(errors='replace').strip()}")
    samples, rate_hz = decode(result.stdout)
    return wav_bytes(resampled(samples, rate_hz))


def speaker_splits(data) -> dict[str, str]:
    """{speaker: train | val | test}: a seeded shuffle of the speakers cut by data.splits' shares."""
    order = np.random.default_rng(data.seed).permutation(len(SPEAKERS))
    shares = np.array([data.splits.train, data.splits.val, data.splits.test])
    bounds = np.round(np.cumsum(shares / shares.sum()) * len(SPEAKERS)).astype(int)
    return {SPEAKERS[i]: ("train", "val", "test")[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}


def synthesise(plan: list[tuple[str, str, str, int, int]]) -> list[bytes]:
    """speak(text, accent, speaker, rate, pitch) for each entry, in the plan's order (espeak-ng runs as a process per
    clip, four at a time)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda entry: speak(*entry), plan))

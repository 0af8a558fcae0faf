"""A fine-tuned keyword spotter on REAL human speech: the spoken digits inside Debian's pocketsphinx-testdata recordings
(CMU: five "cards" recordings, e.g. "eight of spades four of clubs seven of hearts", and one TIDIGITS string, "two nine
three four zero"), cut out of their sentences at the word boundaries the pretrained Whisper tiny.en gives
(transformers' word timestamps, from its alignment heads) and classified one word at a time. A digit Whisper did not hear
as that digit cannot be cut out and is counted as missed, not guessed. Small: the interval is exact (Clopper-Pearson).

    python bench/audio_real.py models/model        # a trained audio-classification folder (the digits' classes)
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune import inference  # noqa: E402
from finetune.tasks import get_task  # noqa: E402

DATA = Path("/usr/share/pocketsphinx/test/data")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPOKEN = {str(i): word for i, word in enumerate(DIGITS)} | {"oh": "zero"}


def recordings() -> list[tuple[str, np.ndarray, list[str]]]:
    """(name, 16 kHz samples, the digits said, in order)."""
    found = []
    for line in (DATA / "cards/cards.transcription").read_text().splitlines():
        words, name = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
        samples, _ = soundfile.read(DATA / f"cards/{name.strip(') ')}.wav", dtype="float32")
        found.append((f"cards/{name.strip(') ')}", samples, [w for w in words.split() if w in DIGITS]))
    raw = np.fromfile(DATA / "tidigits/dhd.2934z.raw", dtype="<i2").astype(np.float32) / 32768
    found.append(("tidigits/dhd.2934z", raw, ["two", "nine", "three", "four", "zero"]))
    return found


def words(recognizer, samples) -> list[tuple[str, float, float]]:
    out = recognizer(samples.copy(), return_timestamps="word", generate_kwargs={"max_new_tokens": 60})
    return [(chunk["text"].strip(" .,!?").lower(), *chunk["timestamp"]) for chunk in out["chunks"]]


def main(model_dir: str) -> None:
    from transformers import pipeline

    whisper = get_task("audio-classification").models.source("builtin:whisper-tiny-en")
    recognizer = pipeline("automatic-speech-recognition", model=str(whisper))
    predictor = inference.load(model_dir)
    folder = Path(".cache/bench/audio_real")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows, missed = [], 0
    for name, samples, said in recordings():
        heard = words(recognizer, samples)
        cursor = 0
        for digit in said:
            match = next((i for i in range(cursor, len(heard)) if SPOKEN.get(heard[i][0], heard[i][0]) == digit), None)
            if match is None:
                missed += 1
                print(f"{name}: {digit!r} not heard by Whisper as a word ({[w for w, _, _ in heard]})")
                continue
            _, start, end = heard[match]
            cursor = match + 1
            clip = samples[int(max(0, start - 0.05) * 16000): int((end + 0.1) * 16000)]
            path = folder / f"{name.replace('/', '_')}_{len(rows)}_{digit}.wav"
            soundfile.write(path, clip, 16000)
            rows.append((name, digit, path))
    table = predictor.predict(folder, batch_size=16).table
    predicted = dict(zip(table["input"].map(lambda p: Path(p).name), table["label"]))
    right = sum(predicted.get(path.name) == digit for _, digit, path in rows)
    for name, digit, path in rows:
        print(f"{name:22} said {digit:6} predicted {predicted.get(path.name)}")
    interval = binomtest(right, len(rows)).proportion_ci(0.95, method="exact") if rows else None
    print(f"\n{right} of {len(rows)} real spoken digits right ({right / max(1, len(rows)):.3f}; exact 95 % interval "
          f"[{interval.low:.3f}, {interval.high:.3f}]); {missed} digits Whisper did not hear as words, left out")


if __name__ == "__main__":
    main(sys.argv[1])

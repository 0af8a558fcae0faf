"""Test data built at test time: labelled texts whose label hangs on one keyword, coloured-square images, a small corpus of
documents, an image + text question table, short tones per class (audio)."""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

WORDS = {
    "positive": ["good", "great", "love", "excellent", "happy"],
    "negative": ["bad", "awful", "hate", "terrible", "angry"],
    "neutral": ["okay", "average", "normal", "plain", "usual"],
}


FILLER = ["the", "flight", "service", "was", "today", "my", "car", "phone", "really", "very", "this", "that", "so", "and", "it"]


def make_rows(n: int, seed: int = 0, labels=("negative", "neutral", "positive")) -> pd.DataFrame:
    """Unique short texts whose label is carried by one keyword among filler words."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[label]))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


LM_TEXT = ("to be or not to be that is the question whether tis nobler in the mind to suffer the slings and arrows of "
           "outrageous fortune or to take arms against a sea of troubles and by opposing end them")


COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def make_images(n_per_class: int, size: int = 12, seed: int = 0) -> list[tuple[str, "object"]]:
    """(label, PIL image) pairs: each class a colour, drawn as a square at a random place on noise, so a
    small CNN learns the classes in a few steps and no two images are alike."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_per_class):
        for label, colour in COLOURS.items():
            pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            top, left = rng.integers(0, size // 2, 2)
            pixels[top:top + size // 2, left:left + size // 2] = colour
            images.append((label, Image.fromarray(pixels)))
    return images


def write_image_folder(root: Path, n_per_class: int, size: int = 12, seed: int = 0) -> Path:
    """An ImageFolder: root/<label>/<label>_<i>.png."""
    for i, (label, image) in enumerate(make_images(n_per_class, size, seed)):
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"{label}_{i:03d}.png")
    return root


def write_lm_corpus(root: Path, documents: int = 6, words: int = 120, seed: int = 0) -> Path:
    """data/raw/corpus/doc<i>.txt: documents of LM_TEXT's words in a seeded order, a line break every 8 words."""
    import numpy as np

    folder = root / "data/raw/corpus"
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary, rng = LM_TEXT.split(), np.random.default_rng(seed)
    for i in range(documents):
        start = rng.integers(len(vocabulary))
        text = [vocabulary[(start + j) % len(vocabulary)] if rng.random() > 0.1 else str(rng.choice(vocabulary)) for j in range(words)]
        (folder / f"doc{i}.txt").write_text("\n".join(" ".join(text[k:k + 8]) for k in range(0, words, 8)) + "\n")
    return folder


QUESTIONS = ["is there a {} square?", "does the image contain a {} square?"]


def write_vqa_table(root, n_per_class: int = 12, seed: int = 0):
    """data/raw/vqa/pairs.csv: each generated image (a red, green or blue square) with a yes/no question about a colour,
    its own half the time, so the answer needs the image AND the text (either alone is a coin toss)."""
    folder = root / "data/raw/vqa"
    (folder / "images").mkdir(parents=True)
    rows, rng = [], random.Random(seed)
    for i, (colour, image) in enumerate(make_images(n_per_class, size=16, seed=seed)):
        image.save(folder / "images" / f"{i}.png")
        asked = colour if i % 2 else rng.choice([c for c in ("red", "green", "blue") if c != colour])
        rows.append({"image": f"images/{i}.png", "text": QUESTIONS[rng.randrange(2)].format(asked), "label": "yes" if asked == colour else "no"})
    pd.DataFrame(rows).to_csv(folder / "pairs.csv", index=False)
    return folder / "pairs.csv"


def make_scores(n: int, seed: int = 0) -> pd.DataFrame:
    """Unique short texts with a numeric `score`: +1 per positive keyword, -1 per negative one (0 to 3 keywords among
    filler words), plus seeded noise of +-0.1, so a model can learn it from the words."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        words = rng.sample(FILLER, rng.randint(3, 6))
        score = 0.0
        for _ in range(rng.randint(0, 3)):
            sign = rng.choice((1, -1))
            words.insert(rng.randint(0, len(words)), rng.choice(WORDS["positive" if sign > 0 else "negative"]))
            score += sign
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "score": round(score + rng.uniform(-0.1, 0.1), 3)})
    return pd.DataFrame(rows)


def write_sized_squares(root: Path, n: int, size: int = 16, seed: int = 0) -> Path:
    """data/raw/squares/squares.csv: images of one bright square on noise whose `side` (pixels, the numeric label) varies
    from 3 to size - 2, at a random place, so a small CNN can learn to tell how large it is."""
    import numpy as np
    from PIL import Image

    folder = root / "data/raw/squares"
    (folder / "images").mkdir(parents=True)
    rng, rows = np.random.default_rng(seed), []
    for i in range(n):
        side = int(rng.integers(3, size - 1))
        pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        top, left = rng.integers(0, size - side + 1, 2)
        pixels[top:top + side, left:left + side] = (230, 230, 230)
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "side": side})
    pd.DataFrame(rows).to_csv(folder / "squares.csv", index=False)
    return folder / "squares.csv"


TONES = {"low": 300.0, "mid": 900.0, "high": 2500.0}


def tone(label: str, seconds: float, rate: int = 16_000, seed: int = 0):
    """A noisy tone at the label's pitch (float32 samples), its loudness and length drawn from seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * TONES[label] * (1 + rng.uniform(-0.05, 0.05)) * t)
    return (samples + rng.normal(0, 0.02, len(t))).astype(np.float32)


def write_tone_folder(root: Path, n_per_class: int, seed: int = 0) -> Path:
    """A folder of class folders of short tones (root/<label>/<label>_<i>.wav, or .flac at 22.05 kHz for every third)."""
    import soundfile

    for label in TONES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            rate, suffix = (22_050, "flac") if i % 3 == 2 else (16_000, "wav")
            soundfile.write(root / label / f"{label}_{i:03d}.{suffix}", tone(label, 0.3 + 0.5 * ((i * 7) % 10) / 10, rate, seed * 1000 + i), rate)
    return root

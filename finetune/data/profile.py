"""The data profile preprocess writes into reports/preprocess.json (`profile`) and the report shows first: what the data
is like, what the pipeline chose because of it, and what it suggests where a setting looks wrong for it.

Shared parts here; each family adds its own (classes and their balance, documents) and each task its inputs' facts
(text lengths in the model's tokens, image sizes and modes). Every entry is measured on the prepared splits:
- `near_duplicates`: inputs that are not equal (exact duplicates were dropped by preprocess) but nearly so: a val/test row
  nearly repeating a train row makes its scores optimistic, many near twins inside train mean a source that repeats
  itself (retweets, burst photos). Rows are vectors from the task (texts: `text_vectors`; images: their pixels), and a
  pair is near when the cosine similarity of its vectors reaches the task's threshold. Quadratic, so measured on a seeded
  sample of at most MAX_TRAIN train rows and MAX_OTHER rows of each other split (the counts say how many were compared).
- `chosen`: {setting, value, why} for every setting derived from the data; `notes`: suggestions, each naming the setting
  to change and the measurement behind it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SET = "set in params.yaml"  # the why of a setting the user's params fix, not the data
MAX_TRAIN = 20_000
MAX_OTHER = 5_000
TEXT_THRESHOLD = 0.85  # on tweets, every pair at or above it was one text re-posted (a mention, a URL or "RT" apart)
NEAR_SHARE = 0.02  # of val/test rows nearly repeating train rows, from which a note says so (the default tweets: 1.0 %)
TEXT_CHARACTERS = 2_000
CHUNK = 1_000  # rows multiplied at a time: a CHUNK x MAX_TRAIN block of similarities at most


def text_vectors(texts: pd.Series):
    """Character 3-5-gram TF-IDF rows (L2-normalised) of each text's first TEXT_CHARACTERS characters: robust to a changed
    mention, URL, hashtag or typo; copies share their openings, and the cut bounds the cost on long documents."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, dtype=np.float32)
    return vectorizer.fit_transform(texts.astype(str).str[:TEXT_CHARACTERS])


def _plain(value):
    return value.item() if hasattr(value, "item") else value  # numpy scalars as JSON takes them


def _sample(n: int, cap: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _nearest(queries, keys, skip_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """(best similarity, its key row) of every query row; skip_self: queries are keys, a row is not its own twin."""
    best, where = np.zeros(queries.shape[0], dtype=np.float32), np.zeros(queries.shape[0], dtype=int)
    for start in range(0, queries.shape[0], CHUNK):
        block = queries[start:start + CHUNK] @ keys.T
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        if skip_self:
            block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = -1
        where[start:start + CHUNK] = block.argmax(axis=1)
        best[start:start + CHUNK] = block.max(axis=1)
    return best, where


def near_duplicates(vectors, splits: dict[str, pd.DataFrame], threshold: float, method: str, seed: int, show: int = 5) -> dict:
    """Near twins inside train and val/test rows near a train row. `vectors(frame)` turns a split's rows into the rows of
    one matrix (fitted on all splits at once, so the rows are comparable); `show` examples of each as (row id, train id,
    similarity)."""
    samples = {name: part.iloc[_sample(len(part), MAX_TRAIN if name == "train" else MAX_OTHER, seed)] for name, part in splits.items()}
    matrix = vectors(pd.concat(samples.values()))
    bounds = np.cumsum([0, *(len(part) for part in samples.values())])
    rows = {name: matrix[start:end] for name, start, end in zip(samples, bounds[:-1], bounds[1:])}
    result = {"method": method, "threshold": threshold, "compared": {name: len(part) for name, part in samples.items()}}
    train_ids = samples["train"]["id"].to_numpy()
    for name, part in samples.items():
        if not len(part):
            continue
        best, where = _nearest(rows[name], rows["train"], skip_self=name == "train")
        near = np.flatnonzero(best >= threshold)
        if name == "train":  # each pair once
            near = near[[i < where[i] or best[where[i]] < threshold or where[where[i]] != i for i in near]]
        key = "train_rows_with_a_twin" if name == "train" else f"{name}_rows_near_train"
        result[key] = int((best >= threshold).sum())
        result[f"{key}_examples"] = [[_plain(part["id"].iloc[i]), _plain(train_ids[where[i]]), round(float(best[i]), 3)]
                                     for i in near[np.argsort(-best[near])][:show]]
    return result


def near_duplicate_notes(found: dict, noun: str) -> list[str]:
    """A note where NEAR_SHARE or more of the val/test rows nearly repeat train rows: a model that remembered them could owe
    that many points of accuracy to memory, about the smallest difference this project's benchmarks resolve."""
    notes = []
    for name in ("val", "test"):
        near, compared = found.get(f"{name}_rows_near_train", 0), found["compared"].get(name, 0)
        if compared and near / compared >= NEAR_SHARE:
            notes.append(f"{near} of {compared} {name} {noun}s ({100 * near / compared:.1f} %) nearly repeat a train {noun} "
                         f"(cosine >= {found['threshold']}, {found['method']}): up to {100 * near / compared:.1f} points of {name} accuracy "
                         "could come from remembering them. If they share a source (re-posts, one photo session), split by that source "
                         "with data.split_column")
    return notes


def quantiles(values) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {}
    return {name: round(float(np.percentile(values, q)), 1) for name, q in (("min", 0), ("p5", 5), ("p50", 50), ("p95", 95), ("max", 100))}


def balance(counts: dict[str, int]) -> dict:
    """A split's classes: how many, the share of the largest (the majority baseline's accuracy) and largest / smallest."""
    counts = {label: n for label, n in counts.items() if n}
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    total = sum(counts.values())
    return {"classes": len(counts), "largest": [largest, counts[largest]], "smallest": [smallest, counts[smallest]],
            "majority_share": round(counts[largest] / total, 4), "largest_to_smallest": round(counts[largest] / counts[smallest], 2)}

"""preprocess for speech recognition: clips and transcripts cleaned, split, featurized.

- Cleaning: each transcript's spacing collapsed; a clip longer than preprocess.window_seconds, a transcript with no
  words after Whisper's normaliser, and a clip repeating an earlier one (equal samples) are dropped into
  data/quarantine/preprocess.csv with the reason.
- Splits: the data's own (builtin:cards: by speaker; data.split_column) when there is one, else a seeded shuffle cut by
  data.splits (at least one clip each). preprocess.rehearsal adds that many clips of general English to train alone
  (sources.general_english); one longer than the window is left out.
- Features: each clip's 16 kHz samples (int16 bytes, padded to the window when read) and its transcript's label tokens
  (models.py transcript_labels), with the tokenizer's size in the layout (a member or trial must share it).
Writes data/prepared/{train,val,test}.parquet, label_map.json (the layout) and reports/preprocess.json.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data.audio import SAMPLE_RATE, stored_samples
from finetune.data.sources import INPUT, LABEL, ORIGIN, SPLIT
from finetune.data.tables import LINE, ROW
from finetune.errors import UserError
from finetune.io import write_json

from . import sources
from .models import transcript_labels
from .normalizer import normalized

SPLITS = ("train", "val", "test")
_SPACES = re.compile(r"\s+")


def _split(frame: pd.DataFrame, params) -> dict[str, pd.DataFrame]:
    if SPLIT in frame:
        parts = {name: frame[frame[SPLIT] == name] for name in SPLITS}
    else:
        order = np.random.default_rng(params.data.seed).permutation(len(frame))
        n_test, n_val = (max(1, round(getattr(params.data.splits, name) * len(frame))) for name in ("test", "val"))
        chosen = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        parts = {name: frame.iloc[np.sort(rows)] for name, rows in chosen.items()}
    for name, part in parts.items():
        if part.empty:
            raise UserError(f"the {name} split has no clips ({len(frame)} after cleaning); add clips, or check data.splits or data.split_column")
    return parts


def rehearsal_clips(task, params) -> pd.DataFrame:
    extra = sources.general_english(params.preprocess.rehearsal, params.data)
    fits = task.normalize(extra[INPUT], params.preprocess)[1] == ""
    print(f"preprocess: {int(fits.sum())} rehearsal clips of general English in train ({int((~fits).sum())} longer than the window left out)")
    return extra[fits]


def check_tokenizer(task, params, layout: dict) -> None:
    tokenizer = task.models.load_processor(task.models.source(params.train.model), params.train.trust_remote_code).tokenizer
    if len(tokenizer) != layout["tokenizer"]["size"]:
        raise UserError(f"train.model {params.train.model}: its tokenizer has {len(tokenizer)} tokens, not the {layout['tokenizer']['size']} "
                        "the prepared transcripts were tokenized with; a member or search trial must share the tokenizer")


def featurize(task, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """{split: rows with input (clip) and label (transcript)} -> tables of id, origin, transcript, samples, seconds, labels."""
    window = trained["audio"]["window_seconds"] if trained else params.preprocess.window_seconds
    tokenizer = task.models.load_processor(task.models.source(params.train.model), params.train.trust_remote_code).tokenizer
    tables, facts = {}, {}
    for name, part in parts.items():
        clips = [np.round(stored_samples(content) * 32767).astype(np.int16) for content in part[INPUT]]
        transcripts = part[LABEL].astype(str).tolist() if LABEL in part else [""] * len(part)
        labels = [transcript_labels(tokenizer, text) for text in transcripts]
        empty = next((i for i, ids in enumerate(labels) if len(ids) <= 2 and transcripts[i]), None)
        if empty is not None:
            raise UserError(f"the transcript {transcripts[empty]!r} ({part[ORIGIN].iloc[empty] if ORIGIN in part else 'a row'}) is no tokens "
                            f"of {params.train.model}'s tokenizer: it cannot write that text")
        tables[name] = pd.DataFrame({"id": np.arange(len(part)), ORIGIN: part[ORIGIN].astype(str).to_numpy() if ORIGIN in part else "",
                                     "transcript": transcripts, "samples": [c.tobytes() for c in clips],
                                     "seconds": [len(c) / SAMPLE_RATE for c in clips],
                                     "labels": labels})
        facts[name] = {"clips": len(part), "seconds": round(sum(len(c) for c in clips) / SAMPLE_RATE, 1),
                       "words": int(sum(len(t.split()) for t in transcripts)),
                       "vocabulary": len({w for t in transcripts for w in normalized(t).split()})}
    layout = {"labels": [], "features": ["samples"], "audio": {"sample_rate": SAMPLE_RATE, "window_seconds": window},
              "tokenizer": {"size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id}, "facts": facts}
    return tables, layout


def run(task, params, frame: pd.DataFrame, folder: Path) -> tuple[dict, pd.DataFrame]:
    frame = frame.copy()
    frame[LABEL] = frame[LABEL].astype(str).map(lambda text: _SPACES.sub(" ", text).strip())
    clips, problems = task.normalize(frame[INPUT], params.preprocess)
    wordless = frame[LABEL].map(lambda text: not any(c.isalnum() for c in normalized(text)))  # "..." normalises to "."
    problems = problems.where(problems != "", wordless.map({True: "the transcript has no words (after Whisper's normaliser)", False: ""}))
    duplicated = task.duplicate_key(clips).duplicated()
    problems = problems.where(problems != "", duplicated.map({True: "the same clip as an earlier row", False: ""}))
    dropped, frame = frame[problems != ""].assign(problem=problems[problems != ""]), frame[problems == ""]
    if frame.empty:
        raise UserError(f"{paths.INGESTED}: no clips left after cleaning ({dict(Counter(dropped['problem']))})")
    parts = _split(frame, params)
    if params.preprocess.rehearsal:
        parts["train"] = pd.concat([parts["train"], rehearsal_clips(task, params)], ignore_index=True)
    tables, layout = task.featurize(parts, params)
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet", index=False)
    write_json(folder / "label_map.json", layout)
    words = Counter(w for text in parts["train"][LABEL] for w in normalized(text).split())
    unseen = sorted({w for text in parts["test"][LABEL] for w in normalized(text).split()} - set(words))
    summary = {"dropped": dict(Counter(dropped["problem"])), "window_seconds": layout["audio"]["window_seconds"], "splits": layout["facts"],
               "commonest_train_words": dict(words.most_common(20)), "test_words_unseen_in_train": unseen[:50]}
    print(f"preprocess: {({name: f['clips'] for name, f in layout['facts'].items()})} clips; dropped {summary['dropped']}")
    return summary, dropped[[ROW, LINE, "problem"]].assign(transcript=dropped[LABEL], clip=task.display(dropped))

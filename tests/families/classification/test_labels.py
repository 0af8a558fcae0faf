"""Class names that look like numbers stay names through every classifier stage (issue 40): '007' and '7' are two
classes, '10' sorts after '7', and the explain stage reads the predictions back as the names evaluate wrote (it
crashed with `np.int64(9) is not in list` on builtin:digits when pandas re-read them as integers)."""
import json

import pandas as pd

from finetune import paths
from tests.support.data import make_rows
from tests.support.params import load, run_stages, tiny_params

NAMES = {"negative": "007", "neutral": "7", "positive": "10"}


def test_numeric_looking_labels_survive_every_stage(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True)
    make_rows(150).assign(label=lambda rows: rows["label"].map(NAMES)).to_csv(workdir / "data/raw/tiny.csv", index=False)
    raw = tiny_params(tiny_model, explain={"examples": 6, "ig_steps": 8, "random_draws": 2})
    raw["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}
    params = load(raw)
    run_stages("ingest", "preprocess", "train", "evaluate", "explain", "report", params=params)

    labels = json.loads(paths.LABEL_MAP.read_text())["labels"]
    assert labels == ["007", "7", "10"]  # integer order where every label is an integer, and '007' is not '7'
    metrics = json.loads(paths.METRICS.read_text())
    assert set(metrics["per_class"]) == {"007", "7", "10"}
    predictions = pd.read_csv(paths.EVALUATION / "predictions.csv", dtype={"actual": str, "predicted": str})
    assert set(predictions["actual"]) == {"007", "7", "10"}
    explained = json.loads((paths.EXPLAIN / "attributions.json").read_text())["examples"]
    assert len(explained) == 6 and {e["predicted"] for e in explained} <= {"007", "7", "10"}
    assert {e["actual"] for e in explained} <= {"007", "7", "10"}

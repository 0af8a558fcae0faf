"""What the predict and serve tests of every task share: the evaluate stage's saved test probabilities to compare new
predictions with, and the HTTP app called in-process (tests/test_serving.py runs the real server once)."""
from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd


def evaluated(root: Path, head: str | None = None) -> pd.DataFrame:
    """The test split's probabilities the evaluate stage saved (one head's, of several), indexed by prepared id."""
    folder = root / "reports/evaluate" / (head or "")
    return pd.read_parquet(folder / "probabilities.parquet").query("split == 'test'").set_index("id").filter(like="prob_")


def served(predictor, rows: list[dict]) -> dict:
    """POST /predict of the serve app around predictor, in this process: the answer's JSON (status 200 asserted)."""
    from fastapi.testclient import TestClient

    from finetune.serving import create_app

    answer = TestClient(create_app(predictor, "model", 50 * 2**20)).post("/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    return answer.json()


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()

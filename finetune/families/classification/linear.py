"""The linear model under a classical member (TF-IDF, pixels): multinomial logistic regression for classes, ridge
regression for a numeric label (finetune/data/numbers.py; alpha = 1 / C, so the member's C is an inverse L2 strength
either way), saved as plain arrays (safetensors: no pickle) and scored as the ensemble reads members: class
probabilities, or rows x 1 predictions in the label's units."""
from __future__ import annotations

import numpy as np


def fit(x, labels: np.ndarray, C: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression, Ridge

    if labels.dtype.kind == "f":
        return Ridge(alpha=1.0 / C).fit(x, labels)
    return LogisticRegression(C=C, max_iter=max_iter).fit(x, labels)


def outputs(model, x) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    return model.predict(x).reshape(-1, 1)


def arrays(model) -> dict[str, np.ndarray]:
    # safetensors writes raw buffers: a Fortran-ordered coef_ (as lbfgs returns it) would come back scrambled
    found = {"coef": model.coef_, "intercept": np.atleast_1d(model.intercept_)}
    if hasattr(model, "classes_"):
        found["classes"] = model.classes_
    return {name: np.ascontiguousarray(array) for name, array in found.items()}


def from_arrays(saved: dict[str, np.ndarray]):
    from sklearn.linear_model import LogisticRegression, Ridge

    if "classes" in saved:
        model = LogisticRegression()
        model.coef_, model.intercept_, model.classes_ = saved["coef"], saved["intercept"], saved["classes"]
        return model
    model = Ridge()
    model.coef_, model.intercept_ = saved["coef"], float(saved["intercept"][0])
    return model

"""The linear model under a classical member (TF-IDF, pixels): multinomial logistic regression for classes, ridge
regression for a numeric label (finetune/data/numbers.py; alpha = 1 / C, so the member's C is an inverse L2 strength
either way, or `auto`: chosen by cross-validation on train), saved as plain arrays (safetensors: no pickle) and scored as the ensemble reads members: class
probabilities, or rows x 1 predictions in the label's units."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

# `C: auto`: the member's C chosen by 3-fold cross-validation on the train rows (val stays the ensemble's), by log-loss
# for classes, squared error for numbers, from this grid (ridge alpha = 1 / C: 0.033..100); then refitted on every row.
# Why: the best strength depends on the data's size and the label (on the tweets' confidence a TF-IDF ridge at the
# classification default C 4 scored worse than the train mean, at C 0.1 better: docs/benchmarks/regression.md).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS = 3
InverseStrength = Annotated[float, Field(gt=0, le=1e6)] | Literal["auto"]  # a member's C


def fit(x, labels: np.ndarray, C: InverseStrength, max_iter: int, seed: int = 0):
    """The fitted linear model; with C "auto" it carries the chosen C as `chosen_C` (the member's facts show it)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold

    number = labels.dtype.kind == "f"
    if C != "auto":
        return Ridge(alpha=1.0 / C).fit(x, labels) if number else LogisticRegression(C=C, max_iter=max_iter).fit(x, labels)
    if number:
        model = RidgeCV(alphas=[1.0 / c for c in C_GRID], cv=KFold(FOLDS, shuffle=True, random_state=seed),
                        scoring="neg_mean_squared_error").fit(x, labels)
        model.chosen_C = 1.0 / float(model.alpha_)
    else:
        model = LogisticRegressionCV(Cs=list(C_GRID), cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed),
                                     scoring="neg_log_loss", max_iter=max_iter).fit(x, labels)
        model.chosen_C = float(np.ravel(model.C_)[0])
    return model


def facts(model) -> dict:
    return {"C chosen": model.chosen_C} if hasattr(model, "chosen_C") else {}


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

"""How members' class probabilities are combined. Pure functions on arrays (rows x classes).

Everything that is FITTED (temperatures, weights, the stacking meta-model, which member is best) takes
validation arrays only: no function here is ever handed test labels (tests/stages/test_ensemble.py shuffles
the test labels and checks that nothing fitted changes).

A small val split overfits what is fitted on it (weights collapse onto one member, the stacker learns noise),
and scoring methods on the rows they were fitted on hides that. So `cross_fit` scores every method out of
fold: val is cut into k stratified folds; each fold is predicted by everything fitted on the other k - 1
(temperatures included), giving honest val predictions per method. `choose` (ensemble.method: auto) then
takes the SIMPLEST method within one standard error of the best cross-fitted macro F1 (the one-standard-
error rule of cross-validation, Hastie et al., ESL §7.10): "best_member" (no combining at all) wins unless
combining is reliably better. Fitted weights shrink toward equal weights as if `prior_rows` extra val rows
had preferred them: w = (n w_fit + prior_rows / members) / (n + prior_rows), n = val rows, so 180 val rows
with prior_rows 100 keep 64 % of the fit and 5,000 rows keep 98 %.
A numeric label's members (finetune/data/numbers.py; val labels are floats, each member's predictions rows x 1):
best_member is the lowest val RMSE, soft_vote their mean, weighted the simplex weights minimising val squared error
(shrunk alike); no temperatures, hard votes or stacker. Folds are plain seeded k-folds, and `choose` takes the simplest
method within one standard error of the lowest cross-fitted RMSE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

EPS = 1e-12
METHODS = ("best_member", "soft_vote", "hard_vote", "weighted", "stacking")  # simplest first: auto's order of preference
NUMBER_METHODS = ("best_member", "soft_vote", "weighted")  # a numeric label's (soft_vote: the members' mean)


def numeric(labels: np.ndarray) -> bool:
    return np.asarray(labels).dtype.kind == "f"


def squared_error(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((predictions[:, 0] - labels) ** 2))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1))))


def fit_temperature(val_probs: np.ndarray, val_labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising val log-loss of softmax(log p / T).
    It changes no member's argmax, only how confident it is, so members become comparable before
    they are averaged (a fine-tune is typically over-confident, TF-IDF + LR under-confident)."""
    logits = np.log(np.clip(val_probs, EPS, 1))
    result = minimize_scalar(lambda log_t: log_loss(softmax(logits / np.exp(log_t), axis=1), val_labels),
                             bounds=(np.log(0.05), np.log(20)), method="bounded")
    return float(np.exp(result.x))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.log(np.clip(probs, EPS, 1)) / temperature, axis=1)


def hard_vote(members: list[np.ndarray]) -> np.ndarray:
    """Each member votes its argmax; returns vote shares (rows x classes). Ties are broken by the
    tied classes' mean probability over members, then by the lower class index."""
    votes = np.zeros_like(members[0])
    for probs in members:
        votes[np.arange(len(probs)), probs.argmax(axis=1)] += 1
    mean = np.mean(members, axis=0)
    tied = votes == votes.max(axis=1, keepdims=True)
    winner = np.where(tied, mean, -np.inf).argmax(axis=1)  # argmax takes the first (lowest) index on equal means
    shares = votes / len(members)
    shares[np.arange(len(winner)), winner] += 1e-9  # the tie-break winner is the argmax of the returned shares
    return shares


def soft_vote(members: list[np.ndarray]) -> np.ndarray:
    return np.mean(members, axis=0)


def weighted(members: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), np.stack(members), axes=1)


def fit_weights(val_members: list[np.ndarray], val_labels: np.ndarray) -> np.ndarray:
    """Weights on the simplex minimising the val log-loss of the weighted mean of probabilities (numbers: the squared
    error of the weighted mean; softmax-parametrised, L-BFGS from equal weights: deterministic)."""
    score = squared_error if numeric(val_labels) else log_loss

    def loss(z):
        return score(weighted(val_members, softmax(z)), val_labels)

    result = minimize(loss, np.zeros(len(val_members)), method="L-BFGS-B")
    return softmax(result.x)


def stacking_features(members: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.log(np.clip(p, EPS, 1)) for p in members], axis=1)


def fit_stacker(val_members: list[np.ndarray], val_labels: np.ndarray, seed: int = 0) -> LogisticRegression:
    """A multinomial logistic regression on the members' log-probabilities, fitted on val only."""
    return LogisticRegression(C=1.0, max_iter=5000, random_state=seed).fit(stacking_features(val_members), val_labels)


def stack(stacker: LogisticRegression, members: list[np.ndarray]) -> np.ndarray:
    probs = np.zeros((len(members[0]), members[0].shape[1]))
    probs[:, stacker.classes_] = stacker.predict_proba(stacking_features(members))  # a class absent from val gets 0
    return probs


@dataclass(frozen=True)
class Fitted:
    """Everything fitted on (some) val rows."""
    temperatures: np.ndarray
    weights: np.ndarray
    stacker: LogisticRegression | None  # None: a numeric label's
    best_member: int


def fit(val_members: list[np.ndarray], val_labels: np.ndarray, calibration: str, fixed_weights: np.ndarray | None,
        prior_rows: float, seed: int) -> Fitted:
    number = numeric(val_labels)
    temperatures = np.array([fit_temperature(p, val_labels) if calibration == "temperature" and not number else 1.0 for p in val_members])
    # a numeric label's one column is a prediction, not probabilities: a softmax over it would be 1.0 everywhere
    calibrated = val_members if number else [apply_temperature(p, t) for p, t in zip(val_members, temperatures)]
    if fixed_weights is None:
        rows, uniform = len(val_labels), np.full(len(val_members), 1 / len(val_members))
        weights = (rows * fit_weights(calibrated, val_labels) + prior_rows * uniform) / (rows + prior_rows)
    else:
        weights = np.asarray(fixed_weights, dtype=np.float64) / np.sum(fixed_weights)
    if number:
        return Fitted(temperatures, weights, None, int(np.argmin([squared_error(p, val_labels) for p in val_members])))
    scores = [f1_score(val_labels, p.argmax(axis=1), average="macro", zero_division=0) for p in calibrated]
    return Fitted(temperatures, weights, fit_stacker(calibrated, val_labels, seed), int(np.argmax(scores)))


def predict(fitted: Fitted, members: list[np.ndarray]) -> dict[str, np.ndarray]:
    """{method: probabilities} of every method for these rows (a numeric label's: {method: predictions})."""
    if fitted.stacker is None:
        return {"best_member": members[fitted.best_member], "soft_vote": soft_vote(members), "weighted": weighted(members, fitted.weights)}
    calibrated = [apply_temperature(p, t) for p, t in zip(members, fitted.temperatures)]
    return {"best_member": calibrated[fitted.best_member], "soft_vote": soft_vote(calibrated), "hard_vote": hard_vote(calibrated),
            "weighted": weighted(calibrated, fitted.weights), "stacking": stack(fitted.stacker, calibrated)}


def folds(val_labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each val row: stratified and seeded; fewer folds when a class has fewer than k rows (numbers:
    seeded k-folds)."""
    if numeric(val_labels):
        from sklearn.model_selection import KFold

        fold = np.empty(len(val_labels), dtype=int)
        for number, (_, held_out) in enumerate(KFold(n_splits=max(2, min(k, len(val_labels))), shuffle=True, random_state=seed).split(val_labels)):
            fold[held_out] = number
        return fold
    counts = np.bincount(val_labels)
    k = max(2, min(k, int(counts[counts > 0].min())))
    fold = np.empty(len(val_labels), dtype=int)
    for number, (_, held_out) in enumerate(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(val_labels, val_labels)):
        fold[held_out] = number
    return fold


def cross_fit(val_members: list[np.ndarray], val_labels: np.ndarray, fold: np.ndarray, **settings) -> dict[str, np.ndarray]:
    """{method: out-of-fold val probabilities}: the rows of each fold are predicted by what was fitted
    (by `fit`, with `settings`) on the other folds only."""
    out = {method: np.zeros_like(val_members[0]) for method in (NUMBER_METHODS if numeric(val_labels) else METHODS)}
    for number in np.unique(fold):
        held_out = fold == number
        fitted = fit([p[~held_out] for p in val_members], val_labels[~held_out], **settings)
        for method, probs in predict(fitted, [p[held_out] for p in val_members]).items():
            out[method][held_out] = probs
    return out


def choose(out_of_fold: dict[str, np.ndarray], val_labels: np.ndarray, fold: np.ndarray) -> tuple[str, dict[str, dict]]:
    """(method, {method: cross-fitted val macro F1, its standard error over folds}): the simplest method within
    one standard error of the best (numbers: {method: cross-fitted val RMSE, its standard error}, the lowest best)."""
    if numeric(val_labels):
        return _choose_number(out_of_fold, val_labels, fold)
    scores = {}
    for method, probs in out_of_fold.items():
        predicted = probs.argmax(axis=1)
        per_fold = [f1_score(val_labels[fold == f], predicted[fold == f], average="macro", zero_division=0) for f in np.unique(fold)]
        scores[method] = {"f1_macro": float(f1_score(val_labels, predicted, average="macro", zero_division=0)),
                          "standard_error": float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold)))}
    best = max(scores, key=lambda m: scores[m]["f1_macro"])
    bar = scores[best]["f1_macro"] - scores[best]["standard_error"]
    return next(m for m in METHODS if m in scores and scores[m]["f1_macro"] >= bar), scores


def _choose_number(out_of_fold: dict[str, np.ndarray], val_labels: np.ndarray, fold: np.ndarray) -> tuple[str, dict[str, dict]]:
    scores = {}
    for method, predictions in out_of_fold.items():
        per_fold = [np.sqrt(squared_error(predictions[fold == f], val_labels[fold == f])) for f in np.unique(fold)]
        scores[method] = {"rmse": float(np.sqrt(squared_error(predictions, val_labels))),
                          "standard_error": float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold)))}
    best = min(scores, key=lambda m: scores[m]["rmse"])
    bar = scores[best]["rmse"] + scores[best]["standard_error"]
    return next(m for m in NUMBER_METHODS if scores[m]["rmse"] <= bar), scores

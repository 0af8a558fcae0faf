"""How members' class probabilities are combined. Pure functions on arrays (rows x classes).

Everything that is FITTED (temperatures, weights, the stacking meta-model) takes validation
arrays only: no function here is ever handed test labels (tests/stages/test_ensemble.py shuffles
the test labels and checks that nothing fitted changes).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression

EPS = 1e-12


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
    """Weights on the simplex minimising the val log-loss of the weighted mean of probabilities
    (softmax-parametrised, L-BFGS from equal weights: deterministic)."""
    def loss(z):
        return log_loss(weighted(val_members, softmax(z)), val_labels)

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

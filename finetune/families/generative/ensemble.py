"""ensemble for generative models: the members' next-token distributions mixed, p(x) = sum_i w_i p_i(x).

Only each member's probability of the TRUE token is needed for the mixture's perplexity, so that is what members save.
Weights: equal (`soft_vote`), fitted on val by EM for mixture weights (`weighted`: maximum val likelihood; the best
single member is a corner of the simplex, so on val the fitted mixture is never worse than the best member), or the best
val member alone (`best_member`). ensemble.method auto reports `weighted`; every method is scored. Writes
reports/ensemble.json and reports/ensemble/weights.csv.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.config.sections import PRIMARY
from finetune.errors import UserError
from finetune.families.generative import scoring
from finetune.io import write_table


def mixture_weights(probs: np.ndarray, iterations: int = 500, tolerance: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood mixture weights by EM: probs is tokens x members, each member's probability of the true token.
    Each step cannot lower the likelihood (Dempster et al. 1977); starts from equal weights."""
    weights = np.full(probs.shape[1], 1 / probs.shape[1])
    previous = -np.inf
    for _ in range(iterations):
        mixed = probs @ weights
        likelihood = np.log(mixed).mean()
        weights = (probs * weights / mixed[:, None]).mean(axis=0)
        if likelihood - previous < tolerance:
            break
        previous = likelihood
    # EM creeps toward a corner of the simplex; when one member alone is best, stopping early could leave the mixture a
    # hair below it: take that member then, so the fitted weights are never worse than the best member on val
    corners = np.eye(probs.shape[1])
    candidates = [weights, *corners]
    return max(candidates, key=lambda w: np.log(probs @ w).mean())


def run(task, params, folder: Path, model_folder: Path) -> dict:
    (model_folder / "README.txt").write_text("ensemble: a mixture of causal LMs' next-token distributions is scored here, not saved "
                                             "as a model; predict with each member's folder (models/model, models/members/NAME)\n")
    config = params.ensemble
    names = config.names()
    files = {name: paths.EVALUATION / scoring.LOGPROBS if name == PRIMARY else paths.MEMBER_REPORTS / name / scoring.LOGPROBS for name in names}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"missing member outputs {missing}: run the evaluate and member stages first (dvc repro runs them)")
    logp = {name: scoring.load_logprobs(path) for name, path in files.items()}
    # tokens x members, the probability each member gave the true token (NaN rows: tokens no model is scored on, e.g. a
    # chat's user turns; the members share the blocks, so the same rows for all: left out of the fit, NaN in the mixture)
    probs = {split: np.stack([np.exp(logp[name][split].astype(np.float64)).ravel() for name in names], axis=1) for split in ("val", "test")}
    shape = logp[names[0]]["test"].shape
    probs["val"] = probs["val"][~np.isnan(probs["val"]).any(axis=1)]
    val_loss = -np.log(probs["val"]).mean(axis=0)
    best = int(np.argmin(val_loss))
    if config.weights is not None:
        fitted, source = np.array([config.weights.get(name, 0.0) for name in names]), "ensemble.weights"
        fitted = fitted / fitted.sum()
    else:
        fitted, source = mixture_weights(probs["val"]), "fitted on val (EM: maximum likelihood of the mixture)"
    weights = {"best_member": np.eye(len(names))[best], "soft_vote": np.full(len(names), 1 / len(names)), "weighted": fitted}
    chosen = "weighted" if config.method == "auto" else config.method
    scored = {}
    for method, w in weights.items():
        test_logp = np.log(probs["test"] @ w).reshape(shape)
        scored[method] = {"val": scoring.summarize(np.log(probs["val"] @ w)), "test": scoring.summarize(test_logp),
                          "ci95": scoring.interval(test_logp), "log_probs": test_logp}
    members = {name: {"val": scoring.summarize(logp[name]["val"]), "test": scoring.summarize(logp[name]["test"]),
                      "ci95": scoring.interval(logp[name]["test"])} for name in names}
    best_test = min(names, key=lambda name: members[name]["test"]["perplexity"])
    result = {
        "method": chosen, "chosen_by": "auto: the mixture with weights fitted on val" if config.method == "auto" else "ensemble.method",
        "best_member": names[best], "weights": dict(zip(names, map(float, fitted))), "weights_source": source,
        "test": scored[chosen]["test"], "ci95": scored[chosen]["ci95"],
        "vs_members": {name: scoring.compare(scored[chosen]["log_probs"], logp[name]["test"]) for name in names},
        "vs_best_test_member": {"member": best_test, **scoring.compare(scored[chosen]["log_probs"], logp[best_test]["test"])},
        "members": members,
        "methods": {method: {key: value for key, value in s.items() if key != "log_probs"} for method, s in scored.items()},
    }
    write_table(folder / "weights.csv", pd.DataFrame({"member": names, "weight": fitted, "val_loss": val_loss}))
    print(f"ensemble ({chosen}): test perplexity {result['test']['perplexity']:.2f} vs best member {best_test} "
          f"{members[best_test]['test']['perplexity']:.2f}; weights {result['weights']}")
    return result

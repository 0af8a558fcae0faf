"""ensemble for classifiers: combine the members' saved probabilities; no member is retrained here (seconds).

Members: the train stage's model ("primary", when ensemble.include_primary) and every entry of
ensemble.members (trained by the member stages). Each member is first calibrated by temperature
scaling fitted on val (ensemble.calibration), then every method is scored side by side:
- best_member: no combining: the member with the best val macro F1;
- hard_vote: majority of the members' argmax; ties -> the tied class with the highest mean
  probability, then the lower class index;
- soft_vote: mean of the probabilities;
- weighted: weighted mean; weights are ensemble.weights when given (members left out weigh 0),
  else fitted on VAL to minimise log-loss (on the simplex), shrunk toward equal (ensemble.prior_rows);
- stacking: a multinomial logistic regression on the members' log-probabilities, fitted on VAL.
Nothing is fitted on test. ensemble.method picks the method whose predictions are reported; `auto` (the
default) picks it by cross-fitted val scores (ensemble.folds; combining.py says how).
Every member and method's test scores carry a bootstrap 95 % interval (`ci95`), and the chosen method is
compared with each member on the same test rows (`vs_members`: paired bootstrap, finetune/scoring/uncertainty.py).
Writes reports/ensemble.json (metrics of every member and method, the fitted weights and
temperatures) and reports/ensemble/: predictions.csv, changes.csv (test rows where the ensemble
fixed or broke a member's prediction), confusion.png, stacker.json; and models/ensemble/: ensemble.json (the members'
folders and everything fitted), what `finetune predict --model models/ensemble` applies to new rows (predict.py).
Several heads (data.label_columns, finetune/data/heads.py): every member's probabilities of each head are ensembled on
their own (the rows that have that head's label), each head's files in reports/ensemble/<head>/, its metrics under
`heads` in ensemble.json beside the means over the heads (`accuracy`, `f1_macro`).
A numeric label (finetune/data/numbers.py): best_member, soft_vote (the members' mean) and weighted, scored by rmse, mae,
r2 and spearman with intervals (combining.py); reports/ensemble/ gets predictions.csv and scatter.png.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.config.sections import PRIMARY
from finetune.data.heads import Heads, combined
from finetune.errors import UserError
from finetune.families.classification import combining
from finetune.families.classification.probabilities import SPLITS, MemberProbabilities, load_members
from finetune.io import read_json, write_json, write_table
from finetune.reporting.plots import confusion_png, scatter_png
from finetune.scoring import metrics, uncertainty
from finetune.scoring import numbers as number_scores

ENSEMBLE_SPEC = "ensemble.json"


def combine(params, members: list[MemberProbabilities]) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """{method: {split: probabilities}} from everything fitted on ALL val rows, and what was fitted: the
    temperatures, weights, stacker, and each method's cross-fitted (out-of-fold) val score that `auto` reads."""
    config = params.ensemble
    y_val = members[0].splits["val"].labels
    number = combining.numeric(y_val)
    if number and config.method not in ("auto", *combining.NUMBER_METHODS):
        raise UserError(f"ensemble.method {config.method}: a numeric label's members combine by {', '.join(combining.NUMBER_METHODS)} or auto")
    fixed = None if config.weights is None else np.array([config.weights.get(m.name, 0.0) for m in members])
    settings = {"calibration": config.calibration, "fixed_weights": fixed, "prior_rows": config.prior_rows, "seed": params.data.seed}
    fitted = combining.fit([m.splits["val"].probs for m in members], y_val, **settings)
    by_split = {split: combining.predict(fitted, [m.splits[split].probs for m in members]) for split in SPLITS}
    combined = {method: {split: by_split[split][method] for split in SPLITS} for method in by_split["val"]}
    fold = combining.folds(y_val, config.folds, params.data.seed)
    auto, cross_fitted = combining.choose(combining.cross_fit([m.splits["val"].probs for m in members], y_val, fold, **settings), y_val, fold)
    names = [m.name for m in members]
    source = "ensemble.weights" if fixed is not None else (f"fitted on val (min {'squared error' if number else 'log-loss'}), shrunk toward "
                                                           f"equal weights by prior_rows {config.prior_rows:g} against {len(y_val)} val rows")
    stacker = None if fitted.stacker is None else {
        "classes": members[0].classes, "features": [f"log p({c}) of {n}" for n in names for c in members[0].classes],
        "coef": fitted.stacker.coef_.tolist(), "intercept": fitted.stacker.intercept_.tolist(),
        "fitted_classes": fitted.stacker.classes_.tolist()}  # the class indices val held (a missing one gets 0)
    return combined, {
        "method": auto if config.method == "auto" else config.method,
        "chosen_by": (f"auto: the simplest method within one standard error of the best cross-fitted val {'rmse' if number else 'macro F1'}"
                      if config.method == "auto" else "ensemble.method"),
        "cross_fitted_val": {"folds": int(fold.max()) + 1, **cross_fitted},
        "best_member": names[fitted.best_member],
        "temperatures": dict(zip(names, map(float, fitted.temperatures))),
        "weights": dict(zip(names, map(float, fitted.weights))),
        "weights_source": source,
        "stacker": stacker,
    }


def _changes(members, chosen: np.ndarray, shown: pd.Series, column: str) -> pd.DataFrame:
    """Test rows where the chosen ensemble fixed (member wrong, ensemble right) or broke a member."""
    test = members[0].splits["test"]
    classes = np.array(members[0].classes)
    rows = []
    for member in members:
        own = member.splits["test"].probs.argmax(axis=1)
        for effect, mask in (("fixed", (own != test.labels) & (chosen == test.labels)),
                             ("broke", (own == test.labels) & (chosen != test.labels))):
            rows.append(pd.DataFrame({"member": member.name, "effect": effect, "id": test.ids[mask], "actual": classes[test.labels[mask]],
                                      "member_predicted": classes[own[mask]], "ensemble_predicted": classes[chosen[mask]]}))
    changes = pd.concat(rows, ignore_index=True)
    return changes.assign(**{column: changes["id"].map(shown)})


def _ensemble_numbers(members: list[MemberProbabilities], combined: dict, fitted: dict) -> tuple[dict, dict]:
    """_ensemble of a numeric label's members: each member's and method's scores, the chosen method's test predictions."""
    y = {split: members[0].splits[split].labels for split in SPLITS}
    predictions = {**{("members", m.name): {split: m.splits[split].probs[:, 0] for split in SPLITS} for m in members},
                   **{("methods", name): {split: values[split][:, 0] for split in SPLITS} for name, values in combined.items()}}
    scores = {"members": {}, "methods": {}}
    for (group, name), by_split in predictions.items():
        scores[group][name] = {split: number_scores.scores(y[split], by_split[split]) for split in SPLITS}
    for (group, name), ci95 in number_scores.intervals(y["test"], {key: p["test"] for key, p in predictions.items()}).items():
        scores[group][name]["test"]["ci95"] = ci95
    method = fitted["method"]
    chosen = predictions[("methods", method)]["test"]
    best = min(scores["members"], key=lambda name: scores["members"][name]["val"]["rmse"])
    best_test = min(scores["members"], key=lambda name: scores["members"][name]["test"]["rmse"])
    result = {"method": method, **{key: fitted[key] for key in ("chosen_by", "cross_fitted_val", "best_member")},
              **scores["methods"][method]["test"],
              "best_member_on_val": {"name": best, **scores["members"][best]["test"]},
              "best_member_on_test": {"name": best_test, **scores["members"][best_test]["test"]},
              "vs_members": {m.name: number_scores.compare(y["test"], chosen, predictions[("members", m.name)]["test"]) for m in members},
              **scores, **{key: fitted[key] for key in ("weights", "weights_source")}}
    rows = pd.DataFrame({"id": members[0].splits["test"].ids, "actual": y["test"], "predicted": chosen, "error": chosen - y["test"]})
    for member in members:
        rows[f"{member.name}_predicted"] = member.splits["test"].probs[:, 0]
    applied = {"method": method, "members": [m.name for m in members], "classes": members[0].classes,
               **{key: fitted[key] for key in ("best_member", "temperatures", "weights", "stacker")}}
    return result, {"predictions": rows, "applied": applied}


def _ensemble(params, members: list[MemberProbabilities], test: pd.DataFrame, shown: pd.Series, column: str) -> tuple[dict, dict]:
    """(metrics, {file name: table or json}) of the ensemble of these members (of one head)."""
    combined, fitted = combine(params, members)
    if fitted["stacker"] is None:
        return _ensemble_numbers(members, combined, fitted)
    classes, y = members[0].classes, {split: members[0].splits[split].labels for split in SPLITS}
    scores = {
        "members": {m.name: {split: metrics.headline(y[split], m.splits[split].probs.argmax(axis=1)) for split in SPLITS}
                    for m in members},
        "methods": {method: {split: metrics.headline(y[split], probs[split].argmax(axis=1)) for split in SPLITS}
                    for method, probs in combined.items()},
    }
    method = fitted["method"]
    chosen = combined[method]["test"]
    predicted = chosen.argmax(axis=1)
    test_predictions = {**{("members", m.name): m.splits["test"].probs.argmax(axis=1) for m in members},
                        **{("methods", name): probs["test"].argmax(axis=1) for name, probs in combined.items()}}
    for (group, name), ci95 in uncertainty.intervals(y["test"], test_predictions).items():
        scores[group][name]["test"]["ci95"] = ci95
    best = max(scores["members"], key=lambda name: scores["members"][name]["val"]["f1_macro"])
    best_test = max(scores["members"], key=lambda name: scores["members"][name]["test"]["f1_macro"])
    result = {
        "method": method,
        **{key: fitted[key] for key in ("chosen_by", "cross_fitted_val", "best_member")},
        **scores["methods"][method]["test"],
        "per_class": metrics.per_class(y["test"], predicted, classes),
        # the member a user would have picked without an ensemble (best on val), and the best in hindsight (on test)
        "best_member_on_val": {"name": best, **scores["members"][best]["test"]},
        "best_member_on_test": {"name": best_test, **scores["members"][best_test]["test"]},
        "vs_members": {m.name: uncertainty.compare(y["test"], predicted, test_predictions[("members", m.name)]) for m in members},
        **scores,
        **{key: fitted[key] for key in ("temperatures", "weights", "weights_source")},
    }

    names = np.array(classes)
    rows = pd.DataFrame({"id": members[0].splits["test"].ids, "actual": names[y["test"]], "predicted": names[predicted],
                         "confidence": chosen.max(axis=1)})
    for member in members:
        rows[f"{member.name}_predicted"] = names[member.splits["test"].probs.argmax(axis=1)]
    for i, label in enumerate(classes):
        rows[f"prob_{label}"] = chosen[:, i]
    changes = _changes(members, predicted, shown, column)
    result["changes"] = {m.name: {effect: int(((changes["member"] == m.name) & (changes["effect"] == effect)).sum())
                                  for effect in ("fixed", "broke")} for m in members}
    applied = {"method": method, "members": [m.name for m in members], "classes": classes,
               **{key: fitted[key] for key in ("best_member", "temperatures", "weights", "stacker")}}
    return result, {"predictions": rows, "changes": changes, "stacker": fitted["stacker"], "classes": classes, "applied": applied}


def _write(folder, result: dict, files: dict) -> None:
    write_table(folder / "predictions.csv", files["predictions"])
    if "changes" not in files:  # a numeric label's
        rows = files["predictions"]
        scatter_png(folder / "scatter.png", rows["actual"], rows["predicted"], f"Ensemble ({result['method']}) test predictions")
        return
    write_table(folder / "changes.csv", files["changes"])
    write_json(folder / "stacker.json", files["stacker"])
    rows = files["predictions"]
    confusion_png(folder / "confusion.png", rows["actual"], rows["predicted"], files["classes"], f"Ensemble ({result['method']}) test confusion matrix")


def _line(result: dict) -> str:
    best, best_test = result["best_member_on_val"], result["best_member_on_test"]
    if "rmse" in result:
        return (f"test rmse {result['rmse']:.4g}, mae {result['mae']:.4g}, spearman {result['spearman']:.4f}; best member on val {best['name']}: "
                f"rmse {best['rmse']:.4g} (ensemble vs it: {uncertainty.describe(result['vs_members'][best['name']], 'rmse')}), on test "
                f"{best_test['name']}: {best_test['rmse']:.4g}")
    return (f"test accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}; best member on val {best['name']}: "
            f"{best['f1_macro']:.4f} (ensemble vs it: {uncertainty.describe(result['vs_members'][best['name']])}), on test "
            f"{best_test['name']}: {best_test['f1_macro']:.4f}")


def _save_model(params, applied: dict, folder: Path) -> None:
    """models/ensemble/: ensemble.json (each member's folder, relative to this one, and everything fitted, per head), and
    the pipeline.json and label_map.json the train stage's model has: new rows are read and prepared as that model's were
    (its features feed the classical members, as data/prepared did; predict.py EnsemblePredictor)."""
    members = {name: {"kind": "finetune" if name == PRIMARY else params.ensemble.members[name].kind,
                      "folder": "../model" if name == PRIMARY else f"../members/{name}"} for name in params.ensemble.names()}
    write_json(folder / ENSEMBLE_SPEC, {"prepared_by": "../model", "members": members, "heads": applied})
    write_json(folder / paths.TRAINED_WITH, {"task": params.task, "params": params.model_dump(mode="json")})  # as train wrote it
    shutil.copy(paths.LABEL_MAP, folder / "label_map.json")


def run(task, params, folder: Path, model_folder: Path) -> dict:
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    shown = task.display(test).set_axis(test["id"])
    heads = list(Heads.of(read_json(paths.LABEL_MAP)).classes) or [None]
    results, applied = {}, {}
    for head in heads:  # each head's members (their probabilities of that head, on the rows that have its label) alone
        results[head], files = _ensemble(params, load_members(params.ensemble.names(), head), test, shown, task.display_name)
        out = folder / head if head else folder
        out.mkdir(exist_ok=True)
        _write(out, results[head], files)
        applied[head or ""] = files["applied"]
        print(f"ensemble{' ' + head if head else ''} ({results[head]['method']}): {_line(results[head])}")
    _save_model(params, applied, model_folder)
    return combined(results)

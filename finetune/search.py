"""Hyper-parameter search over `search.space` with Optuna: grid, random or Bayesian (TPE).

- Every trial is the train stage's own `fit` on data/prepared with the trial's values set (re-tokenized
  when the space touches preprocess.*), scored by its restored best checkpoint on VALIDATION.
- Pruning: each validation evaluation is reported to Optuna's MedianPruner; a trial below the median
  of earlier trials at the same step stops there (state PRUNED, its last value kept).
- Samplers run in the one process that asks for trials, re-seeded with `seed + trial number`, so a
  trial's values depend only on the seed and the trials before it (random: on the seed alone).
- The study lives in .cache/search/STUDY.db (SQLite). Rerunning resumes: finished trials are kept,
  a trial killed mid-run is marked FAIL and re-queued with the same values.
- reports/search/ gets trials.csv, summary.json (best params), history.png and importance.png after
  every trial; the report stage shows them. `apply_best` writes the best values into params.yaml.
Limits: one search process per study at a time (a second would re-queue the first one's running trials).
"""
from __future__ import annotations

import contextvars
import json
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from transformers import TrainerCallback

from finetune import paths
from finetune.errors import UserError
from finetune.io import atomic_path, read_json, write_json
from finetune.params import Params, Search

STUDIES = Path(".cache/search")
RESULTS = paths.SEARCH
RESULTS_README = """Written by `python -m flows.search` (finetune/search.py): trials.csv, summary.json, history.png and
importance.png of the last search. Small files, tracked by git so the team sees them; the report stage shows them.
"""
optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(search: Search) -> str:
    STUDIES.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{STUDIES / search.study}.db"


def planned_trials(search: Search) -> int:
    if search.method == "grid":
        return int(np.prod([len(axis.grid_values()) for axis in search.space.values()]))
    return search.trials


def _sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    if search.method == "grid":
        return optuna.samplers.GridSampler({key: axis.grid_values() for key, axis in search.space.items()}, seed=seed)
    if search.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(1, search.trials // 3)))


def _pruner(search: Search) -> optuna.pruners.BasePruner:
    if not search.pruner.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=search.pruner.startup_trials, n_warmup_steps=0,
                                       n_min_trials=1)


def _signature(search: Search) -> str:
    """What a stored study must match to be resumed."""
    return json.dumps({"method": search.method, "metric": search.val_metric, "space": {k: v.model_dump() for k, v in search.space.items()}},
                      sort_keys=True, default=str)


def open_study(search: Search) -> optuna.Study:
    study = optuna.create_study(study_name=search.study, storage=storage_url(search), load_if_exists=True,
                                direction=search.direction, pruner=_pruner(search))
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", _signature(search))
    elif stored != _signature(search):
        raise UserError(f"study {search.study!r} in {STUDIES / search.study}.db was run with another search.method, metric or space; "
                        f"set a new search.study name (or delete that file to start over)")
    return study


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a killed search: FAIL them and queue their values again."""
    interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for trial in interrupted:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number)})
    return [t.number for t in interrupted]


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials that count towards search.trials (an interrupted-and-requeued one does not)."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.state.is_finished() and not (t.state == TrialState.FAIL and t.number in requeued)]


def ask(study: optuna.Study, search: Search) -> optuna.Trial:
    # grid ids index a seed-shuffled product: the grid sampler keeps one seed; the others move on per trial
    study.sampler = _sampler(search, search.seed + (0 if search.method == "grid" else len(study.trials)))
    trial = study.ask()
    for key, axis in search.space.items():
        if axis.choice is not None:
            trial.suggest_categorical(key, axis.choice)
        elif axis.integer is not None:
            trial.suggest_int(key, *axis.integer)
        else:
            trial.suggest_float(key, *(axis.uniform or axis.log_uniform), log=axis.log_uniform is not None)
    return trial


class ReportToPruner(TrainerCallback):
    """Feeds every validation evaluation to Optuna; raises TrialPruned when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str, warmup: int):
        self.trial, self.metric, self.warmup, self.evaluations = trial, f"eval_{metric}", warmup, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.metric not in (metrics or {}):
            return
        self.evaluations += 1
        self.trial.report(metrics[self.metric], step=state.global_step)
        if self.evaluations > self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {state.global_step}: {self.metric} {metrics[self.metric]:.4f}")


def run_trial(params: Params, number: int) -> dict:
    """Train trial `number` of the stored study (its values were asked already); returns its outcome."""
    from finetune.featurize import refeaturized
    from finetune.training import fingerprint, fit

    search = params.search
    study = optuna.load_study(study_name=search.study, storage=storage_url(search), pruner=_pruner(search))
    frozen = study.trials[number]
    trial = optuna.trial.Trial(study, frozen._trial_id)
    trial_params = params.with_values(frozen.params)
    if not paths.LABEL_MAP.exists():
        raise UserError(f"{paths.PREPARED} is missing: run `dvc repro preprocess` before searching")
    labels = read_json(paths.LABEL_MAP)["labels"]
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "val")}
    tables, label_map = refeaturized(trial_params, prepared, labels)
    run_name = f"search {search.study} trial {frozen.user_attrs.get('retry_of', number)}"  # a requeued trial resumes its checkpoint
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            summary = fit(trial_params, tables, label_map, Path(scratch) / "model", Path(scratch) / "live", run_name,
                          extra_callbacks=(ReportToPruner(trial, search.val_metric, search.pruner.warmup_evaluations),))
        except optuna.TrialPruned as pruned:
            shutil.rmtree(paths.CHECKPOINTS / fingerprint(trial_params, run_name), ignore_errors=True)
            return {"state": "pruned", "reason": str(pruned), "seconds": round(time.perf_counter() - start, 1)}
    return {"state": "complete", "value": summary["val"][search.val_metric], "steps": summary["steps"],
            "trainable_share": summary["parameters"]["trainable_share"], "seconds": round(time.perf_counter() - start, 1)}


def run_search(params: Params, runner: Callable[[int], dict], log: Callable[[str], None] = print) -> optuna.Study:
    """Ask for trials until `planned_trials` have finished, `search.concurrency` running at once; each is
    trained by `runner(number)` in a worker thread (the Prefect flow's runner starts a process)."""
    search = params.search
    study = open_study(search)
    requeued = requeue_interrupted(study)
    if requeued:
        log(f"resuming study {search.study!r}: trials {requeued} were interrupted and are queued again")
    target = planned_trials(search)
    running = {}
    with ThreadPoolExecutor(search.concurrency) as pool:
        while True:
            while len(running) < search.concurrency and len(counted_trials(study)) + len(running) < target:
                trial = ask(study, search)
                log(f"trial {trial.number}: {trial.params}")
                context = contextvars.copy_context()  # the Prefect flow run's context reaches the worker thread
                running[pool.submit(context.run, runner, trial.number)] = trial
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _tell(study, running.pop(future), future, log)
            write_results(study, search)
    write_results(study, search)
    return study


def _tell(study: optuna.Study, trial: optuna.Trial, future, log) -> None:
    # GridSampler.after_trial calls study.stop() once the grid is used up, which only works inside
    # study.optimize; this loop counts trials itself, so tell() goes through a sampler without that hook.
    study.sampler = optuna.samplers.RandomSampler()
    try:
        outcome = future.result()
    except Exception as error:  # one broken trial (e.g. diverged, out of memory) must not end the search
        trial.set_user_attr("error", str(error)[-500:])
        study.tell(trial, state=TrialState.FAIL)
        log(f"trial {trial.number} failed: {error}")
        return
    for key in ("seconds", "steps", "trainable_share", "reason"):
        if key in outcome:
            trial.set_user_attr(key, outcome[key])
    if outcome["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, outcome["value"])
    log(f"trial {trial.number} {outcome['state']}: {outcome.get('value', outcome.get('reason'))} ({outcome['seconds']} s)")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value if t.value is not None else
                     (t.intermediate_values[t.last_step] if t.last_step is not None else None),
                     **t.params, "seconds": t.user_attrs.get("seconds"), "steps": t.user_attrs.get("steps"),
                     "evaluations": len(t.intermediate_values), "retry_of": t.user_attrs.get("retry_of")})
    return pd.DataFrame(rows)


def write_results(study: optuna.Study, search: Search) -> None:
    """reports/search/: trials.csv, summary.json, history.png, importance.png (all rewritten together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = trials_table(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    importance = {}
    if len(complete) >= 2 and len(search.space) >= 1:
        try:
            importance = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every complete trial had the same values
            importance = {}
    summary = {"study": search.study, "method": search.method, "metric": f"val {search.val_metric}", "direction": search.direction,
               "trials": len(table), "complete": len(complete), "pruned": int((table["state"] == "pruned").sum()) if len(table) else 0,
               "failed": int((table["state"] == "fail").sum()) if len(table) else 0,
               "best": {"trial": best.number, "value": best.value, "params": best.params} if best else None,
               "importance": {key: round(value, 4) for key, value in importance.items()}}
    with atomic_path(RESULTS) as folder:
        folder.mkdir()
        (folder / "README.md").write_text(RESULTS_README)
        table.to_csv(folder / "trials.csv", index=False)
        write_json(folder / "summary.json", summary)
        figure, axes = plt.subplots(figsize=(7, 3.6))
        for state, marker in (("complete", "o"), ("pruned", "x")):
            part = table[table["state"] == state] if len(table) else table
            if len(part):
                axes.scatter(part["trial"], part["value"], marker=marker, label=state)
        if complete:
            values = [t.value for t in sorted(complete, key=lambda t: t.number)]
            best_so_far = np.maximum.accumulate(values) if search.direction == "maximize" else np.minimum.accumulate(values)
            axes.step([t.number for t in sorted(complete, key=lambda t: t.number)], best_so_far, where="post", label="best so far")
        axes.set_xlabel("trial")
        axes.set_ylabel(f"val {search.val_metric}")
        axes.set_title(f"{search.method} search")
        axes.legend()
        figure.tight_layout()
        figure.savefig(folder / "history.png", dpi=110)
        plt.close(figure)
        figure, axes = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(importance))))
        axes.barh(list(importance)[::-1], list(importance.values())[::-1])
        axes.set_xlabel("importance (fANOVA share of the metric's variance)")
        axes.set_title("most important parameters" if importance else "importance needs >= 2 complete trials")
        figure.tight_layout()
        figure.savefig(folder / "importance.png", dpi=110)
        plt.close(figure)


def apply_best(params_file: Path = paths.PARAMS) -> dict:
    """Write reports/search/summary.json's best values into params.yaml, comments and order kept."""
    from ruamel.yaml import YAML

    from finetune.params import load_params

    summary_file = RESULTS / "summary.json"
    if not summary_file.exists() or not read_json(summary_file)["best"]:
        raise UserError(f"{summary_file} has no completed trial yet: run `python -m flows.search` first")
    best = read_json(summary_file)["best"]["params"]
    yaml = YAML()
    yaml.preserve_quotes = True
    document = yaml.load(params_file.read_text(encoding="utf-8"))
    before = params_file.read_text(encoding="utf-8")
    for key, value in best.items():
        *parents, last = key.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    with params_file.open("w", encoding="utf-8") as f:
        yaml.dump(document, f)
    try:
        load_params(params_file)
    except UserError:
        params_file.write_text(before, encoding="utf-8")  # loses nothing: the file is as it was
        raise
    return best

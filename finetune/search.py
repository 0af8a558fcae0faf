"""Hyper-parameter search over `search.space` with Optuna: grid, random or Bayesian (TPE).

- Every trial is the train stage's own `fit` on data/prepared with the trial's values set (re-tokenized
  when the space touches preprocess.*), scored by its restored best checkpoint on VALIDATION.
- Pruning: each validation evaluation is reported to Optuna's MedianPruner; a trial below the median
  of earlier trials at the same step stops there (state PRUNED, its last value kept). Trials that train in
  torchrun processes (train.processes > 1) cannot report to it: pruning must be off for them, and their
  evaluations along the way are not recorded, only the final value.
- The plan is stored with the study: whoever creates it enqueues every trial as a WAITING trial (grid: each
  combination once, in a seed-shuffled order; random/bayesian: `search.trials` empty ones, valued when taken).
  A process takes one by Optuna's compare-and-set on the trial's state, so several processes share a study
  without running a trial twice or going past the plan. The sampler is re-seeded with `seed + trial number`
  when a trial is taken: random values depend on the seed alone, TPE's also on the trials finished before.
- The study lives in `search.storage`: .cache/search/STUDY.db (SQLite) by default, or a storage several
  `--worker` processes on several machines share (PostgreSQL/MySQL URL, or journal:PATH on a shared folder).
- Rerunning `python -m flows.search` resumes: finished trials are kept, a trial killed mid-run is marked FAIL
  and re-queued with the same values (first: it resumes its checkpoint). Workers re-queue nothing.
- reports/search/ gets trials.csv, summary.json (best params), history.png and importance.png after
  every trial; the report stage shows them. `apply_best` writes the best values into params.yaml.
Limits: `python -m flows.search` owns its study: run it while no worker runs, or it re-queues (and trains
again) their running trials. A worker cannot tell a dead worker's trial from a live one's: what a killed
worker left RUNNING stays so until `python -m flows.search` re-queues it. SQLite is for processes on one
machine (file locks over NFS are unreliable); across machines use a server database or journal:PATH.
Over 400 lines: one study's whole life (storage, plan, claims, trials, results) is one protocol between processes on
several machines; split, its invariants (who re-queues what, when a plan is final) would span files.
"""
from __future__ import annotations

import contextvars
import itertools
import json
import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
from filelock import FileLock
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from transformers import TrainerCallback

from finetune import paths
from finetune.config.params import Params
from finetune.config.sections import Search, masked_url
from finetune.errors import UserError
from finetune.io import atomic_path, read_json, write_json
from finetune.tasks import get_task
from finetune.training.distributed import launches

STUDIES = Path(".cache/search")
RESULTS = paths.SEARCH
RESULTS_README = """Written by `python -m flows.search` (finetune/search.py): trials.csv, summary.json, history.png and
importance.png of the last search. Small files, tracked by git so the team sees them; the report stage shows them.
"""
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process took a trial, in its user attrs
PLAN_WAIT = 120  # seconds a worker waits for the process that created the study to finish planning it
optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(search: Search) -> str:
    """The storage's URL as printed: without a password (search.storage never holds one)."""
    return search.storage or f"sqlite:///{STUDIES / search.study}.db"


def _with_password(url: str, search: Search) -> str:
    """The URL to connect with: the password of search.storage_password_env's variable put in, only in memory."""
    from urllib.parse import quote, urlsplit, urlunsplit

    if not search.storage_password_env:
        return url
    password = os.environ.get(search.storage_password_env)
    if password is None:
        raise UserError(f"search.storage_password_env {search.storage_password_env}: that environment variable is not set")
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        raise UserError(f"search.storage {masked_url(url)}: name the user (USER@HOST) to connect with the password of "
                        f"{search.storage_password_env}")
    return urlunsplit((parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, parts.query, parts.fragment))


def _check_journal(path: Path, url: str) -> None:
    """An existing journal:PATH must be a file whose first line is an Optuna journal record ({"op_code": ...}).
    Optuna tolerates an unparsable LAST line (a write in progress), so a file of something else (a SQLite
    database, a text) would be read as an empty journal, appended to, and fail later mid-search."""
    if not path.exists():
        return  # created on first use
    problem = "" if path.is_file() else "not a regular file"
    if not problem:
        with path.open("rb") as journal:
            first = journal.readline(2**20)
        try:  # a first line without its newline may be a worker writing it now: it must start as a record does
            record = json.loads(first) if first.endswith(b"\n") or not first.startswith(b"{") else {"op_code": None}
            problem = "" if isinstance(record, dict) and "op_code" in record else "its first line is not a journal record"
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            problem = "its first line is not JSON"
    if problem:
        raise UserError(f"search.storage {url}: not an Optuna journal file ({problem}); name a new file (created on first use) "
                        "or the journal the study's workers share")


def storage(search: Search) -> optuna.storages.BaseStorage:
    """`search.storage` opened: journal:PATH as a JournalStorage on a JournalFileBackend (append-only file with a
    symlink lock, fit for NFS), every other URL as an RDBStorage (SQLite, PostgreSQL, MySQL through SQLAlchemy)."""
    import sqlalchemy

    url = storage_url(search)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_journal(path, url)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = url.startswith("sqlite:///")
    if sqlite:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # SQLite: Python's sqlite3 starts no transaction for a SELECT, so the read-then-update of Optuna's claim
    # (WAITING -> RUNNING) is not atomic and two processes could take the same trial (seen here: 1 in 60).
    # SQLAlchemy's documented recipe: sqlite3 emits no BEGIN, the engine emits BEGIN IMMEDIATE (a write lock).
    engine = {"connect_args": {"isolation_level": None, "timeout": 60}} if sqlite else None
    for attempt in range(3):
        try:
            store = optuna.storages.RDBStorage(_with_password(url, search), engine_kwargs=engine)
            break
        except ImportError as error:
            raise UserError(f"search.storage {masked_url(url)} needs a database driver that is not installed ({error.__cause__ or error}); "
                            "drivers are yours to install: postgresql:// uses psycopg (`pip install 'psycopg[binary]'`), mysql:// uses "
                            "mysqlclient; or name one you have, e.g. postgresql+psycopg2://, mysql+pymysql://") from None
        except sqlalchemy.exc.SQLAlchemyError as error:
            # workers opening a new database at once all create Optuna's tables: the losers find them made on a retry
            if attempt == 2:
                raise UserError(f"search.storage {masked_url(url)} cannot be opened: {getattr(error, 'orig', None) or type(error).__name__}") from None
            time.sleep(1)
    if sqlite:
        sqlalchemy.event.listen(store.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    return store


def planned_trials(search: Search) -> int:
    if search.method == "grid":
        return int(np.prod([len(axis.grid_values()) for axis in search.space.values()]))
    return search.trials


def _sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    if search.method != "bayesian":  # a grid trial is enqueued with all its values: the sampler is never asked
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


def open_study(search: Search, store: optuna.storages.BaseStorage, owner: bool = True) -> optuna.Study:
    """The study, planned. Its creator plans it, and so does its `owner` (`python -m flows.search`: what a raised
    search.trials adds); any other process waits until the plan is stored."""
    try:  # what create_study(load_if_exists=True) does, but it tells whether this process created the study
        study = optuna.create_study(study_name=search.study, storage=store, direction=search.direction, pruner=_pruner(search))
        study.set_user_attr("signature", _signature(search))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=search.study, storage=store, pruner=_pruner(search))
        created = False
    if not (created or owner):
        deadline = time.monotonic() + PLAN_WAIT
        while "planned" not in study.user_attrs:  # set last by the planner: the whole plan is stored
            if time.monotonic() > deadline:
                raise UserError(f"study {search.study!r} in {masked_url(storage_url(search))} has no plan after {PLAN_WAIT} s: the process that "
                                "created it stopped before storing it; run `python -m flows.search` once (it plans the study and "
                                "runs it), or delete the study (`optuna delete-study --study-name NAME --storage URL`, or the "
                                "journal file) and start the workers again")
            time.sleep(0.5)
    stored = study.user_attrs.get("signature")
    if stored is None:  # a study of an older version of this code
        study.set_user_attr("signature", _signature(search))
    elif stored != _signature(search):
        raise UserError(f"study {search.study!r} in {masked_url(storage_url(search))} was run with another search.method, metric or space; "
                        f"set a new search.study name (or delete that study to start over)")
    if created or owner:
        _plan(study, search)
    return study


def _lineage(trial: optuna.trial.FrozenTrial) -> int:
    return trial.user_attrs.get("retry_of", trial.number)


def planned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that hold a place in the plan: the latest attempt of each (an interrupted, re-queued one does not)."""
    trials = study.get_trials(deepcopy=False)
    latest = {}
    for trial in trials:
        latest[_lineage(trial)] = max(latest.get(_lineage(trial), -1), trial.number)
    return [t for t in trials if latest[_lineage(t)] == t.number]


def _plan(study: optuna.Study, search: Search) -> None:
    """Enqueue what the plan lacks as WAITING trials, then mark the study planned."""
    held = planned(study)
    if search.method == "grid":
        keys = list(search.space)
        combinations = list(itertools.product(*(search.space[key].grid_values() for key in keys)))
        # a WAITING trial's values are fixed (enqueued), not yet set
        have = {json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True) for t in held}
        for index in np.random.default_rng(search.seed).permutation(len(combinations)):
            combination = dict(zip(keys, combinations[index]))
            if json.dumps(combination, sort_keys=True) not in have:
                study.enqueue_trial(combination)
    else:
        for _ in range(search.trials - len(held)):
            study.enqueue_trial({})  # its values are sampled when a process takes it, from the trials finished by then
    study.set_user_attr("planned", len(planned(study)))


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a killed search: FAIL them and queue their values again."""
    interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for trial in interrupted:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": _lineage(trial)})
    return [t.number for t in interrupted]


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials that count towards search.trials (an interrupted-and-requeued one does not)."""
    return [t for t in planned(study) if t.state.is_finished()]


def claim(study: optuna.Study, store: optuna.storages.BaseStorage, search: Search) -> optuna.Trial | None:
    """Take the next planned trial nobody has taken, its values suggested; None when none is left.

    Why not study.ask(): it pops a WAITING trial, but CREATES one when none is left, so two processes asking at
    the same moment near the end would go past the plan; MaxTrialsCallback only stops after a trial ended, with
    the same race. Taking goes through the storage's own compare-and-set instead, the one ask() pops with:
    set_trial_state_values(RUNNING) succeeds for one process only (False or UpdateFinishedTrialError for the rest).
    """
    held = planned(study)
    if sum(t.state != TrialState.WAITING for t in held) >= planned_trials(search):
        return None  # search.trials was lowered below the stored plan: stop there
    waiting = [t for t in held if t.state == TrialState.WAITING]
    for frozen in sorted(waiting, key=lambda t: ("retry_of" not in t.user_attrs, t.number)):  # retries first: they resume a checkpoint
        try:
            if not store.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        study.sampler = _sampler(search, search.seed + frozen.number)
        trial = optuna.Trial(study, frozen._trial_id)
        trial.set_user_attr("worker", WORKER)
        _suggest(trial, search)
        return trial
    return None


def _suggest(trial: optuna.Trial, search: Search) -> None:
    for key, axis in search.space.items():
        if axis.choice is not None:
            trial.suggest_categorical(key, axis.choice)
        elif axis.integer is not None:
            trial.suggest_int(key, *axis.integer)
        else:
            trial.suggest_float(key, *(axis.uniform or axis.log_uniform), log=axis.log_uniform is not None)


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
    from finetune.training.fit import fingerprint, fit

    search = params.search
    study = optuna.load_study(study_name=search.study, storage=storage(search), pruner=_pruner(search))
    frozen = study.trials[number]
    trial = optuna.trial.Trial(study, frozen._trial_id)
    if unknown := sorted(set(frozen.params) - set(search.space)):  # a shared storage is data: it may set nothing else
        raise UserError(f"trial {number} of study {search.study!r} sets {unknown}, outside search.space ({sorted(search.space)}); "
                        "refusing to train it")
    trial_params = params.with_values(frozen.params)
    if not paths.LABEL_MAP.exists():
        raise UserError(f"{paths.PREPARED} is missing: run `dvc repro preprocess` before searching")
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "val")}
    task = get_task(params.task)
    tables, label_map = task.features_for(trial_params, prepared, read_json(paths.LABEL_MAP))
    run_name = f"search {search.study} trial {frozen.user_attrs.get('retry_of', number)}"  # a requeued trial resumes its checkpoint
    # a trial trained by torchrun's processes is out of this process's reach (run_search refused pruning for it)
    reporting = () if launches(trial_params.train) else (ReportToPruner(trial, search.val_metric, search.pruner.warmup_evaluations),)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            summary = fit(task, trial_params, tables, label_map, Path(scratch) / "model", Path(scratch) / "live", run_name, extra_callbacks=reporting)
        except optuna.TrialPruned as pruned:
            shutil.rmtree(paths.CHECKPOINTS / fingerprint(trial_params, run_name), ignore_errors=True)
            return {"state": "pruned", "reason": str(pruned), "seconds": round(time.perf_counter() - start, 1)}
    return {"state": "complete", "value": summary["val"][search.val_metric], "steps": summary["steps"],
            "trainable_share": summary["parameters"]["trainable_share"], "seconds": round(time.perf_counter() - start, 1)}


def run_search(params: Params, runner: Callable[[int], dict], log: Callable[[str], None] = print, worker: bool = False) -> optuna.Study:
    """Run the planned trials nobody else has taken, `search.concurrency` at once, each trained by `runner(number)`
    in a thread (the runners start a process); returns when none is left to take. `worker`: one of several
    processes sharing the study, which re-queues nothing; otherwise this process owns the study (see open_study)."""
    search = params.search
    if search.pruner.enabled and launches(params.train):
        raise UserError(f"search.pruner.enabled with train.processes {params.train.processes}: each trial would train in torchrun's processes, "
                        "where Optuna's pruner in this process cannot follow it; set search.pruner.enabled: false (trials run to the end) "
                        "or train.processes: 1")
    store = storage(search)
    study = open_study(search, store, owner=not worker)
    requeued = [] if worker else requeue_interrupted(study)
    if requeued:
        log(f"resuming study {search.study!r}: trials {requeued} were interrupted and are queued again")
    running = {}
    with ThreadPoolExecutor(search.concurrency) as pool:
        while True:
            while len(running) < search.concurrency and (trial := claim(study, store, search)) is not None:
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
    for t in study.get_trials(deepcopy=False, states=[s for s in TrialState if s != TrialState.WAITING]):  # WAITING: planned, not started
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value if t.value is not None else
                     (t.intermediate_values[t.last_step] if t.last_step is not None else None),
                     **t.params, "seconds": t.user_attrs.get("seconds"), "steps": t.user_attrs.get("steps"),
                     "evaluations": len(t.intermediate_values), "retry_of": t.user_attrs.get("retry_of")})
    return pd.DataFrame(rows)


def write_results(study: optuna.Study, search: Search) -> None:
    """reports/search/: trials.csv, summary.json, history.png, importance.png (all rewritten together). Processes
    of one project write in turn, each reading the study inside the lock (so the last write holds the latest
    state), and because atomic_path clears the unfinished temporary folders it finds, another process's too."""
    STUDIES.mkdir(parents=True, exist_ok=True)
    with FileLock(STUDIES / "results.lock"):
        _write_results(study, search)


def _write_results(study: optuna.Study, search: Search) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = trials_table(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    importance = {}
    # Optuna's importance evaluator hashes each axis's choices: a choice of lists ([0.8, 1.0], a crop range) raised
    # TypeError and ended the whole search after its second trial (configs/image.yaml's space has one); those axes are
    # left out of the importance and named
    unranked = sorted(key for key, axis in search.space.items() if axis.choice is not None and any(isinstance(v, (list, dict)) for v in axis.choice))
    ranked = [key for key in search.space if key not in unranked]
    if len(complete) >= 2 and ranked:
        try:
            importance = optuna.importance.get_param_importances(study, params=ranked)
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every complete trial had the same values
            importance = {}
    summary = {"study": search.study, "method": search.method, "metric": f"val {search.val_metric}", "direction": search.direction,
               "trials": len(table), "complete": len(complete), "pruned": int((table["state"] == "pruned").sum()) if len(table) else 0,
               "failed": int((table["state"] == "fail").sum()) if len(table) else 0,
               "best": {"trial": best.number, "value": best.value, "params": best.params} if best else None,
               "importance": {key: round(value, 4) for key, value in importance.items()},
               **({"importance_not_ranked": {key: "its choices are lists, which Optuna's evaluator cannot rank" for key in unranked}} if unranked else {})}
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
    """Write reports/search/summary.json's best values into params.yaml (finetune/config/files.py set_values: validated,
    comments and order kept, atomically). Only keys of search.space may be written: summary.json is shared through git,
    and a crafted one must not set trust_remote_code, data.source or search.storage."""
    from finetune.config.files import set_values
    from finetune.config.params import load_params

    summary_file = RESULTS / "summary.json"
    if not summary_file.exists() or not read_json(summary_file)["best"]:
        raise UserError(f"{summary_file} has no completed trial yet: run `python -m flows.search` first")
    best = read_json(summary_file)["best"]["params"]
    space = load_params(params_file).search.space
    outside = sorted(set(best) - set(space)) if isinstance(best, dict) else [repr(best)]
    if outside:
        raise UserError(f"{summary_file}: its best values set {outside}, outside search.space ({sorted(space)}); only the "
                        "searched keys are written")
    set_values(params_file, best, f"{summary_file}'s best values")
    return best

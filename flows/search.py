"""Hyper-parameter search as a Prefect flow: every trial a task, `search.concurrency` at once.

    python -m flows.search                 # run (or resume) the search in params.yaml's `search` section
    python -m flows.search --apply-best    # write the best trial's values into params.yaml, then `dvc repro`
    python -m flows.search --apply-best --no-repro
    python -m flows.search --worker        # one of several processes (machines) sharing search.storage's study

Needs data/prepared (`dvc repro preprocess`). Each trial runs `python -m flows.search --trial N` in its
own process (a clean, seeded training run of the same code, with cores // concurrency torch threads).
What is searched, how, and where results go: finetune/search.py. The study resumes from
search.storage (.cache/search/STUDY.db by default) when rerun; results land in reports/search/ and the
report stage shows them.
A worker is a plain process (no Prefect server needed): it joins the study, creating and planning it if it
comes first, runs trials nobody has taken (`search.concurrency` at once) until none is left, writes
reports/search/ from the shared study after each, and prints the trials it ran. It re-queues nothing: a
killed worker's trials stay RUNNING until `python -m flows.search` (without --worker, when no worker runs)
re-queues them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from optuna.trial import TrialState  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from finetune import search  # noqa: E402
from finetune.config.params import Params, load_params
from finetune.config.sections import masked_url  # noqa: E402
from finetune.errors import UserError  # noqa: E402
from flows.pipeline import Resources  # noqa: E402


def trial_process(number: int, params_file: str, resources: Resources) -> dict:
    """One trial in a fresh process; its outcome comes back as JSON on the last line of stdout."""
    gpu, extra = resources.acquire()
    try:
        done = subprocess.run([sys.executable, "-m", "flows.search", "--trial", str(number), "--params", params_file],
                              env={**os.environ, **extra}, capture_output=True, text=True)
    finally:
        resources.release(gpu)
    if done.returncode != 0:
        raise RuntimeError(f"trial {number} exited {done.returncode}:\n" + failure(done.stderr))
    return json.loads(done.stdout.strip().splitlines()[-1])


def failure(stderr: str, lines: int = 15) -> str:
    """The end of a failed trial's stderr without the interpreter's shutdown noise: objects whose __del__ fails while Python
    exits ("Exception ignored in ... sys.meta_path is None", dulwich's pack files) print blocks AFTER the real traceback,
    which then fell out of the 15 lines shown."""
    kept, noise = [], False
    for line in stderr.strip().splitlines():
        if line.startswith("Exception ignored in"):
            noise = True
            continue
        if noise and (line.startswith((" ", "Traceback")) or "sys.meta_path is None" in line):
            continue
        noise = False
        kept.append(line)
    return "\n".join(kept[-lines:])


@task(cache_policy=NO_CACHE)
def trial(number: int, params_file: str, resources: Resources) -> dict:
    outcome = trial_process(number, params_file, resources)
    get_run_logger().info(f"trial {number}: {outcome}")
    return outcome


def _artifact() -> None:
    import pandas as pd

    summary = json.loads((search.RESULTS / "summary.json").read_text())
    trials = pd.read_csv(search.RESULTS / "trials.csv")
    table = "| " + " | ".join(trials.columns) + " |\n|" + "---|" * len(trials.columns) + "\n"
    table += "\n".join("| " + " | ".join("" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
                       for row in trials.itertuples(index=False))
    best = summary["best"]
    create_markdown_artifact(key="search", description=f"{summary['method']} search on {summary['metric']}",
                             markdown=(f"Best trial {best['trial']}: {summary['metric']} {best['value']:.4f} with `{best['params']}`\n\n"
                                       if best else "No trial completed.\n\n") + table)


@flow(name="finetune-search", log_prints=True)
def search_flow(params_file: str = "params.yaml") -> dict:
    """Run (or resume) the study; returns reports/search/summary.json."""
    params = load_params(params_file)
    resources = Resources(params.search.concurrency)
    runner = lambda number: trial.with_options(task_run_name=f"trial-{number}")(number, params_file, resources)  # noqa: E731
    search.run_search(params, runner)
    _artifact()
    return json.loads((search.RESULTS / "summary.json").read_text())


def preflight(params: Params) -> None:
    """Model-dependent checks (depth, module names) of every combination of the values that bound the
    space, before any trial trains. Models are built on the meta device: the module tree, no weights."""
    import itertools

    from finetune.tasks import get_task
    from finetune.training.strategies import check_against_model

    task, models = get_task(params.task), {}
    keys = list(params.search.space)
    for combination in itertools.product(*(params.search.space[key].probe_values() for key in keys)):
        train = params.with_values(dict(zip(keys, combination))).train
        if train.model not in models:
            models[train.model] = task.models.outline(train)
        check_against_model(train, models[train.model])


def work(params: Params, params_file: str) -> None:
    print(f"worker {search.WORKER}: study {params.search.study!r} in {masked_url(search.storage_url(params.search))}")
    resources = Resources(params.search.concurrency)
    study = search.run_search(params, lambda number: trial_process(number, params_file, resources), worker=True)
    trials = study.get_trials(deepcopy=False)
    ran = {t.number: t.state.name.lower() for t in trials if t.user_attrs.get("worker") == search.WORKER}
    elsewhere = [t.number for t in trials if t.state == TrialState.RUNNING]
    print(json.dumps({"worker": search.WORKER, "ran": ran, "finished": len(search.counted_trials(study)),
                      "planned": len(search.planned(study)), "running_elsewhere": elsewhere}))


def main(argv: list[str] | None = None) -> None:
    from flows.cli import search_arguments

    args = search_arguments().parse_args(argv)
    try:
        if args.apply_best:
            best = search.apply_best(Path(args.params))
            print(f"wrote {best} into {args.params}")
            if not args.no_repro:
                sys.exit(subprocess.run(["dvc", "repro"]).returncode)
            return
        params = load_params(args.params)
        if args.trial is not None:
            print(json.dumps(search.run_trial(params, args.trial)))
            return
        preflight(params)
        if args.worker:
            work(params, args.params)
            return
        summary = search_flow(args.params)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary["best"]))


if __name__ == "__main__":
    main()

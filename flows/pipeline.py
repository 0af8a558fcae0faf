"""Run dvc.yaml's DAG as a Prefect flow: one task per DVC stage, independent stages concurrently.

    python -m flows.pipeline [TARGET] [--force] [-S key=value ...] [--concurrency N] [--retries N]
                             [--task-runner threads|dask] [--dask-address tcp://HOST:8786]

The tasks and their order come from DVC's own graph of dvc.yaml (never a second list here), and
each task reproduces its stage THROUGH DVC (`dvc repro --single-item`), so DVC stays the one cache
authority: dvc.lock ends the same whichever entry point ran, and a stage DVC sees as unchanged is
reported as Cached without running. A stage starts only when all its upstream stages finished.
`-S` overrides are validated by the params schema, then written to params.yaml like
`dvc exp run -S` does, before any stage runs (comments and layout kept, written atomically; turning
trust_remote_code on is refused: only params.yaml itself may). The project is the current directory;
a run holds .cache/pipeline.lock until it ends, so a second run of the same project waits (--wait) or
stops with a message instead of racing the first one.
Concurrent stages share the machine: on CPU each gets cores // concurrency torch threads; on a
machine with several GPUs, concurrent stages get different GPUs (CUDA_VISIBLE_DEVICES).
Task runners (flow parameters, so a deployment's run can choose too): `threads` (default) runs up to
`concurrency` stages at once in this process's threads; `dask` (prefect-dask) runs them on a temporary
local Dask cluster of `concurrency` single-threaded worker processes, or, with `--dask-address`, on the
workers of a running Dask scheduler, so independent stages (ensemble members) run on other machines.
Each stage's output (and where and when it ran) is logged by the flow run itself, whatever the runner.
Limits: no retries of the train stage by default (`--retries` applies to every stage). Dask workers on
other machines need the project at the SAME absolute path on a shared file system (stages pass their
outputs through the workspace, not through Dask), the project's venv, and a Prefect API they can reach
(the flow's PREFECT_API_URL: not the temporary loopback server a run starts when none is configured).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import yaml

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's ~70 INFO lines a run would drown the stages' own

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_link_artifact, create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.states import Completed  # noqa: E402
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner  # noqa: E402

from finetune.errors import UserError  # noqa: E402

# in a deployed run: the Dask schedulers its dask_address may name (space-separated), fixed by the work pool's job
# template (flows/deploy.py --dask-address); a run's parameter could otherwise send the stages to any scheduler
DASK_ALLOWED = "FINETUNE_DASK_ADDRESSES"


def stage_graph(root: Path) -> dict[str, set[str]]:
    """{stage name: names of the stages it depends on}, from DVC's graph of dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge goes from a stage to a stage it depends on
        named = [stage for stage in graph.nodes if getattr(stage, "name", None)]
        return {stage.name: {up.name for up in graph.successors(stage) if getattr(up, "name", None)} for stage in named}


def with_upstream(graph: dict[str, set[str]], target: str | None) -> dict[str, set[str]]:
    if target is None:
        return graph
    if target not in graph:
        raise UserError(f"unknown stage {target!r}; stages in dvc.yaml: {', '.join(graph)}")
    keep, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(graph[name])
    return {name: ups for name, ups in graph.items() if name in keep}


def apply_overrides(root: Path, overrides: list[str], write: bool = True) -> None:
    """Validate `key=value` overrides against the schema, then write them into params.yaml (finetune/config/files.py
    set_values: comments and layout kept, written atomically; turning trust_remote_code on is refused)."""
    if not overrides:
        return
    from finetune.config.files import set_values

    values = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise UserError(f"-S {override!r}: expected key=value, e.g. -S train.learning_rate=3e-5")
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UserError(f"-S {key}: {value!r} is not a YAML value ({error})") from None
    set_values(root / "params.yaml", values, f"-S {' '.join(values)}", write=write)  # the keys: a value may be a credential


class RunLock:
    """One flow run per project at a time: a second waits `wait` seconds, then stops with a clear message
    (two runs would run stages with each other's params or lose each other's -S edits)."""

    def __init__(self, root: Path, wait: float):
        from filelock import FileLock

        (root / ".cache").mkdir(exist_ok=True)
        self.path, self.wait = root / ".cache/pipeline.lock", wait
        self.lock = FileLock(str(self.path))

    def __enter__(self):
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=self.wait)
        except Timeout:
            raise UserError(f"another pipeline run of this project holds {self.path}; wait for it to finish (or pass a longer --wait)") from None
        return self

    def __exit__(self, *exc):
        self.lock.release()


class Resources:
    """Hands each running stage a GPU and a share of the cores of the machine it runs on. Picklable (with
    Dask it travels to the workers): it holds the concurrency and the flow machine's GPUs; the free GPUs
    are a pool of the process that runs the stages (`_free_gpus`): the flow's own with threads, each
    worker's with Dask. torch is imported here, in the flow's process, never in a Dask worker (a worker
    that imported torch then hung 4 s at exit, until its nanny killed it)."""

    def __init__(self, concurrency: int):
        import torch

        self.concurrency = concurrency
        self.gpus = tuple(range(torch.cuda.device_count()))

    def acquire(self) -> tuple[int | None, dict]:
        with _GPU_LOCK:
            free = _free_gpus(self.gpus)
            gpu = free.pop(0) if free else None
        threads = max(1, len(os.sched_getaffinity(0)) // self.concurrency)  # the cores this process may use
        # always explicit: a value inherited from the caller (some libraries, Dask's nanny too, set 1) would
        # change the float reduction order, and with it the logged losses, against a plain `dvc repro`
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        return gpu, env

    def release(self, gpu: int | None) -> None:
        if gpu is not None:
            with _GPU_LOCK:
                _free_gpus(self.gpus).append(gpu)


_GPU_LOCK = threading.Lock()


@functools.cache  # one pool per process, called under _GPU_LOCK
def _free_gpus(gpus: tuple[int, ...]) -> list[int]:
    """The GPUs this process hands out. A local Dask cluster's worker i (LocalCluster names them 0..n-1)
    owns GPU i modulo their number, so its workers don't all take GPU 0. A remote worker (`dask worker`
    names are strings) hands out none: its stages keep the worker's own CUDA_VISIBLE_DEVICES (start one
    worker per GPU, as dask-cuda does)."""
    worker = _dask_worker()
    if worker is None:
        return list(gpus)
    return [gpus[worker.name % len(gpus)]] if gpus and isinstance(worker.name, int) else []


def _dask_worker():
    """The Dask worker running this code, or None (a worker process has `distributed` imported)."""
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].get_worker()
    except ValueError:
        return None


def _where() -> str:
    worker = _dask_worker()
    return f"{socket.gethostname()} pid {os.getpid()}" + (f" (Dask worker {worker.name} at {worker.address})" if worker else "")


def stage_changed(root: Path, name: str) -> bool:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.status(targets=[f"{root}/dvc.yaml:{name}"]))


def has_default_remote(root: Path) -> bool:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.config["core"].get("remote"))


def run_stage(root: Path, name: str, force: bool, resources: Resources, pull: bool = False):
    """Reproduce one stage through DVC; returns where and when it ran and its output, which the flow
    process logs (task logs written on a Dask worker reach the run only if that worker reaches the API).
    `pull` (the project has a default DVC remote): `dvc repro --pull`, so a run a teammate pushed is restored from
    the remote instead of run, as `dvc repro --pull` does it (docs/team-sharing.md). A stage DVC restored, from
    its run cache or its pulled outputs, ends as Restored."""
    if not force and not stage_changed(root, name):
        return Completed(message=f"{name}: up to date", name="Cached")
    gpu, extra = resources.acquire()
    started = time.time()
    try:
        env = {**os.environ, **extra, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        command = ["dvc", "repro", "--single-item", f"{root}/dvc.yaml:{name}", *(["--force"] if force else []), *(["--pull"] if pull else [])]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    finally:
        resources.release(gpu)
    if done.returncode != 0:
        message = done.stdout.strip().splitlines()[-10:] + done.stderr.strip().splitlines()[-20:]
        raise RuntimeError(f"stage {name!r} failed (exit {done.returncode}) on {_where()}:\n" + "\n".join(message))
    if f"Running stage '{name}'" not in done.stdout:
        return Completed(message=f"{name}: restored, not run: {done.stdout.strip()}", name="Restored")
    return {"where": _where(), "started": started, "ended": time.time(), "output": done.stdout}


def publish_artifacts(root: Path) -> None:

    metrics, combined = root / "reports/metrics.json", root / "reports/ensemble.json"
    if metrics.exists():
        results = {"model": json.loads(metrics.read_text())}
        if combined.exists() and "method" in (ensemble := json.loads(combined.read_text())):
            results[f"ensemble ({ensemble['method']})"] = ensemble.get("test", ensemble)  # a generative ensemble's scores are under test
        if "baseline" in results["model"]:
            results[f"baseline: {results['model']['baseline']['strategy']}"] = results["model"]["baseline"]
        names = {"accuracy": "accuracy", "f1_macro": "macro F1", "f1_weighted": "weighted F1", "perplexity": "perplexity",
                 "token_accuracy": "next-token accuracy"}
        names = {key: label for key, label in names.items() if all(key in r for r in results.values())}  # what every column has
        table = "\n".join(f"| {label} | " + " | ".join(f"{r[key]:.4f}" for r in results.values()) + " |" for key, label in names.items())
        header = f"| test metric | {' | '.join(results)} |\n|---|{'---|' * len(results)}"
        create_markdown_artifact(
            key="test-metrics",
            markdown=f"{header}\n{table}\n\nHTML report: `{root / 'reports/report.html'}`",
            description="Test metrics of the fine-tuned model (and the ensemble)",
        )
    compressed = root / "reports/compress.json"
    if compressed.exists() and json.loads(compressed.read_text()).get("models"):  # none when the stage was skipped
        result = json.loads(compressed.read_text())
        columns = {"size_mb": "MiB", "latency_ms_batch_1": "ms, batch 1", "latency_ms_batch_32": "ms, batch 32",
                   "accuracy": "test accuracy", "f1_macro": "test macro F1"}
        rows = "\n".join(f"| {name} | " + " | ".join(f"{row[key]:g}" for key in columns) + " |" for name, row in result["models"].items())
        create_markdown_artifact(
            key="compression",
            markdown=f"| model ({result['teacher']} = teacher) | {' | '.join(columns.values())} |\n|---|{'---|' * len(columns)}\n{rows}",
            description=f"Compressed models vs their teacher (CPU, {result['threads']} threads)",
        )
    if (root / "reports/report.html").exists():
        create_link_artifact(key="report", link=(root / "reports/report.html").as_uri(), link_text="HTML report",
                             description="The self-contained HTML report of this run")


@flow(name="finetune-pipeline", log_prints=True)
def pipeline(target: str | None = None, force: bool = False, overrides: list[str] | None = None,
             concurrency: int = 2, retries: int = 0, wait: float = 0,
             task_runner: Literal["threads", "dask"] = "threads", dask_address: str | None = None) -> dict[str, str]:
    """Reproduce dvc.yaml (or TARGET and what it needs) through DVC, independent stages concurrently.
    The project is the current directory (a served deployment's is pinned to its project: no parameter
    can point a run at another folder). `concurrency` caps the stages running at once (threads, or the
    local Dask cluster's worker processes) and sizes each stage's share of the cores. `dask_address` (a
    running Dask scheduler) implies the dask runner. The task runner is built here from the parameters,
    not by the decorator, so a deployment's run chooses it too. The whole run holds the project's run
    lock, -S edits of params.yaml included."""
    base = Path.cwd().resolve()
    with RunLock(base, wait), stage_runner(task_runner, concurrency, dask_address) as runner:
        return _reproduce(base, runner, target, force, overrides or [], concurrency, retries)


@contextlib.contextmanager
def stage_runner(kind: str, concurrency: int, dask_address: str | None = None):
    """The started task runner the stages run on (with Dask: the local cluster is up, or its scheduler answered)."""
    if concurrency < 1:
        raise UserError(f"concurrency {concurrency}: expected 1 or more")
    if dask_address:
        from prefect.runtime import deployment
        from prefect.settings import PREFECT_API_URL
        from prefect_dask import DaskTaskRunner

        allowed = os.environ.get(DASK_ALLOWED, "").split()
        if deployment.id and dask_address not in allowed:
            raise UserError(f"dask_address {dask_address!r} is not a scheduler this deployment's work pool allows ({' '.join(allowed) or 'none'}); "
                            f"deploy with --dask-address {dask_address} to allow it")
        if not PREFECT_API_URL.value():
            raise UserError(f"dask_address {dask_address!r}: the workers report to the Prefect API, so it must be a server they "
                            "can reach: set PREFECT_API_URL (without it this run would use a temporary server inside this process)")
        runner = DaskTaskRunner(address=dask_address)
    elif kind == "dask":
        from prefect.context import FlowRunContext
        from prefect_dask import DaskTaskRunner

        # the workers are told this run's API: with no PREFECT_API_URL set, each would start its own
        # temporary server. One thread per worker process: a worker runs one stage at a time. Each imports
        # this module (prefect, dvc: seconds) while the cluster starts, not when its first stage is due.
        api = {"PREFECT_API_URL": str(FlowRunContext.get().client.api_url)}
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": concurrency, "threads_per_worker": 1, "processes": True, "env": api,
                                                "preload": [__name__], "dashboard_address": "127.0.0.1:0"})
    else:
        runner = ThreadPoolTaskRunner(max_workers=concurrency)
    with runner:
        if dask_address:
            try:
                runner.client  # noqa: B018 (connects now: before any -S edit or stage)
            except (OSError, ValueError) as error:
                raise UserError(f"dask_address {dask_address!r}: no Dask scheduler answered ({error})") from None
        yield runner


def _reproduce(base: Path, runner: TaskRunner, target, force: bool, overrides: list[str], concurrency: int, retries: int) -> dict[str, str]:
    apply_overrides(base, overrides)
    graph = with_upstream(stage_graph(base), target)
    resources, pull = Resources(concurrency), has_default_remote(base)
    stage_task = task(run_stage, retries=retries, cache_policy=NO_CACHE)  # DVC is the only cache
    futures = {}
    pending = dict(graph)
    while pending:  # submit in topological order so every upstream future exists
        for name in [name for name, ups in pending.items() if ups <= set(futures)]:
            futures[name] = runner.submit(stage_task.with_options(name=name, task_run_name=name),
                                          parameters={"root": base, "name": name, "force": force, "resources": resources, "pull": pull},
                                          wait_for=[futures[up] for up in graph[name]])
            del pending[name]
    logger, names = get_run_logger(), {future: name for name, future in futures.items()}
    for future in as_completed(list(futures.values())):  # each stage's report as soon as it ends
        future.wait()
        name, state = names[future], future.state
        if state.is_failed():
            logger.error(f"stage {name!r}: {state.message}")
        elif state.name == "Cached":
            logger.info(f"stage {name!r} didn't change: skipped (DVC cache)")
        elif state.name == "Restored":
            logger.info(f"stage {name!r} restored from DVC's run cache or remote: not run")
        elif state.is_completed():
            ran = state.result()
            logger.info(f"stage {name!r} ran on {ran['where']} in {ran['ended'] - ran['started']:.1f} s "
                        f"({time.strftime('%H:%M:%S', time.localtime(ran['started']))} to {time.strftime('%H:%M:%S', time.localtime(ran['ended']))})"
                        + "".join(f"\n  {line}" for line in ran["output"].splitlines()))
    states = {name: future.state for name, future in futures.items()}
    publish_artifacts(base)
    failed = [name for name, state in states.items() if not state.is_completed()]
    if failed:
        raise RuntimeError(f"stages not completed: {', '.join(failed)}")
    return {name: state.name for name, state in states.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", help="a dvc.yaml stage: run it and what it needs (default: every stage)")
    parser.add_argument("-f", "--force", action="store_true", help="rerun stages even if DVC sees no change")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param (same spelling as `dvc exp run -S`); validated before any stage runs")
    parser.add_argument("--concurrency", type=int, default=2, help="stages running at once (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=0, help="retries of a failed stage (default: %(default)s)")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for another run of this project to finish (default: %(default)s)")
    parser.add_argument("--task-runner", choices=("threads", "dask"), default="threads",
                        help="threads in this process, or a local Dask cluster of --concurrency worker processes (default: %(default)s)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:8786", help="run the stages on this Dask scheduler's workers (implies --task-runner dask)")
    args = parser.parse_args(argv)
    try:
        apply_overrides(Path.cwd(), args.overrides, write=False)  # fail fast, before Prefect starts a server
        states = pipeline(target=args.target, force=args.force, overrides=args.overrides, concurrency=args.concurrency,
                          retries=args.retries, wait=args.wait, task_runner=args.task_runner, dask_address=args.dask_address)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(states)


if __name__ == "__main__":
    # run the IMPORTED module's flow: Dask pickles the task's function by reference to flows.pipeline
    # (a worker imports it); __main__'s copy would be pickled by value, module globals (a lock) and all
    from flows.pipeline import main as imported_main

    imported_main()

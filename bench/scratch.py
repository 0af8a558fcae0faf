"""What benchmarks that run the real pipeline share: a scratch copy of this commit as its own git + DVC project, and
timing several runs in turn."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.config.files import render  # noqa: E402
from finetune.config.params import parse_params  # noqa: E402

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def project(params: dict, keep: Path | None, prefix: str) -> Path:
    """HEAD's files in `keep` (or a new temporary folder) with these params, committed: ready for `dvc repro`."""
    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"git -C {ROOT} archive HEAD | tar -x -C {work}", shell=True, check=True)
    with contextlib.chdir(work):  # every key spelled out, as tools/use_config.py writes it: DVC reads each key it tracks
        (work / "params.yaml").write_text(render(parse_params(params)))
    return work


def commit(work: Path) -> None:
    """`work` as a git repository with everything the benchmark put there committed (DVC records the commit's params)."""
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=work, check=True, env=ENV)


def repro(work: Path, *targets: str) -> float:
    """Commit what the benchmark put in `work`, run `dvc repro TARGETS`; the seconds it took."""
    commit(work)
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", *targets], cwd=work, check=True, env=ENV)
    seconds = time.perf_counter() - start
    print(f"dvc repro {' '.join(targets)}: {seconds:.0f} s")
    return seconds


def taking_turns(runs: dict, repeats: int) -> dict[str, list[float]]:
    """{name: seconds of each of `repeats` calls}, after one warm-up call each; the runs take turns in every repeat, so a
    slow spell of a shared machine slows each of them alike instead of one of them."""
    for run in runs.values():
        run()
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def train_and_evaluate(prefix: str, raw: dict, then=None, setup=None) -> dict:
    """ingest -> preprocess -> train (timed) -> evaluate of the params `raw` in this process, in a new temporary folder;
    setup(folder), if given, runs first (e.g. writes data/raw/), then(params) last, there too.
    {"train": train.json, "seconds": training, "evaluate": metrics, "then": ...}."""
    from stages import evaluate, ingest, preprocess, train

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if setup:
        setup(folder)
    with contextlib.chdir(folder):
        checked = parse_params(raw)
        ingest.run(checked)
        preprocess.run(checked)
        start = time.perf_counter()
        summary = train.run(checked)
        seconds = time.perf_counter() - start
        result = evaluate.run(checked)
        return {"train": summary, "seconds": seconds, "evaluate": result, "then": then(checked) if then else None}

"""How long a teammate takes to get a run someone pushed but never committed, against training it (issue 41).

A is a clone that ran the pipeline and never committed the run: its dvc.lock and metrics files are modified, not
committed (tools/record_run.py leaves its clone so). A runs what `finetune push` runs against a fresh local-directory
DVC remote: `dvc push --run-cache`, then `tools/runs.py --push` (the outputs of every local run the remote lacks).
B is a `git clone` of A's commit, whose dvc.lock names another, older run, with an empty DVC cache; it runs
`dvc repro --pull`. The benchmark checks that no stage ran and that B's metrics files and weights are A's, and prints
B's time next to the seconds the run took to make (A's record, docs/results/CONFIG/run.json, when A is that run).

    python bench/restore_run.py --a /work/runs [--record docs/results/text/run.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import runs  # noqa: E402

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "HF_HUB_OFFLINE": "1"}
COMPARED = ["reports/metrics.json", "reports/ensemble.json", "reports/compress.json", "reports/train.json",
            "models/model/model.safetensors"]


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the clone holding the uncommitted run")
    parser.add_argument("--record", type=Path, default=ROOT / "docs/results/text/run.json")
    args = parser.parse_args()
    a = args.a.resolve()
    status = subprocess.run(["git", "status", "--short", "dvc.lock"], cwd=a, capture_output=True, text=True).stdout
    assert status.strip(), f"{a}: dvc.lock is committed; the benchmark is about a run that is not"
    work = Path(tempfile.mkdtemp(prefix="restore-run-"))
    remote, b = work / "remote", work / "b"
    subprocess.run(["dvc", "remote", "add", "--local", "-f", "-d", "bench", str(remote)], cwd=a, env=ENV, check=True)
    try:
        push_run_cache, _ = timed(["dvc", "push", "--run-cache"], a)
        start = time.perf_counter()
        assert runs.push(root=a) == 0
        push_runs = time.perf_counter() - start
    finally:
        subprocess.run(["dvc", "remote", "remove", "--local", "bench"], cwd=a, env=ENV, check=True)

    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    subprocess.run(["dvc", "remote", "add", "--local", "-d", "bench", str(remote)], cwd=b, env=ENV, check=True)
    restore, log = timed(["dvc", "repro", "--pull"], b)
    ran = re.findall(r"Running stage '([\w@-]+)'", log)
    same = {path: (a / path).read_bytes() == (b / path).read_bytes() for path in COMPARED}
    size = sum(f.stat().st_size for f in remote.rglob("*") if f.is_file()) / 2**20

    record = json.loads(args.record.read_text()) if args.record.is_file() else {}
    print(f"A pushes: dvc push --run-cache {push_run_cache:.1f} s + tools/runs.py --push {push_runs:.1f} s; remote {size:.0f} MiB")
    print(f"B: dvc repro --pull {restore:.1f} s; stages run: {ran or 'none'}; identical to A's: {same}")
    if record:
        print(f"A's run took {record['seconds']:.0f} s to make (record {args.record.name}, commit {record['commit'][:7]}, "
              f"{record['machine']['cores']} cores): restoring is {record['seconds'] / restore:.0f}x faster")


if __name__ == "__main__":
    main()

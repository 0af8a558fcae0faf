"""Prefect flow vs `dvc repro` on the same DAG, one run, side by side.

    python bench/flow_vs_dvc.py [--steps 40]

Builds a scratch DVC project with two independent training members (bench/member.py) and a
stage that needs both, then measures:
  (a) no-op rerun: `dvc repro` vs the flow (the flow's server is already up; its start is listed apart)
  (b) forced full run: sequential `dvc repro -f` (each member gets both cores) vs the flow running
      the two members concurrently (each member gets its share: 1 core of 2).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1",
                      PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    from flows.pipeline import pipeline

    work = Path(tempfile.mkdtemp(prefix="flow-bench-"))
    member = f"{sys.executable} {ROOT}/bench/member.py"
    stages = {f"member{i}": {"cmd": f"{member} m{i}.json {i} {args.steps}", "outs": [f"m{i}.json"]} for i in (1, 2)}
    stages["combine"] = {"cmd": f"{sys.executable} -c \"open('both.txt', 'w').write(open('m1.json').read() + open('m2.json').read())\"",
                         "deps": ["m1.json", "m2.json"], "outs": ["both.txt"]}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=work, check=True)
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    dvc = lambda *a: subprocess.run(["dvc", "repro", *a], cwd=work, check=True, capture_output=True)  # noqa: E731
    flow = lambda **options: pipeline(concurrency=2, **options)  # noqa: E731  (the flow runs the project in the current directory)

    sequential = timed(lambda: dvc("-f"))
    dvc_noop = timed(dvc)
    with contextlib.chdir(work):
        server_and_first = timed(flow)  # starts the temporary server; a no-op run
        flow_noop = timed(flow)
        concurrent = timed(lambda: flow(force=True))
    print(f"(a) no-op rerun: dvc repro {dvc_noop:.2f} s | flow {flow_noop:.2f} s "
          f"(+ {server_and_first - flow_noop:.1f} s to start the temporary server, once)")
    print(f"(b) two members + combine: sequential dvc repro -f {sequential:.1f} s | flow, concurrent {concurrent:.1f} s "
          f"| ratio {concurrent / sequential:.2f}x ({args.steps} steps each, {len(os.sched_getaffinity(0))} cores)")


if __name__ == "__main__":
    main()

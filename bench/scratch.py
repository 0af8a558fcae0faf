"""A scratch copy of this commit as its own git + DVC project, for benchmarks that run the real pipeline."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def project(params: dict, keep: Path | None, prefix: str) -> Path:
    """HEAD's files in `keep` (or a new temporary folder) with these params, committed: ready for `dvc repro`."""
    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"git -C {ROOT} archive HEAD | tar -x -C {work}", shell=True, check=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def repro(work: Path, *targets: str) -> float:
    """Commit what the benchmark put in `work`, run `dvc repro TARGETS`; the seconds it took."""
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=work, check=True, env=ENV)
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", *targets], cwd=work, check=True, env=ENV)
    seconds = time.perf_counter() - start
    print(f"dvc repro {' '.join(targets)}: {seconds:.0f} s")
    return seconds

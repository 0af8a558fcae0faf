"""Run one shipped config from scratch and keep its results where a clone can read them: `python tools/record_run.py image`
switches params.yaml to configs/image.yaml, runs `dvc repro` (timing every stage from DVC's own "Running stage" lines)
and copies what the run wrote that git would otherwise never see into docs/results/image/: the metrics JSONs, dvc.lock
and params.yaml, the training curves (dvclive's TSVs), every PNG under reports/ and the HTML report, plus run.json (the
commit, the machine, the stage times). `finetune results --pages` renders the docs' results pages from those folders;
`--adopt` then makes the default config's recorded run the checkout's own (dvc.lock, params.yaml, the tracked metrics).

The run must start from a clean checkout of a commit (the recorded commit is what produced the numbers) and every stage
must run: a stage DVC skipped or restored from its run cache would make the stage times lie, so it is an error.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change|Restored stage '([^']+)'")


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def timed_repro(root: Path) -> tuple[dict[str, float], float]:
    """`dvc repro` with its output passed through; each stage's seconds run from its "Running stage" line to the next."""
    started = time.monotonic()
    stages: dict[str, float] = {}
    current, since = None, started
    with subprocess.Popen(["dvc", "repro"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as dvc:
        for line in dvc.stdout:
            sys.stdout.write(line)
            if skipped := SKIPPED.search(line):
                raise SystemExit(f"stage {skipped.group(1) or skipped.group(2)} did not run: record from a fresh clone")
            if running := RUNNING.search(line):
                now = time.monotonic()
                if current:
                    stages[current] = round(now - since, 1)
                current, since = running.group(1), now
    if dvc.returncode:
        raise SystemExit(f"dvc repro failed (exit {dvc.returncode})")
    finished = time.monotonic()
    if current:
        stages[current] = round(finished - since, 1)
    return stages, round(finished - started, 1)


def prune_lock(folder: Path) -> None:
    """Drop the dvc.lock entries of ensemble members this run's params do not have: DVC never removes a foreach item's
    entry when the item goes, so a checkout that ran other configs keeps their members' entries (with their code and
    data versions) in its lock."""
    import yaml

    lock = yaml.safe_load((folder / "dvc.lock").read_text(encoding="utf-8"))
    members = set((yaml.safe_load((folder / "params.yaml").read_text(encoding="utf-8")).get("ensemble") or {}).get("members") or {})
    stale = [name for name in lock["stages"] if name.startswith("member@") and name.split("@", 1)[1] not in members]
    for name in stale:
        del lock["stages"][name]
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False, width=1000), encoding="utf-8")


def keep(root: Path, out: Path) -> None:
    """What git would not see of the run: ignored outputs and DVC-cached folders, copied as plain files."""
    if out.exists():
        shutil.rmtree(out)
    reports = root / "reports"
    wanted = [root / "dvc.lock", root / "params.yaml", *reports.glob("*.json"), *reports.glob("member_summaries/*.json"),
              *reports.glob("train_live/plots/metrics/**/*.tsv"), reports / "report.html",
              *(p for p in reports.rglob("*.png") if not p.is_relative_to(reports / "plots"))]  # plots/ holds copies of these
    for source in wanted:
        if source.is_file():
            target = out / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    prune_lock(out)


def adopt(out: Path, root: Path = ROOT) -> None:
    """Make a recorded run this checkout's: its dvc.lock, params.yaml and git-tracked metrics (dvc.yaml's `cache: false`
    files), so the default config's committed lock and metrics are its recorded run (tests/test_dvc_lock.py)."""
    for stale in (root / "reports" / "member_summaries").glob("*.json"):
        stale.unlink()
    for source in [out / "dvc.lock", out / "params.yaml", *(out / "reports").glob("*.json"), *(out / "reports").glob("member_summaries/*.json")]:
        target = root / source.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a file of configs/ without .yaml")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project checkout to run in (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where CONFIG's folder goes")
    parser.add_argument("--adopt", action="store_true", help="run nothing: copy CONFIG's recorded dvc.lock, params.yaml and "
                        "metrics into this checkout (the default config's committed run)")
    args = parser.parse_args(argv)
    if args.adopt:
        adopt(args.out / args.config)
        return
    root = args.root.resolve()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "finetune", "stages", "dvc.yaml", "configs"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        raise SystemExit(f"uncommitted code changes: the run would describe no commit\n{dirty}")
    subprocess.run([sys.executable, "tools/use_config.py", args.config, "--force"], cwd=root, check=True)
    started = dt.datetime.now(dt.timezone.utc)
    stages, seconds = timed_repro(root)
    out = args.out / args.config
    keep(root, out)
    run = {"config": args.config, "commit": commit, "started": started.isoformat(timespec="seconds"), "seconds": seconds,
           "stage_seconds": stages, "machine": machine()}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print(f"recorded {args.config}: {seconds / 60:.1f} min -> {out}")


if __name__ == "__main__":
    main()

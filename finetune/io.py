"""Atomic outputs: a stage killed half-way leaves either the old output or nothing, never a
half-written file or folder that DVC (or a person) could mistake for a result."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _temporary(target: Path, tag: str) -> Path:
    # the suffix stays last, so writers that choose a format by suffix (write_table) see the target's
    return target.parent / f".{target.stem}.tmp-{tag}{target.suffix}"


@contextlib.contextmanager
def atomic_path(target: Path | str):
    """Yield a temporary sibling path to write `target` (file or folder) into; move it into place
    only when the block finishes without error. Leftovers of killed runs are cleaned on the next call."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(_temporary(target, "*").name):
        _remove(stale)
    tmp = _temporary(target, str(os.getpid()))
    try:
        yield tmp
        _remove(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


@contextlib.contextmanager
def write_outputs(*targets: Path | str):
    """Temporary paths for several outputs of one stage, all moved into place only when the whole block
    succeeded: a failure half-way leaves every old output as it was, never a mix of old and new."""
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_path(target)) for target in targets)


def write_json(path: Path | str, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: Path | str, frame: pd.DataFrame) -> None:
    """Parquet, JSON lines (.jsonl) or CSV by suffix. CSV is written with every field quoted so texts holding bare
    carriage returns or delimiters survive a round trip."""
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif Path(path).suffix == ".jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(tmp, index=False, quoting=1, lineterminator="\n")

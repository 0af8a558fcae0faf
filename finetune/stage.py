"""What every stage shares: the command line (`python -m stages.NAME [--params FILE]`: params validated first, a
UserError as one line and exit status 2), and `produce`: a stage's outputs written all or nothing, with the verb's
result as the stage's metrics, or the reason it does not apply ("skipped")."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from finetune.config.params import load_params
from finetune.errors import Unsupported, UserError
from finetune.io import write_json, write_outputs


def main(run: Callable[..., object], doc: str, argv: list[str] | None = None, item: str | None = None) -> None:
    """Validate params, then run the stage; a UserError becomes one line on stderr and exit 2.
    `item` names the argument of a foreach stage (e.g. member): run(params, value). Under `dvc repro` the
    value comes from DVC's DVC_STAGE variable (member@NAME), never from the command line: dvc.yaml's cmd
    holds no params value, so no user string ever reaches a shell."""
    name, _, description = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(description=name, epilog=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to validate and use (default: %(default)s)")
    if item:
        parser.add_argument(item, nargs="?", help=f"which {item} (default: the NAME of DVC_STAGE={item}@NAME, as `dvc repro` sets it)")
    args = parser.parse_args(argv)
    try:
        with kept_metrics(os.environ.get("DVC_STAGE", "")):
            _run(run, args, item)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def produce(stage: str, verb: Callable[..., dict], folders: tuple[Path, ...], metrics: Path) -> dict:
    """Run verb(*temporary folders) and write its result to `metrics`; the folders and the metrics file move into place
    together only when everything succeeded. A verb that does not apply raises Unsupported (before doing any work): the
    result is then {"skipped": reason}, and each folder holds a README.txt that says so (DVC gets every declared output)."""
    with write_outputs(*folders, metrics) as (*temporary, metrics_file):
        for folder in temporary:
            folder.mkdir()
        try:
            result = verb(*temporary)
        except Unsupported as error:
            result = {"skipped": str(error)}
            for folder in temporary:
                shutil.rmtree(folder)
                folder.mkdir()
                (folder / "README.txt").write_text(f"{stage}: skipped: {error}\n")
            print(f"{stage}: skipped: {error}")
        write_json(metrics_file, result)
    return result


def _run(run: Callable[..., object], args: argparse.Namespace, item: str | None) -> None:
    params = load_params(args.params)
    if item:
        value = getattr(args, item) or os.environ.get("DVC_STAGE", "").partition(f"{item}@")[2]
        if not value:
            raise UserError(f"which {item}? give its name (python -m stages.{item} NAME) or run it through dvc repro")
        run(params, value)
    else:
        run(params)


KEPT = Path(".cache/kept-metrics")  # every metrics file a stage wrote, by its md5 (a few kB each)


@contextlib.contextmanager
def kept_metrics(stage: str):
    """A failed run leaves the stage's last metrics in place. DVC deletes a stage's outputs before running
    it, and a `cache: false` metrics file (git-tracked, so `dvc metrics diff` works) cannot come back
    from DVC's cache; `persist: true` would keep it but switch off DVC's run cache. So each success files
    its metrics here by md5, and a failure puts back the version dvc.lock records (DVC updates dvc.lock
    only on success), from here or, on a fresh clone, from git's last commit."""
    files = _uncached_outputs(stage)
    try:
        yield
    except BaseException:
        recorded = _recorded_md5s(stage)
        for path in files:
            if not path.exists() and str(path) in recorded:
                _restore(path, recorded[str(path)])
        raise
    for path in files:
        if path.is_file():
            KEPT.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, KEPT / hashlib.md5(path.read_bytes()).hexdigest())


def _uncached_outputs(stage: str) -> list[Path]:
    """The `cache: false` outputs dvc.yaml gives the stage DVC_STAGE names (`member@NAME` fills ${key})."""
    name, _, key = stage.partition("@")
    try:
        entry = yaml.safe_load(Path("dvc.yaml").read_text())["stages"][name]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return []  # not run by DVC in this project
    entry = entry.get("do", entry)
    outputs = [o for kind in ("outs", "metrics", "plots") for o in entry.get(kind, []) if isinstance(o, dict)]
    return [Path(path.replace("${key}", key)) for output in outputs for path, options in output.items()
            if isinstance(options, dict) and options.get("cache") is False]


def _recorded_md5s(stage: str) -> dict[str, str]:
    try:
        outs = yaml.safe_load(Path("dvc.lock").read_text())["stages"][stage].get("outs", [])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return {out["path"]: out.get("md5") for out in outs}


def _restore(path: Path, md5: str) -> None:
    kept = KEPT / md5
    if kept.is_file():
        content = kept.read_bytes()
    else:
        committed = subprocess.run(["git", "show", f"HEAD:{path.as_posix()}"], capture_output=True)
        content = committed.stdout if committed.returncode == 0 else b""
    if content and hashlib.md5(content).hexdigest() == md5:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

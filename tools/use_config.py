"""Switch params.yaml to a ready parameter set: `python tools/use_config.py image` copies configs/image.yaml
to params.yaml (what `make pipeline CONFIG=image` does before `dvc repro`).

params.yaml is the one file DVC reads, so switching overwrites it: when it holds edits found in no
configs/*.yaml file, the switch is refused (save them first: cp params.yaml configs/mine.yaml), unless
--force. Switching back to a set that already ran restores its results from DVC's run cache, no retraining.
The outputs of ensemble members the new set does not have are removed from the workspace (they stay in
DVC's cache): the ensemble, compress and explain stages depend on the members' folders as a whole, so a
stale member left there would make them rerun.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune import paths  # noqa: E402
from finetune.errors import UserError  # noqa: E402
from finetune.params import load_params  # noqa: E402


def use(name: str, root: Path = ROOT, force: bool = False) -> Path:
    configs = sorted((root / "configs").glob("*.yaml"))
    chosen = root / "configs" / f"{name}.yaml"
    if chosen not in configs:
        raise UserError(f"no configs/{name}.yaml; ready sets: {', '.join(c.stem for c in configs)}")
    members = set(load_params(chosen).ensemble.members)  # a broken set never reaches params.yaml
    params = root / "params.yaml"
    current = params.read_text(encoding="utf-8") if params.exists() else None
    if current is not None and not force and all(current != c.read_text(encoding="utf-8") for c in configs):
        raise UserError("params.yaml holds edits that are in no configs/*.yaml file; save them first "
                        "(cp params.yaml configs/mine.yaml) or pass --force (make pipeline CONFIG=... FORCE=1) to drop them")
    params.write_text(chosen.read_text(encoding="utf-8"), encoding="utf-8")
    for folder in (root / paths.MEMBER_MODELS, root / paths.MEMBER_REPORTS):
        for stale in [p for p in folder.glob("*") if p.is_dir() and p.name not in members]:
            shutil.rmtree(stale)
    for stale in [p for p in (root / paths.MEMBER_SUMMARIES).glob("*.json") if p.stem not in members]:
        stale.unlink()
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a file of configs/ without .yaml: text, image, ...")
    parser.add_argument("--force", action="store_true", help="overwrite params.yaml even if it holds unsaved edits")
    args = parser.parse_args(argv)
    try:
        chosen = use(args.name, force=args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"params.yaml = {chosen.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

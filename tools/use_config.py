"""Switch params.yaml to a ready parameter set: `python tools/use_config.py image` resolves configs/image.yaml (only
what differs from the task's defaults) and writes params.yaml with every key spelled out and commented (what `make
pipeline CONFIG=image` does before `dvc repro`; finetune/config/files.py says why params.yaml spells out every key).

params.yaml is the one file DVC reads, so switching overwrites it: when its values are those of no configs/*.yaml file
(edits not saved), the switch is refused (save them first: `python tools/use_config.py --save mine` writes
configs/mine.yaml with what differs from the defaults), unless --force. Switching back to a set that already ran restores
its results from DVC's run cache, no retraining. The outputs of ensemble members the new set does not have are removed
from the workspace (they stay in DVC's cache): the ensemble, compress and explain stages depend on the members' folders
as a whole, so a stale member left there would make them rerun.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune import paths  # noqa: E402
from finetune.config.files import GENERATED, render  # noqa: E402
from finetune.config.params import Params, load_params, parse_params, read_yaml  # noqa: E402
from finetune.errors import UserError  # noqa: E402


def resolved(config: Path) -> Params:
    """A config's params with every default filled in (relative paths in it start at the project root)."""
    with contextlib.chdir(config.parents[1]):
        return load_params(config)


def _current(params_file: Path) -> Params | None:
    try:
        with contextlib.chdir(params_file.parent):
            return parse_params(read_yaml(params_file), str(params_file))
    except UserError:
        return None


def use(name: str, root: Path = ROOT, force: bool = False) -> Path:
    configs = sorted((root / "configs").glob("*.yaml"))
    chosen = root / "configs" / f"{name}.yaml"
    if chosen not in configs:
        raise UserError(f"no configs/{name}.yaml; ready sets: {', '.join(c.stem for c in configs)}")
    params = resolved(chosen)  # a broken set never reaches params.yaml
    target = root / "params.yaml"
    if target.exists() and not force:
        current = _current(target)
        if current is None or all(current != resolved(config) for config in configs):
            raise UserError("params.yaml holds edits that are in no configs/*.yaml file; save them first (python tools/use_config.py "
                            "--save mine) or pass --force (make pipeline CONFIG=... FORCE=1) to drop them")
    target.write_text(render(params, GENERATED.format(name=name)), encoding="utf-8")
    members = set(params.ensemble.members)
    for folder in (root / paths.MEMBER_MODELS, root / paths.MEMBER_REPORTS):
        for stale in [p for p in folder.glob("*") if p.is_dir() and p.name not in members]:
            shutil.rmtree(stale)
    for stale in [p for p in (root / paths.MEMBER_SUMMARIES).glob("*.json") if p.stem not in members]:
        stale.unlink()
    return chosen


def save(name: str, root: Path = ROOT) -> Path:
    """configs/NAME.yaml from params.yaml: its task and every value that differs from the task's defaults."""
    import yaml

    target = root / "configs" / f"{name}.yaml"
    if target.exists():
        raise UserError(f"{target.relative_to(root)} exists; choose another name")
    current = _current(root / "params.yaml")
    if current is None:
        load_params(root / "params.yaml")  # raises the schema's explanation
    defaults = type(current).model_validate({"task": current.task}, context={"task": current.task}).model_dump(mode="json")
    differs = _difference(current.model_dump(mode="json", exclude={"ensemble": {"members"}, "search": {"space"}}), defaults)
    differs.setdefault("ensemble", {})["members"] = {k: m.model_dump(mode="json", exclude_unset=True) for k, m in current.ensemble.members.items()}
    differs.setdefault("search", {})["space"] = {k: a.model_dump(mode="json", exclude_unset=True) for k, a in current.search.space.items()}
    target.write_text(f"# Saved from params.yaml by `python tools/use_config.py --save {name}`.\n"
                      + yaml.safe_dump({"task": current.task, **differs}, sort_keys=False, width=120), encoding="utf-8")
    return target


def _difference(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            if inner := _difference(value, defaults[key]):
                out[key] = inner
        elif key not in defaults or value != defaults[key]:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a file of configs/ without .yaml: text, image, ...")
    parser.add_argument("--force", action="store_true", help="overwrite params.yaml even if it holds unsaved edits")
    parser.add_argument("--save", action="store_true", help="save params.yaml's values as configs/NAME.yaml instead")
    args = parser.parse_args(argv)
    try:
        written = save(args.name) if args.save else use(args.name, force=args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{'saved' if args.save else 'params.yaml ='} {written.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

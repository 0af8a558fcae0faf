"""The command line every stage shares: `python -m stages.NAME [--params FILE]`."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from finetune.errors import UserError
from finetune.params import load_params


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
        params = load_params(args.params)
        if item:
            value = getattr(args, item) or os.environ.get("DVC_STAGE", "").partition(f"{item}@")[2]
            if not value:
                raise UserError(f"which {item}? give its name (python -m stages.{item} NAME) or run it through dvc repro")
            run(params, value)
        else:
            run(params)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

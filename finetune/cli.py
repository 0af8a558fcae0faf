"""The command line every stage shares: `python -m stages.NAME [--params FILE]`."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from finetune.errors import UserError
from finetune.params import Params, load_params


def main(run: Callable[..., object], doc: str, argv: list[str] | None = None, item: str | None = None) -> None:
    """Validate params, then run the stage; a UserError becomes one line on stderr and exit 2.
    `item` names the positional argument of a foreach stage (e.g. member): run(params, value)."""
    name, _, description = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(description=name, epilog=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to validate and use (default: %(default)s)")
    if item:
        parser.add_argument(item)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        run(params, getattr(args, item)) if item else run(params)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

"""The command line every stage shares: `python -m stages.NAME [--params FILE]`."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from finetune.errors import UserError
from finetune.params import Params, load_params


def main(run: Callable[[Params], object], doc: str, argv: list[str] | None = None) -> None:
    """Validate params, then run the stage; a UserError becomes one line on stderr and exit 2."""
    name, _, description = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(description=name, epilog=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to validate and use (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        run(load_params(args.params))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

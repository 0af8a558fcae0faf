"""Pre-push check (`make push` runs it before `dvc push`): every output dvc.lock records must be in the local
DVC cache, because `dvc push` uploads from there.

An output dvc.lock records but the cache lacks (cache files deleted or `dvc gc`-ed, a teammate's dvc.lock whose data
was never fetched, outputs copied in by hand) is not uploaded: DVC 3.67 only warns "Some of the cache files do not
exist neither locally nor on remote" with bare md5s and exits 0 (some 3.x versions failed with a bare "failed to
load directory" error instead, dvc#10124), and the teammate's `dvc pull` then fails. This names each such output, the
stage that made it and the fix, and exits 1 so `make push` stops before pushing anything.

`--pulled` (run by `make pull` after `dvc pull --allow-missing`) lists the same outputs as a warning and exits 0:
right after a pull they are the outputs the remote does not hold, and the rest of the pull is still usable.

No hashing is re-implemented here: DVC's Python API answers per output (`Output.changed_cache`, the test behind
`dvc status`'s "not in cache"; `changed_checksum`, behind its "modified").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def missing_outputs(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(stage, output, where the workspace copy stands: 'matches', 'differs' or 'absent') for each cached output
    dvc.lock records whose object (or, for a folder, any file's object) is missing from the local cache."""
    from dvc.repo import Repo

    found = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                # cache: false outputs (the metrics files) travel with git; no hash = not in dvc.lock yet, nothing to push
                if out.use_cache and out.hash_info and out.changed_cache():
                    state = "absent" if not out.exists else "differs" if out.changed_checksum() else "matches"
                    found.append((stage.addressing, out.def_path, state))
    return found


def fix(stage: str, state: str, pulled: bool) -> str:
    if state == "matches":
        return f"the workspace copy matches dvc.lock: `dvc commit -f {stage}` puts it back in the cache"
    if state == "differs":
        return f"the workspace copy is not what dvc.lock records: `dvc repro {stage}`, then commit dvc.lock"
    if pulled:
        return f"not in the remote: ask whoever committed it to `make push`, or rebuild it: `dvc repro {stage}`"
    return f"`dvc pull {stage}` if a teammate pushed it, else rebuild it: `dvc repro {stage}`"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulled", action="store_true", help="after `dvc pull --allow-missing`: warn, exit 0")
    args = parser.parse_args(argv)
    found = missing_outputs()
    if not found:
        return 0
    if args.pulled:
        print(f"make pull: warning: {len(found)} output(s) dvc.lock records are not in the DVC remote; everything else "
              "is pulled and checked out:", file=sys.stderr)
    else:
        print(f"make push: {len(found)} output(s) dvc.lock records are not in the local DVC cache; `dvc push` would skip "
              "them (DVC only warns) and teammates' `dvc pull` would fail. Nothing was pushed:", file=sys.stderr)
    for stage, out, state in found:
        print(f"  {out} (stage {stage}): {fix(stage, state, args.pulled)}", file=sys.stderr)
    return 0 if args.pulled else 1


if __name__ == "__main__":
    sys.exit(main())

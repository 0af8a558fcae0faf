"""Every run anyone pushed, restorable by any teammate (docs/team-sharing.md, "What a teammate can restore").

DVC records each stage it runs in its run cache (.dvc/cache/runs: the code, data and params that went in, the hashes
of what came out). `dvc repro --pull` restores a stage from such a record instead of running it when the DVC remote
holds every output the record names. DVC 3.67 leaves two gaps that made this fail for every run that was not the
checked-out one when it was pushed (issue 41):
- `dvc push --run-cache` uploads every record, but only the outputs of the checked-out dvc.lock;
- it never uploads a `cache: false` output (the metrics files), although DVC copies each one into the local cache when
  it writes the record (StageCache.save) and a restore needs it: a record names every output alike.
`push` closes both: it uploads the outputs of every local record the remote lacks, and names those runs.

The metrics files stay `cache: false`, in git: `git diff`, a pull request and `dvc metrics diff HEAD~1` read them
with no DVC cache or remote at all. Making them cached outputs would have closed the second gap too, but taken them
out of git (DVC git-ignores its cached outputs), for no gain: the copy a restore needs is in the cache anyway.

`show` (`finetune runs`) lists the runs the remote holds. A run is a chain of stage records: one whose outputs no
other record reads (the end of a `dvc repro`, usually `report`), and the records that made its inputs, found by the
hashes that link an output to an input. Each run shows its params where they differ from params.yaml, whether its code
and data are this workspace's, whether the remote holds all its outputs, and its headline numbers (read from the
remote's copy of its metrics files). `--apply RUN` writes a run's params into params.yaml (validated, comments kept);
`dvc repro --pull` then restores it, with no stage run, where the code and data are the same.

Only DVC's Python API is used to hash, collect and transfer: `StageCache.get_used_objs` names the objects of a record
(a folder output's files included), `DataCloud.status/push/pull` compare with and move them to the remote.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # finetune/, imported where used: `finetune runs --help` loads neither DVC nor pandas

HEADLINE_FILES = {"reports/metrics.json": "metrics", "reports/ensemble.json": "ensemble"}  # what a run's row shows


@dataclass
class Record:
    """One stage run as DVC's run cache holds it."""
    key: str  # the hash of the stage's command, inputs and params (the folder under .dvc/cache/runs)
    value: str  # the hash of the whole record, outputs included (its file name): the run's id
    entry: dict
    stage: str = "?"
    objects: set = field(default_factory=set)  # HashInfo of every object its outputs need (a folder's files too)
    complete: bool = True  # False when a folder output's listing was found neither here nor in the remote

    @property
    def outs(self) -> dict[str, str]:
        return {out["path"]: out["md5"] for out in self.entry.get("outs", [])}

    @property
    def inputs(self) -> dict[str, str]:
        return {dep["path"]: dep.get("md5") for dep in self.entry.get("deps", [])}

    @property
    def params(self) -> dict:
        return flatten({name: value for values in (self.entry.get("params") or {}).values() for name, value in values.items()})


def flatten(values: dict, prefix: str = "") -> dict:
    """{'train': {'seed': 1}} -> {'train.seed': 1}: the keys `-S`, set_values and a person read."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


def load_records(repo) -> list[Record]:
    """Every record of the local run cache, oldest first, named by the stage of this dvc.yaml with the same outputs
    (member@NAME stages share one command, so the command cannot name them)."""
    from dvc.utils.serialize import load_yaml  # DVC's YAML 1.2 reader: PyYAML would read a record's 5e-05 as a string

    stages = {frozenset(out.def_path for out in stage.outs): stage.addressing for stage in repo.index.stages}
    runs = Path(repo.stage_cache.cache_dir)
    files = sorted(runs.glob("*/*/*"), key=lambda path: path.stat().st_mtime) if runs.is_dir() else []
    records = []
    for path in files:
        entry = load_yaml(path)
        record = Record(path.parent.name, path.name, entry)
        record.stage = stages.get(frozenset(record.outs), "(a stage this dvc.yaml does not have)")
        for objects in repo.stage_cache.get_used_objs([(record.key, record.value)], force=True).values():
            record.objects |= objects
        # a folder whose listing (.dir) is nowhere is left out of get_used_objs (force: no prompt): not restorable
        record.complete = set(record.outs.values()) <= {oid.value for oid in record.objects}
        records.append(record)
    return records


def objects_of(records: list[Record]) -> set:
    return set().union(*(record.objects for record in records)) if records else set()


def in_remote(repo, objects: set, remote: str | None) -> set:
    """Those of `objects` the remote holds."""
    status = repo.cloud.status(objects, remote=remote)
    return status.ok | status.deleted


def workspace_params(repo) -> dict:
    from dvc.dependency.param import ParamsDependency

    values = {}
    for stage in repo.index.stages:
        for dep in stage.deps:
            if isinstance(dep, ParamsDependency):
                values.update(flatten(dep.read_params()))
    return values


def changed_params(params: dict, here: dict) -> dict:
    return {key: value for key, value in sorted(params.items()) if here.get(key, object()) != value}


def describe_params(params: dict, here: dict, shown: int = 6) -> str:
    changed = [f"{key} {json.dumps(value)} (here {json.dumps(here[key]) if key in here else 'not set'})"
               for key, value in changed_params(params, here).items()]
    more = f"; and {len(changed) - shown} more" if len(changed) > shown else ""
    return "; ".join(changed[:shown]) + more if changed else "as params.yaml"


def push(remote: str | None = None, root: Path = ROOT) -> int:
    """Upload the outputs of every local run the remote lacks, one line per run; 1 if an upload failed."""
    from dvc.config import NoRemoteError
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC builds a record's stage relative to the working directory
        records = load_records(repo)
        try:
            present = in_remote(repo, objects_of(records), remote)
        except NoRemoteError as error:
            print(f"finetune push: {error}", file=sys.stderr)
            return 1
        here = workspace_params(repo)
        pushed = 0
        for run in reversed(chain(repo, records)):  # oldest first
            wanted = objects_of(run.records) - present
            local = {oid for oid in wanted if repo.cache.local.exists(oid.value)}
            lost = len(wanted - local) + sum(not record.complete for record in run.records)  # `dvc gc`, a deleted cache
            if not local:
                continue
            result = repo.cloud.push(local, remote=remote)
            if result.failed:
                print(f"finetune push: run {run.last.value[:8]}: {len(result.failed)} file(s) failed to upload; run "
                      "`finetune push` again", file=sys.stderr)
                return 1
            present |= local
            pushed += 1
            print(f"pushed run {run.last.value[:8]}: {len(run.records)} stage(s) up to {run.last.stage}, {len(local)} "
                  f"file(s); params: {describe_params(run.params, here)}"
                  + (f"; {lost} output(s) are no longer in the local cache: not restorable" if lost else ""))
        print(f"finetune push: {pushed} run(s) pushed; every other local run was in the remote already")
    return 0


@dataclass
class Run:
    """A chain of records: `last` and every record that made one of its inputs, recursively."""
    last: Record
    records: list[Record]

    @property
    def params(self) -> dict:
        merged = {}
        for record in self.records:
            merged.update(record.params)
        return merged


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(f"{folder}/")


def folder_files(repo, md5: str) -> list | None:
    """(path parts, object id) of each file an output holds: a folder's from its listing (.dir), None if not here."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    oid = HashInfo("md5", md5)
    if not md5.endswith(".dir"):
        return [((), oid)]
    if not repo.cache.local.exists(md5):
        return None
    return [(key, entry) for key, _, entry in Tree.load(repo.cache.local, oid)]


def makers(repo, path: str, md5: str, twins: dict) -> list[Record]:
    """The records that made an input (`twins`: the records that made each set of outputs). The input is an output of
    one stage, or a folder holding outputs of several (reports/members: one per member); DVC records a folder input by
    the hash of its listing, so the listing of each combination of one output set per stage is hashed and compared."""
    from dvc_data.hashfile.tree import Tree

    exact = [records for outs, records in twins.items() if (path, md5) in outs]
    if exact:
        return exact[0]
    by_stage = {}
    for outs, records in twins.items():
        if any(inside(out, path) and out != path for out, _ in outs):
            by_stage.setdefault(records[0].stage, []).append(outs)
    for choice in itertools.islice(itertools.product(*by_stage.values()), 256) if by_stage else []:
        tree = Tree()
        for outs in choice:
            for out, out_md5 in outs:
                if inside(out, path):
                    prefix = tuple(Path(out).relative_to(path).parts)
                    for key, oid in folder_files(repo, out_md5) or []:
                        tree.add(prefix + key, None, oid)
        tree.digest()
        if tree.hash_info.value == md5:
            return [record for outs in choice for record in twins[outs]]
    return []


def chain(repo, records: list[Record]) -> list[Run]:
    """The runs: one per record whose outputs no other record read, with the records that made its inputs. Records
    with the same outputs (a stage rerun for a param its output does not depend on) are twins: each run takes the twin
    whose params agree best with those of its stages that have no twin."""
    twins = {}
    for record in records:
        twins.setdefault(frozenset(record.outs.items()), []).append(record)
    upstream = {record.value: [maker for path, md5 in record.inputs.items() if md5 for maker in makers(repo, path, md5, twins)]
                for record in records}
    read = {item for found in upstream.values() for maker in found for item in maker.outs.items()}
    runs = []
    for last in reversed(records):
        if any(item in read for item in last.outs.items()):
            continue
        candidates, todo = {}, [last]
        while todo:
            record = todo.pop()
            if record.value not in candidates:
                candidates[record.value] = record
                todo += upstream[record.value]
        by_stage = {}
        for record in candidates.values():
            by_stage.setdefault(record.stage, []).append(record)
        settled = Run(last, [found[0] for found in by_stage.values() if len(found) == 1]).params
        runs.append(Run(last, [min(found, key=lambda record: sum(settled.get(key, value) != value
                                                                for key, value in record.params.items()))
                               for found in by_stage.values()]))
    return runs


def workspace_inputs(repo) -> tuple[set[str], dict[str, dict[str, str | None]]]:
    """(what the stages of this dvc.yaml make, per stage the hash of each file or folder it reads that no stage makes:
    code, data, assets)."""
    from dvc.dependency.param import ParamsDependency

    made = {out.def_path for stage in repo.index.stages for out in stage.outs}
    hashes, inputs = {}, {}
    for stage in repo.index.stages:
        inputs[stage.addressing] = {}
        for dep in stage.deps:
            if not any(inside(out, dep.def_path) for out in made) and not isinstance(dep, ParamsDependency):
                if dep.def_path not in hashes:
                    hashes[dep.def_path] = dep.get_hash().value if dep.exists else None
                inputs[stage.addressing][dep.def_path] = hashes[dep.def_path]
    return made, inputs


def differing_inputs(run: Run, workspace: tuple[set[str], dict[str, dict]]) -> list[str]:
    """The code and data files (or a stage) where the run and this workspace differ: DVC would run those stages again."""
    made_here, inputs = workspace
    made = made_here | {path for record in run.records for path in record.outs}
    differ = set()
    for record in run.records:
        if record.stage not in inputs:
            differ.add(f"stage {record.stage}")
            continue
        here = inputs[record.stage]
        theirs = {path: md5 for path, md5 in record.inputs.items() if not any(inside(out, path) for out in made)}
        differ |= {path for path in theirs.keys() | here.keys() if theirs.get(path) != here.get(path)}
    return sorted(differ)


def headlines(repo, run: Run, remote: str | None, fetch: bool) -> list[str]:
    """The headline lines (finetune results) of the run's metrics and ensemble files (`fetch`: from the remote)."""
    from dvc_data.hashfile.hash_info import HashInfo

    from finetune.reporting.headlines import headline

    lines = []
    for record in run.records:
        for path, name in HEADLINE_FILES.items():
            if path in record.outs:
                oid = HashInfo("md5", record.outs[path])
                if fetch and not repo.cache.local.exists(oid.value):
                    repo.cloud.pull({oid}, remote=remote)
                if repo.cache.local.exists(oid.value):
                    data = json.loads(Path(repo.cache.local.oid_to_path(oid.value)).read_text(encoding="utf-8"))
                    lines.append(headline(name, data))
    return lines


def checked_out(root: Path) -> dict[str, dict[str, str]]:
    """The outputs dvc.lock records, per stage."""
    from dvc.utils.serialize import load_yaml

    lock = root / "dvc.lock"
    stages = (load_yaml(lock) or {}).get("stages", {}) if lock.is_file() else {}
    return {name: {out["path"]: out.get("md5") for out in stage.get("outs", [])} for name, stage in stages.items()}


def show(remote: str | None = None, local: bool = False, root: Path = ROOT) -> list[str]:
    """One paragraph per run the remote holds (with `local`: per local run)."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotSupported

    from finetune.errors import UserError

    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC builds a record's stage relative to the working directory
        if not local:
            try:
                repo.stage_cache.pull(remote)  # the records only (small YAML files), as `dvc pull --run-cache` fetches them
            except RunCacheNotSupported as error:
                raise UserError(f"no DVC remote to list runs from ({error}); docs/team-sharing.md sets one up, or "
                                "`finetune runs --local` lists this clone's runs") from None
        records = load_records(repo)
        locked = checked_out(Path(repo.root_dir))
        where = "the local cache" if local else "the remote"
        present = ({oid for oid in objects_of(records) if repo.cache.local.exists(oid.value)} if local
                   else in_remote(repo, objects_of(records), remote))
        here, workspace = workspace_params(repo), workspace_inputs(repo)
        lines = []
        for run in chain(repo, records):
            objects = objects_of(run.records)
            missing = len(objects - present) + sum(not record.complete for record in run.records)
            if not local and missing == len(objects):
                continue  # records whose outputs nobody pushed: nothing to restore
            differ = differing_inputs(run, workspace)
            restores = not missing and not differ and not changed_params(run.params, here)
            lines.append(f"run {run.last.value[:8]}: {len(run.records)} stage(s) up to {run.last.stage}; "
                         + (f"every output in {where}" if not missing else f"{missing} output(s) not in {where}")
                         + (" -- checked out here (dvc.lock)" if all(locked.get(record.stage) == record.outs for record in run.records)
                            else f" -- `dvc repro{'' if local else ' --pull'}` here restores it, no stage runs" if restores else ""))
            lines.append(f"  params: {describe_params(run.params, here)}")
            lines.append("  code and data: " + (f"{len(differ)} file(s) differ from this workspace: {', '.join(differ[:4])}"
                                                  + (", ..." if len(differ) > 4 else "") if differ else "as this workspace"))
            lines += [f"  {line}" for line in headlines(repo, run, None if local else remote, fetch=not local)]
        return lines or ["no run in this clone's run cache yet" if local else "no pushed run in the DVC remote yet: `finetune push` shares yours"]


def apply(run_id: str, root: Path = ROOT) -> dict:
    """Write the params of the run whose id starts with `run_id` into params.yaml; the values written."""
    from dvc.repo import Repo

    from finetune.config.files import set_values
    from finetune.errors import UserError

    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC builds a record's stage relative to the working directory
        matches = [run for run in chain(repo, load_records(repo)) if run.last.value.startswith(run_id)]
        if len(matches) != 1:
            raise UserError(f"{len(matches)} runs have an id starting with {run_id!r}: `finetune runs` lists them")
        here = workspace_params(repo)
    changed = changed_params(matches[0].params, here)
    if changed:
        set_values(root / "params.yaml", changed, f"run {matches[0].last.value[:8]}'s params")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune runs", description="List the runs the team pushed to the DVC remote: "
                                     "params, whether `dvc repro --pull` restores them here, headline numbers.")
    parser.add_argument("--remote", help="a DVC remote's name (default: the default remote)")
    parser.add_argument("--local", action="store_true", help="list this clone's runs instead (nothing is fetched)")
    parser.add_argument("--apply", metavar="RUN", help="write that run's params into params.yaml; then `dvc repro --pull`")
    parser.add_argument("--push", action="store_true", help="upload every local run the remote lacks (`finetune push` does)")
    args = parser.parse_args(argv)
    if args.push:
        return push(args.remote)
    if args.apply:
        changed = apply(args.apply)
        print("params.yaml: " + (", ".join(f"{key} = {json.dumps(value)}" for key, value in changed.items()) or "already the run's params")
              + "; `dvc repro --pull` restores the run")
        return 0
    print("\n".join(show(args.remote, args.local)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

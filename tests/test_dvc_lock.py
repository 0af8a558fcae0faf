"""The committed runs describe the code: the default config's dvc.lock is current (every code file, task folder and
param it recorded is the working tree's, so a clone's `dvc status` shows only outputs it has not pulled), it is the
default config's recorded run together with its git-tracked metrics, and every recorded run's stages agree on the
version of each file they share (one code version per run, not stages left over from older commits)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.repos import PROJECT

RESULTS = PROJECT / "docs" / "results"


def _default_config() -> str:
    """The config params.yaml was generated from (tools/use_config.py writes its name into the first line)."""
    first = (PROJECT / "params.yaml").read_text(encoding="utf-8").splitlines()[0]
    return first.split("use_config.py ", 1)[1].split("`", 1)[0]


def test_the_default_configs_dvc_lock_is_current_with_the_code_and_params():
    from dvc.repo import Repo

    with Repo(str(PROJECT)) as repo:
        status = repo.status()
    lock = yaml.safe_load((PROJECT / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    outputs = [out["path"] for stage in lock.values() for out in stage.get("outs", [])]

    def an_output(path: str) -> bool:  # another stage's output, or a folder holding some (reports/members): a clone lacks them
        return any(path == out or path.startswith(out + "/") or out.startswith(path + "/") for out in outputs)

    stale = {}
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "changed command", "always changed"
                stale[stage] = change
                continue
            for path, how in (change.get("changed deps") or {}).items():
                if not an_output(path):
                    stale.setdefault(stage, {})[path] = how
    assert not stale, f"dvc.lock was recorded with other code or params: rerun the default config (tools/record_run.py): {stale}"


def test_the_default_runs_lock_and_metrics_are_its_recorded_run():
    recorded = RESULTS / _default_config()
    assert (PROJECT / "dvc.lock").read_text() == (recorded / "dvc.lock").read_text()
    assert (PROJECT / "params.yaml").read_text() == (recorded / "params.yaml").read_text()
    def metrics(root: Path) -> list[Path]:  # dvc.yaml's `cache: false` metrics: git-tracked, so a clone reads them
        return sorted(p.relative_to(root) for pattern in ("reports/*.json", "reports/member_summaries/*.json") for p in root.glob(pattern))

    tracked = metrics(PROJECT)
    assert tracked == metrics(recorded) and len(tracked) >= 8
    for relative in tracked:
        assert (PROJECT / relative).read_text() == (recorded / relative).read_text(), relative


def _files_by_stage(lock: Path) -> dict[str, dict[str, str]]:
    stages = yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"]
    return {name: {dep["path"]: dep.get("md5") for dep in stage.get("deps", [])} for name, stage in stages.items()}


@pytest.mark.parametrize("lock", sorted(RESULTS.glob("*/dvc.lock")), ids=lambda p: p.parent.name)
def test_every_recorded_run_has_one_version_of_each_file_its_stages_share(lock):
    versions: dict[str, set[str]] = {}
    for deps in _files_by_stage(lock).values():
        for path, md5 in deps.items():
            versions.setdefault(path, set()).add(md5)
    mixed = {path: md5s for path, md5s in versions.items() if len(md5s) > 1}
    assert not mixed
    assert len(_files_by_stage(lock)) >= 9  # ingest ... report, members included


def test_a_lock_whose_stages_ran_different_code_is_caught(tmp_path):
    lock = yaml.safe_load((PROJECT / "dvc.lock").read_text(encoding="utf-8"))
    stage = next(s for s in lock["stages"].values() if any(d["path"] == "finetune/paths.py" for d in s["deps"]))
    next(d for d in stage["deps"] if d["path"] == "finetune/paths.py")["md5"] = "0" * 32
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(AssertionError):
        test_every_recorded_run_has_one_version_of_each_file_its_stages_share(tmp_path / "dvc.lock")

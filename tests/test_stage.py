"""finetune/stage.py: what every stage's command line does around the stage."""
import json
import shutil

from finetune import paths
from tests.support.repos import PROJECT, copy_repo, repro, set_param, sh


def test_the_metrics_kept_through_a_failure_are_every_stages_uncached_outputs(monkeypatch):
    from finetune.stage import _uncached_outputs

    monkeypatch.chdir(PROJECT)
    assert _uncached_outputs("ingest") == [paths.INGEST_SUMMARY]
    assert _uncached_outputs("member@seed7") == [paths.MEMBER_SUMMARIES / "seed7.json"]
    assert _uncached_outputs("evaluate") == [paths.METRICS]
    assert _uncached_outputs("nonesuch") == [] and _uncached_outputs("") == []


def test_a_failing_stage_leaves_its_last_metrics_in_place(text_repo_snapshot, tmp_path):
    """DVC deletes a stage's outputs before running it; the git-tracked metrics must survive a failure."""
    root = copy_repo(text_repo_snapshot[0], tmp_path / "repo")
    table, summary = root / "data/raw/tiny.csv", root / "reports/ingest.json"
    good, committed = table.read_text(), summary.read_text()
    shutil.rmtree(root / ".cache/kept-metrics")  # as on a fresh clone: the version comes from git's last commit
    table.write_text("words,label\nhi,a\n")
    failed = sh(["dvc", "repro", "ingest"], root, check=False)
    assert failed.returncode != 0 and "missing column(s) text_column" in failed.stderr
    assert summary.read_text() == committed

    table.write_text(good)
    set_param(root, "data.max_rows", 120)
    assert repro(root, "-s", "ingest") == ["ingest"]
    newer = summary.read_text()
    assert json.loads(newer)["rows_kept"] == 120
    table.write_text("words,label\nhi,a\n")
    assert sh(["dvc", "repro", "-s", "ingest"], root, check=False).returncode != 0
    assert summary.read_text() == newer  # the last successful run's (what dvc.lock records), not the commit's

"""End to end under `dvc repro`, on a copy of the session's tiny text project (tests/conftest.py:
text_repo_snapshot ran the whole DAG once). Each test gets its own copy (4.8 MB: git history and DVC cache
included), changes one thing and asserts which stages DVC reruns, so the tests spread over the xdist workers
in any order. Where running them would only repeat work other tests already prove, the assertion is on DVC's own plan: `dvc repro --dry` lists the stages whose code or params
changed, and the DAG gives what runs after them (stages downstream of a changed output)."""
import json
import re

import pytest
import yaml

from tests.support.import_graph import STAGES as STAGE_NAMES
from tests.support.import_graph import stage_code
from tests.support.repos import PROJECT, copy_repo, planned, plots_page, repro, set_param, sh
from tests.test_inference import ensemble_matches_its_stage

ALL_STAGES = ["ingest", "preprocess", "train", "evaluate", "member@tfidf", "ensemble", "compress", "explain", "report"]


@pytest.fixture
def repo(text_repo_snapshot, tmp_path):
    root, ran = text_repo_snapshot
    return copy_repo(root, tmp_path / "repo"), ran


def test_first_repro_runs_every_stage_and_beats_the_baseline(repo):
    root, ran = repo
    assert ran[:3] == ["ingest", "preprocess", "train"] and ran[-1] == "report"
    assert set(ran) == set(ALL_STAGES)
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], root).stdout)
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert metrics["accuracy"] > metrics["baseline"]["accuracy"]
    combined = next(iter(shown.values()))["data"]["reports/ensemble.json"]["data"]
    assert set(combined["members"]) == {"primary", "tfidf"}
    assert combined["method"] == "soft_vote" and combined["accuracy"] > metrics["baseline"]["accuracy"]
    assert (root / "reports/report.html").stat().st_size > 10_000


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    assert repro(root) == []
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."


def test_learning_rate_change_reruns_train_and_what_follows_only(repo):
    # (the flow test really reruns train and evaluate after this change, with ingest and preprocess cached)
    root, _ = repo
    set_param(root, "train.learning_rate", 0.002)
    diff = sh(["dvc", "params", "diff"], root).stdout
    assert re.search(r"train\.learning_rate\s+0\.003\s+0\.002", diff), diff
    assert planned(root) == {"train", "evaluate", "member@tfidf", "ensemble", "compress", "explain", "report"}
    sh(["git", "checkout", "params.yaml"], root)


def test_changing_the_ensemble_method_reruns_only_the_ensemble_and_report(repo, tmp_path):
    root, _ = repo
    set_param(root, "ensemble.method", "stacking")
    assert repro(root) == ["ensemble", "report"]
    assert json.loads((root / "reports/ensemble.json").read_text())["method"] == "stacking"
    assert ensemble_matches_its_stage(root, tmp_path) == "stacking"  # models/ensemble applies the refitted stacker


def test_changing_compress_params_reruns_only_compress_and_what_reads_it(repo):
    root, _ = repo
    set_param(root, "compress.prune", {"structure": "unstructured", "sparsity": 0.3, "recover_epochs": 0})
    assert repro(root) == ["compress", "explain", "report"]  # explain compares the compressed models with their teacher
    result = json.loads((root / "reports/compress.json").read_text())
    assert result["details"]["prune"]["sparsity_pruned_layers"] == pytest.approx(0.3, abs=0.005)
    assert "recovery" not in result["details"]["prune"]


def test_changing_explain_params_reruns_only_explain_and_report(repo):
    root, _ = repo
    set_param(root, "explain.examples", 3)
    assert repro(root) == ["explain", "report"]
    assert json.loads((root / "reports/explain.json").read_text())["examples"] == 3


def test_editing_a_helper_reruns_exactly_the_stages_that_run_it(repo):
    root, _ = repo

    def runners(helper):
        return {stage for stage in STAGE_NAMES if any(helper in files for files in stage_code(root, stage).values())}

    assert runners("finetune/reporting/html.py") == {"report"}
    with (root / "finetune/reporting/html.py").open("a") as f:
        f.write("\n# an edit\n")
    assert repro(root) == ["report"]

    assert runners("finetune/scoring/metrics.py") == {"train", "evaluate", "member", "ensemble", "compress"}
    with (root / "finetune/scoring/metrics.py").open("a") as f:
        f.write("\n# an edit\n")
    plan = planned(root)
    assert {"train", "evaluate", "member@tfidf", "ensemble", "compress"} <= plan and not {"ingest", "preprocess"} & plan
    sh(["git", "checkout", "finetune/scoring/metrics.py"], root)


def test_editing_another_tasks_folder_reruns_nothing_and_this_ones_reruns_from_ingest(repo):
    root, _ = repo
    for task in ("causal-lm", "image-classification", "image-text-classification"):
        for module in (root / "finetune/tasks" / task).glob("*.py"):
            with module.open("a") as f:
                f.write("\n# an edit\n")
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
    with (root / "finetune/tasks/text-classification/tfidf.py").open("a") as f:
        f.write("\n# an edit\n")
    assert planned(root) >= {"ingest", "preprocess", "train", "member@tfidf", "report"}
    sh(["git", "checkout", "finetune/tasks"], root)


def test_forced_rerun_gives_identical_metrics(repo):
    root, _ = repo
    before = (root / "reports/metrics.json").read_text()
    val_before = json.loads((root / "reports/train.json").read_text())["val"]
    lock_before = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"]
    assert repro(root, "-f", "--single-item", "train") == ["train"]
    assert repro(root, "-f", "--single-item", "evaluate") == ["evaluate"]
    assert (root / "reports/metrics.json").read_text() == before
    assert json.loads((root / "reports/train.json").read_text())["val"] == val_before
    model_out = [o for o in yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"] if o["path"] == "models/model"]
    assert model_out == [o for o in lock_before if o["path"] == "models/model"]  # bit-identical weights


def test_the_repo_config_turns_telemetry_off():
    config = (PROJECT / ".dvc/config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


def test_plots_render_every_picture_and_curve_without_any_network(repo, tmp_path):
    root, _ = repo
    page = plots_page(root, tmp_path / "plots")
    assert "window.vegaEmbed" in page  # the libraries are inlined
    for picture in ("evaluate_confusion", "ensemble_confusion", "compress_tradeoff"):
        assert f"reports_plots_{picture}" in page
    assert page.count("vegaEmbed('#") >= 4  # train and val loss, val accuracy and macro F1


def test_adding_a_member_trains_only_that_member_and_removing_one_trains_nothing(repo):
    root, _ = repo
    members = yaml.safe_load((root / "params.yaml").read_text())["ensemble"]["members"]
    set_param(root, "ensemble.members", {**members, "seed2": {"kind": "finetune", "train": {"seed": 2}}})
    assert set(repro(root, "ensemble")) == {"member@seed2", "ensemble"}  # primary and tfidf are not retrained
    assert set(json.loads((root / "reports/ensemble.json").read_text())["members"]) == {"primary", "tfidf", "seed2"}
    # compress: seed2 may be the best teacher now; explain: its teacher's folder (models/members) changed
    assert planned(root) == {"compress", "explain", "report"}
    set_param(root, "ensemble.members", members)
    ran = repro(root, "ensemble")  # the ensemble of these members may even come back from DVC's run cache
    assert not [stage for stage in ran if stage.startswith("member@")]
    assert "seed2" not in json.loads((root / "reports/ensemble.json").read_text())["members"]


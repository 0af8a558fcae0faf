"""End to end under `dvc repro`, in a temporary git repo holding a copy of the project."""
import json
import re

import pytest
import yaml

from tests.import_graph import project_imports
from tests.support import PROJECT, make_rows, sh, tiny_params, write_project

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
ALL_STAGES = ["ingest", "preprocess", "train", "evaluate", "member@seed1", "member@tfidf", "ensemble", "compress", "explain", "report"]


def repro(root, *args) -> list[str]:
    done = sh(["dvc", "repro", *args], root)
    return re.findall(r"Running stage '([\w@-]+)'", done.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model):
    root = write_project(tmp_path_factory.mktemp("repo"), tiny_params(tiny_model), make_rows(150))
    sh(["git", "init", "-q"], root)
    sh([*GIT, "add", "-A"], root)
    sh([*GIT, "commit", "-qm", "tiny project"], root)
    return root, repro(root)


def _set_param(root, dotted: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_first_repro_runs_every_stage_and_beats_the_baseline(repo):
    root, ran = repo
    assert ran[:3] == ["ingest", "preprocess", "train"] and ran[-1] == "report"
    assert set(ran) == set(ALL_STAGES)
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], root).stdout)
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert metrics["accuracy"] > metrics["baseline"]["accuracy"]
    combined = next(iter(shown.values()))["data"]["reports/ensemble.json"]["data"]
    assert set(combined["members"]) == {"primary", "seed1", "tfidf"}
    assert combined["method"] == "soft_vote" and combined["accuracy"] > metrics["baseline"]["accuracy"]
    assert (root / "reports/report.html").stat().st_size > 10_000


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    assert repro(root) == []
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."


def test_learning_rate_change_reruns_train_and_what_follows_only(repo):
    root, _ = repo
    sh([*GIT, "add", "-A"], root)
    sh([*GIT, "commit", "-qm", "first run"], root)
    _set_param(root, "train.learning_rate", 0.002)
    diff = sh(["dvc", "params", "diff"], root).stdout
    assert re.search(r"train\.learning_rate\s+0\.003\s+0\.002", diff), diff
    assert set(repro(root)) == {"train", "evaluate", "member@seed1", "member@tfidf", "ensemble", "compress", "explain", "report"}


def test_changing_the_ensemble_method_reruns_only_the_ensemble_and_report(repo):
    root, _ = repo
    _set_param(root, "ensemble.method", "stacking")
    assert repro(root) == ["ensemble", "report"]
    assert json.loads((root / "reports/ensemble.json").read_text())["method"] == "stacking"


def test_changing_compress_params_reruns_only_compress_and_what_reads_it(repo):
    root, _ = repo
    _set_param(root, "compress.prune", {"structure": "unstructured", "sparsity": 0.3, "recover_epochs": 0})
    assert repro(root) == ["compress", "explain", "report"]  # explain compares the compressed models with their teacher
    result = json.loads((root / "reports/compress.json").read_text())
    assert result["details"]["prune"]["sparsity_pruned_layers"] == pytest.approx(0.3, abs=0.005)
    assert "recovery" not in result["details"]["prune"]


def test_changing_explain_params_reruns_only_explain_and_report(repo):
    root, _ = repo
    _set_param(root, "explain.examples", 4)
    assert repro(root) == ["explain", "report"]
    assert json.loads((root / "reports/explain.json").read_text())["examples"] == 4


def test_adding_a_member_trains_only_that_member_and_removing_one_trains_nothing(repo):
    root, _ = repo
    members = yaml.safe_load((root / "params.yaml").read_text())["ensemble"]["members"]
    _set_param(root, "ensemble.members", {**members, "seed2": {"kind": "finetune", "train": {"seed": 2}}})
    # compress: seed2 may be the best teacher now; explain: its teacher's folder (models/members) changed
    assert set(repro(root)) == {"member@seed2", "ensemble", "compress", "explain", "report"}
    assert set(json.loads((root / "reports/ensemble.json").read_text())["members"]) == {"primary", "seed1", "tfidf", "seed2"}
    _set_param(root, "ensemble.members", members)
    ran = repro(root)  # compress and report may come back from DVC's run-cache: they saw these exact inputs before
    assert "ensemble" in ran and set(ran) <= {"ensemble", "compress", "explain", "report"}
    assert "seed2" not in json.loads((root / "reports/ensemble.json").read_text())["members"]


def test_editing_a_helper_reruns_exactly_the_stages_that_import_it(repo):
    root, _ = repo
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]

    def importers(helper):
        return {name for name, stage in stages.items()
                if helper in project_imports(root, root / (stage.get("do", stage)["cmd"].split()[2].replace(".", "/") + ".py"))}

    assert importers("finetune/html.py") == {"report"}
    with (root / "finetune/html.py").open("a") as f:
        f.write("\n# an edit\n")
    assert repro(root) == ["report"]

    assert importers("finetune/metrics.py") == {"train", "evaluate", "member", "ensemble", "compress"}
    with (root / "finetune/metrics.py").open("a") as f:
        f.write("\n# an edit\n")
    ran = repro(root)
    assert {"train", "evaluate"} <= set(ran) and not {"ingest", "preprocess"} & set(ran)


def test_forced_rerun_gives_identical_metrics(repo):
    root, _ = repo
    before = (root / "reports/metrics.json").read_text()
    val_before = json.loads((root / "reports/train.json").read_text())["val"]
    lock_before = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"]
    assert set(repro(root, "-f")) == set(ALL_STAGES)
    assert (root / "reports/metrics.json").read_text() == before
    assert json.loads((root / "reports/train.json").read_text())["val"] == val_before
    model_out = [o for o in yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"] if o["path"] == "models/model"]
    assert model_out == [o for o in lock_before if o["path"] == "models/model"]  # bit-identical weights


def test_the_repo_config_turns_telemetry_off():
    config = (PROJECT / ".dvc/config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


def test_plots_render_without_any_network(repo):
    root, _ = repo
    sh(["dvc", "plots", "show", "-o", "plots_out"], root)
    page = (root / "plots_out/index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    assert "window.vegaEmbed" in page  # the libraries are inlined
    assert page.count("vegaEmbed('#") >= 3  # confusion matrix, loss, validation scores
    assert "confusion.png" in page

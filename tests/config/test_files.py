"""params.yaml as the resolved form of a short config (finetune/config/files.py, tools/use_config.py): every shipped config
renders to a file that reads back to the same params, every key commented from the schema; params.yaml is what
configs/text.yaml renders to; switching refuses to drop unsaved edits; --save writes what differs from the defaults."""
import re
import shutil
import sys

import pytest
import yaml

from finetune.config.files import field_comments, render
from finetune.config.params import load_params, params_class, parse_params
from finetune.config.sections import Train
from tests.support.repos import PROJECT, sh

CONFIGS = sorted(path.stem for path in (PROJECT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_renders_to_every_key_and_reads_back_the_same(name, monkeypatch):
    monkeypatch.chdir(PROJECT)
    params = load_params(f"configs/{name}.yaml")
    text = render(params)
    assert parse_params(yaml.safe_load(text), "rendered") == params
    assert not re.search(r"[\s\[]\d+e[-+]?\d", text)  # 5e-05 would read back as a string in YAML 1.1 (PyYAML, DVC): 5.0e-05
    shown = {key for key, value in yaml.safe_load(text)["train"].items()}
    assert shown == set(type(params.train).model_fields)  # every key spelled out, defaults included


def test_the_config_stays_short_and_params_yaml_is_its_rendering(monkeypatch):
    monkeypatch.chdir(PROJECT)
    short = yaml.safe_load((PROJECT / "configs/text.yaml").read_text())
    assert len((PROJECT / "configs/text.yaml").read_text().splitlines()) < 40 and "train" in short and "speed" not in short["train"]
    assert load_params("params.yaml") == load_params("configs/text.yaml")
    body = (PROJECT / "params.yaml").read_text().split("\n", 1)[1]  # after the header naming the config
    assert body == render(load_params("configs/text.yaml")), "params.yaml is stale: run `python tools/use_config.py text`"


def test_comments_come_from_the_schema_source():
    comments = field_comments(Train)
    assert comments["gradient_accumulation_steps"].startswith("batches per optimizer step")
    assert comments["head_weights"].startswith("several heads (data.label_columns)")  # the comment lines above the field
    assert "CNNs: the blocks that change the shape" in field_comments(params_class("text-classification").model_fields["compress"]
                                                                      .annotation.model_fields["distill"].annotation)["layers"]  # continued


def test_a_task_section_must_extend_the_shared_one():
    from finetune.config.sections import Section
    from finetune.tasks import get_task

    class Elsewhere(Section):
        steps: int = 1

    task = get_task("text-classification")
    original = dict(task.sections)
    params_class.cache_clear()
    try:
        type(task).sections = {**original, "train": Elsewhere}
        with pytest.raises(TypeError, match=r"sections \{'train': 'Elsewhere'\} must extend the shared sections"):
            params_class("text-classification")
    finally:
        type(task).sections = original
        params_class.cache_clear()


def test_switching_refuses_unsaved_edits_and_save_keeps_only_what_differs(tmp_path):
    root = tmp_path / "project"
    for name in ("configs", "finetune", "tools", "data/raw", "models/pretrained"):
        source = PROJECT / name
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__")) if source.is_dir() else None
    shutil.copy(PROJECT / "params.yaml", root / "params.yaml")
    sh([sys.executable, "tools/use_config.py", "image"], root)
    assert load_params(root / "params.yaml").task == "image-classification"
    edited = yaml.safe_load((root / "params.yaml").read_text())
    edited["train"]["epochs"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(edited))
    refused = sh([sys.executable, "tools/use_config.py", "text"], root, check=False)
    assert refused.returncode == 2 and "params.yaml holds edits that are in no configs/*.yaml file" in refused.stderr
    sh([sys.executable, "tools/use_config.py", "--save", "mine"], root)
    saved = yaml.safe_load((root / "configs/mine.yaml").read_text())
    image = yaml.safe_load((root / "configs/image.yaml").read_text())
    # the one edit over the image config (what it sets beyond the task's defaults stays: a searched learning rate)
    assert saved["task"] == "image-classification" and saved["train"] == {**image.get("train", {}), "epochs": 5.0}
    # the image task's own prune defaults (structure, sparsity) are not edits: only what configs/image.yaml sets stays
    assert saved.get("compress", {}).get("prune", {}) == image.get("compress", {}).get("prune", {})
    sh([sys.executable, "tools/use_config.py", "text"], root)  # saved now: switching is allowed
    assert load_params(root / "params.yaml").task == "text-classification"


def test_a_section_given_in_part_keeps_the_tasks_default_for_the_rest(monkeypatch):
    monkeypatch.chdir(PROJECT)
    params = parse_params({"task": "image-classification", "compress": {"prune": {"sparsity": 0.3}}, "train": {"early_stopping": {"patience": 2}}})
    assert params.compress.prune.structure == "channels" and params.compress.prune.recover_epochs == 3  # the image task's, not Prune's
    assert params.train.early_stopping.metric == "f1_macro"
    lm = parse_params({"task": "causal-lm", "train": {"early_stopping": {"patience": 1}}})
    assert lm.train.early_stopping.metric == "loss"  # a causal LM selects on val loss unless told otherwise

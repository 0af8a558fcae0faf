"""A task is one folder behind one interface. A toy "numbers" task written here (a tiny MLP over a numeric column: which
third of [0, 30) a number falls in: one file, its folder's __init__.py) runs ingest -> report under `dvc repro` with no
stage or shared module edited; editing one task's folder reruns only that task's pipelines, editing shared training code
reruns train and what follows; switching params.yaml back to the text task restores the text results from DVC's run cache
without retraining anything."""
import json
import shutil
import sys

import pandas as pd
import yaml

from tests.support.params import placed, tiny_params
from tests.support.repos import commit, copy_repo, repro, sh

NUMBERS = '''"""numbers: which third of [0, 30) a number falls in, learned by a tiny MLP (the toy task of tests/tasks/test_registry.py)."""
import html

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.config.params import Data, Preprocess
from finetune.data.features import FeatureDataset
from finetune.data.sources import read_user_table
from finetune.families.classification import ClassificationTask
from finetune.models.base import Models


class NumbersData(Data):
    value_column: str = "value"


class NumbersPreprocess(Preprocess):
    scale: float = 0.1


class MLP(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(1, 16), torch.nn.Linear(16, 16)])
        self.head = torch.nn.Linear(16, classes)

    def forward(self, value, labels=None):
        x = value[:, None]
        for layer in self.layers:
            x = torch.relu(layer(x))
        logits = self.head(x)
        return SequenceClassifierOutput(loss=None if labels is None else torch.nn.functional.cross_entropy(logits, labels), logits=logits)


class MLPs(Models):
    builtin = ("builtin:mlp",)

    def check(self, model):
        return None if model == "builtin:mlp" else "the numbers task trains model 'builtin:mlp'"

    def source(self, model):
        return model

    def load_processor(self, model_dir, trust_remote_code):
        return None

    def load_model(self, source, label_map, train):
        return MLP(len(label_map["labels"]))

    def load_trained(self, model_dir, trust_remote_code):
        weights = load_file(f"{model_dir}/model.safetensors")
        model = MLP(weights["head.bias"].shape[0])
        model.load_state_dict(weights)
        return model

    def save_trained(self, model, processor, folder):
        save_file(model.state_dict(), folder / "model.safetensors")

    def outline(self, train):
        return MLP(2)

    def dataset(self, frame, layout, processor, augment=None, seed=0):
        return FeatureDataset(frame, layout["features"])

    def collator(self, processor):
        return lambda items: {"value": torch.tensor([i["value"] for i in items], dtype=torch.float32),
                              "labels": torch.tensor([i["labels"] for i in items])}


class Numbers(ClassificationTask):
    name = "numbers"
    sections = {"data": NumbersData, "preprocess": NumbersPreprocess}
    models = MLPs()

    def read(self, data):
        return read_user_table(data, data.value_column, "value_column")

    def normalize(self, inputs, preprocess):
        values = pd.to_numeric(inputs, errors="coerce")
        return values, values.isna().map({True: "not a number", False: ""})

    def duplicate_key(self, inputs):
        return inputs

    def featurize(self, parts, params):
        return {n: p.assign(augmented=False, value=p["input"] * params.preprocess.scale) for n, p in parts.items()}, {"features": ["value"]}

    def render(self, value):
        return html.escape(str(value))


TASK = Numbers()
'''


def _numbers_params(tiny_model) -> dict:
    params = tiny_params(tiny_model, source="data/raw/numbers.csv", train={"model": "builtin:mlp", "epochs": 30, "learning_rate": 0.05})
    params["task"] = "numbers"
    del params["data"]["text_column"]
    params["data"]["value_column"] = "value"
    params["preprocess"] = {"scale": 0.1}
    params["ensemble"]["members"] = {"seed2": {"kind": "finetune", "train": {"seed": 2}}}
    params["explain"] = {"examples": 6}  # the family's keys: the text task's token settings are not this task's
    return params


def test_a_new_task_is_one_folder_and_runs_the_whole_dag(text_repo_snapshot, tiny_model, tmp_path):
    """~75 s: the toy task's whole DAG under `dvc repro` (nine stage processes); switching back to the text
    params then costs seconds, because every text result comes back from DVC's run cache."""
    root = copy_repo(text_repo_snapshot[0], tmp_path / "repo")
    text_params, text_metrics = (root / "params.yaml").read_text(), (root / "reports/metrics.json").read_text()
    (root / "finetune/tasks/numbers").mkdir()
    (root / "finetune/tasks/numbers/__init__.py").write_text(NUMBERS)
    values = [(i * 7919) % 3000 / 100 for i in range(150)]  # 150 distinct numbers in [0, 30)
    pd.DataFrame({"value": values, "label": [["low", "mid", "high"][int(v // 10)] for v in values]}).to_csv(root / "data/raw/numbers.csv", index=False)
    (root / "configs/tiny-text.yaml").write_text(text_params)
    (root / "configs/numbers.yaml").write_text(yaml.safe_dump(placed(_numbers_params(tiny_model), root), sort_keys=False))
    sh([sys.executable, "tools/use_config.py", "numbers"], root)  # what `make pipeline CONFIG=numbers` does before dvc repro
    ran = repro(root)
    assert ran[:4] == ["ingest", "preprocess", "train", "evaluate"] and set(ran) >= {"member@seed2", "ensemble", "compress", "explain", "report"}
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["accuracy"] > metrics["baseline"]["accuracy"] + 0.3 and set(metrics["per_class"]) == {"high", "low", "mid"}
    assert "MLP: no compression method fits this model" in json.loads((root / "reports/compress.json").read_text())["skipped"]
    assert "has no explainer" in json.loads((root / "reports/explain.json").read_text())["skipped"]
    assert ">Ensemble" in (root / "reports/report.html").read_text()
    changed = sh(["git", "status", "--porcelain", "--untracked-files=all", "finetune", "stages", "dvc.yaml"], root).stdout.splitlines()
    assert changed == ["?? finetune/tasks/numbers/__init__.py"]  # the whole task: one new file, nothing else edited

    # editing another task's folder reruns nothing here; editing this one reruns everything that loads it; shared
    # training code reruns train and what follows, for every task
    for other in ("text-classification", "causal-lm"):
        with (root / f"finetune/tasks/{other}/__init__.py").open("a") as f:
            f.write("\n# an edit\n")
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
    with (root / "finetune/tasks/numbers/__init__.py").open("a") as f:
        f.write("\n# an edit\n")
    assert {"ingest", "train", "report"} <= set(json.loads(sh(["dvc", "status", "--json"], root).stdout))
    (root / "finetune/tasks/numbers/__init__.py").write_text(NUMBERS)
    with (root / "finetune/training/strategies.py").open("a") as f:
        f.write("\n# an edit\n")
    assert set(json.loads(sh(["dvc", "status", "--json"], root).stdout)) == {"train", "member@seed2", "compress"}  # only the stages running it
    sh(["git", "checkout", "finetune"], root)

    # back to the text task (and its data folder): every result comes back from DVC's run cache, nothing runs
    sh([sys.executable, "tools/use_config.py", "tiny-text"], root)
    shutil.rmtree(root / "finetune/tasks/numbers")
    (root / "data/raw/numbers.csv").unlink()
    assert yaml.safe_load((root / "params.yaml").read_text()) == yaml.safe_load(text_params)  # the same values, its own header
    assert not (root / "models/members/seed2").exists()
    assert repro(root) == []
    assert (root / "reports/metrics.json").read_text() == text_metrics
    commit(root, "back to text")

"""A task is one module behind one interface. A toy "numbers" task written here (a tiny MLP over a numeric
column: which third of [0, 30) a number falls in) runs ingest -> report under `dvc repro` with no stage
edited; editing one task's module reruns only that task's pipelines; switching params.yaml back to the text
task restores the text results from DVC's run cache without retraining anything."""
import json
import sys

import pandas as pd
import yaml

from tests.support import commit, copy_repo, placed, repro, sh, tiny_params

NUMBERS = '''"""numbers: which third of [0, 30) a number falls in, learned by a tiny MLP (the toy task of tests/test_tasks.py)."""
import html

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.params import Data, Section
from finetune.sources import read_user_table
from finetune.tasks import FeatureDataset, Task


class NumbersData(Data):
    value_column: str = "value"


class NumbersPreprocess(Section):
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


class Numbers(Task):
    name, Data, Preprocess = "numbers", NumbersData, NumbersPreprocess

    def read(self, data):
        return read_user_table(data, data.value_column, "value_column")

    def normalize(self, inputs, preprocess):
        values = pd.to_numeric(inputs, errors="coerce")
        return values, values.isna().map({True: "not a number", False: ""})

    def duplicate_key(self, inputs):
        return inputs

    def featurize(self, parts, params):
        return {n: p.assign(augmented=False, value=p["input"] * params.preprocess.scale) for n, p in parts.items()}, {"features": ["value"]}

    def check_model(self, model):
        return None if model == "builtin:mlp" else "the numbers task trains model 'builtin:mlp'"

    def model_source(self, model):
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

    def model_outline(self, train):
        return MLP(2)

    def dataset(self, frame, layout, processor, augment=None, seed=0):
        return FeatureDataset(frame, layout["features"])

    def collator(self, processor):
        return lambda items: {"value": torch.tensor([i["value"] for i in items], dtype=torch.float32),
                              "labels": torch.tensor([i["labels"] for i in items])}

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
    return params


def test_a_new_task_is_one_module_and_runs_the_whole_dag(text_repo_snapshot, tiny_model, tmp_path):
    """~75 s: the toy task's whole DAG under `dvc repro` (nine stage processes); switching back to the text
    params then costs seconds, because every text result comes back from DVC's run cache."""
    root = copy_repo(text_repo_snapshot[0], tmp_path / "repo")
    text_params, text_metrics = (root / "params.yaml").read_text(), (root / "reports/metrics.json").read_text()
    stages_before = sh(["git", "ls-files", "stages"], root).stdout

    (root / "finetune/tasks/numbers.py").write_text(NUMBERS)
    values = [(i * 7919) % 3000 / 100 for i in range(150)]  # 150 distinct numbers in [0, 30)
    pd.DataFrame({"value": values, "label": [["low", "mid", "high"][int(v // 10)] for v in values]}).to_csv(root / "data/raw/numbers.csv", index=False)
    (root / "configs/tiny-text.yaml").write_text(text_params)
    (root / "configs/numbers.yaml").write_text(yaml.safe_dump(placed(_numbers_params(tiny_model), root), sort_keys=False))
    sh([sys.executable, "tools/use_config.py", "numbers"], root)  # what `make pipeline CONFIG=numbers` does before dvc repro
    ran = repro(root)
    assert ran[:4] == ["ingest", "preprocess", "train", "evaluate"] and set(ran) >= {"member@seed2", "ensemble", "compress", "explain", "report"}
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["accuracy"] > metrics["baseline"]["accuracy"] + 0.3 and set(metrics["per_class"]) == {"high", "low", "mid"}
    assert "the numbers task has no compression methods" in json.loads((root / "reports/compress.json").read_text())["unavailable"]
    assert "has no explainer" in json.loads((root / "reports/explain.json").read_text())["unavailable"]
    assert ">Ensemble" in (root / "reports/report.html").read_text()
    assert sh(["git", "status", "--porcelain", "stages"], root).stdout == "" and sh(["git", "ls-files", "stages"], root).stdout == stages_before

    # editing another task's module reruns nothing here; editing this one reruns everything that loads it
    for other in ("text-classification", "image-classification"):
        with (root / f"finetune/tasks/{other}.py").open("a") as f:
            f.write("\n# an edit\n")
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
    with (root / "finetune/tasks/numbers.py").open("a") as f:
        f.write("\n# an edit\n")
    changed = sh(["dvc", "status", "--json"], root).stdout
    assert all(stage in json.loads(changed) for stage in ("ingest", "train", "report"))

    # back to the text task (and its data folder): every result comes back from DVC's run cache, nothing runs
    sh(["git", "checkout", "finetune/tasks"], root)
    (root / "data/raw/numbers.csv").unlink()
    sh([sys.executable, "tools/use_config.py", "tiny-text"], root)
    assert (root / "params.yaml").read_text() == text_params and not (root / "models/members/seed2").exists()
    assert repro(root) == []
    assert (root / "reports/metrics.json").read_text() == text_metrics
    commit(root, "back to text")

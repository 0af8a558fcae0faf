"""predict for classifiers: class probabilities of new rows from a trained model folder, through the code that prepared
its training rows: the task reads them (read_unlabelled), checks each input as ingest does (check_inputs), normalizes it
as preprocess does (normalize) and featurizes it with the model's recorded layout (featurize(..., trained=layout): text
keeps its max_length, images their channels); predict_proba scores them, text in batches of similar lengths. Rows a
step refuses come back as rejects with the reason. Any folder the pipeline trained predicts: models/model, a member,
a pruned or distilled model, an int8 one (its compressor reloads it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.config.params import trained_params
from finetune.data import labels, numbers
from finetune.data.heads import Heads
from finetune.data.sources import INPUT, LABEL
from finetune.data.tables import LINE, ROW, BadRow
from finetune.errors import UserError
from finetune.families.classification import combining
from finetune.families.classification.ensemble import ENSEMBLE_SPEC
from finetune.io import read_json

INT8_WEIGHTS = "int8.safetensors"  # what the compress stage's torch.ao int8 folders held instead of model.safetensors
ONNX_MODEL = "model.onnx"  # what `finetune export --onnx` adds to an exported folder


def load_model(task, model_dir: Path, trust_remote_code: bool, backend: str = "torch"):
    from finetune.compression.onnx_export import INT8_MODEL, OnnxModel

    if (model_dir / INT8_MODEL).is_file():  # a transformer's int8 (compress) is an onnxruntime model, whichever the backend
        return OnnxModel(model_dir / INT8_MODEL)
    if backend == "onnx":
        if not (model_dir / ONNX_MODEL).is_file():
            raise UserError(f"--backend onnx: no {ONNX_MODEL} in {model_dir}; make one with `finetune export --model ... --onnx`")
        return OnnxModel(model_dir / ONNX_MODEL)
    if (model_dir / INT8_WEIGHTS).is_file():  # torch.ao's int8, before compress moved to onnxruntime (4907624, 8586449)
        raise UserError(f"--model {model_dir}: an int8 model made by an older version of the compress stage (torch.ao); "
                        "`dvc repro compress` remakes it (as model.int8.onnx)")
    return task.models.load_trained(str(model_dir), trust_remote_code).eval()


def prediction_columns(probs: np.ndarray, label_map: dict) -> pd.DataFrame:
    """`label` and prob_<class> per class; several heads: <head> and <head>.prob_<class> for each (a number head: <head>, its
    predicted value); a numeric label: `label`, the predicted value in the label's units."""
    if numbers.is_number(label_map):
        return pd.DataFrame({LABEL: probs[:, 0]})
    heads = Heads.of(label_map)
    blocks = heads.columns(probs) if heads.multi else {None: probs}
    classes = heads.classes if heads.multi else {None: label_map["labels"]}
    kinds = label_map.get("kinds", {})
    columns = {}
    for head, block in blocks.items():
        if head in heads.targets:  # a number head: its value in its units
            columns[head] = block[:, 0]
            continue
        prefix = f"{head}." if head else ""
        # the user's own values: 7 where the data held the number 7 (label_map `kinds`, finetune/data/labels.py)
        columns[head or LABEL] = labels.values([classes[head][i] for i in block.argmax(axis=1)], kinds.get(head or LABEL, labels.TEXT))
        columns |= {f"{prefix}prob_{name}": block[:, i] for i, name in enumerate(classes[head])}
    return pd.DataFrame(columns)


class ClassifierPredictor:
    def __init__(self, task, model_dir: Path, trust_remote_code: bool, backend: str = "torch"):
        self.task, self.model_dir = task, model_dir
        self.layout = read_json(model_dir / "label_map.json")
        self.params = trained_params(read_json(model_dir / paths.TRAINED_WITH), task.models.trained_source(model_dir),
                                     str(model_dir / paths.TRAINED_WITH))
        self.processor = task.models.load_processor(str(model_dir), trust_remote_code)
        self.model = load_model(task, model_dir, trust_remote_code, backend)

    @property
    def data(self):
        return self.params.data

    def prepare(self, path: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[BadRow]]:
        """(the featurized rows, each with its data row and the input as shown, the refused rows)."""
        task, params = self.task, self.params
        source = task.read_unlabelled(path, params.data)
        frame, bad = source.frame.reset_index(drop=True), list(source.bad)
        shown = task.display(frame)
        stored, problems = task.check_inputs(frame[INPUT], params.data)
        normalized, unusable = task.normalize(stored, params.preprocess)
        problems = problems.where(problems != "", unusable)
        refused = problems != ""
        bad += [BadRow(frame.at[i, ROW], frame.at[i, LINE], problems[i], str(shown[i])[:200]) for i in frame.index[refused]]
        frame, shown = frame.assign(**{INPUT: normalized})[~refused].reset_index(drop=True), shown[~refused].reset_index(drop=True)
        if frame.empty:
            return pd.DataFrame({"row": [], "shown": []}), frame, bad
        tables, _ = task.featurize({"predict": frame.assign(id=frame.index)[["id", INPUT]]}, params, trained=self.layout)
        return tables["predict"].assign(row=frame[ROW].to_numpy(), shown=shown.to_numpy()), frame, bad

    def probabilities(self, path: Path, batch_size: int | None = None) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
        """(the featurized rows, their class probabilities (several heads side by side), the refused rows)."""
        table, _, bad = self.prepare(path)
        if table.empty:
            return table, np.zeros((0, len(self.layout["labels"]))), bad
        # batches of similar lengths pad less (a sequential loader keeps this order, then it is undone)
        order = np.argsort(table["input_ids"].map(len).to_numpy(), kind="stable") if "input_ids" in table else np.arange(len(table))
        sorted_probs = self.task.predict_proba(self.model, self.processor, table.iloc[order].reset_index(drop=True), self.layout,
                                               batch_size or self.params.train.eval_batch_size)
        probs = np.empty_like(sorted_probs)
        probs[order] = sorted_probs
        return table, probs, bad

    def predict(self, path: Path, batch_size: int | None = None):
        table, probs, bad = self.probabilities(path, batch_size)
        return predicted(table, probs, self.layout, bad)


def predicted(table: pd.DataFrame, probs: np.ndarray, label_map: dict, bad: list[BadRow]):
    from finetune.inference import Predicted

    rows = pd.DataFrame({"row": table["row"].to_numpy(), "input": table["shown"].to_numpy()})
    return Predicted(pd.concat([rows, prediction_columns(probs, label_map)], axis=1), bad)


class EnsemblePredictor:
    """models/ensemble (the ensemble stage's ensemble.json): every member predicts the rows (a fine-tuned one through its
    own folder and features, a classical one on the features of the train stage's model, as in the member stage), then
    each head's members are calibrated and combined with what the ensemble stage fitted on val, by its chosen method
    (finetune/families/classification/combining.py: the very functions that scored it)."""

    def __init__(self, task, folder: Path, trust_remote_code: bool):
        self.task, self.spec = task, read_json(folder / ENSEMBLE_SPEC)
        self.base = ClassifierPredictor(task, (folder / self.spec["prepared_by"]).resolve(), trust_remote_code)
        self.members = {}
        for name, member in self.spec["members"].items():
            where = (folder / member["folder"]).resolve()
            if not where.is_dir():
                raise UserError(f"{folder}/{ENSEMBLE_SPEC}: member {name!r} should be in {where}, which does not exist; the ensemble "
                                "predicts with its members' folders beside it (copy models/ as a whole)")
            if member["kind"] == "finetune":
                self.members[name] = where if where == self.base.model_dir else ClassifierPredictor(task, where, trust_remote_code)
            else:
                heads = [head for head in self.spec["heads"] if head]
                self.members[name] = {head: task.classical.load(where / head if head else where) for head in heads or [""]}

    @property
    def data(self):
        return self.base.data

    def predict(self, path: Path, batch_size: int | None = None):
        table, base_probs, bad = self.base.probabilities(path, batch_size)
        heads = Heads.of(self.base.layout)
        per_head = {}  # {member: {head: probabilities}}
        for name, member in self.members.items():
            if isinstance(member, dict):  # classical: one model per head, on the base's prepared rows
                per_head[name] = {head: model.predict_proba(table) if len(table) else np.zeros((0, 0)) for head, model in member.items()}
                continue
            rows, probs, _ = (table, base_probs, []) if isinstance(member, Path) else member.probabilities(path, batch_size)
            if not np.array_equal(rows["row"].to_numpy(), table["row"].to_numpy()):
                raise UserError(f"ensemble member {name!r} refused other rows of {path} than the train stage's model; predict with "
                                "each member's folder to see which")
            per_head[name] = heads.columns(probs) if heads.multi else {"": probs}
        combined = []
        for head, applied in self.spec["heads"].items():
            members = [per_head[name][head] for name in applied["members"]]
            combined.append(combining.predict(fitted(applied), members)[applied["method"]] if len(table) else
                            np.zeros((0, len(applied["classes"]))))
        return predicted(table, np.concatenate(combined, axis=1), self.base.layout, bad)


def fitted(applied: dict) -> combining.Fitted:
    """What the ensemble stage fitted for one head, from its ensemble.json entry."""
    from sklearn.linear_model import LogisticRegression

    names = applied["members"]
    stacker = None  # a numeric label's ensemble has none
    if applied["stacker"] is not None:
        stacker = LogisticRegression()
        stacker.coef_, stacker.intercept_ = np.asarray(applied["stacker"]["coef"]), np.asarray(applied["stacker"]["intercept"])
        stacker.classes_ = np.asarray(applied["stacker"]["fitted_classes"])
    return combining.Fitted(np.asarray([applied["temperatures"][n] for n in names]), np.asarray([applied["weights"][n] for n in names]),
                            stacker, names.index(applied["best_member"]))


def run(task, model_dir: Path, trust_remote_code: bool, backend: str = "torch") -> ClassifierPredictor | EnsemblePredictor:
    if (model_dir / ENSEMBLE_SPEC).is_file():
        if backend != "torch":
            raise UserError(f"--backend {backend}: an ensemble predicts through its members' folders, with PyTorch")
        return EnsemblePredictor(task, model_dir, trust_remote_code)
    return ClassifierPredictor(task, model_dir, trust_remote_code, backend)

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
from finetune.data.heads import Heads
from finetune.data.sources import INPUT
from finetune.data.tables import LINE, ROW, BadRow
from finetune.io import read_json

INT8_WEIGHTS = "int8.safetensors"  # what the compress stage's int8 folders hold instead of model.safetensors


def load_model(task, model_dir: Path, trust_remote_code: bool):
    if (model_dir / INT8_WEIGHTS).is_file():
        from finetune.compression.compressors import TransformerCompressor
        from finetune.compression.convnets import ConvNetCompressor
        from finetune.models.images import SPEC

        compressor = ConvNetCompressor if (model_dir / SPEC).is_file() else TransformerCompressor
        return compressor(task.models).load_quantized(model_dir).eval()
    return task.models.load_trained(str(model_dir), trust_remote_code).eval()


def prediction_columns(probs: np.ndarray, label_map: dict) -> pd.DataFrame:
    """`label` and prob_<class> per class; several heads: <head> and <head>.prob_<class> for each."""
    heads = Heads.of(label_map)
    blocks = heads.columns(probs) if heads.multi else {None: probs}
    classes = heads.classes if heads.multi else {None: label_map["labels"]}
    columns = {}
    for head, block in blocks.items():
        prefix = f"{head}." if head else ""
        columns[head or "label"] = [classes[head][i] for i in block.argmax(axis=1)]
        columns |= {f"{prefix}prob_{name}": block[:, i] for i, name in enumerate(classes[head])}
    return pd.DataFrame(columns)


class ClassifierPredictor:
    def __init__(self, task, model_dir: Path, trust_remote_code: bool):
        self.task, self.model_dir = task, model_dir
        self.layout = read_json(model_dir / "label_map.json")
        self.params = trained_params(read_json(model_dir / paths.TRAINED_WITH), task.models.trained_source(model_dir),
                                     str(model_dir / paths.TRAINED_WITH))
        self.processor = task.models.load_processor(str(model_dir), trust_remote_code)
        self.model = load_model(task, model_dir, trust_remote_code)

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

    def predict(self, path: Path, batch_size: int | None = None):
        from finetune.inference import Predicted

        table, _, bad = self.prepare(path)
        if table.empty:
            return Predicted(pd.concat([table, prediction_columns(np.zeros((0, len(self.layout["labels"]))), self.layout)], axis=1)
                             .rename(columns={"shown": "input"}), bad)
        # batches of similar lengths pad less (a sequential loader keeps this order, then it is undone)
        order = np.argsort(table["input_ids"].map(len).to_numpy(), kind="stable") if "input_ids" in table else np.arange(len(table))
        sorted_probs = self.task.predict_proba(self.model, self.processor, table.iloc[order].reset_index(drop=True), self.layout,
                                               batch_size or self.params.train.eval_batch_size)
        probs = np.empty_like(sorted_probs)
        probs[order] = sorted_probs
        predictions = pd.concat([pd.DataFrame({"row": table["row"].to_numpy(), "input": table["shown"].to_numpy()}),
                                 prediction_columns(probs, self.layout)], axis=1)
        return Predicted(predictions, bad)


def run(task, model_dir: Path, trust_remote_code: bool) -> ClassifierPredictor:
    return ClassifierPredictor(task, model_dir, trust_remote_code)

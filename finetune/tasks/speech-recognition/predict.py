"""predict for speech recognition: the transcript of every clip of a folder or table (`finetune predict --input`), from
any folder the pipeline trained: models/model or models/compressed/int8 (reloaded as compress saved it).

Each clip is read by the task (every audio file under a folder, or a table's data.audio_column), checked and stored as
ingest does (too long, silent, clipped, not audio: a reject with the reason), refused when longer than the model's
window, and transcribed greedily in batches. Columns: row, input (the file), transcript, seconds.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune import paths
from finetune.compression import quantize
from finetune.config.params import trained_params
from finetune.data.audio import SAMPLE_RATE, seconds, stored_samples
from finetune.data.sources import INPUT
from finetune.data.tables import LINE, ROW, BadRow
from finetune.errors import UserError
from finetune.io import read_json

from .transcribe import transcribe, window_of


class Transcriber:
    def __init__(self, task, model_dir: Path, trust_remote_code: bool):
        self.task = task
        self.params = trained_params(read_json(model_dir / paths.TRAINED_WITH), str(model_dir), str(model_dir / paths.TRAINED_WITH))
        self.processor = task.models.load_processor(str(model_dir), trust_remote_code)
        if (model_dir / quantize.SPEC).is_file():
            self.model = quantize.load(model_dir)
        else:
            self.model = task.models.load_trained(str(model_dir), trust_remote_code).eval()

    @property
    def data(self):
        return self.params.data

    def predict(self, path: Path, batch_size: int | None = None):
        from finetune.inference import Predicted

        source = self.task.read_unlabelled(path, self.data)
        frame, bad = source.frame.reset_index(drop=True), list(source.bad)
        stored, problems = self.task.check_inputs(frame[INPUT], self.data)
        frame = frame.assign(**{INPUT: stored})
        shown = self.task.display(frame)
        window = window_of(self.model)
        for index in frame.index:
            if not problems[index] and seconds(frame.at[index, INPUT]) > window:
                problems[index] = f"clip is {seconds(frame.at[index, INPUT]):.2f} s long; the model reads {window} s"
        refused = problems != ""
        bad += [BadRow(frame.at[i, ROW], frame.at[i, LINE], problems[i], str(shown[i])) for i in frame.index[refused]]
        frame, shown = frame[~refused].reset_index(drop=True), shown[~refused].reset_index(drop=True)
        clips = [stored_samples(content) for content in frame[INPUT]]
        # the evaluate settings are not part of a trained model's record: their defaults
        settings = self.task.sections["evaluate"]()
        texts, _ = transcribe(self.model, self.processor.tokenizer, clips, batch_size or settings.batch_size,
                              max_new_tokens=settings.max_new_tokens) if clips else ([], 0.0)
        table = pd.DataFrame({"row": frame[ROW].to_numpy(), "input": shown.to_numpy(), "transcript": texts,
                              "seconds": [round(len(c) / SAMPLE_RATE, 2) for c in clips]})
        return Predicted(table, bad)


def run(task, model_dir: Path, trust_remote_code: bool, backend: str = "torch") -> Transcriber:
    if backend != "torch":
        raise UserError(f"--backend {backend}: speech recognition transcribes with PyTorch only (generate's loop is not exported to ONNX)")
    return Transcriber(task, model_dir, trust_remote_code)

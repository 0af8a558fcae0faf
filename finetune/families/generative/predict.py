"""predict for generative models: how well a trained causal LM predicts each new text (one row per document: its tokens,
mean negative log-likelihood per token and perplexity), the per-document view of the evaluate stage's perplexity.

Each text is read by the task (read_unlabelled: a table column or a folder of .txt files), normalized as preprocess
does, tokenized as the training blocks were (no special tokens, the tokenizer's EOS after it) and cut into windows of
the trained preprocess.block_size; a window's first token has no context and is not scored, as in the blocks the
evaluate stage scores. Windows go through the model in batches of similar lengths. To continue a prompt instead:
`finetune generate`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finetune import paths
from finetune.config.params import trained_params
from finetune.data.sources import INPUT
from finetune.data.tables import LINE, ROW, BadRow
from finetune.errors import UserError
from finetune.io import read_json


class LanguageModelScorer:
    def __init__(self, task, model_dir: Path, trust_remote_code: bool):
        from finetune.families.generative.generate import load

        self.task = task
        self.params = trained_params(read_json(model_dir / paths.TRAINED_WITH), str(model_dir), str(model_dir / paths.TRAINED_WITH))
        self.model, self.tokenizer = load(str(model_dir), trust_remote_code)

    @property
    def data(self):
        return self.params.data

    def windows(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """(token windows of at most block_size, the text each belongs to)."""
        size = self.params.preprocess.block_size
        windows, owners = [], []
        for i, ids in enumerate(self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
            stream = np.asarray([*ids, self.tokenizer.eos_token_id], dtype=np.int64)
            for start in range(0, len(stream), size):
                if len(stream[start:start + size]) > 1:  # a lone last token has nothing to be predicted from
                    windows.append(stream[start:start + size])
                    owners.append(i)
        return windows, np.asarray(owners, dtype=int)

    def scores(self, windows: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum of log p(token | tokens before it in its window), tokens scored) per window."""
        sums, counts = np.zeros(len(windows)), np.asarray([len(w) - 1 for w in windows])
        order = np.argsort([len(w) for w in windows], kind="stable")
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                width = max(len(windows[i]) for i in chosen)
                ids = torch.zeros(len(chosen), width, dtype=torch.long)
                mask = torch.zeros(len(chosen), width, dtype=torch.long)
                for row, i in enumerate(chosen):
                    ids[row, :len(windows[i])] = torch.as_tensor(windows[i])
                    mask[row, :len(windows[i])] = 1
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
                chosen_log_probs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
                sums[chosen] = (chosen_log_probs * mask[:, 1:].to(device)).sum(dim=1).cpu().numpy()
        return sums, counts

    def predict(self, path: Path, batch_size: int | None = None):
        from finetune.inference import Predicted

        source = self.task.read_unlabelled(path, self.params.data)
        frame, bad = source.frame.reset_index(drop=True), list(source.bad)
        texts, problems = self.task.normalize(frame[INPUT], self.params.preprocess)
        refused = problems != ""
        bad += [BadRow(frame.at[i, ROW], frame.at[i, LINE], problems[i], str(frame.at[i, INPUT])[:200]) for i in frame.index[refused]]
        frame, texts = frame[~refused].reset_index(drop=True), texts[~refused].tolist()
        windows, owners = self.windows(texts)
        sums, counts = self.scores(windows, batch_size or self.params.train.eval_batch_size) if windows else (np.zeros(0), np.zeros(0))
        log_likelihood = np.bincount(owners, weights=sums, minlength=len(texts))
        tokens = np.bincount(owners, weights=counts, minlength=len(texts)).astype(int)
        loss = -log_likelihood / np.maximum(tokens, 1)
        table = pd.DataFrame({"row": frame[ROW].to_numpy(), "input": self.task.display(frame).to_numpy(), "tokens": tokens,
                              "loss": loss, "perplexity": [math.exp(value) for value in loss]})
        return Predicted(table, bad)


def run(task, model_dir: Path, trust_remote_code: bool, backend: str = "torch") -> LanguageModelScorer:
    if backend != "torch":
        raise UserError(f"--backend {backend}: a causal LM scores with PyTorch only")
    return LanguageModelScorer(task, model_dir, trust_remote_code)

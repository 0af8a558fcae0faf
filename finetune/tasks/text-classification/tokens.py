"""Texts into model features: max_length (a number, or auto from the train texts' lengths, capped by the model's context),
long texts truncated, cut to head + tail, or split into overlapping windows (WindowDataset: every window trains; the
task averages a text's window probabilities at prediction time)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune.data.heads import target
from finetune.errors import UserError


def context(source: str, tokenizer, trust_remote_code: bool) -> int:
    """The longest input the model takes: its position embeddings (the tokenizer's model_max_length is often a
    placeholder like 1e30 when unset)."""
    from transformers import AutoConfig

    limits = [getattr(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code), "max_position_embeddings", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None]
    return min((limit for limit in limits if limit), default=512)


def max_length(prep, train_lengths: np.ndarray, context: int) -> tuple[int, dict]:
    """(max_length, how it was chosen): auto = the 95th percentile of the train texts' token counts, rounded up to a
    multiple of 8, at least 8 and at most the model's context; a number above the context is an error."""
    if prep.max_length == "auto":
        percentile = int(np.ceil(np.percentile(train_lengths, 95)))
        chosen = int(min(context, max(8, -(-percentile // 8) * 8)))
        rule = f"auto: 95th percentile of the train texts' tokens ({percentile}), rounded up to a multiple of 8, capped by the context ({context})"
    elif prep.max_length > context:
        raise UserError(f"preprocess.max_length {prep.max_length} is above the model's context of {context} tokens; "
                        f"use {context} or less, or auto")
    else:
        chosen, rule = prep.max_length, "preprocess.max_length"
    longer = float(np.mean(train_lengths > chosen)) if len(train_lengths) else 0.0
    return chosen, {"max_length": chosen, "max_length_rule": rule, "long_texts": prep.long_texts,
                    "train_texts_longer": round(longer, 4), "train_tokens_p50_p95_max": [int(np.percentile(train_lengths, q)) for q in (50, 95, 100)]}


LONG = 0.10  # the share of train texts longer than max_length above which truncating them gets a note


def long_text_notes(longer: float, train_tokens: dict, layout: dict) -> list[str]:
    """A note when truncation cuts many train texts: on 720 literary passages all longer than 64 tokens, macro F1 was 0.602
    truncated, 0.719 with max_length auto and 0.758 with chunks (docs/benchmarks/small-data.md)."""
    if longer <= LONG or layout["long_texts"] != "truncate":
        return []
    return [f"{100 * longer:.1f} % of the train texts are longer than max_length {layout['max_length']} (p95 {train_tokens['p95']:g} tokens) "
            "and lose their end: try preprocess.max_length: auto (the p95, capped by the model's context) or preprocess.long_texts: "
            "chunks (on 720 long literary passages macro F1 0.602 truncated, 0.719 auto, 0.758 chunks: docs/benchmarks/small-data.md)"]


def head_and_tail(tokenizer, text: str, budget: int) -> str:
    """The text cut to its first budget // 4 and last budget - budget // 4 tokens (Sun et al. 2019, "How to
    fine-tune BERT for text classification": head + tail beat either end alone on long reviews), cut at the
    tokens' character offsets; re-tokenizing may shift a token at the seam, which max_length truncation absorbs."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    head = budget // 4
    return f"{text[: offsets[head - 1][1]]} {text[offsets[len(offsets) - (budget - head)][0]:]}" if head else text[offsets[-budget][0]:]


def bounds(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each text's windows in the overflowing tokenizer output (windows come grouped by text)."""
    return np.searchsorted(rows, np.arange(count)), np.searchsorted(rows, np.arange(count), side="right")


class WindowDataset:
    """long_texts: chunks. Every window of every text is one item with the text's label, so a long text trains on
    all of its windows (and weighs more than a short one); at prediction time finetune predicts every window and
    averages a text's window probabilities (TextClassification.predict_proba)."""

    def __init__(self, frame: pd.DataFrame, tokenizer):
        self.windows = [list(map(int, window)) for windows in frame["windows"] for window in windows]
        self.labels = np.repeat(frame["label"].to_numpy(), frame["windows"].map(len).to_numpy()).tolist()
        self.type_ids = "token_type_ids" in tokenizer.model_input_names

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        ids = self.windows[index]
        item = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": target(self.labels[index])}
        return item | ({"token_type_ids": [0] * len(ids)} if self.type_ids else {})

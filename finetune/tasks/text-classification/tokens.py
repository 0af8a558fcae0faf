"""Texts into model features: max_length (a number, or auto from the train texts' lengths) and what happens to a longer
text (long_texts: auto picks chunks when many are longer): truncated, cut to head + tail, or split into overlapping windows
(WindowDataset: every window trains; the task averages a text's window probabilities at prediction time)."""
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


# auto reads at most this many tokens at once: a longer window costs proportionally more per step on a CPU (min_steps
# fixes the steps, not the tokens) and reading more at once gained nothing measured: on 720 literary passages (p50 180
# tokens) 64-token chunks scored 0.758 macro F1, whole passages (max_length 208) 0.719; the default's own scores on
# short, long and longer-than-the-context texts: docs/benchmarks/small-data.md.
AUTO_WINDOW = 128
AUTO_PERCENTILE = 99
LONG = 0.10  # the share of train texts longer than max_length above which auto reads them in windows (and truncate gets a note)


def choose(prep, train_lengths: np.ndarray, context: int) -> dict:
    """How texts become model inputs, from the train texts' token counts (augmented copies excluded) unless params set it:
    {max_length, long_texts, facts: the measurements and each setting's why}.
    max_length auto: the 99th percentile rounded up to a multiple of 8, at least 8, at most AUTO_WINDOW and the model's
    context (a number above the context is an error). long_texts auto: chunks when more than LONG of the train texts are
    longer than max_length (a text's windows are averaged, so nothing is cut away), truncate otherwise."""
    lengths = np.asarray(train_lengths) if len(train_lengths) else np.zeros(1, dtype=int)
    if prep.max_length == "auto":
        percentile = int(np.ceil(np.percentile(lengths, AUTO_PERCENTILE)))
        limit = min(context, AUTO_WINDOW)
        chosen = int(min(limit, max(8, -(-percentile // 8) * 8)))
        rule = (f"auto: the train texts' {AUTO_PERCENTILE}th percentile ({percentile} tokens) rounded up to a multiple of 8, "
                f"at most {limit} ({'the model context' if limit == context else 'auto reads at most ' + str(AUTO_WINDOW) + ' tokens at once'})")
    elif prep.max_length > context:
        raise UserError(f"preprocess.max_length {prep.max_length} is above the model's context of {context} tokens; "
                        f"use {context} or less, or auto")
    else:
        chosen, rule = prep.max_length, "preprocess.max_length"
    longer = float(np.mean(lengths > chosen))
    if prep.long_texts == "auto":
        long_texts = "chunks" if longer > LONG else "truncate"
        why = (f"auto: {100 * longer:.1f} % of the train texts are longer than max_length {chosen} "
               f"({'more' if longer > LONG else 'not more'} than {100 * LONG:.0f} %)")
    else:
        long_texts, why = prep.long_texts, "preprocess.long_texts"
    return {"max_length": chosen, "long_texts": long_texts,
            "facts": {"max_length": chosen, "max_length_rule": rule, "long_texts": long_texts, "long_texts_rule": why,
                      "train_texts_longer": round(longer, 4),
                      "train_tokens_p50_p95_max": [int(np.percentile(lengths, q)) for q in (50, 95, 100)]}}


def stride(value: int | str, max_length: int, special: int) -> int:
    """Tokens each window shares with the one before: a set value (below the window's own tokens), or auto: 32, at most
    half of the window's tokens (windows of 128 share 32)."""
    window = max_length - special
    if value == "auto":
        return min(32, window // 2)
    if not 0 <= value < window:
        raise UserError(f"preprocess.stride {value}: windows of max_length {max_length} tokens ({special} of them special) "
                        f"need a stride from 0 to {window - 1}")
    return value


def long_text_notes(longer: float, train_tokens: dict, layout: dict) -> list[str]:
    """A note when truncation cuts many train texts: on 720 literary passages all longer than 64 tokens, macro F1 was 0.602
    truncated, 0.719 read whole (208 tokens) and 0.758 in 64-token chunks (docs/benchmarks/small-data.md)."""
    if longer <= LONG or layout["long_texts"] != "truncate":
        return []
    return [f"{100 * longer:.1f} % of the train texts are longer than max_length {layout['max_length']} (p95 {train_tokens['p95']:g} tokens) "
            "and lose their end: try preprocess.long_texts: auto or chunks (on 720 long literary passages macro F1 0.602 "
            "truncated at 64 tokens, 0.758 in 64-token chunks: docs/benchmarks/small-data.md)"]


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

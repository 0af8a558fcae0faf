"""Transcribing clips and scoring transcripts: what evaluate, compress and predict share.

Decoding is transformers' `generate`, greedy (num_beams 1) or beam search, in batches of clips padded to the model's
window. Scoring: word and character error rates (jiwer) after Whisper's English text normaliser (normalizer.py). The rate is errors / reference words over ALL clips (not a mean of clip
rates); its 95 % interval is a percentile bootstrap over clips, and two systems on the same clips are compared on the
same resamples (finetune/scoring/uncertainty.py `paired`: the difference, its interval, p and a verdict).
"""
from __future__ import annotations

import time

import numpy as np

from finetune.data.audio import SAMPLE_RATE
from finetune.models.whisper import POSITIONS_PER_SECOND, extractor_for
from finetune.scoring import uncertainty

from .normalizer import normalized

RATES = ("wer", "cer")


def window_of(model) -> int:
    """Seconds of audio the model's encoder reads (its position table)."""
    return model.config.max_source_positions // POSITIONS_PER_SECOND


def transcribe(model, tokenizer, clips: list[np.ndarray], batch_size: int, beams: int = 1, max_new_tokens: int = 64) -> tuple[list[str], float]:
    """(each clip's transcript, seconds taken): 16 kHz float samples, each padded or cut to the model's window."""
    import torch

    extractor = extractor_for(window_of(model), model.config.num_mel_bins)
    # the decoder's positions hold the prompt (<|startoftranscript|>, language, task, <|notimestamps|>: at most 4) too
    max_new_tokens = min(max_new_tokens, model.config.max_target_positions - 4)
    texts, started = [], time.perf_counter()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            features = extractor([np.asarray(c, dtype=np.float32) for c in clips[start:start + batch_size]], sampling_rate=SAMPLE_RATE,
                                 return_tensors="pt").input_features.to(device)
            ids = model.generate(features, num_beams=beams, max_new_tokens=max_new_tokens, do_sample=False)
            texts += [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return texts, time.perf_counter() - started


def counts(references: list[str], hypotheses: list[str]) -> np.ndarray:
    """clips x (word errors, reference words, character errors, reference characters), after normalisation. A reference
    that normalises to nothing counts its hypothesis's words as insertions over zero words."""
    import jiwer

    rows = []
    for reference, hypothesis in zip(references, hypotheses):
        ref, hyp = normalized(reference), normalized(hypothesis)
        if not ref:
            rows.append((len(hyp.split()), 0, len(hyp), 0))
            continue
        words = jiwer.process_words(ref, hyp)
        characters = jiwer.process_characters(ref, hyp)
        rows.append((words.substitutions + words.deletions + words.insertions, len(ref.split()),
                     characters.substitutions + characters.deletions + characters.insertions, len(ref)))
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def rates(table: np.ndarray) -> dict[str, float]:
    totals = table.sum(axis=0)
    return {"wer": round(float(totals[0] / max(totals[1], 1)), 4), "cer": round(float(totals[2] / max(totals[3], 1)), 4)}


def _resampled(tables: list[np.ndarray], seed: int = uncertainty.SEED, draws: int = uncertainty.DRAWS) -> list[dict[str, np.ndarray]]:
    """Each system's WER and CER on the same bootstrap resamples of the clips."""
    rows = np.random.default_rng(seed).integers(0, len(tables[0]), size=(draws, len(tables[0])))
    out = []
    for table in tables:
        totals = table[rows].sum(axis=1)  # draws x 4
        out.append({"wer": totals[:, 0] / np.maximum(totals[:, 1], 1), "cer": totals[:, 2] / np.maximum(totals[:, 3], 1)})
    return out


def interval(table: np.ndarray) -> dict[str, dict[str, float]]:
    (resampled,) = _resampled([table])
    tail = 100 * (1 - uncertainty.LEVEL) / 2
    return {name: {"low": round(float(np.percentile(values, tail)), 4), "high": round(float(np.percentile(values, 100 - tail)), 4)}
            for name, values in resampled.items()}


def compare(ours: np.ndarray, reference: np.ndarray) -> dict[str, dict]:
    """{wer, cer: difference (ours - reference), interval, p, verdict}; lower is better."""
    mine, theirs = _resampled([ours, reference])
    return uncertainty.paired(rates(ours), rates(reference), mine, theirs, lower_is_better=RATES)


def scored(table: np.ndarray) -> dict:
    """A system's rates with their intervals, as the metrics files hold them."""
    return {**rates(table), "ci95": interval(table), "clips": len(table), "words": int(table[:, 1].sum())}

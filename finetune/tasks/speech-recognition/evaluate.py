"""evaluate for speech recognition: the fine-tuned model's WER and CER on the test clips beside the untouched
pretrained model's on the SAME clips, and the same before/after on real human recordings.

- Fine-tuned: greedy decoding (the headline) and beam search (evaluate.beams), at the trained window.
- Pretrained (the baseline): train.model as it ships, greedy, at its own window (Whisper: 30 s), as a user would run it.
- Each rate with its bootstrap interval over clips; fine-tuned vs pretrained and beam vs greedy paired on the same
  resamples (transcribe.py). Clips per second of each decoding, timed on this machine in this run.
- evaluate.real_speech (builtin:pocketsphinx: real people, in-domain cards and general LibriVox English): WER of both
  models per group and overall, paired; a fine-tune that forgot general speech shows here, not on the synthetic test.
Writes reports/metrics.json and reports/evaluate/transcripts.csv (every test clip: reference, both models' transcripts
and their word errors) and real_speech.csv.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data.audio import checked, padded_clips, stored_samples
from finetune.data.files import read_input_file
from finetune.data.sources import LABEL, ORIGIN
from finetune.io import read_json, write_table

from . import sources
from .transcribe import compare, counts, scored, transcribe, window_of


def pretrained(task, params):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(task.models.source(params.train.model), use_safetensors=True).eval()


def _clips(table: pd.DataFrame, window: int) -> list[np.ndarray]:
    return list(padded_clips(table["samples"], window))


def real_recordings(params) -> pd.DataFrame:
    """evaluate.real_speech read as data.source would be, each clip checked and resampled like ingest: origin, group,
    transcript, samples (float, 16 kHz)."""
    data = params.data.model_copy(update={"source": params.evaluate.real_speech})
    frame = sources.read(data).frame
    samples = [stored_samples(checked(c if isinstance(c, bytes) else read_input_file(c), data)) for c in frame["input"]]
    return pd.DataFrame({"origin": frame[ORIGIN], "group": frame["group"] if "group" in frame else "real speech",
                         "transcript": frame[LABEL].astype(str), "samples": samples})


def real_speech(model, base, processor, params, folder: Path) -> dict:
    recordings = real_recordings(params)
    clips, batch = list(recordings["samples"]), params.evaluate.batch_size
    ours, _ = transcribe(model, processor.tokenizer, clips, batch, max_new_tokens=params.evaluate.max_new_tokens)
    theirs, _ = transcribe(base, processor.tokenizer, clips, batch, max_new_tokens=params.evaluate.max_new_tokens)
    references = recordings["transcript"].tolist()
    mine, reference = counts(references, ours), counts(references, theirs)
    write_table(folder / "real_speech.csv", recordings.drop(columns=["samples"]).assign(
        fine_tuned=ours, pretrained=theirs, fine_tuned_word_errors=mine[:, 0].astype(int), pretrained_word_errors=reference[:, 0].astype(int),
        words=mine[:, 1].astype(int)))
    groups = {}
    for group in recordings["group"].unique():
        rows = (recordings["group"] == group).to_numpy()
        groups[group] = {"fine_tuned": scored(mine[rows]), "pretrained": scored(reference[rows]), "vs_pretrained": compare(mine[rows], reference[rows])}
    return {"source": params.evaluate.real_speech, "fine_tuned": scored(mine), "pretrained": scored(reference),
            "vs_pretrained": compare(mine, reference), "groups": groups}


def run(task, params, folder: Path) -> dict:
    evaluate = params.evaluate
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    processor = task.models.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    model, base = task.models.load_trained(str(paths.MODEL), params.train.trust_remote_code).eval(), pretrained(task, params)
    references = test["transcript"].tolist()
    decoded, seconds = {}, {}
    for name, system, beams in (("fine_tuned", model, 1), ("fine_tuned_beam", model, evaluate.beams), ("pretrained", base, 1)):
        decoded[name], seconds[name] = transcribe(system, processor.tokenizer, _clips(test, window_of(system)), evaluate.batch_size, beams,
                                                  evaluate.max_new_tokens)
    tables = {name: counts(references, texts) for name, texts in decoded.items()}
    write_table(folder / "transcripts.csv", pd.DataFrame({
        "id": test["id"], "origin": test[ORIGIN], "seconds": test["seconds"].round(2), "reference": references,
        **{name: texts for name, texts in decoded.items()}, **{f"{name}_word_errors": table[:, 0].astype(int) for name, table in tables.items()},
        "words": tables["fine_tuned"][:, 1].astype(int)}))
    clips_per_second = {name: round(len(test) / max(s, 1e-9), 2) for name, s in seconds.items()}
    metrics = {**scored(tables["fine_tuned"]), "decoding": "greedy", "window_seconds": window_of(model),
               "beam": {"beams": evaluate.beams, **scored(tables["fine_tuned_beam"]), "vs_greedy": compare(tables["fine_tuned_beam"], tables["fine_tuned"])},
               "baseline": {"model": f"{params.train.model} as it ships (greedy, {window_of(base)} s window)", **scored(tables["pretrained"])},
               "vs_pretrained": compare(tables["fine_tuned"], tables["pretrained"]),
               "relative_wer_reduction": round(1 - tables["fine_tuned"][:, 0].sum() / max(tables["pretrained"][:, 0].sum(), 1), 4),
               "clips_per_second": clips_per_second, "val": read_json(paths.TRAIN_SUMMARY)["val"]}
    if evaluate.real_speech:
        metrics["real_speech"] = real_speech(model, base, processor, params, folder)
    print(f"evaluate: test WER {metrics['wer']:.3f} {metrics['ci95']['wer']} (beam {metrics['beam']['wer']:.3f}) vs pretrained "
          f"{metrics['baseline']['wer']:.3f}: {metrics['vs_pretrained']['wer']['verdict']}"
          + (f"; real speech WER {metrics['real_speech']['fine_tuned']['wer']:.3f} vs {metrics['real_speech']['pretrained']['wer']:.3f}"
             if evaluate.real_speech else ""))
    return metrics

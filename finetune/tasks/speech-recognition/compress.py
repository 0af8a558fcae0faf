"""compress for speech recognition: an int8 copy of the fine-tuned model (models/model), scored and timed beside it.

int8: every linear layer's weights int8 per output channel, activations quantized on the fly (torch.ao dynamic
quantization, finetune/compression/quantize.py; the token embeddings int8 too where compress.quantize.embeddings).
Both models transcribe the same test clips greedily: WER and CER with intervals, paired; clips per second at batch 1
and at evaluate.batch_size (the median of compress.latency.repeats runs over the first clips, the two models in turns so
machine load hits both alike); size on disk. Pruning and a distilled student are not built for Whisper here: recorded
as skipped with the reason. Writes models/compressed/int8/, reports/compress.json and reports/compress/transcripts.csv.
"""
from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pandas as pd
import torch

from finetune import paths
from finetune.compression import quantize
from finetune.data.audio import padded_clips
from finetune.io import write_table

from .transcribe import compare, counts, scored, transcribe, window_of

SKIPPED = {"prune": "pruning is not built for speech recognition; int8 is the smaller model",
           "distill": "a distilled Whisper student is not built for speech recognition; int8 is the smaller model"}
TIMED_CLIPS = 16  # clips each latency run transcribes


def megabytes(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 2**20, 2)


def _clips_per_second(models: dict, tokenizer, clips, batch: int, repeats: int, max_new_tokens: int) -> dict[str, float]:
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(transcribe(model, tokenizer, clips, batch, max_new_tokens=max_new_tokens)[1])
    return {name: round(len(clips) / statistics.median(values), 2) for name, values in times.items()}


def run(task, params, model_folder: Path, reports_folder: Path) -> dict:
    compress, evaluate = params.compress, params.evaluate
    if compress.latency.threads:
        torch.set_num_threads(compress.latency.threads)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    processor = task.models.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    teacher = task.models.load_trained(str(paths.MODEL), params.train.trust_remote_code).eval()
    skipped = {method: SKIPPED[method] for method in compress.methods if method in SKIPPED}
    result = {"teacher": "primary", "skipped": skipped or None, "models": {}}
    if "int8" not in compress.methods:
        return result
    int8 = quantize.quantize(teacher, embeddings=compress.quantize.embeddings)
    folder = model_folder / "int8"
    folder.mkdir(parents=True)
    quantize.save(int8, folder, compress.quantize.embeddings)
    for file in paths.MODEL.iterdir():  # config, generation config, tokenizer, feature extractor, the training record
        if file.is_file() and file.suffix != ".safetensors":
            shutil.copy2(file, folder / file.name)
    int8 = quantize.load(folder)  # score what was saved: the folder predict and serve load
    clips = list(padded_clips(test["samples"], window_of(teacher)))
    references = test["transcript"].tolist()
    texts = {name: transcribe(model, processor.tokenizer, clips, evaluate.batch_size, max_new_tokens=evaluate.max_new_tokens)[0]
             for name, model in (("fp32", teacher), ("int8", int8))}
    tables = {name: counts(references, hypotheses) for name, hypotheses in texts.items()}
    timed = clips[:TIMED_CLIPS]
    speed = {batch: _clips_per_second({"fp32": teacher, "int8": int8}, processor.tokenizer, timed, batch, compress.latency.repeats,
                                      evaluate.max_new_tokens) for batch in (1, evaluate.batch_size)}
    write_table(reports_folder / "transcripts.csv", pd.DataFrame({"id": test["id"], "reference": references, **texts}))
    for name in ("fp32", "int8"):
        result["models"][name] = {**scored(tables[name]), "size_mb": megabytes(paths.MODEL if name == "fp32" else folder),
                                  "clips_per_second_batch_1": speed[1][name], f"clips_per_second_batch_{evaluate.batch_size}": speed[evaluate.batch_size][name],
                                  "speedup_batch_1": round(speed[1][name] / speed[1]["fp32"], 2),
                                  f"speedup_batch_{evaluate.batch_size}": round(speed[evaluate.batch_size][name] / speed[evaluate.batch_size]["fp32"], 2)}
    result["models"]["int8"]["vs_teacher"] = compare(tables["int8"], tables["fp32"])
    print(f"compress: int8 WER {result['models']['int8']['wer']:.3f} vs fp32 {result['models']['fp32']['wer']:.3f}, "
          f"{result['models']['int8']['speedup_batch_1']}x at batch 1, {result['models']['int8']['size_mb']} MB vs {result['models']['fp32']['size_mb']}")
    return result

"""compress for generative models (a causal LM): int8 and a distilled student beside their teacher (distill.py trains it).

The teacher is compress.teacher (best = the fine-tuned model, primary or member, with the lowest val perplexity).
int8 quantizes each token's activations on their own scale (one outlier token no longer coarsens a whole block),
after SmoothQuant calibrated on the first CALIBRATION_BLOCKS train blocks (finetune/compression/quantize.py; quantization.json
says what was done). Each model is scored on the same test blocks (perplexity with its bootstrap interval, paired
comparison with the teacher), measured on disk, and timed generating (tokens/s with KV cache, batch 1, greedy, exactly
evaluate.max_new_tokens tokens from the first prompt; all models timed in turns so machine load hits them alike).
The distilled student keeps half the teacher's layers (compress.distill.layers names others): those whose removal costs
least on SELECTION_BLOCKS train blocks (distill.py's least_needed_layers says why not every other one).
`prune` has no causal-LM method here and is reported as skipped with the reason.
Writes models/compressed/{int8,distilled}/, reports/compress.json and reports/compress/models.csv.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from finetune import paths
from finetune.compression import quantize
from finetune.compression.distill import make_student, student_layers
from finetune.config.sections import PRIMARY
from finetune.errors import UserError
from finetune.families.generative import scoring
from finetune.families.generative.distill import distill, least_needed_layers
from finetune.families.generative.generation import forced_run, prompts, timed
from finetune.io import read_json, write_table

CALIBRATION_BLOCKS, SMOOTHING_ALPHA = 8, 0.6  # bench/lm_int8.py measured these on SmolLM2-135M
SELECTION_BLOCKS = 4  # train blocks that choose the student's layers (least_needed_layers)
SKIPPED = {"prune": "structured pruning of a causal LM's layers is not implemented; the distilled student is the smaller model"}


def teacher(params) -> tuple[str, Path]:
    """(name, model folder) of compress.teacher; best = the lowest val perplexity."""
    val = {PRIMARY: read_json(paths.METRICS)["val"]["perplexity"]}
    for name in params.ensemble.members:
        summary = paths.MEMBER_SUMMARIES / f"{name}.json"
        if summary.is_file():
            val[name] = read_json(summary)["val"]["perplexity"]
    chosen = min(val, key=val.get) if params.compress.teacher == "best" else params.compress.teacher
    if chosen not in val:
        raise UserError(f"compress.teacher {chosen!r} has not been trained yet (run its member stage)")
    return chosen, paths.MODEL if chosen == PRIMARY else paths.MEMBER_MODELS / chosen


def folder_megabytes(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin")) / 2**20, 2)


def run(task, params, folder: Path, reports: Path) -> dict:
    config = params.compress
    if config.latency.threads:
        torch.set_num_threads(config.latency.threads)
    name, source = teacher(params)
    tokenizer = task.models.load_processor(str(source), params.train.trust_remote_code)
    teacher_model = task.models.load_trained(str(source), params.train.trust_remote_code)
    test = scoring.load_blocks("test")
    models, facts = {"teacher": teacher_model}, {"teacher": {"from": name, "megabytes": folder_megabytes(source)}}
    if "int8" in config.methods:
        calibration = scoring.load_blocks("train")[:CALIBRATION_BLOCKS]
        step = params.train.eval_batch_size
        quantized = quantize.quantize(teacher_model, config.quantize.embeddings, activations="per_token", alpha=SMOOTHING_ALPHA,
                                      calibration=(torch.as_tensor(calibration[i:i + step]) for i in range(0, len(calibration), step)))
        teacher_model.config.save_pretrained(folder / "int8")  # the architecture quantize.load rebuilds
        tokenizer.save_pretrained(folder / "int8")
        quantize.save(quantized, folder / "int8", config.quantize.embeddings)
        models["int8"] = quantize.load(folder / "int8")  # scored as a user loads it: from disk
        facts["int8"] = {"megabytes": folder_megabytes(folder / "int8"), "embeddings": config.quantize.embeddings,
                         "activations": "per_token", "smoothing": quantized.int8_facts["smoothing"]}
    if "distill" in config.methods:
        depth, train = teacher_model.config.num_hidden_layers, scoring.load_blocks("train")
        layers = (student_layers(depth, config.distill.layers) if config.distill.layers is not None
                  else least_needed_layers(teacher_model, train[:SELECTION_BLOCKS], keep=(depth + 1) // 2))
        student = make_student(teacher_model, layers)
        trained = distill(teacher_model, student, train, config.distill, params.train.seed, scored=scoring.load_scored("train"))
        student.save_pretrained(folder / "distilled")
        tokenizer.save_pretrained(folder / "distilled")
        models["distilled"] = task.models.load_trained(str(folder / "distilled"), False)
        facts["distilled"] = {"megabytes": folder_megabytes(folder / "distilled"), "layers": layers, **trained}
    counted = scoring.load_scored("test")
    scored = {model_name: scoring.token_scores(model, test, params.train.eval_batch_size, counted) for model_name, model in models.items()}
    prompt, new_tokens = prompts(params.evaluate, tokenizer)[0]["prompt"], params.evaluate.max_new_tokens
    speed = timed({model_name: forced_run(model, tokenizer, prompt, new_tokens) for model_name, model in models.items()},
                  new_tokens, config.latency.repeats)
    result = {"teacher": name, "threads": torch.get_num_threads(), "cpu": quantize.cpu(), "methods_skipped": {m: SKIPPED[m] for m in config.methods if m in SKIPPED},
              "models": {}}
    reference, base_speed = scored["teacher"][0], speed["teacher"]["tokens_per_second"]
    for model_name, (log_probs, correct) in scored.items():
        result["models"][model_name] = {
            **scoring.summarize(log_probs, correct), "ci95": scoring.interval(log_probs), **facts[model_name],
            "tokens_per_second": round(speed[model_name]["tokens_per_second"], 2),
            "speedup": round(speed[model_name]["tokens_per_second"] / base_speed, 3),
            **({"vs_teacher": scoring.compare(log_probs, reference)} if model_name != "teacher" else {}),
        }
    table = pd.DataFrame([{"model": m, **{k: v for k, v in r.items() if not isinstance(v, dict | list)}} for m, r in result["models"].items()])
    write_table(reports / "models.csv", table)
    for model_name, r in result["models"].items():
        print(f"compress {model_name}: perplexity {r['perplexity']:.2f}, {r['megabytes']} MB, {r['tokens_per_second']:.1f} tokens/s "
              f"({r['speedup']:.2f}x)")
    return result

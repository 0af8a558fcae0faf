"""compress: smaller, faster copies of a fine-tuned model, each scored against it on the same test split.

Teacher: compress.teacher, or (best) the fine-tuned model (primary or a finetune member) with the
highest val macro F1. Methods (compress.methods, any of):
- int8: torch.ao dynamic quantization of every linear layer, plus int8 weight-only embedding tables
  (compress.quantize.embeddings); saved as safetensors and reloaded from disk (finetune/quantize.py).
- prune: magnitude pruning to compress.prune.sparsity, `ffn_neurons` (every layer's feed-forward
  matrices shrink: smaller and faster) or `unstructured` (global L1 zeros over every linear layer but
  the head: neither smaller nor faster on dense kernels, reported as measured), then recover_epochs of
  distillation from the teacher (zeros kept) (finetune/prune.py).
- distill: a student made of every other teacher layer (embeddings, kept layers and head copied from
  the teacher), trained on the teacher's soft labels over the teacher's own train split (finetune/distill.py).
A task lists the methods it supports (compression_methods); the others are skipped with the task's
reason, and a task with none writes outputs that say so (`unavailable`) instead of failing.
Limits: training runs on train.device; latency is always CPU (int8 kernels are CPU-only), median of
compress.latency.repeats runs after warm-up, models timed in turn inside each round so machine
noise hits all of them alike. Soft labels come from the teacher model, not from the ensemble: the
members' train-split probabilities are not stored (see README).
Writes models/compressed/{int8,pruned,distilled} (loadable folders), reports/compress.json and
reports/compress/{tradeoff.png, predictions.csv}.
"""
from __future__ import annotations

import copy
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from finetune import anatomy, distill, metrics, paths, plots, probabilities, prune, quantize
from finetune.cli import main
from finetune.errors import UserError
from finetune.featurize import member_tables
from finetune.io import read_json, write_json, write_outputs, write_table
from finetune.params import PRIMARY, Params
from finetune.plots import plt
from finetune.tasks import get_task
from finetune.training import resolve_device

FOLDERS = {"int8": "int8", "prune": "pruned", "distill": "distilled"}
LATENCY_BATCHES = (1, 32)


def choose_teacher(params: Params) -> tuple[str, dict[str, float]]:
    """(teacher name, val macro F1 of every candidate) from the probabilities evaluate/member saved;
    a teacher named in params is taken as it is."""
    if params.compress.teacher != "best":
        return params.compress.teacher, {}
    scores = {}
    for name in params.finetuned_models():
        val = probabilities.load(probabilities.member_file(name), name).splits["val"]
        scores[name] = metrics.headline(val.labels, val.probs.argmax(axis=1))["f1_macro"]
    return max(scores, key=scores.get), scores  # a tie goes to the first listed: primary


def teacher_data(params: Params, name: str, labels: list[str]) -> tuple[Path, Params, dict[str, pd.DataFrame], dict]:
    """(model folder, params it was trained with, its featurized splits, its label map)."""
    model_dir = paths.MODEL if name == PRIMARY else paths.MEMBER_MODELS / name
    label_map_file = model_dir / "label_map.json"
    if not label_map_file.is_file():
        raise UserError(f"teacher {name!r}: {model_dir} holds no trained model (run `dvc repro` up to it first)")
    if read_json(label_map_file)["labels"] != labels:
        raise UserError(f"teacher {name!r} was trained on labels {read_json(label_map_file)['labels']}, the prepared data has "
                        f"{labels}; retrain it on this data (dvc repro)")
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "val", "test")}
    if name == PRIMARY:
        return model_dir, params, prepared, read_json(label_map_file)
    member_params, tables, label_map = member_tables(params, name, prepared, labels)
    return model_dir, member_params, tables, label_map


def weights_size_mb(folder: Path) -> float:
    """Size of the weight files (*.safetensors); the tokenizer and config are the same for every model."""
    return round(sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20, 2)


def parameter_count(model: nn.Module) -> int:
    quantized = sum(m.weight().numel() for _, m in quantize.quantized_modules(model))
    return int(sum(p.numel() for p in model.parameters()) + quantized)


def save_model(task, model: nn.Module, processor, teacher_dir: Path, folder: Path) -> None:
    task.save_trained(model, processor, folder)
    shutil.copy(teacher_dir / "label_map.json", folder / "label_map.json")


def latencies_ms(models: dict[str, nn.Module], task, processor, frame: pd.DataFrame, layout: dict, repeats: int) -> dict:
    """{model: {batch size: median ms}} on the first rows of frame, CPU, models timed in turn each round."""
    collate = task.collator(processor)
    rows = task.dataset(frame.head(max(LATENCY_BATCHES)), layout, processor)
    batches = {size: collate([rows[i % len(rows)] for i in range(size)]) for size in LATENCY_BATCHES}  # cycles a short split
    for batch in batches.values():
        batch.pop("labels", None)
    times = {name: {size: [] for size in LATENCY_BATCHES} for name in models}
    with torch.inference_mode():
        for round_ in range(repeats + 3):  # 3 warm-up rounds
            for name, model in models.items():
                for size, batch in batches.items():
                    start = time.perf_counter()
                    model(**batch)
                    if round_ >= 3:
                        times[name][size].append(1000 * (time.perf_counter() - start))
    return {name: {size: round(statistics.median(t), 3) for size, t in sizes.items()} for name, sizes in times.items()}


def tradeoff_png(path: Path, table: pd.DataFrame) -> None:
    figure, axes = plt.subplots(1, len(LATENCY_BATCHES), figsize=(11, 4), sharey=True)
    for ax, size in zip(axes, LATENCY_BATCHES):
        ax.scatter(table[f"latency_ms_batch_{size}"], table["accuracy"], s=20 + 8 * table["size_mb"], alpha=0.5)
        for name, row in table.iterrows():
            ax.annotate(f"{name}\n{row['size_mb']:.0f} MB", (row[f"latency_ms_batch_{size}"], row["accuracy"]), fontsize=8,
                        xytext=(6, 4), textcoords="offset points")
        ax.set_xlabel(f"CPU latency, batch {size} (ms, median)")
        ax.margins(0.25)
    axes[0].set_ylabel("test accuracy")
    figure.suptitle("Compression: accuracy vs latency (bubble area ~ size on disk; up and left is better)")
    figure.tight_layout()
    plots.save(figure, path)


def _unavailable(reason: str) -> dict:
    """Outputs that say why nothing was compressed (DVC still gets every declared output)."""
    result = {"unavailable": reason, "models": {}}
    with write_outputs(paths.COMPRESSED, paths.COMPRESS, paths.COMPRESS_METRICS) as (models, reports, metrics_file):
        for folder in (models, reports):
            folder.mkdir()
            (folder / "README.txt").write_text(f"Nothing was compressed: {reason}\n")
        write_json(metrics_file, result)
    print(f"compress: nothing compressed: {reason}")
    return result


def run(params: Params) -> dict:
    config = params.compress
    device, bf16 = resolve_device(params.train.device)  # a CUDA request without a GPU fails here, before any work
    task = get_task(params.task)
    unsupported = [method for method in config.methods if method not in task.compression_methods]
    if unsupported:
        if len(unsupported) == len(config.methods):
            return _unavailable(f"the {params.task} task has no {', '.join(unsupported)} method ({task.no_compression_reason})")
        config = config.model_copy(update={"methods": [m for m in config.methods if m not in unsupported]})
    labels = read_json(paths.LABEL_MAP)["labels"]
    teacher_name, candidates = choose_teacher(params)
    teacher_dir, teacher_params, tables, layout = teacher_data(params, teacher_name, labels)
    trust = teacher_params.train.trust_remote_code
    processor = task.load_processor(str(teacher_dir), trust)
    teacher = task.load_trained(str(teacher_dir), trust).eval()
    try:
        layers = distill.student_layers(len(anatomy.blocks(teacher) or []), config.distill.layers)
    except ValueError as error:
        raise UserError(str(error)) from None
    batch = params.train.eval_batch_size
    teacher_logits = np.log(np.clip(task.predict_proba(teacher, processor, tables["train"], layout, batch), 1e-12, 1))
    train_set = task.dataset(tables["train"], layout, processor)

    def recover(model, epochs, name):
        work = paths.CHECKPOINTS / f"compress-{name}"
        return distill.train_on_teacher(model, train_set, teacher_logits, task.collator(processor), config.distill, epochs,
                                        params.train.seed, device, bf16, work)

    models, details = {"teacher": teacher}, {"teacher": {"name": teacher_name, "val_f1_macro_of_candidates": candidates}}
    if unsupported:
        details["skipped"] = {method: task.no_compression_reason for method in unsupported}
    with write_outputs(paths.COMPRESSED) as (out,):
        out.mkdir()
        if "int8" in config.methods:
            folder = out / FOLDERS["int8"]
            shutil.copytree(teacher_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "training_args.json"))
            quantize.save(quantize.quantize(teacher, config.quantize.embeddings), folder, config.quantize.embeddings)
            details["int8"] = {"embeddings_int8": config.quantize.embeddings}
        if "prune" in config.methods:
            pruned = copy.deepcopy(teacher)
            try:
                finish = prune.STRUCTURES[config.prune.structure](pruned, config.prune.sparsity)
            except ValueError as error:
                raise UserError(f"compress.prune.structure {config.prune.structure}: {error}; try `unstructured`") from None
            details["prune"] = {"structure": config.prune.structure, "sparsity_requested": config.prune.sparsity}
            if config.prune.recover_epochs:
                details["prune"]["recovery"] = recover(pruned, config.prune.recover_epochs, "prune")
            finish()
            save_model(task, pruned, processor, teacher_dir, out / FOLDERS["prune"])
        if "distill" in config.methods:
            student = distill.make_student(teacher, layers)
            details["distill"] = {"layers_kept": layers, "temperature": config.distill.temperature, "alpha": config.distill.alpha,
                                  "training": recover(student, config.distill.epochs, "distill")}
            save_model(task, student, processor, teacher_dir, out / FOLDERS["distill"])

    # every compressed model is scored as reloaded from disk, through the same prediction code
    for method in config.methods:
        folder = paths.COMPRESSED / FOLDERS[method]
        models[method] = quantize.load(folder) if method == "int8" else task.load_trained(str(folder), trust).eval()
    if "prune" in models:
        details["prune"] |= prune.sparsity(teacher, models["prune"])

    test = tables["test"]
    actual = test["label"].to_numpy()
    predicted = {name: task.predict_proba(model, processor, test, layout, batch).argmax(axis=1) for name, model in models.items()}
    if config.latency.threads:
        torch.set_num_threads(config.latency.threads)
    latency = latencies_ms(models, task, processor, test, layout, config.latency.repeats)
    sizes = {"teacher": weights_size_mb(teacher_dir)} | {m: weights_size_mb(paths.COMPRESSED / FOLDERS[m]) for m in config.methods}
    rows = {}
    for name, model in models.items():
        scores = metrics.headline(actual, predicted[name])
        rows[name] = {"parameters": parameter_count(model), "size_mb": sizes[name],
                      **{f"latency_ms_batch_{size}": latency[name][size] for size in LATENCY_BATCHES},
                      "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"],
                      "agreement_with_teacher": float(np.mean(predicted[name] == predicted["teacher"]))}
    base = dict(rows["teacher"])  # a copy: the loop rounds the teacher's own row
    for row in rows.values():
        row |= {"accuracy_delta": row["accuracy"] - base["accuracy"], "f1_macro_delta": row["f1_macro"] - base["f1_macro"],
                "accuracy_share_of_teacher": row["accuracy"] / base["accuracy"], "size_ratio": row["size_mb"] / base["size_mb"],
                **{f"speedup_batch_{size}": base[f"latency_ms_batch_{size}"] / row[f"latency_ms_batch_{size}"] for size in LATENCY_BATCHES}}
        row |= {key: round(value, 4) for key, value in row.items() if isinstance(value, float)}
    result = {"teacher": teacher_name, "threads": torch.get_num_threads(), "training_device": device, "test_rows": len(test),
              "models": rows, "details": details}

    names = np.array(labels)
    table = pd.DataFrame({"id": test["id"], "actual": names[actual], **{f"{name}_predicted": names[p] for name, p in predicted.items()}})
    with write_outputs(paths.COMPRESS, paths.COMPRESS_METRICS) as (folder, metrics_file):
        folder.mkdir()
        write_table(folder / "predictions.csv", table)
        tradeoff_png(folder / "tradeoff.png", pd.DataFrame(rows).T)
        write_json(metrics_file, result)
    for name, row in rows.items():
        print(f"compress {name}: accuracy {row['accuracy']:.4f} ({row['accuracy_delta']:+.4f}), {row['size_mb']} MB "
              f"(x{row['size_ratio']:.2f}), batch-1 {row['latency_ms_batch_1']} ms (x{row['speedup_batch_1']:.2f} faster)")
    return result


if __name__ == "__main__":
    main(run, __doc__)

"""compress for classifiers: smaller, faster copies of a fine-tuned model, each scored against it on the same test split.

Teacher: compress.teacher, or (best) the fine-tuned model (primary or a finetune member) with the
highest val macro F1. The task gives the compressor for the teacher's family (finetune/compression/compressors.py);
methods (compress.methods, any of):
- int8: transformers: onnxruntime's dynamic quantization of the exported graph's matrix products + int8 embedding
  tables; CNNs: onnxruntime's static int8 (weights and activations, BatchNorm folded), calibrated on
  compress.quantize.calibration_batches x 32 train images (finetune/compression/convnets.py). Either is model.int8.onnx,
  scored and timed through onnxruntime (finetune/compression/onnx_export.py).
- prune: transformers: `ffn_neurons` (every layer's feed-forward matrices shrink) or `unstructured`
  (global L1 zeros: neither smaller nor faster on dense kernels, reported as measured) (finetune/compression/prune.py);
  CNNs: `channels` (torch-pruning removes that share of every convolution's channels); then
  recover_epochs of distillation from the teacher.
- distill: a student with fewer of the teacher's blocks (transformers: every other layer; CNNs: the
  blocks that keep the shape dropped), trained on the teacher's soft labels over its own train split.
A method that does not fit the model is skipped with the reason before any training; a task with
no compressor raises Unsupported and the stage writes outputs that say so (`skipped`). With compress.export: [onnx], every model
that torch.onnx can export is also written as ONNX, scored and timed with onnxruntime beside PyTorch.
Limits: training runs on train.device; latency is always CPU (int8 kernels are CPU-only), median of
compress.latency.repeats runs after warm-up, models timed in turn inside each round so machine
noise hits all of them alike. Soft labels come from the teacher model, not from the ensemble: the
members' train-split probabilities are not stored (see README).
Each model's test scores carry a bootstrap 95 % interval (`ci95`) and a paired comparison with the
teacher on the same rows (`vs_teacher`: finetune/scoring/uncertainty.py), so a drop within the noise reads as such.
Several heads (data.label_columns, finetune/data/heads.py): the model is compressed whole; distillation sums each head's
loss; every model is scored on every labelled (test row, head) pair as "head: class" classes (`scored` says how many).
A numeric label (finetune/data/numbers.py): the teacher is the lowest val rmse, students learn its standardised
predictions (distill.py), every model is scored by rmse, mae, r2 and spearman (and its mean absolute difference from the
teacher's predictions) with intervals and a paired comparison with the teacher.
Writes models/compressed/{int8,pruned,distilled,onnx} (loadable folders), reports/compress.json and
reports/compress/{tradeoff.png, predictions.csv}.
"""

from __future__ import annotations

import copy
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from finetune import paths
from finetune.compression import compressors, distill, onnx_export, quantize
from finetune.compression.compressors import Compressor, TransformerCompressor
from finetune.compression.convnets import ConvNetCompressor
from finetune.config.sections import PRIMARY
from finetune.data import numbers
from finetune.data.heads import Heads, number_predictions, pooled
from finetune.errors import Unsupported, UserError
from finetune.families.classification import probabilities
from finetune.io import read_json, write_table
from finetune.reporting import plots
from finetune.reporting.plots import plt
from finetune.scoring import metrics, uncertainty
from finetune.scoring import numbers as number_scores
from finetune.training.fit import resolve_device

FOLDERS = {"int8": "int8", "prune": "pruned", "distill": "distilled"}
LATENCY_BATCHES = (1, 32)
CALIBRATION_BATCH = 32  # images per static-int8 calibration batch


def compressor_for(model, models) -> Compressor:
    """How a trained classifier gets smaller, by its family: a CNN of finetune/models/images.py (torchvision, EfficientNet-
    Lite: `.spec`) or a Hugging Face transformer (text encoders, ViT...: a config with layers). Others have no compressor."""
    if hasattr(model, "spec"):
        return ConvNetCompressor(models)
    config = getattr(model, "config", None)
    vision = hasattr(config, "num_channels")  # an image model's config says how many colour channels it reads
    if hasattr(config, "num_hidden_layers") and (not vision or hasattr(config, "intermediate_size")):  # BERT..., ViT, DeiT, BEiT
        return TransformerCompressor(models)
    if vision:
        raise Unsupported(f"{type(model).__name__}: Hugging Face CNNs cannot be compressed here (torch.fx cannot trace them for static "
                          "int8, and a pruned or shortened one would not reload from its config); give train.model as a torchvision "
                          "weights file or builtin:efficientnet-lite0")
    raise Unsupported(f"{type(model).__name__}: no compression method fits this model (compress knows Hugging Face transformers and "
                      "the CNNs of finetune/models/images.py)")


def choose_teacher(params) -> tuple[str, dict[str, float]]:
    """(teacher name, val macro F1 of every candidate) from the probabilities evaluate/member saved;
    a teacher named in params is taken as it is."""
    if params.compress.teacher != "best":
        return params.compress.teacher, {}
    scores = {}
    label_map = read_json(paths.LABEL_MAP)
    found = Heads.of(label_map)
    heads = [head for head in found.classes if head not in found.targets] or [None]  # several heads: the mean over the class heads
    for name in params.finetuned_models():
        vals = [probabilities.load(probabilities.member_file(name, head), name).splits["val"] for head in heads]
        if numbers.is_number(label_map):  # the lowest val rmse, negated so the best is the largest
            scores[name] = -number_scores.scores(vals[0].labels, vals[0].probs[:, 0])["rmse"]
            continue
        scores[name] = float(np.mean([metrics.headline(val.labels, val.probs.argmax(axis=1))["f1_macro"] for val in vals]))
    return max(scores, key=scores.get), scores  # a tie goes to the first listed: primary


def teacher_data(task, params, name: str, label_map: dict) -> tuple[Path, object, dict[str, pd.DataFrame], dict]:
    """(model folder, params it was trained with, its featurized splits, its label map)."""
    labels = label_map["labels"]
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
    member_params = params.for_member(name)
    return model_dir, member_params, *task.features_for(member_params, prepared, label_map)


def weights_size_mb(folder: Path) -> float:
    """Size of the weight files (*.safetensors, an int8 *.onnx); the tokenizer and config are the same for every model."""
    return round(sum(f.stat().st_size for pattern in ("*.safetensors", "*.onnx") for f in folder.glob(pattern)) / 2**20, 2)


def save_model(task, model: nn.Module, processor, teacher_dir: Path, folder: Path) -> None:
    task.models.save_trained(model, processor, folder)
    for name in ("label_map.json", paths.TRAINED_WITH):  # what predict needs besides the weights
        shutil.copy(teacher_dir / name, folder / name)


def feature_batches(task, processor, frame: pd.DataFrame, layout: dict, size: int) -> list[dict]:
    """The frame's rows in order, collated into batches of features (labels dropped)."""
    rows, collate = task.models.dataset(frame, layout, processor), task.models.collator(processor)
    batches = [collate([rows[i] for i in range(start, min(start + size, len(rows)))]) for start in range(0, len(rows), size)]
    for batch in batches:
        batch.pop("labels", None)
    return batches


def latencies_ms(runners: dict[str, Callable[[dict], object]], task, processor, frame: pd.DataFrame, layout: dict, repeats: int) -> dict:
    """{runner: {batch size: median ms}} on the first rows of frame, CPU, runners timed in turn each round."""
    rows = frame.head(max(LATENCY_BATCHES))
    rows = rows.iloc[[i % len(rows) for i in range(max(LATENCY_BATCHES))]]  # cycles a short split
    batches = {size: feature_batches(task, processor, rows.head(size), layout, size)[0] for size in LATENCY_BATCHES}
    times = {name: {size: [] for size in LATENCY_BATCHES} for name in runners}
    with torch.inference_mode():
        for round_ in range(repeats + 3):  # 3 warm-up rounds
            for name, run_model in runners.items():
                for size, batch in batches.items():
                    start = time.perf_counter()
                    run_model(batch)
                    if round_ >= 3:
                        times[name][size].append(1000 * (time.perf_counter() - start))
    return {name: {size: round(statistics.median(t), 3) for size, t in sizes.items()} for name, sizes in times.items()}


def tradeoff_png(path: Path, table: pd.DataFrame, metric: str = "accuracy") -> None:
    figure, axes = plt.subplots(1, len(LATENCY_BATCHES), figsize=(11, 4), sharey=True)
    for ax, size in zip(axes, LATENCY_BATCHES):
        ax.scatter(table[f"latency_ms_batch_{size}"], table[metric], s=20 + 8 * table["size_mb"], alpha=0.5)
        for name, row in table.iterrows():
            ax.annotate(f"{name}\n{row['size_mb']:.0f} MB", (row[f"latency_ms_batch_{size}"], row[metric]), fontsize=8,
                        xytext=(6, 4), textcoords="offset points")
        ax.set_xlabel(f"CPU latency, batch {size} (ms, median)")
        ax.margins(0.25)
    axes[0].set_ylabel(f"test {metric}")
    better = "down and left" if metric == "rmse" else "up and left"
    figure.suptitle(f"Compression: {metric} vs latency (bubble area ~ size on disk; {better} is better)")
    figure.tight_layout()
    plots.save(figure, path)


def make_models(compressor, teacher: nn.Module, config, calibration: list[dict], teacher_dir: Path, out: Path) -> tuple[dict, dict, dict]:
    """The cheap part of every method, before any training: (int8 written / models to train {method: (model, finish)},
    details, skipped {method: reason})."""
    to_train, details, skipped = {}, {}, {}
    for method in config.methods:
        try:
            if method == "int8":
                folder = out / FOLDERS["int8"]
                shutil.copytree(teacher_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "training_args.json"))
                details["int8"] = compressor.quantize(teacher, calibration, config, folder)
            elif method == "prune":
                pruned = copy.deepcopy(teacher)
                to_train["prune"] = (pruned, compressor.prune(pruned, config, calibration[0]), config.prune.recover_epochs)
                details["prune"] = {"structure": config.prune.structure, "sparsity_requested": config.prune.sparsity}
            else:
                student, layers = compressor.student(teacher, config, calibration[0])
                to_train["distill"] = (student, lambda: None, config.distill.epochs)
                details["distill"] = {"layers_kept": layers, "temperature": config.distill.temperature, "alpha": config.distill.alpha}
        except Unsupported as error:
            skipped[method] = str(error)
            shutil.rmtree(out / FOLDERS[method], ignore_errors=True)
    return to_train, details, skipped


def onnx_columns(models: dict[str, nn.Module], batches: list[dict], probabilities_torch: dict[str, np.ndarray], task, processor,
                 test: pd.DataFrame, layout: dict, config, folder: Path, heads: Heads) -> tuple[dict, dict]:
    """Each model exported to folder/<name>.onnx, scored and timed with onnxruntime: ({name: columns}, {name: why not})."""
    columns, skipped, runners = {}, {}, {}
    folder.mkdir()
    for name, model in models.items():
        path = folder / f"{name}.onnx"
        try:
            onnx_export.export(model, batches[0], path)
        except Unsupported as error:
            skipped[name] = str(error)
            continue
        runners[name] = onnx_export.runner(onnx_export.session(path, torch.get_num_threads()))
        probs = task.per_row(onnx_export.probabilities(runners[name], batches, heads, layout.get("target")), test, layout)
        columns[name] = {"onnx_size_mb": round(path.stat().st_size / 2**20, 2),
                         "onnx_max_abs_probability_difference": float(np.abs(probs - probabilities_torch[name]).max()),
                         **({} if numbers.is_number(layout) else  # a numeric label's difference is the line above
                            {"onnx_prediction_agreement": float(np.mean(probs.argmax(axis=1) == probabilities_torch[name].argmax(axis=1)))})}
    for name, sizes in latencies_ms(runners, task, processor, test, layout, config.latency.repeats).items():
        columns[name] |= {f"onnx_latency_ms_batch_{size}": ms for size, ms in sizes.items()}
    return columns, skipped


def run(task, params, models_folder: Path, reports_folder: Path) -> dict:
    config = params.compress
    device, bf16 = resolve_device(params.train.device)  # a CUDA request without a GPU fails here, before any work
    label_map = read_json(paths.LABEL_MAP)
    heads = Heads.of(label_map)
    teacher_name, candidates = choose_teacher(params)
    teacher_dir, teacher_params, tables, layout = teacher_data(task, params, teacher_name, label_map)
    trust = teacher_params.train.trust_remote_code
    processor = task.models.load_processor(str(teacher_dir), trust)
    teacher = task.models.load_trained(str(teacher_dir), trust).eval()
    try:
        compressor = task.compressor(teacher)
    except Unsupported as error:  # nothing to compress: the stage says why (and what was asked for)
        raise Unsupported(f"{error} (asked for: {', '.join(config.methods)})") from None
    if config.latency.threads:
        torch.set_num_threads(config.latency.threads)
    batch = params.train.eval_batch_size
    train, test = tables["train"], tables["test"]
    calibration = feature_batches(task, processor, train.sample(n=min(len(train), CALIBRATION_BATCH * config.quantize.calibration_batches),
                                                                random_state=params.train.seed), layout, CALIBRATION_BATCH)
    number = numbers.is_number(label_map)
    details = {"teacher": {"name": teacher_name, **({"val_rmse_of_candidates": {name: -score for name, score in candidates.items()}} if number
                                                   else {"val_f1_macro_of_candidates": candidates})}}
    to_train, made, skipped = make_models(compressor, teacher, config, calibration, teacher_dir, models_folder)
    details |= made
    if to_train:  # the teacher's soft labels, computed once for every model that learns from them
        # one soft label per item the students train on (a text's every window under chunks)
        teacher_outputs = task.item_proba(teacher, processor, train, layout, batch)
        teacher_logits = (numbers.standardised(teacher_outputs, layout) if number else heads.logits(teacher_outputs) if heads.multi
                          else np.log(np.clip(teacher_outputs, 1e-12, 1)))
        train_set = task.models.dataset(train, layout, processor)
    for method, (model, finish, epochs) in to_train.items():
        if epochs:
            key = "recovery" if method == "prune" else "training"
            details[method][key] = distill.train_on_teacher(model, train_set, teacher_logits, task.models.collator(processor), config.distill,
                                                            epochs, params.train.seed, device, bf16, paths.CHECKPOINTS / f"compress-{method}",
                                                            heads.sizes if heads.multi else None,
                                                            [heads.target_of(h) for h in heads.classes] if heads.targets else layout.get("target"))
        finish()
        save_model(task, model, processor, teacher_dir, models_folder / FOLDERS[method])

    # every compressed model is scored as reloaded from disk, through the same prediction code
    models = {"teacher": teacher}
    for method in (m for m in config.methods if m not in skipped):
        folder = models_folder / FOLDERS[method]
        models[method] = compressor.load_quantized(folder) if method == "int8" else task.models.load_trained(str(folder), trust).eval()
    if "prune" in models:
        details["prune"] |= compressor.pruning_facts(teacher, models["prune"])
    probs = {name: task.predict_proba(model, processor, test, layout, batch) for name, model in models.items()}
    onnx = {}
    if "onnx" in config.export:
        onnx, skipped_onnx = onnx_columns(models, feature_batches(task, processor, test, layout, batch), probs, task, processor, test,
                                          layout, config, models_folder / "onnx", heads)
        details["onnx"] = {"exporter": "torch.onnx (TorchScript), onnxruntime CPUExecutionProvider", "skipped": skipped_onnx}
    if skipped:
        details["skipped"] = skipped
    runners = {name: (lambda features, model=model: model(**features)) for name, model in models.items()}
    latency = latencies_ms(runners, task, processor, test, layout, config.latency.repeats)
    sizes = {"teacher": weights_size_mb(teacher_dir)} | {m: weights_size_mb(models_folder / FOLDERS[m]) for m in models if m != "teacher"}
    score = score_numbers if number else score_models
    rows, table, scored = score(models, probs, test, label_map, latency, sizes, onnx)
    write_table(reports_folder / "predictions.csv", table)
    flat = {name: {key: value for key, value in row.items() if not isinstance(value, dict)} for name, row in rows.items()}
    tradeoff_png(reports_folder / "tradeoff.png", pd.DataFrame(flat).T.astype(float), "rmse" if number else "accuracy")
    for name, reason in skipped.items():
        print(f"compress {name}: skipped: {reason}")
    for name, row in rows.items():
        if number:
            print(f"compress {name}: rmse {row['rmse']:.4g} ({row['rmse_delta']:+.4g}{', ' + row['vs_teacher']['rmse']['verdict'] if 'vs_teacher' in row else ''}), "
                  f"{row['size_mb']} MB (x{row['size_ratio']:.2f}), batch-1 {row['latency_ms_batch_1']} ms (x{row['speedup_batch_1']:.2f} faster)")
            continue
        print(f"compress {name}: accuracy {row['accuracy']:.4f} ({row['accuracy_delta']:+.4f}"
              f"{', ' + row['vs_teacher']['accuracy']['verdict'] if 'vs_teacher' in row else ''}), {row['size_mb']} MB "
              f"(x{row['size_ratio']:.2f}), batch-1 {row['latency_ms_batch_1']} ms (x{row['speedup_batch_1']:.2f} faster)")
    return {"teacher": teacher_name, "threads": torch.get_num_threads(), "cpu": quantize.cpu(), "training_device": device, "test_rows": len(test),
            **({"scored": scored} if heads.multi else {}), "models": rows, "details": details}


def _timing(name: str, row: dict, base: dict, onnx: dict) -> dict:
    """A compressed model's size and speed next to the teacher's (`base`), its ONNX columns."""
    extra = {"size_ratio": row["size_mb"] / base["size_mb"],
             **{f"speedup_batch_{size}": base[f"latency_ms_batch_{size}"] / row[f"latency_ms_batch_{size}"] for size in LATENCY_BATCHES}}
    if name in onnx:
        extra |= onnx[name] | {f"onnx_speedup_vs_torch_batch_{size}": row[f"latency_ms_batch_{size}"] / onnx[name][f"onnx_latency_ms_batch_{size}"]
                               for size in LATENCY_BATCHES}
    return extra


def _rounded(row: dict) -> dict:
    return {key: round(value, 4) if "probability_difference" not in key else float(f"{value:.3g}") for key, value in row.items() if isinstance(value, float)}


def score_numbers(models: dict, predictions: dict[str, np.ndarray], test: pd.DataFrame, label_map: dict, latency: dict, sizes: dict,
                  onnx: dict) -> tuple[dict, pd.DataFrame, str]:
    """score_models of a numeric label's models: rmse, mae, r2, spearman with intervals, vs the teacher, how far from it."""
    actual = test["label"].to_numpy(dtype=np.float64)
    predicted = {name: p[:, 0] for name, p in predictions.items()}
    ci95 = number_scores.intervals(actual, predicted)
    rows = {}
    for name, model in models.items():
        rows[name] = {"parameters": compressors.parameter_count(model), "size_mb": sizes[name],
                      **{f"latency_ms_batch_{size}": latency[name][size] for size in LATENCY_BATCHES},
                      **number_scores.scores(actual, predicted[name]), "ci95": ci95[name],
                      **({"vs_teacher": number_scores.compare(actual, predicted[name], predicted["teacher"])} if name != "teacher" else {}),
                      "mean_abs_difference_from_teacher": float(np.mean(np.abs(predicted[name] - predicted["teacher"])))}
    base = dict(rows["teacher"])
    for name, row in rows.items():
        row |= {"rmse_delta": row["rmse"] - base["rmse"], "mae_delta": row["mae"] - base["mae"], **_timing(name, row, base, onnx)}
        row |= _rounded(row)
    table = pd.DataFrame({"id": test["id"].to_numpy(), "actual": actual, **{f"{name}_predicted": p for name, p in predicted.items()}})
    return rows, table, f"{len(actual)} test rows"


def _number_heads(heads: Heads, test: pd.DataFrame, probs: dict[str, np.ndarray], name: str) -> dict:
    """Each number head's rmse, mae, r2 and spearman of model `name` in its units, and the teacher's minus its rmse."""
    ours, teachers = (number_predictions(heads, test["label"].to_numpy(), probs[who]) for who in (name, "teacher"))
    return {head: {key: round(value, 4) for key, value in number_scores.scores(actual, predicted).items()}
            | {"mean_abs_difference_from_teacher": round(float(np.mean(np.abs(predicted - teachers[head][1]))), 4)}
            for head, (actual, predicted) in ours.items()}


def score_models(models: dict, probs: dict[str, np.ndarray], test: pd.DataFrame, label_map: dict, latency: dict, sizes: dict,
                 onnx: dict) -> tuple[dict, pd.DataFrame, str]:
    """({model: its row of compress.json}, the predictions table, what was scored). Several heads: every (row, head) with a
    label, as "head: class" classes (finetune/data/heads.py pooled), each head's scores apart (a number head's rmse...)."""
    heads = Heads.of(label_map)
    pairs = {name: pooled(heads, test["label"].to_numpy(), p) for name, p in probs.items()}
    actual, rows_of = pairs["teacher"][0], pairs["teacher"][2]
    predicted = {name: p[1] for name, p in pairs.items()}
    ci95 = uncertainty.intervals(actual, predicted)
    head_of = np.searchsorted(np.cumsum(heads.sizes), actual, side="right")  # several heads: whose class each pair is
    rows = {}
    for name, model in models.items():
        scores = metrics.headline(actual, predicted[name])
        rows[name] = {"parameters": compressors.parameter_count(model), "size_mb": sizes[name],
                      **{f"latency_ms_batch_{size}": latency[name][size] for size in LATENCY_BATCHES},
                      "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"], "ci95": ci95[name],
                      **({"vs_teacher": uncertainty.compare(actual, predicted[name], predicted["teacher"])} if name != "teacher" else {}),
                      "agreement_with_teacher": float(np.mean(predicted[name] == predicted["teacher"])),
                      **({"heads": {head: {key: round(value, 4) for key, value in metrics.headline(actual[head_of == i], predicted[name][head_of == i]).items()
                                           if key in ("accuracy", "f1_macro")} for i, head in enumerate(heads.classes) if head not in heads.targets}
                          | _number_heads(heads, test, probs, name)} if heads.multi else {})}
    base = dict(rows["teacher"])  # a copy: the loop rounds the teacher's own row
    for name, row in rows.items():
        row |= {"accuracy_delta": row["accuracy"] - base["accuracy"], "f1_macro_delta": row["f1_macro"] - base["f1_macro"],
                "accuracy_share_of_teacher": row["accuracy"] / base["accuracy"], **_timing(name, row, base, onnx)}
        row |= _rounded(row)
    names = np.array(label_map["labels"])
    table = pd.DataFrame({"id": test["id"].to_numpy()[rows_of], "actual": names[actual], **{f"{name}_predicted": names[p] for name, p in predicted.items()}})
    return rows, table, f"{len(actual)} (test row, head) pairs with a label, pooled: macro F1 over every head's classes"

"""`finetune export`: a trained model folder made shareable, in a new folder.

The folder is copied whole (weights as safetensors, the tokenizer or image settings, label_map.json, pipeline.json: it
predicts anywhere with `finetune predict`, and a text classifier loads in Hugging Face's `pipeline("text-classification")`),
with a model card, README.md (finetune/reporting/card.py: data, parameters, test scores with intervals, baseline, intended
use and limits, the commit), written from the project's reports, and what other libraries need to load it (a Hugging Face
image model: preprocessor_config.json for pipeline("image-classification")). `--onnx` adds model.onnx (onnxruntime), self-contained
beside the same tokenizer / image settings, and checks it against PyTorch on the prepared test split: the agreement of
their labels and the largest probability difference go into the card and the output. Image classifiers trained from a
torchvision or EfficientNet-Lite checkpoint are not transformers models: `pipeline("image-classification")` loads only those
fine-tuned from a Hugging Face image directory (ViT, ConvNeXt, ResNet...); the card says which, and every kind predicts
through `finetune predict`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from finetune import paths
from finetune.errors import Unsupported, UserError
from finetune.io import atomic_path, read_json


def onnx_check(predictor, target: Path) -> dict:
    """model.onnx into target, and how it agrees with PyTorch on the prepared test split."""
    import pandas as pd
    import torch

    from finetune.compression import onnx_export
    from finetune.data.heads import Heads
    from finetune.families.classification.compress import feature_batches
    from finetune.families.classification.predict import ONNX_MODEL

    task, layout, batch = predictor.task, predictor.layout, predictor.params.train.eval_batch_size
    test_file = paths.PREPARED / "test.parquet"
    if not test_file.is_file() or read_json(paths.LABEL_MAP) != layout:
        raise UserError(f"--onnx is checked on the prepared test split, featurized for this model: run it in the project, with "
                        f"{paths.PREPARED} prepared for {predictor.model_dir} (a model trained on other features cannot be checked here)")
    test = pd.read_parquet(test_file)
    batches = feature_batches(task, predictor.processor, test, layout, batch)
    try:
        onnx_export.export(predictor.model, batches[0], target / ONNX_MODEL)
    except Unsupported as error:
        raise UserError(f"--onnx: {error}") from None
    run = onnx_export.runner(onnx_export.session(target / ONNX_MODEL, torch.get_num_threads()))
    exported = task.per_row(onnx_export.probabilities(run, batches, Heads.of(layout), layout.get("target")), test, layout)
    torch_probs = task.predict_proba(predictor.model, predictor.processor, test, layout, batch)
    heads = Heads.of(layout)  # several heads: the class heads' mean agreement (a number head's difference is the max below)
    agreement = float(np.mean(exported.argmax(axis=1) == torch_probs.argmax(axis=1))) if not heads.multi else float(np.mean(
        [np.mean(a.argmax(axis=1) == b.argmax(axis=1)) for head, a, b in zip(heads.classes, heads.columns(exported).values(),
                                                                             heads.columns(torch_probs).values()) if head not in heads.targets]))
    return {"rows": len(test), "agreement": agreement, "max_probability_difference": float(np.abs(exported - torch_probs).max())}


def export(model_dir: str | Path, target: str | Path, onnx: bool = False, force: bool = False) -> dict:
    from finetune.compression.onnx_export import INT8_MODEL
    from finetune.families.classification.ensemble import ENSEMBLE_SPEC
    from finetune.inference import load
    from finetune.reporting.card import card

    folder, target = Path(model_dir), Path(target)
    if (folder / ENSEMBLE_SPEC).is_file():
        raise UserError(f"--model {folder}: an ensemble predicts through its members' folders beside it; export models/ as a whole, "
                        "or each member")
    predictor = load(folder)  # refuses a folder that is not a trained model, before anything is written
    if target.exists() and not force:
        raise UserError(f"--to {target} exists; choose a new folder or pass --force to replace it")
    if target.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"--to {target} is inside the model folder {folder}")
    with atomic_path(target) as temporary:
        shutil.copytree(folder, temporary)
        not_portable = (f"an int8 onnxruntime graph ({INT8_MODEL}) beside its preprocessing files: `finetune predict` (or onnxruntime) runs it, "
                        "transformers' pipeline() cannot load it" if (temporary / INT8_MODEL).is_file() else
                        predictor.task.models.make_portable(temporary, predictor.params))
        checked = onnx_check(predictor, temporary) if onnx else None
        (temporary / "README.md").write_text(card(folder, paths.REPORTS, checked, not_portable), encoding="utf-8")
    summary = {"folder": str(target), **({"onnx": checked} if checked else {})}
    shown = (f"; model.onnx agrees with PyTorch on {100 * checked['agreement']:.2f} % of {checked['rows']} test rows, probabilities "
             f"at most {checked['max_probability_difference']:.2e} apart" if checked else "")
    print(f"export: {folder} -> {target} (model card README.md){shown}")
    return summary


def main(argv: list[str] | None = None) -> None:
    name, _, description = __doc__.strip().partition("\n")
    parser = argparse.ArgumentParser(prog="finetune export", description=name, epilog=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model", help="a trained model folder (default: %(default)s)")
    parser.add_argument("--to", required=True, help="the new folder to write")
    parser.add_argument("--onnx", action="store_true", help="add model.onnx, checked against PyTorch on the prepared test split")
    parser.add_argument("--force", action="store_true", help="replace --to if it exists")
    args = parser.parse_args(argv)
    try:
        export(args.model, args.to, args.onnx, args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

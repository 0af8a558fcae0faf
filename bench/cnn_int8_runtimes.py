"""Which int8 for the image CNN (issue 36: torch.ao's static int8 lost 1.46 points on the default image model, and torch.ao
is deprecated)? In an image project after `dvc repro train` (e.g. `bench/small_repro.py --keep DIR`): the fine-tuned
EfficientNet-Lite0 as fp32 in PyTorch and in onnxruntime (the compress stage's ONNX export) against onnxruntime static
int8 (the compress stage's CNN int8, finetune/compression/convnets.py: `quantize_static`, QDQ, per-channel int8 weights,
uint8 activations, MinMax calibration on compress.quantize.calibration_batches x 32 train images, after onnxruntime's own
pre-processing, 7-bit weights: `reduce_range`), and the same quantization with one option changed: full 8-bit weights
(the stage's before 2026-12-07), whose u8s8 products saturate on x86 CPUs without VNNI (VPMADDUBSW adds pairs of them
into int16), uint8 weights (u8u8) or int8 activations (s8s8). Every model scores the whole test split (accuracy, agreement with fp32) and is timed with the compress
stage's function (batch 1 and 32, models in turn each round, median), ROUNDS times. The torch.ao FX static int8 arm of
the committed numbers (docs/benchmarks/compression.md) left with torch.ao's code: run this script at commit 8586449.

    cd DIR && PYTHONPATH=/path/to/repo python /path/to/repo/bench/cnn_int8_runtimes.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from finetune import paths  # noqa: E402
from finetune.compression import onnx_export, quantize  # noqa: E402
from finetune.compression.convnets import ConvNetCompressor  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.data.heads import Heads  # noqa: E402
from finetune.families.classification.compress import CALIBRATION_BATCH, LATENCY_BATCHES, feature_batches, latencies_ms  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402


def variants():
    """The compress stage's quantize_static call with one option changed (patched in, so the stage's own code runs)."""
    from onnxruntime.quantization import QuantType
    full = {"reduce_range": False}
    return {"int8 QDQ, 7-bit weights (stage)": {}, "int8 QDQ, 8-bit weights": full, "int8 QDQ, u8u8": full | {"weight_type": QuantType.QUInt8},
            "int8 QDQ, s8s8": full | {"activation_type": QuantType.QInt8}}


def quantized(compressor, model, calibration, config, folder: Path, options: dict):
    import onnxruntime.quantization as ortq
    original = ortq.quantize_static
    with mock.patch.object(ortq, "quantize_static", lambda *args, **kwargs: original(*args, **(kwargs | options))):
        compressor.quantize(model, calibration, config, folder)
    return compressor.load_quantized(folder), (folder / onnx_export.INT8_MODEL).stat().st_size


def main(rounds: int) -> None:
    params = load_params()
    task, config = get_task(params.task), params.compress
    model = task.models.load_trained(str(paths.MODEL), False).eval()
    processor = task.models.load_processor(str(paths.MODEL), False)
    layout, heads = read_json(paths.LABEL_MAP), Heads.of(read_json(paths.LABEL_MAP))
    train, test = (pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "test"))
    calibration = feature_batches(task, processor, train.sample(n=min(len(train), CALIBRATION_BATCH * config.quantize.calibration_batches),
                                                                random_state=params.train.seed), layout, CALIBRATION_BATCH)
    batches = feature_batches(task, processor, test, layout, params.train.eval_batch_size)
    work = Path(tempfile.mkdtemp())
    compressor = ConvNetCompressor(task.models)
    onnx_export.export(model, batches[0], work / "fp32.onnx")
    models = {"torch fp32": model, "onnxruntime fp32": onnx_export.OnnxModel(work / "fp32.onnx")}
    sizes = {"torch fp32": sum(f.stat().st_size for f in paths.MODEL.glob("*.safetensors")), "onnxruntime fp32": (work / "fp32.onnx").stat().st_size}
    for number, (name, options) in enumerate(variants().items()):
        folder = work / f"int8-{number}"
        shutil.copytree(paths.MODEL, folder, ignore=shutil.ignore_patterns("*.safetensors", "training_args.json"))
        models[name], sizes[name] = quantized(compressor, model, calibration, config, folder, options)
    with torch.inference_mode():
        probs = {name: onnx_export.probabilities(lambda features, m=m: m(**features).logits.numpy(), batches, heads) for name, m in models.items()}
    actual, reference = test["label"].to_numpy(), probs["torch fp32"].argmax(axis=1)
    print(f"{len(test)} test images, {torch.get_num_threads()} threads, calibration {sum(len(b['pixel_values']) for b in calibration)} "
          f"train images, {quantize.cpu()}")
    for name, p in probs.items():
        predicted = p.argmax(axis=1)
        print(f"{name:36s} accuracy {np.mean(predicted == actual):.4f}  agrees with fp32 {np.mean(predicted == reference):.4f}  "
              f"{sizes[name] / 2**20:.1f} MiB")
    runners = {name: (lambda features, m=m: m(**features)) for name, m in models.items()}
    for round_ in range(rounds):
        ms = latencies_ms(runners, task, processor, test, layout, config.latency.repeats)
        print(f"round {round_ + 1}: " + "   ".join(
            f"{name} " + " / ".join(f"b{size} {ms[name][size]:.1f} ms ({ms['torch fp32'][size] / ms[name][size]:.2f}x)" for size in LATENCY_BATCHES)
            for name in runners))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args().rounds)

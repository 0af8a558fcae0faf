"""What replaces torch.ao's deprecated int8 for the text classifier (issue 36)? In a project where `dvc repro compress`
ran the text config: the compress teacher as fp32 (torch eager and onnxruntime, from the stage's own ONNX export)
against torch.ao dynamic int8 (quantize.py, what the stage shipped before 2026-12-06, made here from the teacher),
onnxruntime dynamic int8 (`onnxruntime.quantization.quantize_dynamic`, per-channel int8 weights, activations quantized on
the fly like torch.ao's: the stage's own models/compressed/int8 since then) and, when torchao is installed, torchao's Int8DynamicActivationInt8Weight on the linear layers. Every model scores the
whole test split (accuracy, agreement with the teacher) and is timed with the compress stage's own function (batch 1 and
32, models in turn each round, median), ROUNDS times; the CPU's int8 instructions are printed (they decide the ratios:
docs/benchmarks/compression.md).

    python bench/int8_replacements.py [--rounds 3]    # ~4 min on 2 cores
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from compressed_latency import teacher_and_test, timed_rounds  # noqa: E402  (bench/, this script's folder)

from finetune import paths  # noqa: E402
from finetune.compression import onnx_export, quantize  # noqa: E402
from finetune.data.heads import Heads  # noqa: E402
from finetune.families.classification.compress import FOLDERS, feature_batches  # noqa: E402


def torchao_int8(teacher):
    """torchao's dynamic int8 (activations per token, weights per channel) on every linear layer, or None without torchao."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    model = copy.deepcopy(teacher)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def main(rounds: int) -> None:
    params, task, result, teacher_dir, processor, teacher, test, layout = teacher_and_test()
    heads, batches = Heads.of(layout), feature_batches(task, processor, test, layout, params.train.eval_batch_size)
    fp32_onnx, int8_onnx = paths.COMPRESSED / "onnx" / "teacher.onnx", paths.COMPRESSED / FOLDERS["int8"] / onnx_export.INT8_MODEL
    threads = torch.get_num_threads()
    torch_ao, ao_folder = quantize.quantize(teacher, embeddings=True), Path(tempfile.mkdtemp())
    quantize.save(torch_ao, ao_folder, True)  # its size on disk
    torch_models = {"torch fp32": teacher, "torch.ao int8": torch_ao}
    if (ao := torchao_int8(teacher)) is not None:
        torch_models["torchao int8"] = ao
    runners = {name: (lambda features, model=model: model(**features).logits) for name, model in torch_models.items()}
    runners |= {"onnxruntime fp32": onnx_export.runner(onnx_export.session(fp32_onnx, threads)),
                "onnxruntime int8": onnx_export.runner(onnx_export.session(int8_onnx, threads))}
    sizes = {"torch fp32": sum(f.stat().st_size for f in teacher_dir.glob("*.safetensors")),
             "torch.ao int8": sum(f.stat().st_size for f in ao_folder.glob("*.safetensors")),
             "onnxruntime fp32": fp32_onnx.stat().st_size, "onnxruntime int8": int8_onnx.stat().st_size}
    with torch.inference_mode():
        probs = {name: onnx_export.probabilities(lambda features, run=run: np.asarray(run(features)), batches, heads) for name, run in runners.items()}
    actual, reference = test["label"].to_numpy(), probs["torch fp32"].argmax(axis=1)
    print(f"{params.task}, teacher {result['teacher']}, {len(test)} test rows, {threads} threads, {quantize.cpu()}")
    for name, p in probs.items():
        predicted = p.argmax(axis=1)
        size = f"{sizes[name] / 2**20:.1f} MiB" if name in sizes else "-"
        print(f"{name:17s} accuracy {np.mean(predicted == actual):.4f}  agrees with the teacher {np.mean(predicted == reference):.3f}  {size}")
    timed_rounds(runners, "torch fp32", task, processor, test, layout, params.compress.latency.repeats, rounds, [threads])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args().rounds)

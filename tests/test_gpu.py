"""Fine-tuning on a CUDA GPU: `pytest -m gpu` (bench/gpu_check.py runs these, then its benchmark). Each test marked
`gpu` is skipped, saying why, where torch sees no CUDA GPU, so it costs the CPU suite nothing; the last three are for
any machine (the first of them only without a GPU). Not yet run on a GPU: the bounds below are reasoned, not measured."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.utils import is_torch_tf32_available

from finetune import paths
from finetune.config.sections import Speed
from finetune.errors import UserError
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training import fit as training
from finetune.training.strategies import apply_strategy
from stages import evaluate, ingest, preprocess, train
from tests.support.data import make_rows, write_image_folder, write_lm_corpus
from tests.support.params import load, tiny_image_params, tiny_lm_params, tiny_params
from tests.support.repos import PROJECT, tool_env

CUDA = torch.cuda.is_available()


def gpu(test):
    """Selected by `pytest -m gpu`; skipped with the reason where no CUDA GPU is visible (never a silent pass)."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: torch.cuda.is_available() is False")(test))


def _prepared(task: str, model: Path, **train_settings):
    """ingest + preprocess (on the CPU) of a tiny project of `task` in the current directory; its params train on CUDA."""
    train_settings = {"device": "auto", **train_settings}
    if task == "text":
        Path("data/raw").mkdir(parents=True)
        make_rows(150).to_csv("data/raw/tiny.csv", index=False)
        params = load(tiny_params(model, train=train_settings))
    else:
        write_image_folder(Path("data/raw/images"), 30)
        params = load(tiny_image_params(str(model), train=train_settings))
    ingest.run(params)
    preprocess.run(params)
    return params


@pytest.fixture(params=["text", "image"])
def project(request, workdir):
    return _prepared(request.param, request.getfixturevalue("tiny_model" if request.param == "text" else "tiny_image_model"))


@gpu
def test_train_and_evaluate_run_on_cuda_in_bf16_where_supported_with_the_speed_settings(project, monkeypatch):
    seen = []  # (training?, dtype, device) of the classifier head's output at every forward

    def strategy_then_hook(model, train_params):
        model = apply_strategy(model, train_params)
        head = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
        head.register_forward_hook(lambda module, inputs, output: seen.append((module.training, output.dtype, output.device.type)))
        return model

    monkeypatch.setattr(training, "apply_strategy", strategy_then_hook)
    summary = train.run(project)

    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)  # in hardware: Ampere or newer
    tf32 = is_torch_tf32_available()
    assert summary["device"] == "cuda" and summary["bf16"] == bf16
    assert summary["speed"] == {"tf32": tf32, "fused_optimizer": True, "pin_memory": True, "dataloader_workers": 0, "compile": False}
    recorded = json.loads((paths.MODEL / "training_args.json").read_text())
    assert recorded["bf16"] == bf16 and recorded["tf32"] == (tf32 or None) and recorded["dataloader_pin_memory"]
    assert {(dtype, device) for is_training, dtype, device in seen if is_training} == {(torch.bfloat16 if bf16 else torch.float32, "cuda")}
    metrics = evaluate.run(project)  # the evaluate stage loads the model on the CPU
    assert metrics["accuracy"] > 0.6  # 3 balanced classes: chance is 1/3


@gpu
def test_a_model_trained_on_the_gpu_predicts_on_the_cpu_what_it_predicts_on_the_gpu(project):
    """evaluate scores on the CPU in fp32; training scored val on the GPU in its precision (bf16 autocast where supported).
    Bound: class probabilities within 0.02 (bf16 keeps 8 significant bits, ~0.4 % per rounding; not yet measured on a GPU),
    hence the same class for every row whose two most likely classes are more than 0.04 apart."""
    train.run(project)
    task, label_map = get_task(project.task), read_json(paths.LABEL_MAP)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    model, processor = task.models.load_trained(str(paths.MODEL), False), task.models.load_processor(str(paths.MODEL), False)
    on_cpu = task.predict_proba(model, processor, test, label_map, 64)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=training.resolve_device("auto")[1]):
        on_gpu = task.predict_proba(model.to("cuda"), processor, test, label_map, 64)
    assert np.abs(on_cpu - on_gpu).max() <= 0.02
    top_two = np.sort(on_cpu, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.04
    assert clear.mean() > 0.5 and (on_cpu.argmax(1) == on_gpu.argmax(1))[clear].all()


@gpu
def test_an_interrupted_gpu_fine_tune_resumes_to_the_same_weights(workdir, tiny_model):
    """Interrupted right after its first checkpoint, then rerun: it resumes there and ends with an uninterrupted run's
    weights, bit for bit. Expected (not yet seen on a GPU): no kernel of a BERT's step adds in a varying order on CUDA,
    cuBLAS gives the same bits on the same GPU, and the checkpoint holds the CUDA RNG state that dropout draws from."""
    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt  # Ctrl-C right after the first checkpoint was written

    params = _prepared("text", tiny_model, epochs=3)
    reference = train.run(params)
    expected = load_file(paths.MODEL / "model.safetensors")
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    with pytest.raises(KeyboardInterrupt):
        training.fit(params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "train", extra_callbacks=(Interrupt(),))
    resumed = train.run(params)
    assert resumed["resumed"] and resumed["device"] == "cuda" and resumed["steps"] == reference["steps"]
    weights = load_file(paths.MODEL / "model.safetensors")
    assert all(torch.equal(value, weights[name]) for name, value in expected.items())


@gpu
def test_a_causal_lm_fine_tunes_with_lora_on_cuda_in_bf16_and_its_cpu_perplexity_beats_the_pretrained_model(workdir, tiny_causal_lm):
    """The LM path: LoRA on CUDA (bf16 where supported), the merged model then scored on the CPU in fp32 by evaluate."""
    write_lm_corpus(workdir)
    params = load(tiny_lm_params(tiny_causal_lm, train={"device": "auto"}))
    ingest.run(params)
    preprocess.run(params)
    summary = train.run(params)
    assert summary["device"] == "cuda" and summary["bf16"] == torch.cuda.is_bf16_supported(including_emulation=False)
    assert summary["parameters"]["strategy"] == "lora"
    metrics = evaluate.run(params)
    assert metrics["perplexity"] < metrics["baseline"]["perplexity"]


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is visible: train.device cuda is accepted here")
def test_cuda_without_a_gpu_is_refused_with_the_exact_message():
    with pytest.raises(UserError) as refused:
        training.resolve_device("cuda")
    assert str(refused.value) == "train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'"


def test_the_cuda_only_speed_settings_stay_off_on_the_cpu():
    """So CPU training is what it was before train.speed existed, bit for bit."""
    assert training.speed_settings(Speed(), "cpu") == {"tf32": False, "fused_optimizer": False, "pin_memory": False,
                                                       "dataloader_workers": 0, "compile": False}


def test_the_gpu_check_dry_run_goes_through_every_step_on_the_cpu():
    """`python bench/gpu_check.py --dry-run`: CUDA hidden, tiny models built here, nothing downloaded (~30 s on 2 cores)."""
    env = {name: value for name, value in tool_env().items() if not name.startswith("PYTEST_")}  # its pytest is no worker of ours
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run"], cwd=PROJECT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "needs a CUDA GPU: torch.cuda.is_available() is False" in done.stdout  # the GPU tests' skip reason, shown
    report = done.stdout.split("== GPU check report (dry run: CPU, tiny models; the numbers mean nothing) ==\n")[1]
    assert "GPU: none visible (dry run: CUDA hidden)" in report
    assert re.search(r"^gpu tests: 6 skipped, 3 deselected.* in .*\(exit 0\)$", report, re.M)
    for task in ("text", "image"):
        assert re.search(rf"^{task}: models/pretrained/tiny-{task}, \d+ train rows, 2 epochs, batch 8$", report, re.M)
    for run in ("ours", "reference"):
        rows = re.findall(rf"^  {run} +[\d.]+ samples/s  peak GPU memory n/a \(CPU\)  test accuracy [01]\.\d{{4}}  \(cpu, ", report, re.M)
        assert len(rows) == 2, report
    assert len(re.findall(r"^  ours / reference: [\d.]+x samples/s, accuracy [+-][\d.]+ pt; quality bar .*: (met|NOT met)$",
                          report, re.M)) == 2

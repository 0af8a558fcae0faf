import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from finetune.errors import UserError
from finetune.training.fit import fingerprint
from stages import ingest, preprocess, train
from tests.support.data import make_rows
from tests.support.params import load, tiny_params
from tests.support.repos import PROJECT, tool_env, write_project


def _prepared(workdir, tiny_model, rows=None, **sections):
    (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
    (make_rows(150) if rows is None else rows).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = load(tiny_params(tiny_model, **sections))
    ingest.run(params)
    preprocess.run(params)
    return params


def test_fine_tune_learns_and_saves_a_reloadable_safetensors_model(workdir, tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    summary = train.run(_prepared(workdir, tiny_model))

    assert summary["device"] == "cpu" and summary["steps"] == 144  # 90 rows / 8 per batch = 12 steps x 12 epochs
    assert summary["val"]["accuracy"] > 0.8  # far above the 1/3 of a balanced 3-class guess
    saved = sorted(p.name for p in (workdir / "models/model").iterdir())
    assert "model.safetensors" in saved and "tokenizer.json" in saved and "label_map.json" in saved
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in saved)  # no pickles
    model = AutoModelForSequenceClassification.from_pretrained(workdir / "models/model", use_safetensors=True)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    tokens = AutoTokenizer.from_pretrained(workdir / "models/model")("the service was great", return_tensors="pt")
    assert model(**tokens).logits.shape == (1, 3)
    assert not (workdir / ".cache/checkpoints").exists() or not any((workdir / ".cache/checkpoints").iterdir())


def test_metrics_are_logged_with_dvclive_per_step_without_a_dvc_yaml(workdir, tiny_model):
    train.run(_prepared(workdir, tiny_model))
    live = workdir / "reports/train_live"
    losses = pd.read_csv(live / "plots/metrics/train/loss.tsv", sep="\t")
    assert losses["step"].tolist() == list(range(5, 144, 5))  # logging_steps = 5, x = the Trainer's global step
    evals = pd.read_csv(live / "plots/metrics/eval/f1_macro.tsv", sep="\t")
    assert evals["step"].tolist() == list(range(12, 145, 12))  # one evaluation per epoch
    assert not list(workdir.rglob("dvc.yaml"))  # dvclive must never write (or rewrite) a dvc.yaml


def test_curves_also_go_to_tensorboard_and_logs_get_one_line_per_evaluation(workdir, tiny_model, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train.run(_prepared(workdir, tiny_model, train={"report_to": ["tensorboard"], "epochs": 3}))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train: step")]
    assert [line.split(",")[0] for line in printed] == ["train: step 12/36", "train: step 24/36", "train: step 36/36", "train: step 36/36"]
    assert " val loss " in printed[0] and " f1_macro " in printed[0]  # the three epochs' evaluations, then the best model's
    events = EventAccumulator(str(next((workdir / ".cache/tensorboard/train").rglob("events.out.tfevents.*")).parent)).Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [5, 10, 15, 20, 25, 30, 35]
    recorded = json.loads((workdir / "models/model/training_args.json").read_text())
    assert recorded["report_to"] == ["tensorboard"] and "disable_tqdm" not in recorded  # a terminal does not change the model folder


def test_report_to_an_integration_that_is_not_installed_is_refused(workdir, tiny_model):
    with pytest.raises(UserError, match=r"train.report_to: .*wandb not installed in this environment \(pip install wandb\)"):
        load(tiny_params(tiny_model, train={"report_to": ["wandb"]}))


def test_early_stopping_stops_and_restores_the_best_checkpoint(workdir, tiny_model):
    params = _prepared(workdir, tiny_model, train={"learning_rate": 1e-9, "epochs": 20, "early_stopping": {"patience": 2, "metric": "loss"}})
    summary = train.run(params)
    assert summary["stopped_early"]
    assert summary["steps"] < 20 * 12
    state_steps = pd.read_csv(workdir / "reports/train_live/plots/metrics/eval/loss.tsv", sep="\t")
    best = state_steps.loc[state_steps["loss"].idxmin(), "step"]
    assert summary["best_step"] == best
    assert summary["val"]["loss"] == pytest.approx(state_steps["loss"].min(), abs=1e-6)


def test_dropout_override_and_cuda_request_without_gpu(workdir, tiny_model):
    params = _prepared(workdir, tiny_model, train={"dropout": 0.3, "epochs": 1})
    train.run(params)
    config = json.loads((workdir / "models/model/config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.3 and config["attention_probs_dropout_prob"] == 0.3
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="train.device is 'cuda' but no CUDA GPU is visible"):
            train.run(load(tiny_params(tiny_model, train={"device": "cuda"})))


def _train_process(root):
    env = tool_env()
    env["PYTHONPATH"] = str(PROJECT)
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_killed_fine_tune_resumes_from_its_own_checkpoint_with_identical_results(tmp_path, tiny_model, monkeypatch):
    settings = {"train": {"eval_steps": 4, "early_stopping": {"patience": 3}}}
    runs = {}
    for name in ("uninterrupted", "killed"):
        root = write_project(tmp_path / name, tiny_params(tiny_model, **settings), make_rows(150))
        monkeypatch.chdir(root)
        params = load(tiny_params(tiny_model, **settings))
        ingest.run(params)
        preprocess.run(params)
        runs[name] = root
    monkeypatch.chdir(tmp_path)
    reference = _train_process(runs["uninterrupted"])

    killed = _train_process(runs["killed"])
    checkpoints = runs["killed"] / ".cache/checkpoints"
    deadline = time.time() + 120
    while not list(checkpoints.glob("*/checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)  # kill -9, mid-training
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (runs["killed"] / "models/model").exists()  # nothing that looks like a result

    resumed = _train_process(runs["killed"])
    output = resumed.communicate()[0]
    assert resumed.returncode == 0, output
    assert reference.communicate()[0] and reference.returncode == 0
    assert "train: resuming from .cache/checkpoints/" in output

    results = {name: json.loads((root / "reports/train.json").read_text()) for name, root in runs.items()}
    assert results["killed"]["resumed"] and not results["uninterrupted"]["resumed"]
    assert results["killed"]["val"] == results["uninterrupted"]["val"]
    assert results["killed"]["steps"] == results["uninterrupted"]["steps"]
    weights = {name: load_file(root / "models/model/model.safetensors") for name, root in runs.items()}
    for key, tensor in weights["uninterrupted"].items():
        assert torch.equal(tensor, weights["killed"][key]), key
    # the dvclive history is continuous: each step logged once
    steps = pd.read_csv(runs["killed"] / "reports/train_live/plots/metrics/train/loss.tsv", sep="\t")["step"]
    assert steps.is_unique and steps.is_monotonic_increasing


def test_a_checkpoint_of_other_params_is_never_resumed(workdir, tiny_model):
    params = _prepared(workdir, tiny_model, train={"epochs": 1})
    other = load(tiny_params(tiny_model, train={"epochs": 1, "learning_rate": 1e-3}))
    stale = workdir / ".cache/checkpoints" / fingerprint(other, "train") / "checkpoint-3"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    summary = train.run(params)
    assert not summary["resumed"]
    assert fingerprint(params, "train") != fingerprint(other, "train")

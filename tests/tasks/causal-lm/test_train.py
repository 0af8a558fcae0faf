"""train for a causal LM beyond LoRA: what partial, linear_probe (= the LM head) and gradual_unfreeze freeze, checked on
the SAVED weights against the pretrained file, and a crashed LoRA run resuming to the uninterrupted run's weights.
(The tiny Llama ties its LM head to its token embeddings, as SmolLM2 does: the head and the input group are one matrix.)"""
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from finetune import paths
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training.fit import fit
from tests.support.data import write_lm_corpus
from tests.support.params import load, run_stages, tiny_lm_params

EMBEDDINGS = "model.embed_tokens.weight"


class Spy(TrainerCallback):
    """The model's weights at the end of every epoch."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.epochs.append({name: p.detach().clone() for name, p in model.state_dict().items()})


class Crash(TrainerCallback):
    """Raises after `after` optimizer steps, as a killed process would stop (its checkpoints stay)."""

    def __init__(self, after: int):
        self.after = after

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.after:
            raise KeyboardInterrupt(f"crash at step {self.after}")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_causal_lm) -> Path:
    """One ingested and preprocessed tiny corpus; each test trains in a copy of it."""
    root = tmp_path_factory.mktemp("lm-train")
    write_lm_corpus(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        run_stages("ingest", "preprocess", params=load(tiny_lm_params(tiny_causal_lm)))
    return root


@pytest.fixture
def project(prepared, tmp_path, monkeypatch) -> Path:
    shutil.copytree(prepared, tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    return tmp_path / "project"


def _train(model: Path, callbacks=(), **train_keys):
    params = load(tiny_lm_params(model, train=train_keys))
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    summary = fit(get_task(params.task), params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "train", extra_callbacks=callbacks)
    return summary, load_file(paths.MODEL / "model.safetensors")


def _changed(before: dict, after: dict) -> dict[str, bool]:
    return {name: not torch.equal(tensor, after[name]) for name, tensor in before.items() if name in after}


def _in_layer(name: str, index: int) -> bool:
    return name.startswith(f"model.layers.{index}.") and "norm" not in name  # RMSNorm weights barely move in 4 epochs


def test_partial_freezes_the_first_layer_and_trains_the_tied_head(project, tiny_causal_lm):
    pretrained = load_file(tiny_causal_lm / "model.safetensors")
    summary, saved = _train(tiny_causal_lm, strategy="partial", freeze_layers=1, learning_rate=1e-2)
    changed = _changed(pretrained, saved)
    assert changed[EMBEDDINGS]  # the head trains; tied, it is the embedding table (finetune/models/anatomy.py)
    assert not any(v for name, v in changed.items() if name.startswith("model.layers.0."))
    assert all(v for name, v in changed.items() if _in_layer(name, 1))
    groups = {g["group"]: g for g in summary["parameters"]["groups"]}
    assert groups["layer.0"]["trainable"] == 0 and groups["layer.1"]["trainable"] == groups["layer.1"]["parameters"] > 0
    assert groups["embeddings"]["parameters"] == 0 and groups["head"]["parameters"] == pretrained[EMBEDDINGS].numel() + 32  # + final norm


def test_linear_probe_trains_the_lm_head_only(project, tiny_causal_lm):
    pretrained = load_file(tiny_causal_lm / "model.safetensors")
    summary, saved = _train(tiny_causal_lm, strategy="linear_probe", learning_rate=1e-2)
    changed = _changed(pretrained, saved)
    assert changed[EMBEDDINGS]  # the head: tied, so the lookup table moves with it
    assert not any(v for name, v in changed.items() if name.startswith("model.layers."))
    assert summary["parameters"]["trainable"] == pretrained[EMBEDDINGS].numel() + pretrained["model.norm.weight"].numel()


def test_gradual_unfreeze_opens_the_top_layer_after_n_epochs(project, tiny_causal_lm):
    # 4 epochs, one group every 2: the head alone for epochs 0-1, then the head + layer.1; layer.0 never.
    pretrained = load_file(tiny_causal_lm / "model.safetensors")
    spy = Spy()
    summary, saved = _train(tiny_causal_lm, [spy], strategy="gradual_unfreeze", unfreeze_every=2, learning_rate=1e-2)
    assert len(spy.epochs) == 4
    for epoch, weights in enumerate(spy.epochs):
        changed = _changed(pretrained, weights)
        assert changed[EMBEDDINGS]
        assert not any(v for name, v in changed.items() if name.startswith("model.layers.0."))
        assert any(v for name, v in changed.items() if _in_layer(name, 1)) == (epoch >= 2), epoch
    assert not any(v for name, v in _changed(pretrained, saved).items() if name.startswith("model.layers.0."))
    groups = {g["group"]: g for g in summary["parameters"]["groups"]}
    assert summary["parameters"]["trainable_at_end"] == summary["parameters"]["trainable"] + groups["layer.1"]["parameters"]


def test_a_crashed_lora_run_resumes_from_its_checkpoint_to_the_same_weights(project, tiny_causal_lm):
    settings = {"eval_steps": 2, "epochs": 3}
    reference_summary, reference = _train(tiny_causal_lm, **settings)

    with pytest.raises(KeyboardInterrupt):
        _train(tiny_causal_lm, [Crash(after=5)], **settings)
    checkpoints = sorted(p.name for p in paths.CHECKPOINTS.glob("*/checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]  # save_total_limit 2; step 5 was lost with the crash

    summary, resumed = _train(tiny_causal_lm, **settings)
    assert summary["resumed"] and not reference_summary["resumed"]
    assert summary["steps"] == reference_summary["steps"] and summary["val"] == reference_summary["val"]
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), name
    assert (paths.MODEL / "adapter/adapter_model.safetensors").is_file()
    assert not list(paths.CHECKPOINTS.glob("*/checkpoint-*"))  # finished: removed

"""train.strategy and its regularisers (finetune/training/strategies.py), run through the real train stage on
the tiny model: what each strategy freezes is checked on the SAVED weights against the pretrained file."""
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from finetune import paths
from finetune.errors import UserError
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training.fit import fit
from tests.support.params import load, tiny_params

BODY = ("embeddings.", "encoder.layer.0.", "encoder.layer.1.")


class Spy(TrainerCallback):
    """Keeps the optimizer the Trainer built and the encoder's weights at the end of every epoch."""

    def __init__(self):
        self.epochs = []

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer.optimizer  # inside accelerate's wrapper

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.epochs.append({name.removeprefix("bert."): p.detach().clone() for name, p in model.state_dict().items()})


def _train(params_dict, callbacks=()):
    params = load(params_dict)
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    label_map = read_json(paths.LABEL_MAP)
    summary = fit(get_task(params.task), params, splits, label_map, paths.MODEL, paths.TRAIN_LIVE, "test", extra_callbacks=callbacks)
    return summary, load_file(paths.MODEL / "model.safetensors")


def _changed(pretrained: dict, saved: dict) -> dict[str, bool]:
    """For every pretrained encoder tensor: did training change it (bit for bit)?"""
    return {name: not torch.equal(tensor, saved[f"bert.{name}"]) for name, tensor in pretrained.items() if f"bert.{name}" in saved}


@pytest.fixture
def pretrained(tiny_model):
    return load_file(tiny_model / "model.safetensors")


def _params(tiny_model, **train_keys):
    return tiny_params(tiny_model, train={"epochs": 4, **train_keys})


def test_partial_freezes_the_embeddings_and_the_first_layers_bit_for_bit(trained_workdir, tiny_model, pretrained):
    summary, saved = _train(_params(tiny_model, strategy="partial", freeze_layers=1))
    changed = _changed(pretrained, saved)
    assert not any(v for name, v in changed.items() if name.startswith(("embeddings.", "encoder.layer.0.")))
    assert all(v for name, v in changed.items() if name.startswith("encoder.layer.1.") and "LayerNorm" not in name)
    groups = {g["group"]: g for g in summary["parameters"]["groups"]}
    assert groups["embeddings"]["trainable"] == groups["layer.0"]["trainable"] == 0
    assert groups["layer.1"]["trainable"] == groups["layer.1"]["parameters"] > 0
    trainable = groups["layer.1"]["parameters"] + groups["head"]["parameters"]
    assert summary["parameters"]["trainable"] == trainable == summary["parameters"]["trainable_at_end"]


def test_linear_probe_trains_only_the_head(trained_workdir, tiny_model, pretrained):
    summary, saved = _train(_params(tiny_model, strategy="linear_probe", learning_rate=1e-2))
    changed = _changed(pretrained, saved)
    assert not any(v for name, v in changed.items() if name.startswith(BODY))
    assert changed["pooler.dense.weight"]
    head = {g["group"]: g for g in summary["parameters"]["groups"]}["head"]
    assert summary["parameters"]["trainable"] == head["parameters"]  # pooler + classifier


def test_gradual_unfreeze_opens_one_group_from_the_top_every_n_epochs(trained_workdir, tiny_model, pretrained):
    # 4 epochs, one group every 2: head only for epochs 0-1, then head + layer.1; layer.0 and embeddings never.
    spy = Spy()
    summary, saved = _train(_params(tiny_model, strategy="gradual_unfreeze", unfreeze_every=2), [spy])
    assert len(spy.epochs) == 4
    for epoch, weights in enumerate(spy.epochs):
        changed = {name: not torch.equal(tensor, weights[name]) for name, tensor in pretrained.items()}
        assert not any(v for name, v in changed.items() if name.startswith(("embeddings.", "encoder.layer.0.")))
        assert any(v for name, v in changed.items() if name.startswith("encoder.layer.1.")) == (epoch >= 2)
        assert changed["pooler.dense.weight"]
    assert not any(v for name, v in _changed(pretrained, saved).items() if name.startswith(("embeddings.", "encoder.layer.0.")))
    groups = {g["group"]: g for g in summary["parameters"]["groups"]}
    assert summary["parameters"]["trainable"] == groups["head"]["parameters"]  # at the start
    assert summary["parameters"]["trainable_at_end"] == groups["head"]["parameters"] + groups["layer.1"]["parameters"]


def test_lora_saves_a_merged_model_that_predicts_like_the_unmerged_adapter(trained_workdir, tiny_model, pretrained):
    from peft import PeftModel

    summary, saved = _train(_params(tiny_model, strategy="lora", learning_rate=1e-2, lora={"rank": 4, "alpha": 8}))
    changed = _changed(pretrained, saved)
    assert changed["encoder.layer.0.attention.self.query.weight"] and changed["encoder.layer.1.attention.self.value.weight"]
    assert changed["pooler.dense.weight"]  # the head (pooler + classifier) trains fully
    assert not any(v for name, v in changed.items() if "query" not in name and "value" not in name and name.startswith(BODY))
    assert not any(name.endswith(".bin") or "lora" in name for name in saved)  # merged: plain weights, no adapter keys
    assert summary["parameters"]["trainable_share"] < 0.5

    task = get_task("text-classification")
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    layout = read_json(paths.LABEL_MAP)
    processor = task.models.load_processor(str(paths.MODEL), False)
    merged = task.predict_proba(task.models.load_trained(str(paths.MODEL), False), processor, test, layout, 64)
    base = task.models.load_model(str(tiny_model), layout, load(tiny_params(tiny_model)).train)
    unmerged_model = PeftModel.from_pretrained(base, str(paths.MODEL / "adapter"))
    unmerged = task.predict_proba(unmerged_model, processor, test, layout, 64)
    assert merged == pytest.approx(unmerged, abs=1e-5)
    # (the tiny model's random encoder learns little with frozen embeddings; LoRA's quality is in docs/benchmarks/strategies-search.md)


def test_layer_lr_decay_and_sgd_reach_the_optimizer(trained_workdir, tiny_model):
    spy = Spy()
    summary, _ = _train(_params(tiny_model, epochs=1, optimizer="sgd", momentum=0.8, learning_rate=0.1, layer_lr_decay=0.5), [spy])
    expected = {"head": 0.1, "layer.1": 0.05, "layer.0": 0.025, "embeddings": 0.0125}
    assert {g["group"]: g["learning_rate"] for g in summary["parameters"]["groups"]} == pytest.approx(expected)
    assert isinstance(spy.optimizer, torch.optim.SGD)
    used = {g["group"]: (g["initial_lr"], g["momentum"]) for g in spy.optimizer.param_groups}
    assert used == {name: (pytest.approx(lr), 0.8) for name, lr in expected.items()}
    no_decay = [g for g in spy.optimizer.param_groups if g["weight_decay"] == 0]
    assert no_decay and all(p.dim() == 1 for g in no_decay for p in g["params"])  # biases and LayerNorms


def test_l1_shrinks_the_trained_weights_and_label_smoothing_softens_predictions(trained_workdir, tiny_model):
    def head_and_confidence(**keys):
        _, saved = _train(_params(tiny_model, epochs=12, **keys))
        task = get_task("text-classification")
        val = pd.read_parquet(paths.PREPARED / "val.parquet")
        probs = task.predict_proba(task.models.load_trained(str(paths.MODEL), False), task.models.load_processor(str(paths.MODEL), False),
                                   val, read_json(paths.LABEL_MAP), 64)
        return saved["classifier.weight"].abs().sum().item(), probs.max(axis=1).mean()

    plain_l1, plain_confidence = head_and_confidence()
    shrunk_l1, _ = head_and_confidence(l1=1e-2)
    _, smoothed_confidence = head_and_confidence(label_smoothing=0.6)
    assert shrunk_l1 < 0.8 * plain_l1
    assert smoothed_confidence < plain_confidence - 0.05


@pytest.mark.parametrize("keys, message", [
    ({"strategy": "partial", "freeze_layers": 3}, "train.freeze_layers is 3 but .* has only 2 layers"),
    ({"strategy": "lora", "lora": {"target_modules": ["query", "q_proj"]}}, r"train.lora.target_modules \['q_proj'\] are not modules"),
])
def test_settings_the_model_cannot_take_are_refused_before_training(trained_workdir, tiny_model, keys, message):
    paths.MODEL.rename(trained_workdir / "previous_model")
    with pytest.raises(UserError, match=message):
        _train(_params(tiny_model, **keys))
    assert not paths.MODEL.exists() and not (paths.CHECKPOINTS.exists() and any(paths.CHECKPOINTS.iterdir()))


def test_an_unknown_strategy_names_the_key(tiny_model, workdir):
    with pytest.raises(UserError, match="train.strategy: Input should be 'full', 'partial', 'linear_probe', 'gradual_unfreeze', 'adaptive' or 'lora'"):
        load(_params(tiny_model, strategy="adapters"))


def test_a_model_whose_layers_cannot_be_found_trains_full_but_refuses_layer_wise_settings(workdir):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    from finetune.config.sections import Train
    from finetune.training.strategies import apply_strategy, describe

    config = AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=32, num_labels=2)  # ALBERT: one shared layer, no list of 3
    config.save_pretrained("models/pretrained/albert")  # Train.model must name a model directory there
    model = AlbertForSequenceClassification(config)
    full = describe(apply_strategy(model, Train(model="models/pretrained/albert")), Train(model="models/pretrained/albert"))
    assert [g["group"] for g in full["groups"]] == ["all"] and full["trainable_share"] == 1.0
    with pytest.raises(UserError, match="cannot find the layers of AlbertForSequenceClassification: train.strategy 'partial'"):
        apply_strategy(model, Train(model="models/pretrained/albert", strategy="partial", freeze_layers=1))

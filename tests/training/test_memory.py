"""train.memory_budget_gib (finetune/training/memory.py): the estimate counts what autograd keeps, for the largest item,
without changing the run; a batch over the budget is computed in micro-batches and trains the same model; a model that
cannot fit one row is refused before training."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from finetune import paths
from finetune.errors import UserError
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training import memory
from finetune.training.fit import fit
from finetune.training.strategies import apply_strategy
from tests.support.params import load, tiny_params


def _saved_bytes(model, batch) -> int:
    """What autograd keeps for one forward pass of `batch`, each storage once, weights and buffers left out (by hand)."""
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in weights:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch)
    return sum(seen.values())


def _model_and_data(tiny_model, **train):
    params = load(tiny_params(tiny_model, train=train))
    task, label_map = get_task(params.task), read_json(paths.LABEL_MAP)
    processor = task.models.load_processor(str(tiny_model), False)
    model = apply_strategy(task.models.load_model(str(tiny_model), label_map, params.train), params.train)
    dataset = task.models.dataset(pd.read_parquet(paths.PREPARED / "train.parquet"), label_map, processor, params.preprocess)
    return params, model, dataset, task.models.collator(processor)


def test_the_estimate_is_what_autograd_keeps_for_the_longest_text_and_scales_with_rows(trained_workdir, tiny_model):
    _, model, dataset, collate = _model_and_data(tiny_model)
    per_row, largest = memory.saved_bytes_per_row(model, dataset, collate)
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    assert lengths[largest] == max(lengths)  # every item is sampled when there are fewer than SAMPLE
    two, four = collate([dataset[largest]] * 2), collate([dataset[largest]] * 4)
    two.pop("labels"), four.pop("labels")
    assert per_row == _saved_bytes(model, two) // 2
    assert _saved_bytes(model, four) == pytest.approx(4 * per_row, rel=0.05)  # activations grow with the rows
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert memory.fixed_bytes(model, "adamw") == 4 * sum(p.numel() for p in model.parameters()) + 4 * 3 * trainable  # + grads, 2 moments


class _Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.drop = nn.BatchNorm1d(4), nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.norm(x))


def test_probing_changes_neither_the_random_streams_nor_batchnorm_statistics():
    model = _Normed().train()
    dataset = [{"x": torch.randn(4) * 5 + 3} for _ in range(10)]
    collate = lambda items: {"x": torch.stack([item["x"] for item in items] * 2)}  # noqa: E731 (BatchNorm needs 2 rows)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), model.norm.running_mean.clone())
    memory.saved_bytes_per_row(model, dataset, collate)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(model.norm.running_mean, before[2])
    model(**collate(dataset[:1]))
    assert not torch.equal(model.norm.running_mean, before[2])  # a forward pass in train mode does move them


def _fit(params):
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    return fit(get_task(params.task), params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "test")


def _val_logits(params) -> np.ndarray:
    task = get_task(params.task)
    model = task.models.load_trained(str(paths.MODEL), False).eval()
    processor = task.models.load_processor(str(paths.MODEL), False)
    rows = task.models.dataset(pd.read_parquet(paths.PREPARED / "val.parquet"), read_json(paths.LABEL_MAP), processor)
    batch = task.models.collator(processor)([rows[i] for i in range(8)])
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits.numpy()


def test_a_batch_over_the_budget_trains_in_micro_batches_into_the_same_model(trained_workdir, tiny_model, monkeypatch):
    train = {"epochs": 2, "dropout": 0.0, "memory_budget_gib": None}  # no dropout: the micro-batches draw no other masks
    whole = _fit(load(tiny_params(tiny_model, train=train)))
    assert "memory" not in whole
    expected = _val_logits(load(tiny_params(tiny_model, train=train)))

    _, model, dataset, collate = _model_and_data(tiny_model, **train)
    per_row, fixed = memory.saved_bytes_per_row(model, dataset, collate)[0], memory.fixed_bytes(model, "adamw")
    budget = (fixed + 5 * per_row) / memory.GIB  # room for 5 of the batch's 8 rows: 2 micro-batches of 4
    params = load(tiny_params(tiny_model, train={**train, "memory_budget_gib": budget}))
    split = _fit(params)
    assert split["memory"]["micro_batches"] == 2 and split["memory"]["rows_per_forward"] == 4
    assert split["memory"]["why"].startswith("a batch of 8 rows would need an estimated")
    recorded = json.loads((paths.MODEL / "training_args.json").read_text())
    assert recorded["per_device_train_batch_size"] == 4 and recorded["gradient_accumulation_steps"] == 2
    assert split["steps"] == whole["steps"] and split["schedule"] == whole["schedule"]  # one optimizer step per batch of 8
    assert np.allclose(_val_logits(params), expected, atol=1e-4)  # the same model, up to the order floats were summed in


def test_a_model_that_cannot_fit_one_row_is_refused_before_training(trained_workdir, tiny_model):
    params = load(tiny_params(tiny_model, train={"memory_budget_gib": 1e-6}))
    with pytest.raises(UserError, match=r"train.memory_budget_gib: even one row at a time needs an estimated .* GiB \(.* GiB of "
                                        r"weights, gradients and optimizer state \+ .* MiB of activations for train item \d+\) but "
                                        r"the budget is 0.00 GiB"):
        _fit(params)
    assert not any(paths.CHECKPOINTS.glob("*/checkpoint-*"))


def test_auto_is_half_the_available_memory_per_process_on_a_cpu():
    available = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemAvailable")) * 1024
    assert memory.budget_bytes("auto", "cpu", 2) == pytest.approx(available / 4, rel=0.05)
    assert memory.budget_bytes(1.5, "cpu", 2) == int(1.5 * memory.GIB)

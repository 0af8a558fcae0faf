"""train.memory_budget_gib: whether a batch of train.batch_size rows fits the memory a run may use and, when it does not,
into how many equal micro-batches each batch is computed (gradient accumulation). The optimizer still steps on the whole
batch, so the run trains on the batch it was given: the budget decides how a batch is computed, never which batch.
(Splitting changes only the float summation order, and BatchNorm's statistics, which are per forward pass.)

The estimate, in bytes, made before training on the model as it will train:
  weights (every parameter) + gradients and the optimizer's state of the trainable ones (AdamW: two moments, SGD: one)
  + rows x the tensors autograd keeps for the backward pass of one row of the largest train item in a sample, counted
    in one forward pass of two copies of it with torch.autograd.graph.saved_tensors_hooks (each storage once), halved.
It is exact for what it counts and the same on every machine (nothing is timed or read from an allocator); it leaves out
the backward pass's transient gradients and the allocator's cache, which the budget's headroom covers: auto = 90 % of
the GPU's free memory, or on a CPU half of the memory the OS reports available, shared by train.processes. It counts
activations as float32 (bf16 autocast halves most of them) and every layer's even under gradient_checkpointing, so it
errs high there. HF's `auto_find_batch_size` was the alternative: it halves the batch on a CUDA out-of-memory error,
which changes the batch (and the results) and cannot help on a CPU, where running out of memory kills the process.
"""
from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch

from finetune.errors import UserError

GIB = 2**30
SAMPLE = 256  # train items looked at for the largest (text lengths vary; images do not)
GPU_SHARE, CPU_SHARE = 0.9, 0.5


def budget_bytes(setting: float | str, device: str, processes: int) -> int:
    """The bytes one process may use: a number of GiB as set, or auto (see the module's docstring)."""
    if setting != "auto":
        return int(setting * GIB)
    if device == "cuda":
        return int(GPU_SHARE * torch.cuda.mem_get_info()[0])
    available_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable"))
    return int(CPU_SHARE * available_kib * 1024 / processes)


@contextlib.contextmanager
def untouched(model: torch.nn.Module):
    """Every random generator and the model's buffers (BatchNorm statistics) as they were: probing must not change the run."""
    python, numpy_state, buffers = random.getstate(), np.random.get_state(), [b.detach().clone() for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)
            with torch.no_grad():
                for buffer, saved in zip(model.buffers(), buffers):
                    buffer.copy_(saved)


def _size(item: dict) -> int:
    return sum(value.numel() if torch.is_tensor(value) else int(np.size(value)) for key, value in item.items() if key != "labels")


def saved_bytes_per_row(model: torch.nn.Module, dataset, collate) -> tuple[int, int]:
    """(bytes autograd keeps for one row of the largest sampled item, that item's index)."""
    with untouched(model):
        indices = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), SAMPLE)).astype(int))
        largest = int(max(indices, key=lambda i: _size(dataset[int(i)])))
        batch = collate([dataset[largest]] * 2)  # two rows: BatchNorm refuses one value per channel in training
        batch.pop("labels", None)
        weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}  # counted in fixed_bytes
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(**batch)
    return sum(seen.values()) // 2, largest


def fixed_bytes(model: torch.nn.Module, optimizer: str) -> int:
    """Weights, plus each trainable weight's gradient and optimizer state (AdamW: 2 moments; SGD: momentum buffer)."""
    states = 2 if optimizer == "adamw" else 1
    return sum(p.numel() * p.element_size() * (1 + (1 + states) * p.requires_grad) for p in model.parameters())


def micro_batches(train, model: torch.nn.Module, dataset, collate, device: str, processes: int) -> tuple[int, dict | None]:
    """(how many micro-batches each batch of train.batch_size rows is computed in, what was measured and why); (1, None)
    when train.memory_budget_gib is null. A batch that does not fit one row at a time is an error, before any training."""
    if train.memory_budget_gib is None:
        return 1, None
    budget = budget_bytes(train.memory_budget_gib, device, processes)
    per_row, largest = saved_bytes_per_row(model, dataset, collate)
    fixed = fixed_bytes(model, train.optimizer)
    need = lambda rows: fixed + rows * per_row  # noqa: E731
    facts = {"budget_gib": round(budget / GIB, 3), "budget": "train.memory_budget_gib" if train.memory_budget_gib != "auto" else
             f"auto: {'90 % of the GPU memory free' if device == 'cuda' else '50 % of the memory available'}"
             + (f", over {processes} processes" if processes > 1 and device != "cuda" else ""),
             "weights_gradients_optimizer_gib": round(fixed / GIB, 3), "activations_per_row_mib": round(per_row / 2**20, 2),
             "largest_item": largest}
    if need(1) > budget:
        raise UserError(f"train.memory_budget_gib: even one row at a time needs an estimated {need(1) / GIB:.2f} GiB "
                        f"({fixed / GIB:.2f} GiB of weights, gradients and optimizer state + {per_row / 2**20:.1f} MiB of activations "
                        f"for train item {largest}) but the budget is {budget / GIB:.2f} GiB; use a smaller model or inputs "
                        "(max_length, image_size, block_size), strategy lora, or a larger budget")
    splits = next(k for k in range(1, train.batch_size + 1) if train.batch_size % k == 0 and need(train.batch_size // k) <= budget)
    rows = train.batch_size // splits
    facts |= {"micro_batches": splits, "rows_per_forward": rows, "estimate_gib": round(need(rows) / GIB, 3),
              "why": (f"a batch of {train.batch_size} rows fits: estimated {need(rows) / GIB:.2f} of {budget / GIB:.2f} GiB" if splits == 1 else
                      f"a batch of {train.batch_size} rows would need an estimated {need(train.batch_size) / GIB:.2f} GiB of "
                      f"{budget / GIB:.2f}: computed as {splits} micro-batches of {rows} rows ({need(rows) / GIB:.2f} GiB), "
                      "gradients accumulated, one optimizer step per batch")}
    return splits, facts

"""Knowledge distillation (Hinton et al. 2015) with the transformers Trainer.

The student is trained on   alpha * CE(student, true label)
                          + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
the T^2 keeping the soft term's gradients on the scale of the hard one. A numeric label (finetune/data/numbers.py):
alpha * MSE(student, standardised label) + (1 - alpha) * MSE(student, teacher), both on the standardised scale. Teacher logits are computed
once, before training (they are data, not a second model in memory). The same loop recovers a
pruned model's accuracy (torch.nn.utils.prune masks stay applied while it trains). After training, the running
statistics of every BatchNorm are recomputed over the training rows (recalibrate_batchnorm says why).
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn
from transformers import Trainer, TrainingArguments

from finetune.config.sections import Distill
from finetune.data.heads import IGNORE
from finetune.models import anatomy

TEACHER_LOGITS = "teacher_logits"


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float,
            sizes: list[int] | None = None, target: dict | None = None) -> torch.Tensor:
    """sizes (several heads, finetune/data/heads.py): each head's outputs; the loss is the heads' sum, the hard term on the
    rows that have that head's label (IGNORE elsewhere), the soft term on every row (the teacher answers every head).
    target: a numeric label's mean and std (the teacher's `logits` are its standardised predictions); with sizes, one
    per head (None: a class head; a number head's hard term on the rows that have its label, NaN elsewhere)."""
    if target is not None and not sizes:
        student, value = student_logits.float().reshape(-1), labels.float().reshape(-1)
        present = ~torch.isnan(value)
        wanted = (torch.nan_to_num(value) - target["mean"]) / target["std"]
        hard = ((student - wanted) ** 2 * present).sum() / present.sum().clamp(min=1)
        return alpha * hard + (1 - alpha) * F.mse_loss(student, teacher_logits.float().reshape(-1))
    if sizes:
        targets = target or [None] * len(sizes)
        return sum(kd_loss(student, teacher, labels[:, i] if targets[i] else labels[:, i].long(), temperature, alpha, target=targets[i])
                   for i, (student, teacher) in enumerate(zip(student_logits.split(sizes, dim=-1), teacher_logits.split(sizes, dim=-1))))
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1), F.log_softmax(teacher_logits / temperature, dim=-1),
                    log_target=True, reduction="batchmean") * temperature**2
    hard = F.cross_entropy(student_logits, labels, ignore_index=IGNORE) if (labels != IGNORE).any() else student_logits.sum() * 0
    return alpha * hard + (1 - alpha) * soft


def student_layers(depth: int, chosen: list[int] | None) -> list[int]:
    """Default: every other layer, ending with the top one (the layer the classifier head was tuned on)."""
    layers = chosen if chosen is not None else list(range(depth - 1, -1, -2))[::-1]
    if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= depth:
        raise ValueError(f"compress.distill.layers {chosen} must be increasing layer indices in [0, {depth - 1}]")
    return layers


def make_student(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of teacher keeping only `layers` of its transformer blocks (embeddings and head shared as copies)."""
    student = copy.deepcopy(teacher)
    parent, attribute, blocks = anatomy.block_list(student)
    setattr(parent, attribute, type(blocks)(*(blocks[i] for i in layers)) if isinstance(blocks, nn.Sequential)
            else nn.ModuleList(blocks[i] for i in layers))
    student.config.num_hidden_layers = len(layers)
    for index, block in enumerate(getattr(parent, attribute)):
        for module in block.modules():
            if hasattr(module, "layer_idx"):  # a decoder's KV cache has one slot per kept layer, found by this index
                module.layer_idx = index
    return student


class _WithTeacher(torch.utils.data.Dataset):
    def __init__(self, base: torch.utils.data.Dataset, teacher_logits: np.ndarray):
        self.base, self.teacher_logits = base, teacher_logits.astype(np.float32)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        return {**self.base[index], TEACHER_LOGITS: self.teacher_logits[index].tolist()}


def _with_teacher_logits(collator):
    """The task's collator pads the features; the teacher's logits (already one length) are stacked beside."""
    def collate(items: list[dict]) -> dict:
        logits = torch.tensor([item.pop(TEACHER_LOGITS) for item in items])
        return {**collator(items), TEACHER_LOGITS: logits}
    return collate


class DistillationTrainer(Trainer):
    def __init__(self, *args, temperature: float, alpha: float, sizes: list[int] | None, target: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha, self.sizes, self.target = temperature, alpha, sizes, target

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits, labels = inputs.pop(TEACHER_LOGITS), inputs.pop("labels")
        outputs = model(**inputs)
        loss = kd_loss(outputs.logits, teacher_logits, labels, self.temperature, self.alpha, self.sizes, self.target)
        return (loss, outputs) if return_outputs else loss


def train_on_teacher(model: nn.Module, dataset: torch.utils.data.Dataset, teacher_logits: np.ndarray, collator, config: Distill,
                     epochs: float, seed: int, device: str, bf16: bool, work_dir: Path, sizes: list[int] | None = None,
                     target: dict | list | None = None) -> dict:
    """Train model in place on (features, label, teacher logits: log-probabilities, per head with several heads, whose
    output `sizes` kd_loss then takes; a numeric label's standardised predictions, with its `target`); returns the
    Trainer's train metrics."""
    args = TrainingArguments(
        output_dir=str(work_dir), num_train_epochs=epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
        logging_steps=50, save_strategy="no", report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
        use_cpu=device == "cpu", bf16=bf16, dataloader_num_workers=0,
        remove_unused_columns=False,  # else the Trainer drops teacher_logits: forward() has no such argument
    )
    trainer = DistillationTrainer(model=model, args=args, train_dataset=_WithTeacher(dataset, teacher_logits), data_collator=_with_teacher_logits(collator),
                                  temperature=config.temperature, alpha=config.alpha, sizes=sizes, target=target)
    result = trainer.train()
    shutil.rmtree(work_dir, ignore_errors=True)
    recalibrated = recalibrate_batchnorm(model, dataset, collator, config.batch_size)
    model.to("cpu")
    return {"train_runtime_s": round(result.metrics["train_runtime"], 1), "train_loss": round(result.metrics["train_loss"], 4),
            "steps": trainer.state.global_step, **({"batchnorm_recalibrated": recalibrated} if recalibrated else {})}


class _Keywords(nn.Module):
    """The model called with a batch's features as keywords (update_bn passes one positional input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: dict):
        return self.model(**features)


def recalibrate_batchnorm(model: nn.Module, dataset, collator, batch_size: int) -> int:
    """Every BatchNorm's running statistics recomputed as the exact average over the training rows (torch.optim.swa_utils
    .update_bn), the model then left in eval mode; returns how many layers. Why: a student (or a pruned net) no longer
    computes the teacher's activations, but its BatchNorm layers start from the teacher's statistics, and a short training
    at EfficientNet-Lite's momentum (0.01) barely moves them while it learns with each batch's own statistics; eval mode
    then normalises with the stale ones. Seen on an AMD EPYC: ten epochs of distillation made the student's KL to its
    teacher 0.56 -> 4.25 in eval mode; recalibrated, 0.12 (tests/compression/test_convnets.py)."""
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    if not norms:
        return 0
    device = next(model.parameters()).device

    def features(items: list[dict]) -> dict:
        return {key: value.to(device) for key, value in collator(items).items() if key != "labels"}

    update_bn(torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=features), _Keywords(model))
    model.eval()
    return len(norms)

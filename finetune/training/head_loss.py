"""The torch side of several heads (finetune/data/heads.py says what they are): the training loss, masked cross-entropy
per class head (a number head's masked squared error) combined with fixed weights or learned uncertainty weights (Kendall, Gal & Cipolla 2018); HeadView, one head
of a trained model as a one-head classifier, and NumberView, a numeric label's model answering in the label's units (what
the explainers take)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from finetune.data.heads import IGNORE, Heads
from finetune.errors import UserError

# log-variances learn at this rate whatever train.learning_rate is: at a fine-tuning rate (5e-5) Adam would move
# them ~0.015 in 300 steps, i.e. leave the weights where they started
UNCERTAINTY_LR = 1e-2
STATE_FILE = "head_weights.json"  # in each checkpoint: the learned log-variances, so a resumed run continues them


class HeadLoss(nn.Module):
    """The training loss of several heads: masked cross-entropy per head, combined with fixed or learned weights."""

    def __init__(self, heads: Heads, weights: dict[str, float] | str, label_smoothing: float = 0.0):
        super().__init__()
        self.sizes, self.label_smoothing = heads.sizes, label_smoothing
        self.targets = [heads.target_of(head) for head in heads.classes]  # a number head's mean and std, else None
        self.uncertainty = weights == "uncertainty"
        fixed = [1.0] * len(self.sizes) if self.uncertainty else [float(weights.get(head, 1.0)) for head in heads.classes]
        self.register_buffer("weights", torch.tensor(fixed))
        self.log_variance = nn.Parameter(torch.zeros(len(self.sizes)), requires_grad=self.uncertainty)

    def per_head(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each head's mean loss over the rows that have its label (0 when none in the batch does): a class head's
        cross-entropy, a number head's squared error on its label standardised by the train mean and std (NaN: missing)."""
        losses = []
        for i, (chunk, target) in enumerate(zip(logits.float().split(self.sizes, dim=-1), self.targets)):
            if target is not None:
                value = labels[:, i].float()
                present = ~torch.isnan(value)
                wanted = (torch.nan_to_num(value) - target["mean"]) / target["std"]
                total = ((chunk[:, 0] - wanted) ** 2 * present).sum()
                losses.append(total / present.sum().clamp(min=1))
                continue
            classes = labels[:, i].long()
            total = F.cross_entropy(chunk, classes, ignore_index=IGNORE, reduction="sum", label_smoothing=self.label_smoothing)
            losses.append(total / (classes != IGNORE).sum().clamp(min=1))
        return torch.stack(losses)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = self.per_head(logits, labels)
        if self.uncertainty:
            return (torch.exp(-self.log_variance) * losses + self.log_variance).sum()
        return (self.weights * losses).sum()

    def learned(self, heads) -> dict[str, dict[str, float]] | None:
        """The learned weights exp(-s) and log-variances s per head, for train.json."""
        if not self.uncertainty:
            return None
        values = self.log_variance.detach().cpu().tolist()
        return {head: {"weight": round(float(np.exp(-s)), 4), "log_variance": round(s, 4)} for head, s in zip(heads, values)}

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(self.log_variance.detach().cpu().tolist()))

    def load(self, folder: Path) -> None:
        path = folder / STATE_FILE
        if not path.is_file():
            raise UserError(f"{folder} has no {STATE_FILE}: it was not written by a run of several heads with uncertainty weights; "
                            "delete the checkpoint folder to start afresh")
        with torch.no_grad():
            self.log_variance.copy_(torch.tensor(json.loads(path.read_text())))


class ModelView(nn.Module):
    """A model whose logits are seen transformed (`view`); every other attribute (embeddings, layers, config...) is the
    model's own, so an explainer written for plain classifiers (hooks on inner layers) works through the view."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def view(self, logits):
        raise NotImplementedError

    def forward(self, *args, **kwargs):
        output = self.model(*args, **kwargs)
        output.logits = self.view(output.logits)
        return output

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


class HeadView(ModelView):
    """A model of several heads seen through one head: only that head's logits, so an explainer written for one-head
    classifiers (softmax over the logits) explains that head."""

    def __init__(self, model: nn.Module, heads: Heads, head: str):
        super().__init__(model)
        start = sum(heads.sizes[:list(heads.classes).index(head)])
        self.outputs = slice(start, start + len(heads.classes[head]))

    def view(self, logits):
        return logits[..., self.outputs]


class NumberView(ModelView):
    """A numeric label's model (finetune/data/numbers.py) whose output is the prediction in the label's units, and says so
    (`explains_value`: finetune/attribution attributes that value, not a softmax)."""
    explains_value = True

    def __init__(self, model: nn.Module, target: dict):
        super().__init__(model)
        self.target = target

    def view(self, logits):
        return logits * self.target["std"] + self.target["mean"]


def viewed_as(view: nn.Module, model: nn.Module) -> nn.Module:
    """model seen as `view` sees its own (another model of the same data, e.g. a compressed one): a NumberView keeps its
    units; anything else is the model itself."""
    return NumberView(model, view.target) if isinstance(view, NumberView) else model

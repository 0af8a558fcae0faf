"""What every explainer shares: the deletion test of an attribution's faithfulness (deletion.py), and what is explained:
the probability of the predicted class, or a numeric label's predicted value (a model seen through
finetune/training/head_loss.py NumberView, which says so by `explains_value`)."""
from __future__ import annotations


def explains_value(model) -> bool:
    return bool(getattr(model, "explains_value", False))


def explained(model, logits):
    """The scores an explainer attributes, rows x outputs: class probabilities, or the predicted value (rows x 1)."""
    import torch

    return logits.float() if explains_value(model) else torch.softmax(logits.float(), dim=-1)


def target_of(model, labels: list[str], predicted) -> int:
    """The output explained for an example: its predicted class's, or a numeric label's only output."""
    return 0 if explains_value(model) else labels.index(predicted)


def shown(model, labels: list[str], target: int, predicted):
    """The prediction as an explanation lists it: the class name, or the value."""
    return float(predicted) if explains_value(model) else labels[target]

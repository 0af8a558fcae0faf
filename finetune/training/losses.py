"""What a classifier trains against when its classes are imbalanced (issue 35): the loss (train.loss), its class
weights (train.class_weights) and which training rows it sees (train.balance).

- `cross_entropy` (the default) is the Trainer's own (label smoothing included), so default runs are unchanged.
- `weighted_cross_entropy`: each row's cross-entropy times its class's weight, averaged as torch's weighted
  cross-entropy averages (over the weights of the batch's rows).
- `focal` (Lin et al. 2017, softmax form): -sum_c w_c t_c (1 - p_c)^gamma log p_c, averaged over rows: rows the model
  already gets right weigh less; gamma 0 is cross-entropy. The weights are its alpha (none unless class_weights is set).
- class weights: `balanced` = rows / (classes x rows of the class) on the train split (scikit-learn's
  compute_class_weight), or {label: weight} (labels not named: 1).
- `balance`: oversample (every class drawn up to the largest, each row kept at least once) or undersample (every class
  drawn down to the smallest), seeded by train.seed, on the train split only: val and test keep the true class mix.
Several heads (data.label_columns) and generative tasks train with cross-entropy only: the other settings are refused.
Numeric labels (data.label_type number, finetune/data/numbers.py): `mse`, `huber` (squared up to train.huber_delta, then
linear: big errors pull less) or `mae`, between the model's one output and the label standardised by the train mean and
standard deviation (`regression_loss`).
Probabilities of a weighted or focal model are biased toward the rare classes; the ensemble stage fits each member's
temperature on val before mixing, and its report shows the calibration.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from finetune.data import labels as label_codec
from finetune.errors import UserError


def class_weights(train, counts: np.ndarray, classes: list[str]) -> torch.Tensor | None:
    """One weight per class (label_map order) for train.loss, or None (unweighted). counts: train rows per class."""
    chosen = train.class_weights if train.class_weights is not None or train.loss != "weighted_cross_entropy" else "balanced"
    if chosen is None:
        return None
    if chosen == "balanced":
        if (counts == 0).any():
            missing = [classes[i] for i in np.flatnonzero(counts == 0)]
            raise UserError(f"train.class_weights balanced: classes {missing} have no train rows, so no weight; name the weights "
                            "({label: weight}) or drop those classes (data.keep_labels)")
        return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
    named = {label_codec.name(label): weight for label, weight in chosen.items()}
    unknown = sorted(set(named) - set(classes))
    if unknown:
        raise UserError(f"train.class_weights names {unknown}, not classes of this data; classes: {classes}")
    return torch.tensor([named.get(label, 1.0) for label in classes], dtype=torch.float32)


def loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, weights: torch.Tensor | None, gamma: float,
         label_smoothing: float) -> torch.Tensor:
    """The batch's mean loss; labels are class indices, or class probabilities (MixUp/CutMix)."""
    logits = logits.float()
    weights = None if weights is None else weights.to(logits.device)
    if kind != "focal":
        return F.cross_entropy(logits, labels, weight=weights, label_smoothing=label_smoothing)
    classes = logits.shape[-1]
    targets = labels if labels.is_floating_point() else F.one_hot(labels, classes).float()
    targets = targets * (1 - label_smoothing) + label_smoothing / classes
    log_p = F.log_softmax(logits, dim=-1)
    per_class = -targets * (1 - log_p.exp()).pow(gamma) * log_p
    return (per_class if weights is None else per_class * weights).sum(dim=-1).mean()


def regression_loss(outputs: torch.Tensor, labels: torch.Tensor, kind: str, target: dict, delta: float) -> torch.Tensor:
    """The batch's mean mse / huber / mae between the model's outputs (rows x 1, standardised) and labels in their own units."""
    predicted = outputs.float().reshape(-1)
    wanted = (labels.float().reshape(-1) - target["mean"]) / target["std"]
    if kind == "mse":
        return F.mse_loss(predicted, wanted)
    if kind == "huber":
        return F.huber_loss(predicted, wanted, delta=delta)
    return F.l1_loss(predicted, wanted)


def balanced(frame: pd.DataFrame, how: str, seed: int) -> tuple[pd.DataFrame, dict]:
    """frame's rows resampled so every class (the `label` column: class indices) has as many as the largest (oversample)
    or the smallest (undersample); the original order kept, repeats next to their row. (frame, what was done)."""
    if how == "none":
        return frame, {}
    rng = np.random.default_rng(seed)
    groups = {label: np.flatnonzero(frame["label"].to_numpy() == label) for label in sorted(frame["label"].unique())}
    sizes = [len(rows) for rows in groups.values()]
    target = max(sizes) if how == "oversample" else min(sizes)
    chosen = [np.concatenate([rows, rng.choice(rows, target - len(rows), replace=True)]) if how == "oversample"
              else rng.choice(rows, target, replace=False) for rows in groups.values()]
    order = np.sort(np.concatenate(chosen), kind="stable")
    return frame.iloc[order].reset_index(drop=True), {"how": how, "rows_before": len(frame), "rows_after": len(order),
                                                      "rows_per_class": target}

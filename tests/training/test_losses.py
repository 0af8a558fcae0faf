"""train.loss, train.class_weights and train.balance (finetune/training/losses.py): the losses against torch's own and
their definitions, the weights against scikit-learn's, the resampling's counts, and through the real train stage on the
tiny model: a heavily weighted class gets predicted more, and what was used is in the summary."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from finetune import paths
from finetune.errors import UserError
from finetune.families.classification.report import _imbalance
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training import losses
from finetune.training.fit import fit
from tests.support.params import load, tiny_params

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
LABELS = torch.tensor([0, 2, 0, 2])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_focal_with_gamma_0_is_cross_entropy_on_labels_and_on_probabilities(smoothing):
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.1, 0.0, 0.9]])
    for labels in (LABELS, soft):
        expected = F.cross_entropy(LOGITS, labels, label_smoothing=smoothing)
        assert losses.loss(LOGITS, labels, "focal", None, 0.0, smoothing).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_is_its_definition_and_weighs_rows_already_right_less():
    weights = torch.tensor([1.0, 2.0, 0.5])
    p = LOGITS.softmax(-1)[torch.arange(4), LABELS]
    expected = (-weights[LABELS] * (1 - p) ** 2 * p.log()).mean()
    assert losses.loss(LOGITS, LABELS, "focal", weights, 2.0, 0.0).item() == pytest.approx(expected.item(), rel=1e-6)
    per_row = [losses.loss(LOGITS[i:i + 1], LABELS[i:i + 1], "focal", None, 2.0, 0.0) / F.cross_entropy(LOGITS[i:i + 1], LABELS[i:i + 1])
               for i in range(4)]
    assert per_row[3] < per_row[0] < per_row[2]  # row 3 is right with p 0.96, row 0 with p 0.77, row 2 is wrong


def test_weighted_cross_entropy_is_torchs_and_balanced_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    weights = torch.tensor([1.0, 2.0, 0.5])
    assert losses.loss(LOGITS, LABELS, "weighted_cross_entropy", weights, 2.0, 0.0).item() == pytest.approx(
        F.cross_entropy(LOGITS, LABELS, weight=weights).item(), rel=1e-6)
    train = SimpleNamespace(loss="weighted_cross_entropy", class_weights=None)
    counts = np.array([6, 3, 1])
    rows = np.repeat([0, 1, 2], counts)
    assert losses.class_weights(train, counts, ["a", "b", "c"]).numpy() == pytest.approx(
        compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=rows), rel=1e-6)
    assert losses.class_weights(SimpleNamespace(loss="focal", class_weights=None), counts, ["a", "b", "c"]) is None


def test_named_class_weights_take_the_datas_values_and_unknown_or_empty_classes_are_refused():
    named = SimpleNamespace(loss="focal", class_weights={7: 3.0, "b": 0.5})
    assert losses.class_weights(named, np.array([2, 2, 2]), ["7", "b", "c"]).tolist() == [3.0, 0.5, 1.0]
    with pytest.raises(UserError, match=r"train.class_weights names \['7'\], not classes of this data; classes: \['a', 'b'\]"):
        losses.class_weights(named, np.array([2, 2]), ["a", "b"])
    balanced = SimpleNamespace(loss="weighted_cross_entropy", class_weights="balanced")
    with pytest.raises(UserError, match=r"classes \['b'\] have no train rows"):
        losses.class_weights(balanced, np.array([4, 0]), ["a", "b"])


@pytest.mark.parametrize("how, per_class", [("oversample", 6), ("undersample", 1)])
def test_balance_resamples_every_class_to_the_largest_or_smallest_with_the_seed(how, per_class):
    frame = pd.DataFrame({"label": [0] * 6 + [1] * 3 + [2], "row": range(10)})
    resampled, facts = losses.balanced(frame, how, seed=5)
    assert resampled["label"].value_counts().to_dict() == {0: per_class, 1: per_class, 2: per_class}
    assert facts == {"how": how, "rows_before": 10, "rows_after": 3 * per_class, "rows_per_class": per_class}
    if how == "oversample":
        assert set(resampled["row"]) == set(range(10))  # every row kept at least once
    assert resampled.equals(losses.balanced(frame, how, seed=5)[0]) and losses.balanced(frame, "none", 5)[0] is frame


def _train(params_dict):
    params = load(params_dict)
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    return fit(get_task(params.task), params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "test")


def _predicted_share(label: str) -> float:
    task = get_task("text-classification")
    val, label_map = pd.read_parquet(paths.PREPARED / "val.parquet"), read_json(paths.LABEL_MAP)
    probs = task.predict_proba(task.models.load_trained(str(paths.MODEL), False), task.models.load_processor(str(paths.MODEL), False),
                               val, label_map, 64)
    return float(np.mean(probs.argmax(axis=1) == label_map["labels"].index(label)))


def test_a_heavily_weighted_class_is_predicted_more_and_the_summary_says_what_trained(trained_workdir, tiny_model):
    labels = read_json(paths.LABEL_MAP)["labels"]
    favoured = labels[0]
    plain = _predicted_share(favoured)  # the shared trained project's model: plain cross-entropy
    summary = _train(tiny_params(tiny_model, train={"epochs": 4, "loss": "focal", "class_weights": {favoured: 50.0},
                                                    "balance": "oversample"}))
    assert _predicted_share(favoured) > plain
    imbalance = summary["imbalance"]
    assert imbalance["loss"] == "focal" and imbalance["focal_gamma"] == 2.0 and imbalance["class_weights"][favoured] == 50.0
    counts = pd.read_parquet(paths.PREPARED / "train.parquet")["label"].value_counts()
    assert imbalance["balance"] == {"how": "oversample", "rows_before": int(counts.sum()), "rows_after": int(counts.max()) * len(counts),
                                    "rows_per_class": int(counts.max())}
    assert summary["schedule"]["rows"] == int(counts.max()) * len(counts)  # the schedule counts the rows training sees
    shown = _imbalance(imbalance)  # the report's Training section
    assert shown.startswith("loss focal (gamma 2.0); class weights ") and f"{favoured} 50" in shown
    assert shown.endswith(f"train rows oversampled {int(counts.sum())} -> {int(counts.max()) * len(counts)}")


def test_imbalance_settings_are_refused_for_several_heads_before_any_training(trained_workdir, tiny_model):
    params = load(tiny_params(tiny_model, train={"loss": "focal"}))
    with pytest.raises(UserError, match="train.loss focal, train.class_weights and train.balance are for classifiers with one head; "
                                        "data.label_columns names several"):
        fit(get_task(params.task), params, {"train": pd.DataFrame({"label": [[0, 1]]})}, {"heads": {"a": ["x"], "b": ["y"]}},
            paths.MODEL, paths.TRAIN_LIVE, "test")
    assert not paths.CHECKPOINTS.exists() or not any(paths.CHECKPOINTS.iterdir())

"""The combination methods on hand-made probabilities with known answers, and the ensemble stage
on hand-written member files: nothing fitted may depend on test labels; bad members are named."""
import json

import numpy as np
import pandas as pd
import pytest

from finetune import paths
from finetune.errors import UserError
from finetune.families.classification import combining as ensemble
from finetune.families.classification import probabilities
from stages import ensemble as stage
from tests.support.data import make_rows
from tests.support.params import load, tiny_params

CLASSES = ["negative", "neutral", "positive"]


def test_hard_vote_takes_the_majority_and_breaks_ties_by_mean_probability_then_lowest_index():
    a = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.4, 0.35, 0.25], [0.2, 0.5, 0.3]])
    b = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.35, 0.4], [0.2, 0.3, 0.5]])
    c = np.array([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.25, 0.4, 0.35], [0.3, 0.4, 0.3]])
    shares = ensemble.hard_vote([a, b, c])
    # row 0: 2 votes negative; row 1: one vote each, mean p favours neutral (0.5);
    # row 2: one vote each, means (0.3, 0.367, 0.333) -> neutral; row 3: 2 votes neutral
    assert shares.argmax(axis=1).tolist() == [0, 1, 1, 1]
    assert np.allclose(shares[0], [2 / 3, 0, 1 / 3], atol=1e-6)
    equal = np.array([[0.5, 0.5, 0.0]])
    assert ensemble.hard_vote([equal, np.array([[0.5, 0.0, 0.5]]), np.array([[0.0, 0.5, 0.5]])]).argmax() == 0  # full tie: lowest index


def test_soft_and_weighted_votes_with_known_weights():
    a = np.array([[0.9, 0.1], [0.4, 0.6]])
    b = np.array([[0.1, 0.9], [0.2, 0.8]])
    assert np.allclose(ensemble.soft_vote([a, b]), [[0.5, 0.5], [0.3, 0.7]])
    assert np.allclose(ensemble.weighted([a, b], np.array([3.0, 1.0])), 0.75 * a + 0.25 * b)
    assert np.allclose(ensemble.weighted([a, b], np.array([6.0, 2.0])), 0.75 * a + 0.25 * b)  # only ratios matter


def _members(seed=0, rows=300):
    """A good member (right with p 0.8), a weaker one (right 55 %, low confidence) and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)

    def member(accuracy, confidence):
        guess = np.where(rng.random(rows) < accuracy, labels, rng.integers(0, 3, rows))
        probs = np.full((rows, 3), (1 - confidence) / 2)
        probs[np.arange(rows), guess] = confidence
        return probs

    return labels, member(0.8, 0.9), member(0.55, 0.5)


def test_fitted_weights_favour_the_better_member_and_temperature_keeps_the_argmax():
    labels, good, weak = _members()
    weights = ensemble.fit_weights([good, weak], labels)
    assert weights.sum() == pytest.approx(1) and weights[0] > 0.7
    overconfident = ensemble.apply_temperature(good, 0.3)
    temperature = ensemble.fit_temperature(overconfident, labels)
    assert temperature > 1.5  # it learns to soften an over-confident member
    calibrated = ensemble.apply_temperature(overconfident, temperature)
    assert (calibrated.argmax(axis=1) == overconfident.argmax(axis=1)).all()
    assert ensemble.log_loss(calibrated, labels) < ensemble.log_loss(overconfident, labels)


SETTINGS = {"calibration": "temperature", "fixed_weights": None, "prior_rows": 100.0, "seed": 0}


def test_cross_fitted_predictions_never_see_their_own_fold():
    labels, good, weak = _members(seed=4)
    fold = ensemble.folds(labels, 5, seed=0)
    assert sorted(np.bincount(fold)) == [60] * 5
    before = ensemble.cross_fit([good, weak], labels, fold, **SETTINGS)
    scrambled = labels.copy()
    scrambled[fold == 0] = (labels[fold == 0] + 1) % 3  # every label of fold 0 wrong
    after = ensemble.cross_fit([good, weak], scrambled, fold, **SETTINGS)
    for method in ensemble.METHODS:
        assert np.array_equal(after[method][fold == 0], before[method][fold == 0]), method  # fitted without fold 0
    assert not np.allclose(after["stacking"][fold == 1], before["stacking"][fold == 1])  # the other folds did see it


def test_auto_keeps_the_best_single_member_when_the_others_are_copies_plus_noise():
    rng = np.random.default_rng(5)
    labels, good, _ = _members(seed=5)
    copies = [np.clip(good + rng.normal(0, 0.02, good.shape), 1e-3, None) for _ in range(3)]
    copies = [c / c.sum(axis=1, keepdims=True) for c in copies]
    fold = ensemble.folds(labels, 5, seed=0)
    method, scores = ensemble.choose(ensemble.cross_fit(copies, labels, fold, **SETTINGS), labels, fold)
    assert method == "best_member", scores


def test_auto_combines_members_that_know_different_classes():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 600)
    members = []
    for known in range(3):  # member k is right on class k and guesses elsewhere
        guess = np.where(labels == known, labels, rng.integers(0, 3, 600))
        probs = np.full((600, 3), 0.2)
        probs[np.arange(600), guess] = 0.6
        members.append(probs)
    fold = ensemble.folds(labels, 5, seed=0)
    method, scores = ensemble.choose(ensemble.cross_fit(members, labels, fold, **SETTINGS), labels, fold)
    assert method != "best_member" and scores[method]["f1_macro"] > scores["best_member"]["f1_macro"] + 0.1, scores


def test_a_numeric_labels_weights_are_fitted_on_the_predictions_themselves():
    # regression: the weights were fitted on a softmax of the one-column predictions (1.0 everywhere), so every
    # member fitted equally well and `weighted` came out as the plain mean
    rng = np.random.default_rng(8)
    labels = rng.normal(0, 1, 400)
    good, weak = labels + rng.normal(0, 0.2, 400), labels + rng.normal(0, 1.0, 400)
    fitted = ensemble.fit([good[:, None], weak[:, None]], labels, **{**SETTINGS, "prior_rows": 0.0})
    assert fitted.weights[0] > 0.9, fitted.weights  # inverse-variance weights: 1 / 0.04 vs 1 / 1 -> 0.96
    combined = ensemble.predict(fitted, [good[:, None], weak[:, None]])
    assert ensemble.squared_error(combined["weighted"], labels) < ensemble.squared_error(combined["soft_vote"], labels)


def test_fitted_weights_shrink_toward_equal_weights_by_prior_rows():
    labels, good, weak = _members(seed=7)
    raw = ensemble.fit_weights([good, weak], labels)
    for prior_rows in (0.0, 300.0, 1e9):
        fitted = ensemble.fit([good, weak], labels, **(SETTINGS | {"calibration": "none", "prior_rows": prior_rows}))
        assert fitted.weights == pytest.approx((300 * raw + prior_rows * 0.5) / (300 + prior_rows))
    assert raw[0] > 0.7


def _user_data(root):
    (root / "data/raw").mkdir(parents=True)
    make_rows(30).to_csv(root / "data/raw/tiny.csv", index=False)


def _write_member(path, splits):
    probabilities.save(path, CLASSES, {name: probabilities.Split(np.arange(len(y)) + offset, y, p)
                                       for (name, (y, p)), offset in zip(splits.items(), (0, 1000))})


@pytest.fixture
def members_on_disk(workdir, tiny_model):
    """Three members' probabilities on val and test, written where the stages write them."""
    _user_data(workdir)
    val_y, val_good, val_weak = _members(seed=1)
    test_y, test_good, test_weak = _members(seed=2)
    _, val_third, _ = _members(seed=3)
    _write_member(paths.PRIMARY_PROBABILITIES, {"val": (val_y, val_good), "test": (test_y, test_good)})
    _write_member(paths.MEMBER_REPORTS / "weak/probabilities.parquet", {"val": (val_y, val_weak), "test": (test_y, test_weak)})
    _write_member(paths.MEMBER_REPORTS / "tfidf/probabilities.parquet", {"val": (val_y, val_third), "test": (test_y, test_good[::-1])})
    paths.PREPARED.mkdir(parents=True)
    pd.DataFrame({"id": np.arange(len(test_y)) + 1000, "input": [f"text {i}" for i in range(len(test_y))]}).to_parquet(paths.PREPARED / "test.parquet")
    (paths.LABEL_MAP).write_text(json.dumps({"labels": CLASSES}))
    members = {"weak": {"kind": "finetune", "train": {"seed": 9}}, "tfidf": {"kind": "tfidf"}}

    def params(**ensemble_params):
        raw = tiny_params(tiny_model)
        raw["ensemble"].update(members=members, **ensemble_params)
        return load(raw)

    return params


def _shuffle_test_labels(seed):
    for path in [paths.PRIMARY_PROBABILITIES, *paths.MEMBER_REPORTS.glob("*/probabilities.parquet")]:
        frame = pd.read_parquet(path)
        test = frame["split"] == "test"
        frame.loc[test, "label"] = np.random.default_rng(seed).permutation(frame.loc[test, "label"].to_numpy())
        frame.to_parquet(path)


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_nothing_is_fitted_on_test_labels(members_on_disk, method):
    params = members_on_disk(method=method)
    before = stage.run(params)
    stacker = json.loads((paths.ENSEMBLE / "stacker.json").read_text())
    predicted = pd.read_csv(paths.ENSEMBLE / "predictions.csv")["predicted"]
    assert before["weights"]["primary"] > before["weights"]["weak"]
    _shuffle_test_labels(seed=5)
    after = stage.run(params)
    assert after["weights"] == before["weights"] and after["temperatures"] == before["temperatures"]
    assert json.loads((paths.ENSEMBLE / "stacker.json").read_text()) == stacker
    assert pd.read_csv(paths.ENSEMBLE / "predictions.csv")["predicted"].equals(predicted)
    assert after["f1_macro"] < before["f1_macro"] - 0.2  # the scores DID see the new test labels


def test_the_stage_scores_every_method_and_member_and_counts_fixes(members_on_disk):
    result = stage.run(members_on_disk(method="soft_vote"))
    assert set(result["methods"]) == set(result["cross_fitted_val"]) - {"folds"} == {"best_member", "hard_vote", "soft_vote", "weighted", "stacking"}
    assert set(result["members"]) == {"primary", "weak", "tfidf"}
    assert result["accuracy"] == result["methods"]["soft_vote"]["test"]["accuracy"]
    predictions = pd.read_csv(paths.ENSEMBLE / "predictions.csv")
    assert result["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean())
    changes = pd.read_csv(paths.ENSEMBLE / "changes.csv")
    weak = predictions[predictions["weak_predicted"] != predictions["actual"]]
    fixed = (weak["predicted"] == weak["actual"]).sum()
    assert result["changes"]["weak"]["fixed"] == fixed == ((changes["member"] == "weak") & (changes["effect"] == "fixed")).sum()
    assert changes["text"].str.startswith("text ").all()
    assert result["weights_source"].startswith("fitted on val")
    # each member and method with its interval; the reported method against each member on the same rows
    for group in ("members", "methods"):
        for scores in result[group].values():
            assert scores["test"]["ci95"]["f1_macro"]["low"] <= scores["test"]["f1_macro"] <= scores["test"]["ci95"]["f1_macro"]["high"]
    for name, versus in result["vs_members"].items():
        assert versus["accuracy"]["difference"] == pytest.approx(result["accuracy"] - result["members"][name]["test"]["accuracy"], abs=1e-4)
        assert versus["accuracy"]["verdict"] in ("better", "worse", "no significant difference")


def test_fixed_weights_are_used_as_given(members_on_disk):
    result = stage.run(members_on_disk(method="weighted", weights={"primary": 3, "weak": 1}))
    assert result["weights"] == {"primary": 0.75, "weak": 0.25, "tfidf": 0.0}
    assert result["weights_source"] == "ensemble.weights"


def test_a_member_of_another_label_map_or_length_is_named(members_on_disk):
    params = members_on_disk()
    path = paths.MEMBER_REPORTS / "weak/probabilities.parquet"
    frame = pd.read_parquet(path)
    frame.rename(columns={"prob_neutral": "prob_mixed"}).to_parquet(path)
    with pytest.raises(UserError, match=r"member 'weak' predicts labels \['negative', 'mixed', 'positive'\]"):
        stage.run(params)
    frame.iloc[5:].to_parquet(path)
    with pytest.raises(UserError, match=r"member 'weak' has 295 val predictions, member 'primary' has 300"):
        stage.run(params)
    path.unlink()
    with pytest.raises(UserError, match=r"member 'weak': its probabilities .* are missing \(run its stage: dvc repro member@weak\)"):
        stage.run(params)


@pytest.mark.parametrize("ensemble_params, message", [
    ({"include_primary": False, "members": {"tfidf": {"kind": "tfidf"}}}, r"combines at least 2 members, got \['tfidf'\]"),
    ({"weights": {"primary": 0, "tfidf": 0}}, r"do not sum to a positive number"),
    ({"weights": {"primary": 1, "tfdf": 1}}, r"weights name unknown member\(s\) \['tfdf'\]"),
    ({"weights": {"primary": -1, "tfidf": 2}}, r"weights must be >= 0, got \{'primary': -1"),
    ({"members": {"x": {"train": {"learning_rate": -1}}}}, r"ensemble.members.x.train overrides are invalid: learning_rate"),
    ({"members": {"x": {"kind": "tfidf", "train": {"seed": 1}}}}, r"a tfidf member takes no train/preprocess overrides"),
    ({"members": {"primary": {"kind": "tfidf"}}}, r"member name 'primary' must match"),
])
def test_bad_ensemble_params_are_refused_before_any_work(workdir, tiny_model, ensemble_params, message):
    _user_data(workdir)
    params = tiny_params(tiny_model)
    params["ensemble"].update(ensemble_params)
    with pytest.raises(UserError, match=message):
        load(params)

import numpy as np
import pandas as pd
import pytest

from finetune.data import profile


def _unrelated(n: int) -> list[str]:
    """n texts of 8 random made-up words: no two share much."""
    rng = np.random.default_rng(0)
    return [" ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(8)) for _ in range(n)]


def _splits(train: list[str], test: list[str]) -> dict[str, pd.DataFrame]:
    return {"train": pd.DataFrame({"id": range(len(train)), "input": train}),
            "test": pd.DataFrame({"id": range(100, 100 + len(test)), "input": test})}


def _texts(frame):
    return profile.text_vectors(frame["input"])


PENS = "Hello we are doing a world record attempt on the amount of ball point pens in a collection, could you help with a pen?"
GAME = "One thing is for certain on this #DeflateGate ...we have ran out of deflated and Balls jokes...seriously...STOP IT"


def test_a_repost_is_a_near_duplicate_and_an_unrelated_text_is_not():
    train = [*_unrelated(60), "@USAirways " + PENS, GAME, "@united " + PENS]  # rows 60 and 62: one pair in train
    test = ["RT @WARGomes: " + GAME, "completely different words about a cat"]
    found = profile.near_duplicates(_texts, _splits(train, test), profile.TEXT_THRESHOLD, "tfidf", seed=0)
    assert found["test_rows_near_train"] == 1
    [(test_id, train_id, similarity)] = found["test_rows_near_train_examples"]
    assert (test_id, train_id) == (100, 61) and profile.TEXT_THRESHOLD <= similarity < 1
    assert found["train_rows_with_a_twin"] == 2  # both rows of the pair have a twin; the pair is shown once
    assert [pair[:2] for pair in found["train_rows_with_a_twin_examples"]] == [[60, 62]]
    assert found["compared"] == {"train": 63, "test": 2}


def test_what_is_compared_is_a_seeded_sample_of_a_large_split(monkeypatch):
    monkeypatch.setattr(profile, "MAX_TRAIN", 20)
    train = _unrelated(60)
    first = profile.near_duplicates(_texts, _splits(train, train[:3]), profile.TEXT_THRESHOLD, "tfidf", seed=0)
    assert first["compared"] == {"train": 20, "test": 3}
    assert first == profile.near_duplicates(_texts, _splits(train, train[:3]), profile.TEXT_THRESHOLD, "tfidf", seed=0)


@pytest.mark.parametrize(("near", "noted"), [(1, False), (2, True)])
def test_a_note_from_two_percent_of_test_rows_near_train(near, noted):
    found = {"threshold": 0.85, "method": "tfidf", "compared": {"train": 500, "test": 100}, "test_rows_near_train": near}
    notes = profile.near_duplicate_notes(found, "text")
    assert bool(notes) is noted
    if noted:
        assert notes[0].startswith("2 of 100 test texts (2.0 %) nearly repeat a train text") and "data.split_column" in notes[0]


def test_balance_names_the_largest_and_smallest_class():
    facts = profile.balance({"a": 50, "b": 5, "c": 20, "empty": 0})
    assert facts == {"classes": 3, "largest": ["a", 50], "smallest": ["b", 5], "majority_share": 0.6667, "largest_to_smallest": 10.0}


def test_quantiles_of_lengths():
    assert profile.quantiles(range(1, 102)) == {"min": 1.0, "p5": 6.0, "p50": 51.0, "p95": 96.0, "max": 101.0}
    assert profile.quantiles([]) == {}

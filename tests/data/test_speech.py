"""The builtin spoken sets' speakers (finetune/data/speech.py)."""
from types import SimpleNamespace

import pandas as pd

from finetune.config.sections import Splits
from finetune.data import speech


def test_the_builtin_speakers_are_split_so_no_test_voice_is_heard_in_training():
    data = SimpleNamespace(splits=Splits(), seed=42)  # what speaker_splits reads of data: its shares and seed (the defaults)
    splits = speech.speaker_splits(data)
    assert set(splits) == set(speech.SPEAKERS)
    counts = pd.Series(splits).value_counts().to_dict()
    assert counts["train"] == round(0.8 * len(speech.SPEAKERS)) and abs(counts["val"] - counts["test"]) <= 1
    assert speech.speaker_splits(SimpleNamespace(splits=Splits(), seed=7)) != splits  # data.seed reshuffles the speakers

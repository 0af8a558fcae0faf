"""Transcripts compared the way Whisper's own WER numbers compare them: Whisper's English text normaliser (lower case, no
punctuation, numbers as digits, "mister" -> "mr"), so "Ten of clubs." and "10 of clubs" are the same transcript."""
from __future__ import annotations

import functools


@functools.cache
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})  # no British -> American spelling table: none ships offline, and the data is American


def normalized(text: str) -> str:
    return _normalizer()(str(text))

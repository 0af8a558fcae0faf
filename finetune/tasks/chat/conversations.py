"""Conversations from the files users bring, as lists of {"role", "content"} turns, each checked.

One conversation per JSONL line (or table row), in whichever of the formats users bring it finds:
- OpenAI-style `messages`: [{"role": "system" | "user" | "assistant", "content": "..."}, ...], multi-turn;
- Alpaca-style `instruction`, optional `input`, `output`: one user turn (the instruction, then the input after a blank
  line) and the assistant's reply;
- a table (CSV / TSV / JSONL / Parquet) with data.prompt_column and data.response_column: one exchange per row.
A conversation the model can learn from: roles are system, user or assistant; a system turn only first; then user and
assistant turns alternate, starting with the user and ending with the assistant (what the model learns to say); no
turn is empty. One that breaks a rule is a bad row naming the rule and the turn (`problem`), never silently mended.

builtin:chatterbot: the English YAML dialogues of the pip package chatterbot-corpus (BSD-3), one file per topic. A
dialogue there is a list of statements, each the reply to the one before (ChatterBot's own ListTrainer reads them so):
they become alternating user / assistant turns, a trailing user statement dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

ROLES = ("system", "user", "assistant")
FORMATS = ("messages", "alpaca", "columns")


def problem(messages) -> str | None:
    """Why `messages` cannot be trained on, or None."""
    if not isinstance(messages, list) or not messages:
        return "no turns: expected a list of {role, content} turns"
    for number, turn in enumerate(messages, start=1):
        if not isinstance(turn, dict) or set(turn) - {"role", "content"} or "role" not in turn or "content" not in turn:
            return f"turn {number} is not a {{role, content}} object: {json.dumps(turn, ensure_ascii=False)[:80]}"
        if turn["role"] not in ROLES:
            return f"turn {number}: role {turn['role']!r} is not one of {', '.join(ROLES)}"
        if not isinstance(turn["content"], str) or not turn["content"].strip():
            return f"turn {number} ({turn['role']}) is empty"
    start = 1 if messages[0]["role"] == "system" else 0
    for number, turn in enumerate(messages[start:], start=start + 1):
        expected = "user" if (number - start) % 2 else "assistant"
        if turn["role"] != expected:
            where = "only the first turn may be a system turn" if turn["role"] == "system" else f"expected {expected} (turns alternate, user first)"
            return f"turn {number} is {turn['role']}: {where}"
    if messages[-1]["role"] != "assistant":
        return "the last turn is not the assistant's: nothing to learn to say"
    return None


def from_record(record: dict, prompt_column: str, response_column: str) -> list[dict]:
    """The turns of one JSONL record or table row, in the first format it holds (messages, alpaca, prompt/response)."""
    if "messages" in record:
        return record["messages"]
    if "instruction" in record and "output" in record:
        extra = record.get("input")
        prompt = str(record["instruction"]) + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    if prompt_column in record and response_column in record:
        return [{"role": "user", "content": record[prompt_column]}, {"role": "assistant", "content": record[response_column]}]
    raise KeyError(f"neither `messages`, nor `instruction` + `output`, nor `{prompt_column}` + `{response_column}`; "
                   f"keys found: {', '.join(map(str, record)) or 'none'}")


def chatterbot_dialogues(path: Path) -> list[list[dict]]:
    """One topic file's dialogues as alternating user / assistant turns (see the module docstring)."""
    import yaml

    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    dialogues = []
    for statements in loaded.get("conversations") or []:
        texts = [str(s).strip() for s in statements if s is not None and str(s).strip()]
        texts = texts[: len(texts) // 2 * 2]  # ends with a reply
        if texts:
            dialogues.append([{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)])
    return dialogues

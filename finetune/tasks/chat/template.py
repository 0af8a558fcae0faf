"""A conversation through the model's chat template, with the loss on the assistant's tokens only.

`encode` renders the whole conversation once with the tokenizer's chat template and tokenizes it with character
offsets; an assistant turn's tokens are those from the end of the template's generation prompt for that turn (what
the template writes before a reply: `<|im_start|>assistant\\n` for ChatML) to the end of its end-of-turn token (the
tokenizer's EOS when the template writes it, else the end of the turn). Labels are the token ids there and -100
everywhere else (system and user turns, the template's markup, padding), so the model learns to answer and to stop,
not to write the user's turns. Character offsets instead of token counts: a prompt tokenized alone may split
differently at its end than inside the whole conversation. A template that renders earlier turns differently once
later ones follow (some drop reasoning) has no stable spans and is refused.

Too long for `max_tokens`: `truncate` drops the oldest exchanges (user + assistant, the system turn kept) until it
fits; `drop` (or a last exchange that does not fit alone) drops the conversation, counted by the caller.
"""
from __future__ import annotations

import numpy as np

from finetune.errors import UserError

IGNORE = -100  # the label the model's loss skips (transformers' ignore_index)


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def check_template(tokenizer, source: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {source}: its tokenizer has no chat template (tokenizer_config.json `chat_template`); a chat "
                        "fine-tune needs one: use an instruct model, or add the template the model was trained with")


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (its reply and end-of-turn token)."""
    text = render(tokenizer, messages, False)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        prompt, through = render(tokenizer, messages[:i], True), render(tokenizer, messages[: i + 1], False)
        if not (text.startswith(prompt) and text.startswith(through) and len(prompt) < len(through)):
            raise UserError("the chat template renders earlier turns differently once later turns follow, so the assistant's "
                            "tokens cannot be told apart; give the model a template whose earlier turns stay as they are")
        end = through.find(eos, len(prompt) + len(turn["content"])) if eos else -1
        spans.append((len(prompt), end + len(eos) if end >= 0 else len(through)))
    return text, spans


def end_of_turn_id(tokenizer) -> int | None:
    """The first token the template writes after a reply inside the assistant's span (ChatML's <|im_end|>), or None when
    it writes none: what the model learns to emit when its turn ends, so what generation must stop at."""
    reply = "Hello there"
    text, [(low, high)] = assistant_spans(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply}])
    end = text.index(reply, low) + len(reply)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return next((token for token, (start, stop) in zip(encoded["input_ids"], encoded["offset_mapping"])
                 if end <= start < high and text[start:stop].strip()), None)


def check_stops(tokenizer, stop_ids: set[int], source: str) -> None:
    """Refuses a model whose generation would not stop where its template ends a reply: it would talk past its turn."""
    token = end_of_turn_id(tokenizer)
    if token is None:
        raise UserError(f"model {source}: its chat template writes nothing after a reply, so a fine-tuned model cannot learn "
                        "where its turn ends; use a template with an end-of-turn token")
    if token not in stop_ids:
        raise UserError(f"model {source}: its chat template ends a reply with {tokenizer.convert_ids_to_tokens(token)!r} (id {token}), "
                        f"which generation does not stop at (it stops at ids {sorted(stop_ids)}): add {token} to eos_token_id in "
                        "the model's generation_config.json")


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(token ids, labels): the ids on the assistant turns' tokens, IGNORE elsewhere."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    labels = [token if stop > start and any(low <= start < high for low, high in spans) else IGNORE
              for token, (start, stop) in zip(ids, encoded["offset_mapping"])]
    return ids, labels


def fitted(tokenizer, messages: list[dict], max_tokens: int, policy: str) -> tuple[list[int], list[int], int] | None:
    """(ids, labels, exchanges dropped) within max_tokens, or None when the conversation cannot fit (see the docstring)."""
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    for dropped in range(0, len(turns) // 2 if policy == "truncate" else 1):
        ids, labels = encode(tokenizer, system + turns[2 * dropped:])
        if len(ids) <= max_tokens:
            return ids, labels, dropped
    return None


def pack(encoded: list[tuple[list[int], list[int]]], block_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Conversations packed in order into blocks of block_size tokens (one starts a new block when it would not fit in
    the current one; the rest padded with pad_id, labels IGNORE): (ids, labels, the conversations of each block)."""
    blocks, labels, members = [], [], []
    current_ids, current_labels, current = [], [], []
    for index, (ids, targets) in enumerate(encoded):
        if current_ids and len(current_ids) + len(ids) > block_size:
            blocks.append(current_ids), labels.append(current_labels), members.append(current)
            current_ids, current_labels, current = [], [], []
        current_ids, current_labels, current = current_ids + ids, current_labels + targets, current + [index]
    if current_ids:
        blocks.append(current_ids), labels.append(current_labels), members.append(current)
    ids_array = np.full((len(blocks), block_size), pad_id, dtype=np.int64)
    labels_array = np.full((len(blocks), block_size), IGNORE, dtype=np.int64)
    for row, (ids, targets) in enumerate(zip(blocks, labels)):
        ids_array[row, :len(ids)], labels_array[row, :len(targets)] = ids, targets
    return ids_array, labels_array, members

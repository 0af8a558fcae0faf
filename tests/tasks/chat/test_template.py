"""The chat template and the loss mask: labels are -100 exactly outside the assistant's turns (their reply and end-of-turn
token), for multi-turn conversations too; too-long conversations lose their oldest exchanges; packing keeps each
conversation whole."""
import importlib

import numpy as np
import pytest

from finetune.errors import UserError

template = importlib.import_module("finetune.tasks.chat.template")

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    text = "hello how are you i am fine thanks what is a computer a machine that computes system you are helpful " * 8
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


TALK = [{"role": "system", "content": "you are helpful"},
        {"role": "user", "content": "hello how are you"}, {"role": "assistant", "content": "i am fine thanks"},
        {"role": "user", "content": "what is a computer"}, {"role": "assistant", "content": "a machine that computes"}]


def _learnt(tokenizer, ids, labels) -> list[str]:
    """The decoded runs of labelled tokens, in order."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label == template.IGNORE:
            if current:
                runs.append(tokenizer.decode(current)), current.clear()
        else:
            assert label == token
            current.append(token)
    return runs + ([tokenizer.decode(current)] if current else [])


def test_only_the_assistants_replies_and_their_end_of_turn_token_are_learnt(tokenizer):
    ids, labels = template.encode(tokenizer, TALK)
    assert tokenizer.decode(ids) == template.render(tokenizer, TALK, False)
    assert _learnt(tokenizer, ids, labels) == ["i am fine thanks<|im_end|>", "a machine that computes<|im_end|>"]
    masked = [token for token, label in zip(ids, labels) if label == template.IGNORE]
    assert tokenizer.decode(masked).count("<|im_start|>") == 5  # every turn's header, the assistant's included, is context


def test_a_tokenizer_without_a_chat_template_is_refused_by_name(tokenizer):
    bare = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(UserError, match="model models/mine: its tokenizer has no chat template"):
        template.check_template(bare, "models/mine")


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    rewriting = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    # the last assistant turn is shown whole, earlier ones shortened: no stable span for them
    rewriting.chat_template = ("{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}{{ m['content'][:3] }}{% endif %}"
                               "<|im_end|>{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    with pytest.raises(UserError, match="renders earlier turns differently"):
        template.encode(rewriting, TALK)


def test_generation_must_stop_at_the_token_the_template_ends_a_reply_with(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert template.end_of_turn_id(tokenizer) == im_end  # not the newline ChatML writes after it
    template.check_stops(tokenizer, {im_end}, "models/mine")
    with pytest.raises(UserError, match=rf"models/mine: its chat template ends a reply with '<\|im_end\|>' \(id {im_end}\), which "
                                        rf"generation does not stop at \(it stops at ids \[0\]\): add {im_end} to eos_token_id"):
        template.check_stops(tokenizer, {0}, "models/mine")
    silent = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    silent.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                            "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(UserError, match="writes nothing after a reply"):
        template.check_stops(silent, {im_end}, "models/mine")


def test_too_long_conversations_lose_their_oldest_exchange_or_are_dropped(tokenizer):
    whole, _ = template.encode(tokenizer, TALK)
    last, last_labels = template.encode(tokenizer, [TALK[0], *TALK[3:]])
    assert template.fitted(tokenizer, TALK, len(whole), "truncate")[2] == 0
    ids, labels, dropped = template.fitted(tokenizer, TALK, len(whole) - 1, "truncate")
    assert (ids, labels, dropped) == (last, last_labels, 1)  # the system turn kept, the first exchange gone
    assert template.fitted(tokenizer, TALK, len(whole) - 1, "drop") is None
    assert template.fitted(tokenizer, TALK, len(last) - 1, "truncate") is None  # not even the last exchange fits


def test_packing_keeps_conversations_whole_and_pads_with_ignored_labels(tokenizer):
    encoded = [([1, 2, 3], [template.IGNORE, 2, 3]), ([4, 5], [template.IGNORE, 5]), ([6, 7, 8, 9], [6, 7, template.IGNORE, 9])]
    ids, labels, members = template.pack(encoded, 6, pad_id=0)
    assert members == [[0, 1], [2]]
    assert ids.tolist() == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]]
    assert labels.tolist() == [[-100, 2, 3, -100, 5, -100], [6, 7, -100, 9, -100, -100]]
    assert np.all(labels[ids == 0] == -100)

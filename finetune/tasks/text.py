"""Text classification with any Hugging Face encoder (BERT, MiniLM, ...) and its own tokenizer."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union
from sklearn.feature_extraction.text import TfidfVectorizer
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from finetune.params import Augment, Tfidf
from finetune.tasks import Task

_SPACES = re.compile(r"\s+")
_DROPOUT_NAMES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout", "attention_dropout", "seq_classif_dropout")


class TextClassification(Task):
    def normalize(self, inputs: pd.Series) -> pd.Series:
        # bare \r, tabs and newlines inside a text become single spaces
        return inputs.fillna("").map(lambda text: _SPACES.sub(" ", str(text)).strip())

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return self.normalize(inputs).str.casefold()

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

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)

    def encode(self, processor, inputs: pd.Series, max_length: int, pad_to_max: bool) -> pd.DataFrame:
        texts = inputs.tolist()
        full_lengths = [len(ids) for ids in processor(texts, truncation=False)["input_ids"]]
        encoded = processor(texts, truncation=True, max_length=max_length, padding="max_length" if pad_to_max else False)
        frame = pd.DataFrame({name: list(values) for name, values in encoded.items()})
        frame["truncated"] = [n > max_length for n in full_lengths]
        return frame

    def load_model(self, model_dir: str, labels: list[str], dropout: float | None, trust_remote_code: bool):
        config = AutoConfig.from_pretrained(
            model_dir,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            trust_remote_code=trust_remote_code,
        )
        if dropout is not None:  # each architecture names its dropouts differently; set those it has
            for name in _DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, dropout)
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir, config=config, use_safetensors=True, trust_remote_code=trust_remote_code
        )

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        return AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=trust_remote_code)

    def fit_classical(self, inputs: pd.Series, labels: np.ndarray, config: Tfidf):
        """TF-IDF (sublinear tf) over word and/or char_wb n-grams + multinomial logistic regression."""
        vectorizers = []
        if config.word_ngrams:
            vectorizers.append(TfidfVectorizer(ngram_range=tuple(config.word_ngrams), sublinear_tf=True,
                                               min_df=config.min_df, max_features=config.max_features))
        if config.char_ngrams:
            vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(config.char_ngrams), sublinear_tf=True,
                                               min_df=config.min_df, max_features=config.max_features))
        model = make_pipeline(make_union(*vectorizers), LogisticRegression(C=config.C, max_iter=2000))
        return model.fit(inputs.tolist(), labels)

    # Saved by hand as JSON (vocabularies, settings) + safetensors (idf, coefficients): pickle is never
    # loaded here, and skops (the safe sklearn format) took > 6 minutes to write a 180k-term vocabulary.
    def save_classical(self, model, folder: Path) -> None:
        union, regression = model[0], model[-1]
        vectorizers = [vectorizer for _, vectorizer in union.transformer_list]
        settings = [{"analyzer": v.analyzer, "ngram_range": list(v.ngram_range), "vocabulary": {term: int(i) for term, i in v.vocabulary_.items()}}
                    for v in vectorizers]
        (folder / "tfidf.json").write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
        arrays = {f"idf_{i}": v.idf_ for i, v in enumerate(vectorizers)}
        arrays |= {"coef": regression.coef_, "intercept": regression.intercept_, "classes": regression.classes_}
        # safetensors writes raw buffers: a Fortran-ordered coef_ (as lbfgs returns it) would come back scrambled
        save_file({name: np.ascontiguousarray(array) for name, array in arrays.items()}, folder / "tfidf.safetensors")

    def load_classical(self, folder: Path):
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
        return make_pipeline(make_union(*vectorizers), regression)

    def collator(self, processor):
        return DataCollatorWithPadding(processor)

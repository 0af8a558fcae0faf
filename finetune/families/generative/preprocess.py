"""preprocess for generative models: documents cleaned, split by DOCUMENT, then featurized by the task (a causal LM:
tokenized and packed into blocks).

- Cleaning: the task's normalisation; empty documents and duplicates (whitespace-normalised, case-folded) are
  dropped into data/quarantine/preprocess.csv with the reason.
- Splits: data.split_column (or a builtin's own split) when there is one, else a seeded shuffle of the documents
  cut by data.splits (at least one document per split). No document is in two splits.
- Features: the task's featurize (causal LM: finetune/tasks/causal-lm/blocks.py), then evaluate.prompts checked against
  the model's context, before any training; the first OPENING_TOKENS tokens of every test document kept in the layout
  (`openings`), where evaluate.prompts `auto` draws its prompts from.
Writes data/prepared/{train,val,test}.parquet, label_map.json (the layout) and reports/preprocess.json (documents,
tokens, blocks per split, and the data profile: data_profile).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data import profile
from finetune.data.sources import INPUT, LABEL, SPLIT
from finetune.data.tables import LINE, ROW
from finetune.errors import UserError
from finetune.io import write_json

SPLITS = ("train", "val", "test")
OPENING_TOKENS = 64  # evaluate.prompt_tokens' upper bound


def data_profile(params, parts: dict[str, pd.DataFrame], layout: dict) -> dict:
    """The data profile (finetune/data/profile.py): documents, their lengths and tokens per split, near-duplicate documents
    (a test document nearly repeating a train one is no held-out text). The report adds the evaluation prompts: they are
    evaluate's params, which this stage does not track."""
    documents = {name: pd.DataFrame({"id": part[LABEL].astype(str).to_numpy(), INPUT: part[INPUT].to_numpy()}) for name, part in parts.items()}
    found = profile.near_duplicates(lambda frame: profile.text_vectors(frame[INPUT]), documents, profile.TEXT_THRESHOLD,
                                    f"character 3-5-gram TF-IDF of each document's first {profile.TEXT_CHARACTERS:,} characters", params.data.seed)
    chosen = [{"setting": "preprocess.block_size", "value": layout["block_size"], "why": profile.SET}]
    return {"documents": {name: len(part) for name, part in parts.items()},
            "characters_per_document": {name: profile.quantiles(part[INPUT].str.len()) for name, part in parts.items()},
            "tokens": {name: facts["tokens"] for name, facts in layout["facts"].items()},
            "near_duplicates": found, "chosen": chosen, "notes": profile.near_duplicate_notes(found, "document")}


def openings(test: pd.DataFrame, tokenizer) -> list[tuple[str, list[int]]]:
    """(document, its first OPENING_TOKENS tokens) of each test document; only its start is tokenized (a token holds at
    most a few characters: 16 a token is ample)."""
    return [(str(name), tokenizer(str(text)[:16 * OPENING_TOKENS], add_special_tokens=False)["input_ids"][:OPENING_TOKENS])
            for name, text in zip(test[LABEL], test[INPUT])]


def split_documents(frame: pd.DataFrame, params) -> dict[str, pd.DataFrame]:
    if SPLIT in frame:
        parts = {name: frame[frame[SPLIT] == name] for name in SPLITS}
    else:
        if len(frame) < 3:
            raise UserError(f"{len(frame)} document(s) after cleaning; splitting by document needs at least 3 (one each for "
                            "train, val and test). Add documents, or cut a long one into several files")
        order = np.random.default_rng(params.data.seed).permutation(len(frame))
        splits = params.data.splits
        n_test = max(1, round(splits.test * len(frame)))
        n_val = max(1, round(splits.val * len(frame)))
        chosen = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        parts = {name: frame.iloc[np.sort(chosen[name])] for name in SPLITS}
    for name, part in parts.items():
        if part.empty:
            raise UserError(f"the {name} split has no documents; check data.splits or data.split_column")
    return parts


def check_prompts(evaluate, tokenizer, context: int | None, model: str) -> None:
    """evaluate.prompts the evaluate stage could not generate from, refused here, before any training (generate checks
    again: a prompt edited later does not rerun preprocess). Tokenized as generate tokenizes them."""
    for i, prompt in enumerate([] if evaluate.prompts == "auto" else evaluate.prompts):  # auto: openings fit by construction
        tokens = len(tokenizer(prompt)["input_ids"])
        if tokens == 0 or (context is not None and tokens + evaluate.max_new_tokens > context):
            raise UserError(f"evaluate.prompts[{i}] {prompt[:60]!r} is {tokens} tokens; with evaluate.max_new_tokens {evaluate.max_new_tokens} "
                            f"it must fit the context of {model} ({context} tokens) and hold at least one token")


def run(task, params, frame: pd.DataFrame, folder: Path) -> tuple[dict, pd.DataFrame]:
    normalized, problems = task.normalize(frame[INPUT], params.preprocess)
    changed = int(normalized.ne(frame[INPUT]).sum())
    frame[INPUT] = normalized
    keys = task.duplicate_key(frame[INPUT])
    problems = problems.where(problems != "", keys.duplicated().map({True: "duplicate document", False: ""}))
    dropped, frame = frame[problems != ""].assign(problem=problems[problems != ""]), frame[problems == ""]
    if frame.empty:
        raise UserError(f"{paths.INGESTED}: no documents left after cleaning ({dict(Counter(dropped['problem']))}): the corpus is empty")
    parts = split_documents(frame, params)
    tables, layout = task.featurize(parts, params)
    tokenizer = task.models.load_processor(task.models.source(params.train.model), params.train.trust_remote_code)
    check_prompts(params.evaluate, tokenizer, layout["context"], params.train.model)
    layout["openings"] = task.openings(parts["test"], tokenizer)
    summary = {"inputs_changed_by_normalization": changed, "dropped": dict(Counter(dropped["problem"])),
               "block_size": layout["block_size"], "splits": layout["facts"], "profile": data_profile(params, parts, layout),
               "documents": {name: sorted(part[LABEL].astype(str))[:50] for name, part in parts.items()}}
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet", index=False)
    write_json(folder / "label_map.json", layout)
    counts = {name: f"{f['documents']} docs, {f['blocks_kept']}/{f['blocks']} blocks" for name, f in layout["facts"].items()}
    print(f"preprocess: {counts}; block_size {layout['block_size']}; dropped {summary['dropped']}")
    return summary, dropped[[ROW, LINE, "problem"]].assign(document=dropped[LABEL], text=task.display(dropped))

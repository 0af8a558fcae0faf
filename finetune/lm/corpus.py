"""preprocess for a causal LM: documents cleaned, split by DOCUMENT, tokenized and packed into blocks.

- Cleaning: the task's normalisation; empty documents and duplicates (whitespace-normalised, case-folded) are
  dropped into data/quarantine/preprocess.csv with the reason.
- Splits: data.split_column (or a builtin's own split) when there is one, else a seeded shuffle of the documents
  cut by data.splits (at least one document per split). No document is in two splits.
- Packing: each split's documents are tokenized (no special tokens added), each followed by the tokenizer's EOS, then
  concatenated and cut into preprocess.block_size blocks; the incomplete last block of a split is dropped (counted).
  A block never spans two splits. preprocess.max_blocks keeps a seeded sample of each split's blocks (in order).
Writes data/prepared/{train,val,test}.parquet (id, input_ids, document: where the block starts), label_map.json
(the layout: block_size, eos, tokenizer) and reports/preprocess.json (documents, tokens, blocks per split).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from finetune import paths
from finetune.errors import UserError
from finetune.io import write_json, write_outputs, write_table
from finetune.lm.generation import context_length
from finetune.sources import INPUT, LABEL, SPLIT
from finetune.tables import LINE, ROW
from finetune.tasks import get_task

SPLITS = ("train", "val", "test")


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
    for i, prompt in enumerate(evaluate.prompts):
        tokens = len(tokenizer(prompt)["input_ids"])
        if tokens == 0 or (context is not None and tokens + evaluate.max_new_tokens > context):
            raise UserError(f"evaluate.prompts[{i}] {prompt[:60]!r} is {tokens} tokens; with evaluate.max_new_tokens {evaluate.max_new_tokens} "
                            f"it must fit the context of {model} ({context} tokens) and hold at least one token")


def pack(task, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
    """The task's featurize: {split: documents} -> {split: blocks}, and the layout."""
    prep, train = params.preprocess, params.train
    source = task.model_source(train.model)
    tokenizer = task.load_processor(source, train.trust_remote_code)
    from transformers import AutoConfig

    context = context_length(AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code))
    if context is not None and prep.block_size > context:
        raise UserError(f"preprocess.block_size {prep.block_size} is longer than the context of {train.model} ({context} tokens)")
    check_prompts(params.evaluate, tokenizer, context, train.model)
    tables, facts = {}, {}
    for name, part in parts.items():
        encoded = tokenizer(part[INPUT].tolist(), add_special_tokens=False)["input_ids"]
        stream = np.fromiter((t for ids in encoded for t in [*ids, tokenizer.eos_token_id]), dtype=np.int64)
        starts = np.cumsum([0] + [len(ids) + 1 for ids in encoded[:-1]])  # where each document begins in the stream
        n_blocks = len(stream) // prep.block_size
        if n_blocks == 0:
            raise UserError(f"the {name} split holds {len(stream)} tokens in {len(part)} document(s), fewer than one block of "
                            f"preprocess.block_size {prep.block_size}; add text or lower block_size")
        blocks = stream[: n_blocks * prep.block_size].reshape(n_blocks, prep.block_size)
        kept = np.arange(n_blocks)
        cap = prep.max_blocks.get(name)
        if cap is not None and cap < n_blocks:
            kept = np.sort(np.random.default_rng(params.data.seed).choice(n_blocks, cap, replace=False))
        document = part[LABEL].to_numpy()[np.searchsorted(starts, kept * prep.block_size, side="right") - 1]
        tables[name] = pd.DataFrame({"id": kept, "input_ids": list(blocks[kept]), "document": document,
                                     "input": [tokenizer.decode(block) for block in blocks[kept]]})
        facts[name] = {"documents": len(part), "tokens": len(stream), "blocks": int(n_blocks), "blocks_kept": len(kept),
                       "tokens_dropped_at_end": int(len(stream) - n_blocks * prep.block_size)}
    layout = {"labels": [], "features": ["input_ids"], "block_size": prep.block_size, "eos_token_id": tokenizer.eos_token_id,
              "vocab_size": len(tokenizer), "context": context, "facts": facts}
    return tables, layout


def preprocess(params) -> dict:
    task = get_task(params.task)
    frame = pd.read_parquet(paths.INGESTED)
    normalized, problems = task.normalize(frame[INPUT], params.preprocess)
    changed = int(normalized.ne(frame[INPUT]).sum())
    frame[INPUT] = normalized
    keys = task.duplicate_key(frame[INPUT])
    problems = problems.where(problems != "", keys.duplicated().map({True: "duplicate document", False: ""}))
    dropped, frame = frame[problems != ""].assign(problem=problems[problems != ""]), frame[problems == ""]
    if frame.empty:
        raise UserError(f"{paths.INGESTED}: no documents left after cleaning ({dict(Counter(dropped['problem']))}): the corpus is empty")
    parts = split_documents(frame, params)
    tables, layout = pack(task, parts, params)
    summary = {"inputs_changed_by_normalization": changed, "dropped": dict(Counter(dropped["problem"])),
               "block_size": layout["block_size"], "splits": layout["facts"],
               "documents": {name: sorted(part[LABEL].astype(str))[:50] for name, part in parts.items()}}
    shown = dropped[[ROW, LINE, "problem"]].assign(document=dropped[LABEL], text=task.display(dropped))
    with write_outputs(paths.PREPARED, paths.QUARANTINE / "preprocess.csv", paths.PREPROCESS_SUMMARY) as (folder, quarantine, report):
        folder.mkdir()
        for name, table in tables.items():
            table.to_parquet(folder / f"{name}.parquet", index=False)
        write_json(folder / "label_map.json", layout)
        write_table(quarantine, shown)
        write_json(report, summary)
    counts = {name: f"{f['documents']} docs, {f['blocks_kept']}/{f['blocks']} blocks" for name, f in layout["facts"].items()}
    print(f"preprocess: {counts}; block_size {layout['block_size']}; dropped {summary['dropped']}")
    return summary

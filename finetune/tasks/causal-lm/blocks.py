"""The causal LM's features: each split's documents tokenized (no special tokens added), each followed by the tokenizer's
EOS, then concatenated and cut into preprocess.block_size blocks; the incomplete last block of a split is dropped
(counted). A block never spans two splits. preprocess.max_blocks keeps a seeded sample of each split's blocks (in
order). Tables: id, input_ids, document (where the block starts), input (the block decoded); the layout: block_size,
EOS, vocabulary size, context.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune.data.sources import INPUT, LABEL
from finetune.errors import UserError
from finetune.families.generative.models import context_length


def pack(models, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
    """The task's featurize: {split: documents} -> {split: blocks}, and the layout."""
    from transformers import AutoConfig

    prep, train = params.preprocess, params.train
    source = models.source(train.model)
    tokenizer = models.load_processor(source, train.trust_remote_code)
    context = context_length(AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code))
    if context is not None and prep.block_size > context:
        raise UserError(f"preprocess.block_size {prep.block_size} is longer than the context of {train.model} ({context} tokens)")
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

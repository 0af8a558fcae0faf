"""evaluate for generative models (a causal LM): perplexity on the held-out blocks beside the pretrained model, and generations.

Test (and val) perplexity, loss and next-token accuracy of the fine-tuned model AND of the untouched pretrained model
on the same blocks (the baseline, as the majority class is for a classifier), each with a bootstrap 95 % interval
over blocks and the paired comparison (scoring.py); generations of both for evaluate.prompts (seeded
sampling; `auto`: openings of test documents, generation.prompts) with distinct-1/2, the 4-gram repetition rate and the
share that ended at a stop token (a chat model's end of turn: does it still follow its template?). Writes
reports/metrics.json and reports/evaluate/
(generations.json; blocks.csv: every test block's loss under both models; token_logprobs.safetensors: each val and
test token's log-probability, this model's input to the ensemble).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from finetune import paths
from finetune.families.generative import scoring
from finetune.io import write_json, write_table


def generations(model, tokenizer, settings) -> list[dict]:
    from finetune.families.generative.generation import complete, prompts

    rows = []
    for chosen in prompts(settings, tokenizer):
        start = time.perf_counter()
        text, stopped = complete(model, tokenizer, chosen["prompt"], max_new_tokens=settings.max_new_tokens,
                                 temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        rows.append({**chosen, "continuation": text, "stopped": stopped, "seconds": round(time.perf_counter() - start, 2)})
    return rows


def diversity(rows: list[dict]) -> dict:
    from finetune.families.generative.generation import distinct_n, repetition_rate

    texts = [row["continuation"] for row in rows]
    return {"distinct_1": round(distinct_n(texts, 1), 4), "distinct_2": round(distinct_n(texts, 2), 4),
            "repetition_rate_4gram": round(repetition_rate(texts), 4),
            # a chat model that still follows its template ends every reply with its end-of-turn token
            "ended_at_stop_token": round(sum(row["stopped"] for row in rows) / len(rows), 4)}


def run(task, params, folder: Path) -> dict:
    settings = params.evaluate
    blocks = {split: scoring.load_blocks(split) for split in ("val", "test")}
    tokenizer = task.models.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    tuned = task.models.load_trained(str(paths.MODEL), params.train.trust_remote_code)
    pretrained = task.models.load_model(task.models.source(params.train.model), {}, params.train)
    tuned_logp, tuned_scores = scoring.score(tuned, blocks, params.train.eval_batch_size)
    base_logp, base_scores = scoring.score(pretrained, {"test": blocks["test"]}, params.train.eval_batch_size)
    test, baseline = tuned_logp["test"], base_logp["test"]
    result = {
        **tuned_scores["test"], "ci95": scoring.interval(test), "val": tuned_scores["val"],
        "baseline": {"strategy": f"the pretrained model ({params.train.model}), not fine-tuned", **base_scores["test"],
                     "ci95": scoring.interval(baseline)},
        "vs_baseline": scoring.compare(test, baseline),
        "test_blocks": len(blocks["test"]), "block_size": int(blocks["test"].shape[1]),
    }
    samples = {"fine-tuned": generations(tuned, tokenizer, settings), "pretrained": generations(pretrained, tokenizer, settings)}
    result["generation"] = {name: diversity(rows) for name, rows in samples.items()}
    if all("reference" in row for row in samples["fine-tuned"]):  # replies to held-out conversations: scored against theirs
        from finetune.families.generative import references

        replies = {name: [row["continuation"] for row in rows] for name, rows in samples.items()}
        wanted = [row["reference"] for row in samples["fine-tuned"]]
        result["replies"] = {**{name: references.score(texts, wanted) for name, texts in replies.items()},
                             "vs_pretrained": references.compare(replies["fine-tuned"], replies["pretrained"], wanted)}
    documents = pd.read_parquet(paths.PREPARED / "test.parquet", columns=["id", "document"])
    per_block = documents.assign(loss=scoring.block_losses(test), pretrained_loss=scoring.block_losses(baseline))
    write_json(folder / "generations.json", {"settings": settings.model_dump(), "samples": samples})
    write_table(folder / "blocks.csv", per_block)
    scoring.save_logprobs(folder / scoring.LOGPROBS, tuned_logp)
    print(f"evaluate: test perplexity {result['perplexity']:.2f} {_bracket(result['ci95'])}, pretrained {result['baseline']['perplexity']:.2f}: "
          f"{scoring.describe(result['vs_baseline'])}; next-token accuracy {result['token_accuracy']:.4f}")
    return result


def _bracket(ci: dict) -> str:
    return f"[{ci['perplexity']['low']:.2f}, {ci['perplexity']['high']:.2f}]"

"""explain: why the fine-tuned model (models/model) predicted what it did, and whether that is faithful.

Examples (explain.examples, from the test split): a quarter each of the most confident errors, the
most confident predictions and the least confident ones, the rest drawn at random (explain.seed).
For each, w.r.t. the probability of the PREDICTED class (finetune/attribution.py):
- integrated_gradients: captum LayerIntegratedGradients on the input embeddings, [PAD] baseline, with
  its convergence delta (how far sum(attributions) is from p(x) - p(baseline));
- gradient_x_input: the one-step comparison method;
- attention: what [CLS] attends to in explain.attention_layer, averaged over heads. A method that does
  not apply to the model is skipped with its reason, never a crash of the stage.
Faithfulness: deleting ([MASK]) the top-k IG tokens must lower p(predicted) more than deleting k
random tokens; both mean curves for k = 1..K and their areas (AOPC) are metrics. Global view: the
tokens with the largest mean IG per predicted class. Texts cut at preprocess.max_length are flagged.
Compressed models (when the compress stage ran): IG of the pruned and distilled models vs their
teacher's, as a mean Spearman rank correlation per example (int8 has no gradients: skipped).
Writes reports/explain.json (metrics) and reports/explain/attributions.json (every score, for other tools).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from finetune import attribution, paths
from finetune.cli import main
from finetune.errors import UserError
from finetune.io import atomic_path, read_json, write_json
from finetune.params import PRIMARY, Params
from finetune.tasks import get_task


def select_examples(predictions: pd.DataFrame, count: int, seed: int) -> list[tuple[int, str]]:
    """(row position in the test split, why it was chosen), most telling first."""
    confidence = predictions["confidence"]
    wrong = predictions.index[predictions["actual"] != predictions["predicted"]]
    quarter = max(1, count // 4)
    groups = [(confidence[wrong].sort_values(ascending=False, kind="stable").index, "misclassified, most confident"),
              (confidence.sort_values(ascending=False, kind="stable").index, "most confident"),
              (confidence.sort_values(kind="stable").index, "least confident")]
    chosen: dict[int, str] = {}
    for rows, reason in groups:
        for row in [r for r in rows if r not in chosen][:quarter]:
            chosen[int(row)] = reason
    rest = [r for r in predictions.index if r not in chosen]
    for row in np.random.default_rng(seed).permutation(rest)[: max(0, count - len(chosen))]:
        chosen[int(row)] = "random"
    return list(chosen.items())[:count]


def _global_view(examples: list[dict], top: int) -> dict[str, list[dict]]:
    """Per predicted class: the tokens with the largest mean IG attribution over the explained examples."""
    rows = [(e["predicted"], token, score) for e in examples
            for token, score, special in zip(e["tokens"], e["integrated_gradients"], e["special"]) if not special]
    frame = pd.DataFrame(rows, columns=["predicted", "token", "score"])
    view = {}
    for label, part in frame.groupby("predicted"):
        means = part.groupby("token")["score"].agg(["mean", "count"]).sort_values("mean", ascending=False).head(top)
        view[label] = [{"token": token, "mean_attribution": round(float(r["mean"]), 5), "count": int(r["count"])} for token, r in means.iterrows()]
    return view


def compressed_drift(params: Params, examples: list[dict], token_ids: list[list[int]], tokenizer) -> dict:
    """Spearman rank correlation, per example then averaged, between the IG scores of the compress
    teacher and of each compressed model that has gradients, on the same tokens and the teacher's
    predicted class. A low value means the compressed model decides for other reasons."""
    if not paths.COMPRESS_METRICS.exists():
        return {}
    task, trust = get_task(params.task), params.train.trust_remote_code
    teacher = read_json(paths.COMPRESS_METRICS)["teacher"]
    teacher_dir = paths.MODEL if teacher == PRIMARY else paths.MEMBER_MODELS / teacher
    if task.load_processor(str(teacher_dir), trust).get_vocab() != tokenizer.get_vocab():
        return {"skipped": f"teacher {teacher!r} tokenizes differently from models/model: no token-by-token comparison"}
    reference = task.load_trained(str(teacher_dir), trust).eval()
    drift: dict = {"teacher": teacher, "int8": "skipped: no gradients flow through int8 embeddings"}
    for method, folder in (("prune", "pruned"), ("distill", "distilled")):
        if not (paths.COMPRESSED / folder).is_dir():
            continue
        model = task.load_trained(str(paths.COMPRESSED / folder), trust).eval()
        correlations = []
        for entry, ids in zip(examples, token_ids):
            special = np.array(entry["special"])
            example = attribution.Example(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), special)
            with torch.no_grad():
                target = int(reference(input_ids=example.input_ids).logits.argmax())
            scores = [attribution.integrated_gradients(m, example, target, tokenizer.pad_token_id, params.explain.ig_steps)[0][~special]
                      for m in (reference, model)]
            if len(scores[0]) > 1:
                correlations.append(spearmanr(*scores).statistic)
        drift[method] = {"mean_spearman": round(float(np.nanmean(correlations)), 4), "examples": len(correlations)}
    return drift


def run(params: Params) -> dict:
    config = params.explain
    task = get_task(params.task)
    label_map = read_json(paths.MODEL / "label_map.json")
    labels = label_map["labels"]
    model = task.load_trained(str(paths.MODEL), params.train.trust_remote_code).eval()
    tokenizer = task.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    predictions = pd.read_csv(paths.EVALUATION / "predictions.csv")
    if predictions["id"].tolist() != test["id"].tolist():
        raise UserError(f"{paths.EVALUATION / 'predictions.csv'} does not list the prepared test rows; rerun evaluate (dvc repro evaluate)")
    skipped: dict[str, str] = {}
    if "attention" in config.methods:
        try:
            model.set_attn_implementation("eager")  # fused attention kernels return no weights
        except (ValueError, AttributeError) as error:
            skipped["attention"] = f"{type(model).__name__} cannot return attention weights: {error}"
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.pad_token_id
    rng = np.random.default_rng(config.seed)

    examples, token_ids, top_curves, random_curves = [], [], [], []
    for row, reason in select_examples(predictions, config.examples, config.seed):
        ids = [int(i) for i in test["input_ids"].iloc[row]]
        special = np.array(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), dtype=bool)
        example = attribution.Example(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), special)
        target = labels.index(predictions["predicted"].iloc[row])
        ig, delta = attribution.integrated_gradients(model, example, target, tokenizer.pad_token_id, config.ig_steps)
        entry = {"id": int(test["id"].iloc[row]), "why_chosen": reason, "text": test["text"].iloc[row],
                 "truncated": bool(test["truncated"].iloc[row]), "actual": predictions["actual"].iloc[row],
                 "predicted": labels[target], "probability": float(predictions["confidence"].iloc[row]),
                 "tokens": tokenizer.convert_ids_to_tokens(ids), "special": special.tolist(),
                 "integrated_gradients": ig.round(6).tolist(), "convergence_delta": delta}
        if "gradient_x_input" in config.methods:
            entry["gradient_x_input"] = attribution.gradient_x_input(model, example, target).round(6).tolist()
        if "attention" in config.methods and "attention" not in skipped:
            try:
                entry["attention"] = attribution.cls_attention(model, example, config.attention_layer).round(6).tolist()
            except (ValueError, IndexError) as error:
                skipped["attention"] = str(error)
        forward = attribution.class_probability(model, example)
        with torch.no_grad():
            top, random = attribution.faithfulness(lambda x: float(forward(x)[0, target]), example.input_ids, ig, ~special,
                                                   config.faithfulness_k, mask_id, rng, config.random_draws)
        top_curves.append(top)
        random_curves.append(random)
        examples.append(entry)
        token_ids.append(ids)

    top_mean, random_mean = np.mean(top_curves, axis=0), np.mean(random_curves, axis=0)
    deltas = np.abs([e["convergence_delta"] for e in examples])
    result = {
        "model": str(paths.MODEL), "examples": len(examples), "methods": [m for m in config.methods if m not in skipped],
        "skipped": skipped, "ig_steps": config.ig_steps,
        "convergence_delta": {"mean_abs": float(deltas.mean()), "max_abs": float(deltas.max())},
        "faithfulness": {
            "k": list(range(1, config.faithfulness_k + 1)),
            "top_ig_drop": top_mean.round(5).tolist(), "random_drop": random_mean.round(5).tolist(),
            "aopc_top_ig": round(float(top_mean.mean()), 5), "aopc_random": round(float(random_mean.mean()), 5),
            "ig_beats_random": bool(top_mean.mean() > random_mean.mean()),
        },
        "compressed_vs_teacher": compressed_drift(params, examples, token_ids, tokenizer),
    }
    with atomic_path(paths.EXPLAIN) as folder:
        folder.mkdir()
        write_json(folder / "attributions.json", {"examples": examples, "global": _global_view(examples, config.top_tokens)})
    write_json(paths.EXPLAIN_METRICS, result)
    f = result["faithfulness"]
    print(f"explain: {len(examples)} examples; deleting the top-k IG tokens lowers p(predicted) by {f['aopc_top_ig']:.4f} on average "
          f"(k = 1..{config.faithfulness_k}), k random tokens by {f['aopc_random']:.4f}; mean |IG delta| {deltas.mean():.4f}")
    return result


if __name__ == "__main__":
    main(run, __doc__)

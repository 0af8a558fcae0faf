"""The text task's explainer: token attributions for one example of a Hugging Face classifier, and the deletion
test of their faithfulness (finetune/attribution/deletion.py). Anything with get_input_embeddings() and .logits works.

The explained quantity is the softmax probability of the predicted class, so attributions are in
probability units: IG's completeness says they sum to p(x) - p(baseline), and captum's
convergence delta is exactly how far from that the Riemann sum ended. A numeric label's model: its predicted value, in
the label's units (finetune/attribution).
Baseline: every ordinary token replaced by [PAD], the special tokens ([CLS], [SEP]) kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

from finetune.attribution import explained, shown, target_of
from finetune.attribution.deletion import beats_random, faithfulness
from finetune.training.head_loss import viewed_as


@dataclass
class Example:
    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    special: np.ndarray  # (T,) bool: [CLS]/[SEP]/padding, never attributed or deleted


def class_probability(model, example: Example) -> Callable[[torch.Tensor], torch.Tensor]:
    """Class probabilities (rows x classes) of a batch of variants of the example (captum picks the target column)."""
    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        mask = example.attention_mask.expand(input_ids.shape[0], -1)
        return explained(model, model(input_ids=input_ids, attention_mask=mask).logits)
    return forward


def integrated_gradients(model, example: Example, target: int, baseline_id: int, steps: int) -> tuple[np.ndarray, float]:
    """(per-token attribution, convergence delta) of p(target) w.r.t. the input embeddings."""
    baseline = torch.where(torch.from_numpy(example.special)[None], example.input_ids, baseline_id)
    method = LayerIntegratedGradients(class_probability(model, example), model.get_input_embeddings())
    attributions, delta = method.attribute(example.input_ids, baselines=baseline, target=target, n_steps=steps,
                                           return_convergence_delta=True)
    return attributions.sum(dim=-1)[0].detach().numpy(), float(delta.item())


def gradient_x_input(model, example: Example, target: int) -> np.ndarray:
    method = LayerGradientXActivation(class_probability(model, example), model.get_input_embeddings())
    return method.attribute(example.input_ids, target=target).sum(dim=-1)[0].detach().numpy()


def cls_attention(model, example: Example, layer: int) -> np.ndarray:
    """Attention the first ([CLS]) position pays to each token in `layer`, averaged over heads."""
    with torch.no_grad():
        outputs = model(input_ids=example.input_ids, attention_mask=example.attention_mask, output_attentions=True)
    if not getattr(outputs, "attentions", None):
        raise ValueError(f"{type(model).__name__} returns no attention weights")
    return outputs.attentions[layer][0].mean(dim=0)[0].numpy()


def _global_view(examples: list[dict], top: int) -> dict[str, list[dict]]:
    """Per predicted class (a numeric label: over every example): the tokens with the largest mean IG attribution over the
    explained examples."""
    import pandas as pd

    rows = [(e["predicted"] if isinstance(e["predicted"], str) else "every example", token, score) for e in examples
            for token, score, special in zip(e["tokens"], e["integrated_gradients"], e["special"]) if not special]
    frame = pd.DataFrame(rows, columns=["predicted", "token", "score"])
    view = {}
    for label, part in frame.groupby("predicted"):
        means = part.groupby("token")["score"].agg(["mean", "count"]).sort_values("mean", ascending=False).head(top)
        view[label] = [{"token": token, "mean_attribution": round(float(r["mean"]), 5), "count": int(r["count"])} for token, r in means.iterrows()]
    return view


class TokenExplainer:
    """The text task's explainer: per-token Integrated Gradients (captum, on the input embeddings, [PAD]
    baseline, convergence delta), gradient x input and [CLS] attention; deletion faithfulness ([MASK]
    the top-k IG tokens vs k random ones); the tokens with the largest mean IG per class; and how far
    the pruned and distilled models' IG rankings drift from their teacher's."""

    def explain(self, params, task, model, tokenizer, test, predictions, chosen: list[tuple[int, str]], labels: list[str]) -> tuple[dict, dict]:
        """(metrics for reports/explain.json, everything for reports/explain/attributions.json)."""
        config = params.explain
        skipped: dict[str, str] = {}
        if "attention" in config.methods:
            try:
                model.set_attn_implementation("eager")  # fused attention kernels return no weights
            except (ValueError, AttributeError) as error:
                skipped["attention"] = f"{type(model).__name__} cannot return attention weights: {error}"
        mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.pad_token_id
        rng = np.random.default_rng(config.seed)
        examples, token_ids, top_curves, random_curves = [], [], [], []
        for row, reason in chosen:
            ids = [int(i) for i in test["input_ids"].iloc[row]]
            special = np.array(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), dtype=bool)
            example = Example(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), special)
            target = target_of(model, labels, predictions["predicted"].iloc[row])
            ig, delta = integrated_gradients(model, example, target, tokenizer.pad_token_id, config.ig_steps)
            entry = {"id": int(test["id"].iloc[row]), "why_chosen": reason, "text": test["input"].iloc[row],
                     "truncated": bool(test["truncated"].iloc[row]), "actual": predictions["actual"].iloc[row],
                     "predicted": shown(model, labels, target, predictions["predicted"].iloc[row]),
                     "probability": float(predictions["confidence"].iloc[row]),
                     "tokens": tokenizer.convert_ids_to_tokens(ids), "special": special.tolist(),
                     "integrated_gradients": ig.round(6).tolist(), "convergence_delta": delta}
            if "gradient_x_input" in config.methods:
                entry["gradient_x_input"] = gradient_x_input(model, example, target).round(6).tolist()
            if "attention" in config.methods and "attention" not in skipped:
                try:
                    entry["attention"] = cls_attention(model, example, config.attention_layer).round(6).tolist()
                except (ValueError, IndexError) as error:
                    skipped["attention"] = str(error)
            forward = class_probability(model, example)
            with torch.no_grad():
                top, random = faithfulness(lambda x: float(forward(x)[0, target]), example.input_ids, ig, ~special,
                                           config.faithfulness_k, mask_id, rng, config.random_draws)
            top_curves.append(top)
            random_curves.append(random)
            examples.append(entry)
            token_ids.append(ids)

        top_mean, random_mean = np.mean(top_curves, axis=0), np.mean(random_curves, axis=0)
        verdict = beats_random(np.mean(top_curves, axis=1) - np.mean(random_curves, axis=1))  # each example's AOPC margin
        deltas = np.abs([e["convergence_delta"] for e in examples])
        result = {
            "examples": len(examples), "methods": [m for m in config.methods if m not in skipped],
            "methods_skipped": skipped, "ig_steps": config.ig_steps,
            "convergence_delta": {"mean_abs": float(deltas.mean()), "max_abs": float(deltas.max())},
            "faithfulness": {
                "k": list(range(1, config.faithfulness_k + 1)),
                "top_ig_drop": top_mean.round(5).tolist(), "random_drop": random_mean.round(5).tolist(),
                "aopc_top_ig": round(float(top_mean.mean()), 5), "aopc_random": round(float(random_mean.mean()), 5),
                "ig_beats_random": verdict["faithful"], "beats_random": {"integrated_gradients": verdict},
            },
            "compressed_vs_teacher": self.compressed_drift(params, task, examples, token_ids, tokenizer, model),
        }
        return result, {"examples": examples, "global": _global_view(examples, config.top_tokens)}

    def compressed_drift(self, params, task, examples: list[dict], token_ids: list[list[int]], tokenizer, model_view) -> dict:
        """Spearman rank correlation, per example then averaged, between the IG scores of the compress
        teacher and of each compressed model that has gradients, on the same tokens and the teacher's
        predicted class. A low value means the compressed model decides for other reasons."""
        from scipy.stats import spearmanr

        from finetune import paths
        from finetune.config.sections import PRIMARY
        from finetune.io import read_json

        if not paths.COMPRESS_METRICS.exists() or not read_json(paths.COMPRESS_METRICS).get("models"):
            return {}
        trust = params.train.trust_remote_code
        teacher = read_json(paths.COMPRESS_METRICS)["teacher"]
        teacher_dir = paths.MODEL if teacher == PRIMARY else paths.MEMBER_MODELS / teacher
        if task.models.load_processor(str(teacher_dir), trust).get_vocab() != tokenizer.get_vocab():
            return {"skipped": f"teacher {teacher!r} tokenizes differently from models/model: no token-by-token comparison"}
        reference = viewed_as(model_view, task.models.load_trained(str(teacher_dir), trust).eval())
        drift: dict = {"teacher": teacher, "int8": "skipped: no gradients through onnxruntime's int8 graph"}
        for method, folder in (("prune", "pruned"), ("distill", "distilled")):
            if not (paths.COMPRESSED / folder).is_dir():
                continue
            model = viewed_as(model_view, task.models.load_trained(str(paths.COMPRESSED / folder), trust).eval())
            correlations = []
            for entry, ids in zip(examples, token_ids):
                special = np.array(entry["special"])
                example = Example(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), special)
                with torch.no_grad():
                    target = int(reference(input_ids=example.input_ids).logits.argmax())  # a numeric label: its only output
                scores = [integrated_gradients(m, example, target, tokenizer.pad_token_id, params.explain.ig_steps)[0][~special]
                          for m in (reference, model)]
                if len(scores[0]) > 1:
                    correlations.append(spearmanr(*scores).statistic)
            drift[method] = {"mean_spearman": round(float(np.nanmean(correlations)), 4), "examples": len(correlations)}
        return drift


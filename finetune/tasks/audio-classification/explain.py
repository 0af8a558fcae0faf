"""Time-frequency attributions for an audio classifier (the audio task's explainer) and the deletion test of their
faithfulness, on the log-mel features the model reads (mel bands x 10 ms frames).

The explained quantity is the softmax probability of the predicted class. The clip's own frames (not the padding after
it) are cut into explain.band_groups x explain.time_slices regions; a deleted or occluded region becomes SILENCE: the
clip's quietest log-mel value (Whisper's features floor every clip at its loudest value minus 80 dB, so silence is that
floor, what the padding holds).
- integrated_gradients: captum IG from the silent spectrogram to the clip.
- occlusion: p lost when a region becomes silent (captum FeatureAblation with the region mask).
Faithfulness: deleting the top-k regions by each method vs k random regions of the clip (finetune/attribution/regions.py);
the mean |IG| map per predicted class. Limits: compressed models are not compared (the image explainer does that).
"""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import FeatureAblation, IntegratedGradients

from finetune import paths
from finetune.attribution import explained, shown, target_of
from finetune.attribution.deletion import beats_random
from finetune.attribution.regions import deletion_drops, pooled, region_ids, region_scores
from finetune.io import read_json

FRAMES_PER_SECOND = 100


def class_probability(model):
    def forward(features: torch.Tensor) -> torch.Tensor:
        return explained(model, model(input_features=features).logits)
    return forward


def clip_regions(bands: int, frames: int, clip_frames: int, band_groups: int, time_slices: int) -> tuple[torch.Tensor, int]:
    """(bands x frames region ids over the clip's frames, -1 on the padding after it; how many regions)."""
    clip_frames = max(1, min(frames, clip_frames))
    slices = min(time_slices, clip_frames)
    ids = torch.full((bands, frames), -1, dtype=torch.long)
    ids[:, :clip_frames] = region_ids(bands, clip_frames, band_groups, slices)
    return ids, band_groups * slices


class SpectrogramExplainer:
    """Integrated Gradients and occlusion over mel bands x time, their deletion faithfulness, the mean |IG| map per class."""

    def explain(self, params, task, model, processor, test, predictions, chosen: list[tuple[int, str]], labels: list[str]) -> tuple[dict, dict]:
        config, batch = params.explain, params.train.eval_batch_size
        layout = read_json(paths.LABEL_MAP)
        rows = test.iloc[[row for row, _ in chosen]]
        data = task.models.dataset(rows, layout, processor)
        features = torch.stack([data[i]["input_features"] for i in range(len(data))])
        forward, methods = class_probability(model), list(config.methods)
        rng = np.random.default_rng(config.seed)
        examples, drops, ig_maps = [], [], []
        for (row, reason), x, seconds in zip(chosen, features.split(1), rows["seconds"]):
            target = target_of(model, labels, predictions["predicted"].iloc[row])
            base = torch.full_like(x, float(x.min()))  # silence
            ids, regions = clip_regions(x.shape[1], x.shape[2], int(np.ceil(seconds * FRAMES_PER_SECOND)), config.band_groups, config.time_slices)
            maps, delta = {}, 0.0
            if "integrated_gradients" in methods:
                attributions, deltas = IntegratedGradients(forward).attribute(x, baselines=base, target=target, n_steps=config.ig_steps,
                                                                              internal_batch_size=batch, return_convergence_delta=True)
                maps["integrated_gradients"], delta = attributions[0].detach(), float(deltas.item())
            if "occlusion" in methods:
                mask = torch.where(ids >= 0, ids, regions)[None]  # the padding: one more region, never ranked
                maps["occlusion"] = FeatureAblation(forward).attribute(x, baselines=base, target=target, feature_mask=mask,
                                                                       perturbations_per_eval=batch)[0].detach()
            k_max = min(config.faithfulness_k, regions)
            orders = [np.argsort(-region_scores(maps[m], ids, regions), kind="stable") for m in methods]
            orders += [rng.permutation(regions) for _ in range(config.random_draws)]
            curves = deletion_drops(forward, x, base, target, ids, orders, k_max, batch)
            curves = np.pad(curves, ((0, 0), (0, config.faithfulness_k - k_max)), mode="edge")  # a short clip has fewer regions
            drops.append(np.vstack([curves[:len(methods)], curves[len(methods):].mean(axis=0, keepdims=True)]))
            ig_maps.append(maps["integrated_gradients"][:, :ids.ge(0).any(0).sum()])
            examples.append({"id": int(test["id"].iloc[row]), "why_chosen": reason, "actual": predictions["actual"].iloc[row],
                             "predicted": shown(model, labels, target, predictions["predicted"].iloc[row]),
                             "probability": float(predictions["confidence"].iloc[row]), "convergence_delta": delta,
                             "seconds": round(float(seconds), 3), "spectrogram": pooled(x[0]),
                             "maps": {m: pooled(s) for m, s in maps.items()}})
        mean_drops = np.mean(drops, axis=0)  # (methods + random) x k
        aopc = dict(zip([*methods, "random"], mean_drops.mean(axis=1).round(5).tolist()))
        per_example = np.mean(drops, axis=2)
        deltas = np.abs([e["convergence_delta"] for e in examples])
        verdicts = {m: beats_random(per_example[:, i] - per_example[:, -1]) for i, m in enumerate(methods)}
        result = {
            "examples": len(examples), "methods": methods, "methods_skipped": {}, "ig_steps": config.ig_steps, "baseline": "silence",
            "convergence_delta": {"mean_abs": float(deltas.mean()), "max_abs": float(deltas.max())},
            "faithfulness": {
                "k": list(range(1, config.faithfulness_k + 1)), "regions": f"{config.band_groups} mel band groups x up to {config.time_slices} time slices",
                "top_ig_drop": mean_drops[methods.index("integrated_gradients")].round(5).tolist(), "random_drop": mean_drops[-1].round(5).tolist(),
                "aopc_top_ig": aopc["integrated_gradients"], "aopc_random": aopc["random"],
                "ig_beats_random": verdicts["integrated_gradients"]["faithful"],
                **{f"aopc_top_{m}": aopc[m] for m in methods if m != "integrated_gradients"}, "beats_random": verdicts,
            },
        }
        return result, {"examples": examples, "global": self.global_view(examples, ig_maps)}

    @staticmethod
    def global_view(examples: list[dict], ig_maps: list[torch.Tensor]) -> dict[str, dict]:
        """Per predicted class: the mean over its examples of |IG| summed over time, per mel band, scaled to a maximum of 1
        (which frequencies the class's decisions rest on; clips differ in length, so time is not averaged)."""
        view: dict[str, list] = {}
        for entry, scores in zip(examples, ig_maps):
            bands = scores.abs().sum(dim=1)
            view.setdefault(str(entry["predicted"]), []).append(bands / (bands.max() or 1.0))
        return {label: {"examples": len(bands), "bands": torch.stack(bands).mean(dim=0).round(decimals=3).tolist()} for label, bands in view.items()}

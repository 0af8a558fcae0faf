"""Pixel attributions for an image classifier (the image task's explainer), and the deletion test of
their faithfulness. Any model called as model(pixel_values=x).logits works (the task's torchvision /
EfficientNet-Lite wrapper, Hugging Face ResNet, ConvNeXt, ViT...).

Everything works on the image in [0, 1] pixels (n x 3 x H x W, grey expanded to 3 channels as in
training); each model normalises with its own processor's mean and std inside the explained function,
so models with different processors (a distilled student) are compared on the same pixels. The
explained quantity is the softmax probability of the predicted class: attributions are in probability
units and IG's captum convergence delta is how far their sum ends from p(x) - p(baseline).
- integrated_gradients: captum IG on the pixels, summed over channels.
- occlusion: p lost when a patch (the patch_grid x patch_grid patches of the deletion test) becomes the
  baseline; captum's FeatureAblation with the patch mask, i.e. Occlusion with window = stride = the patch,
  also when the side is not a multiple of patch_grid.
- grad_cam: captum LayerGradCam on the last Conv2d with at least patch_grid x patch_grid cells (cam_layer), ReLU'd,
  upsampled. CNNs only; opt-in: not shown faithful on the default image model at any layer.
- attention: attention rollout (Abnar & Zuidema 2020) from [CLS] to the patch tokens. Vision transformers only.
- gradient_x_input: captum InputXGradient, i.e. relative to a black image.
A method that does not apply to the model is `skipped` with the reason.
Baseline (IG's starting point, and what deleted / occluded patches become), explain.baseline:
mean (default): every pixel the train split's mean colour (of a seeded sample of 2,048 train images).
  A black baseline gives zero attribution to every black pixel (IG multiplies by x - baseline), and
  Fashion-MNIST's background and many garments are black: the map would miss exactly those.
black; blur: a Gaussian blur of the image itself (sigma = side / 16: shapes gone, colours kept).
Limits: saved maps are average-pooled to at most 32 x 32; int8 models are not compared (no gradients).
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam

from finetune import paths
from finetune.attribution import explained, shown, target_of
from finetune.attribution.deletion import beats_random
from finetune.attribution.regions import deletion_drops, pooled, region_ids, region_scores
from finetune.io import read_json
from finetune.training.head_loss import viewed_as

TRAIN_SAMPLE = 2048  # train images averaged for the mean-colour baseline


def _stats(processor) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(values, dtype=torch.float32).view(-1, 1, 1) for values in (processor.mean, processor.std))


def class_probability(model, processor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Class probabilities (rows x classes) of a batch of [0, 1] images, normalised as this model expects."""
    mean, std = _stats(processor)

    def forward(images: torch.Tensor) -> torch.Tensor:
        return explained(model, model(pixel_values=(images - mean) / std).logits)
    return forward


def pixels(task, frame: pd.DataFrame, layout: dict, processor) -> torch.Tensor:
    """The rows' images as the task feeds them to the model, before normalisation: n x 3 x H x W in [0, 1]."""
    data, (mean, std) = task.models.dataset(frame, layout, processor), _stats(processor)
    return torch.stack([data[i]["pixel_values"] for i in range(len(data))]) * std + mean


def baseline(kind: str, image: torch.Tensor, colour: torch.Tensor | None) -> torch.Tensor:
    if kind == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        side = min(image.shape[-2:])
        return gaussian_blur(image, [2 * (side // 8) + 1] * 2, [side / 16] * 2)
    return colour.expand_as(image) if kind == "mean" else torch.zeros_like(image)


def integrated_gradients(forward, image, base, target: int, steps: int, batch: int) -> tuple[torch.Tensor, float]:
    """(H x W attribution of p(target), convergence delta)."""
    attributions, delta = IntegratedGradients(forward).attribute(image, baselines=base, target=target, n_steps=steps,
                                                                 internal_batch_size=batch, return_convergence_delta=True)
    return attributions[0].sum(dim=0).detach(), float(delta.item())


def occlusion(forward, image, base, target: int, ids: torch.Tensor, batch: int) -> torch.Tensor:
    """H x W: every pixel holds the p(target) lost when its patch becomes the baseline."""
    lost = FeatureAblation(forward).attribute(image, baselines=base, target=target, feature_mask=ids[None, None],
                                              perturbations_per_eval=batch)
    return lost[0, 0]


def convolutions_run(model, forward, image) -> list[tuple[torch.nn.Conv2d, int]]:
    """(Conv2d, the smaller side of its output) in the order they run in a forward pass (not the order declared)."""
    ran: list = []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda module, _, output: ran.append((module, min(output.shape[-2:])))) for m in convs]
    try:
        with torch.no_grad():
            forward(image)
    finally:
        for hook in hooks:
            hook.remove()
    return ran


def cam_layer(model, forward, image, grid: int) -> torch.nn.Conv2d | None:
    """The Conv2d Grad-CAM reads: the last to run whose output is at least grid x grid cells, so its map can rank the
    deletion test's patches; the first to run when none is that wide. The usual choice, the very last convolution, is
    2 x 2 cells in EfficientNet-Lite0 at 64 px, and its ranking deleted significantly WORSE than random on Fashion-MNIST
    (docs/benchmarks/compression.md, Grad-CAM)."""
    ran = convolutions_run(model, forward, image)
    wide = [module for module, side in ran if side >= grid]
    return wide[-1] if wide else (ran[0][0] if ran else None)


def grad_cam(forward, layer, image, target: int) -> torch.Tensor:
    cam = LayerGradCam(forward, layer).attribute(image, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(image.shape[-2:]), "bilinear")[0, 0].detach()


def attention_weights(model, processor, image) -> tuple[torch.Tensor, ...]:
    """Per layer, (1, heads, tokens, tokens); ValueError when the model gives none (not a transformer)."""
    mean, std = _stats(processor)
    try:
        model.set_attn_implementation("eager")  # fused attention kernels return no weights
        with torch.no_grad():
            attentions = getattr(model(pixel_values=(image - mean) / std, output_attentions=True), "attentions", None)
    except (AttributeError, TypeError):  # not a Hugging Face model, or one without attention
        attentions = None
    except ValueError as error:  # a Hugging Face model that has no eager attention
        raise ValueError(f"{type(model).__name__} cannot return attention weights: {error}") from None
    if not attentions:
        raise ValueError(f"{type(model).__name__} returns no attention weights: attention rollout is for vision transformers")
    return attentions


def attention_rollout(attentions, size: tuple[int, int]) -> torch.Tensor:
    """Abnar & Zuidema (2020): per layer the head-averaged attention plus the identity (the residual path), rows
    renormalised, multiplied through the layers; the [CLS] row on the last side² tokens (the patches), upsampled."""
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens)
    for layer in attentions:
        step = layer[0].float().mean(dim=0) + torch.eye(tokens)
        rollout = (step / step.sum(dim=-1, keepdim=True)) @ rollout
    side = math.isqrt(tokens - 1)  # also right with a distillation token (DeiT): the patches come last
    grid = rollout[0, -side * side:].reshape(1, 1, side, side)
    return torch.nn.functional.interpolate(grid, size=size, mode="bilinear")[0, 0]


def png_base64(image: torch.Tensor) -> str:
    from PIL import Image

    array = (image[0] * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if (array == array[..., :1]).all() else array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class PixelExplainer:
    """The image task's explainer: Integrated Gradients, occlusion, Grad-CAM, attention rollout and gradient x
    input per pixel; deletion faithfulness (the top-k patches by each method vs k random ones); the mean |IG|
    map per predicted class; and how far the pruned and distilled models' IG patch rankings drift from their teacher's."""

    def explain(self, params, task, model, processor, test, predictions, chosen: list[tuple[int, str]],
                labels: list[str]) -> tuple[dict, dict]:
        """(metrics for reports/explain.json, everything for reports/explain/attributions.json)."""
        config, batch = params.explain, params.train.eval_batch_size
        layout = read_json(paths.LABEL_MAP)
        forward = class_probability(model, processor)
        images = pixels(task, test.iloc[[row for row, _ in chosen]], layout, processor)
        colour = self.mean_colour(task, layout, processor, config.seed) if config.baseline == "mean" else None
        height, width = images.shape[-2:]
        grid = min(config.patch_grid, height, width)
        ids, patches = region_ids(height, width, grid, grid), grid * grid
        k_max = min(config.faithfulness_k, patches)
        skipped, conv = self.applicable(model, processor, forward, images[:1], config.methods, grid)
        methods = [m for m in config.methods if m not in skipped]
        rng = np.random.default_rng(config.seed)
        examples, drops, ig_maps = [], [], []
        for (row, reason), image in zip(chosen, images.split(1)):
            target = target_of(model, labels, predictions["predicted"].iloc[row])
            base = baseline(config.baseline, image, colour)
            maps, delta = {}, 0.0
            for method in methods:
                if method == "integrated_gradients":
                    maps[method], delta = integrated_gradients(forward, image, base, target, config.ig_steps, batch)
                elif method == "occlusion":
                    maps[method] = occlusion(forward, image, base, target, ids, batch)
                elif method == "grad_cam":
                    maps[method] = grad_cam(forward, conv, image, target)
                elif method == "attention":
                    maps[method] = attention_rollout(attention_weights(model, processor, image), (height, width))
                else:
                    maps[method] = InputXGradient(forward).attribute(image, target=target)[0].sum(dim=0).detach()
            orders = [np.argsort(-region_scores(maps[m], ids, patches), kind="stable") for m in methods]
            orders += [rng.permutation(patches) for _ in range(config.random_draws)]
            curves = deletion_drops(forward, image, base, target, ids, orders, k_max, batch)
            drops.append(np.vstack([curves[:len(methods)], curves[len(methods):].mean(axis=0, keepdims=True)]))
            ig_maps.append(maps["integrated_gradients"])
            examples.append({"id": int(test["id"].iloc[row]), "why_chosen": reason, "actual": predictions["actual"].iloc[row],
                             "predicted": shown(model, labels, target, predictions["predicted"].iloc[row]),
                             "probability": float(predictions["confidence"].iloc[row]),
                             "convergence_delta": delta, "image": png_base64(image), "maps": {m: pooled(s) for m, s in maps.items()}})

        mean_drops = np.mean(drops, axis=0)  # (methods + random) x k
        aopc = dict(zip([*methods, "random"], mean_drops.mean(axis=1).round(5).tolist()))
        per_example = np.mean(drops, axis=2)  # examples x (methods + random): each example's AOPC
        top, random = mean_drops[methods.index("integrated_gradients")], mean_drops[-1]
        deltas = np.abs([e["convergence_delta"] for e in examples])
        verdicts = {m: beats_random(per_example[:, i] - per_example[:, -1]) for i, m in enumerate(methods)}
        result = {
            "examples": len(examples), "methods": methods, "methods_skipped": skipped, "ig_steps": config.ig_steps, "baseline": config.baseline,
            "convergence_delta": {"mean_abs": float(deltas.mean()), "max_abs": float(deltas.max())},
            "faithfulness": {
                "k": list(range(1, k_max + 1)), "patches": patches,
                "top_ig_drop": top.round(5).tolist(), "random_drop": random.round(5).tolist(),
                "aopc_top_ig": aopc["integrated_gradients"], "aopc_random": aopc["random"],
                "ig_beats_random": verdicts["integrated_gradients"]["faithful"],
                **{f"aopc_top_{m}": aopc[m] for m in methods if m != "integrated_gradients"},
                "beats_random": verdicts,
            },
            "compressed_vs_teacher": self.compressed_drift(params, task, images, ids, patches, colour, model),
        }
        return result, {"examples": examples, "global": self.global_view(examples, ig_maps)}

    @staticmethod
    def mean_colour(task, layout: dict, processor, seed: int) -> torch.Tensor:
        train = pd.read_parquet(paths.PREPARED / "train.parquet")
        sample = train.sample(min(len(train), TRAIN_SAMPLE), random_state=seed)
        return pixels(task, sample, layout, processor).mean(dim=(0, 2, 3))[None, :, None, None]

    @staticmethod
    def applicable(model, processor, forward, image, methods: list[str], grid: int) -> tuple[dict[str, str], torch.nn.Module | None]:
        """({method: why it does not apply to this model}, the Conv2d for Grad-CAM)."""
        name, skipped = type(model).__name__, {}
        try:
            transformer = bool(attention_weights(model, processor, image)) if {"attention", "grad_cam"} & set(methods) else False
        except ValueError as error:
            transformer, skipped["attention"] = False, str(error)
        conv = cam_layer(model, forward, image, grid) if "grad_cam" in methods and not transformer else None
        if transformer:
            skipped["grad_cam"] = (f"{name} is a vision transformer: its only convolution is the patch embedding; "
                                   "attention rollout shows where it looks")
        elif conv is None:
            skipped["grad_cam"] = f"{name} has no Conv2d layer to take Grad-CAM on"
        return {m: why for m, why in skipped.items() if m in methods}, conv

    @staticmethod
    def global_view(examples: list[dict], ig_maps: list[torch.Tensor]) -> dict[str, dict]:
        """Per predicted class (a numeric label: over every example): the mean of the examples' |IG| maps, each scaled to a
        maximum of 1."""
        view: dict[str, list] = {}
        for entry, scores in zip(examples, ig_maps):
            view.setdefault(entry["predicted"] if isinstance(entry["predicted"], str) else "every example", []).append(scores.abs() / (scores.abs().max() or 1.0))
        return {label: {"examples": len(maps), "map": pooled(torch.stack(maps).mean(dim=0))} for label, maps in view.items()}

    def compressed_drift(self, params, task, images: torch.Tensor, ids: torch.Tensor, patches: int, colour, model_view) -> dict:
        """Spearman rank correlation, per example then averaged, between the IG patch scores of the compress
        teacher and of each compressed model that has gradients, for the teacher's predicted class on the
        same images. A low value means the compressed model decides for other reasons."""
        from scipy.stats import spearmanr

        from finetune.config.sections import PRIMARY

        if not paths.COMPRESS_METRICS.exists() or not read_json(paths.COMPRESS_METRICS).get("models"):
            return {}
        trust, config = params.train.trust_remote_code, params.explain
        teacher = read_json(paths.COMPRESS_METRICS)["teacher"]
        teacher_dir = paths.MODEL if teacher == PRIMARY else paths.MEMBER_MODELS / teacher

        def loaded(folder):
            return class_probability(viewed_as(model_view, task.models.load_trained(str(folder), trust).eval()),
                                     task.models.load_processor(str(folder), trust))

        reference = loaded(teacher_dir)
        drift: dict = {"teacher": teacher, "int8": "skipped: no gradients through int8 kernels"}
        for method, folder in (("prune", "pruned"), ("distill", "distilled")):
            if not (paths.COMPRESSED / folder).is_dir():
                continue
            forward, correlations = loaded(paths.COMPRESSED / folder), []
            for image in images.split(1):
                base = baseline(config.baseline, image, colour)
                with torch.no_grad():
                    target = int(reference(image).argmax())
                scores = [region_scores(integrated_gradients(f, image, base, target, config.ig_steps, params.train.eval_batch_size)[0],
                                       ids, patches) for f in (reference, forward)]
                correlations.append(spearmanr(*scores).statistic)
            drift[method] = {"mean_spearman": round(float(np.nanmean(correlations)), 4), "examples": len(correlations)}
        return drift

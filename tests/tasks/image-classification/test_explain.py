"""The image explainer (finetune/tasks/image-classification/explain.py): on a hand-built model whose answer hangs on one known
patch every method points at it and deleting it beats random deletions; IG is complete; the explain stage
end to end on the tiny ResNet with its self-contained report view; attention rollout on a tiny ViT."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from finetune import paths
from finetune.attribution.regions import deletion_drops, region_ids, region_scores
from finetune.families.classification import report
from finetune.tasks import get_task
from stages import evaluate, explain, ingest, preprocess, train
from tests.support import task_module
from tests.support.data import write_image_folder
from tests.support.params import load, tiny_image_params

pixel_attribution = task_module("image-classification", "explain")
EXPLAIN_METHODS = ("integrated_gradients", "gradient_x_input", "attention", "occlusion", "grad_cam")  # every method the image task has

SIZE, GRID, ROW, COLUMN = 16, 4, 1, 2  # 4 x 4 patches of 4 x 4 pixels; the model looks at patch (1, 2) only
PLAIN = SimpleNamespace(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # a processor that leaves [0, 1] pixels as they are


class OnePatch(nn.Module):
    """logit(1) - logit(0) = 8 (mean brightness of patch (1, 2) - 0.5): nothing else matters. A Conv2d on the
    masked image feeds it, so Grad-CAM has a feature map that is zero outside the patch."""

    def __init__(self):
        super().__init__()
        self.mask = torch.zeros(1, 1, SIZE, SIZE)
        self.mask[..., ROW * 4:(ROW + 1) * 4, COLUMN * 4:(COLUMN + 1) * 4] = 1
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 3)

    def forward(self, pixel_values):
        brightness = self.conv(pixel_values * self.mask).sum(dim=(1, 2, 3)) / 16
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(brightness), 8 * (brightness - 0.5)], dim=-1))


def _noise(seed=0) -> torch.Tensor:
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 0.5
    image[..., ROW * 4:(ROW + 1) * 4, COLUMN * 4:(COLUMN + 1) * 4] = 0.9
    return image


def test_every_method_finds_the_one_patch_a_hand_built_model_looks_at():
    model, image = OnePatch(), _noise()
    forward, ids = pixel_attribution.class_probability(model, PLAIN), region_ids(SIZE, SIZE, GRID, GRID)
    base = pixel_attribution.baseline("black", image, None)
    important = ROW * GRID + COLUMN
    maps = {"integrated_gradients": pixel_attribution.integrated_gradients(forward, image, base, 1, 64, 64)[0],
            "occlusion": pixel_attribution.occlusion(forward, image, base, 1, ids, 16),
            "grad_cam": pixel_attribution.grad_cam(forward, pixel_attribution.cam_layer(model, forward, image, GRID), image, 1)}
    for method, scores in maps.items():
        assert region_scores(scores, ids, GRID * GRID).argmax() == important, method
    assert maps["integrated_gradients"][ids != important].abs().max() == 0  # no gradient outside the patch

    rng = np.random.default_rng(0)
    top = np.argsort(-region_scores(maps["integrated_gradients"], ids, 16))
    curves = deletion_drops(forward, image, base, 1, ids, [top] + [rng.permutation(16) for _ in range(200)], 3, 64)
    with torch.no_grad():
        lost = float(forward(image)[0, 1] - forward(base)[0, 1])
    assert curves[0].tolist() == pytest.approx([lost] * 3, abs=1e-6)  # the first deletion takes it all
    assert curves[1:].mean(axis=0).tolist() == pytest.approx([lost * k / 16 for k in (1, 2, 3)], abs=0.05)  # k of 16 hit it with chance k/16


@pytest.mark.parametrize("grid, side", [(4, 4), (8, 8), (2, 2), (32, 8)])
def test_grad_cam_reads_the_last_convolution_wide_enough_to_rank_the_patches(grid, side):
    """Declared out of running order, convolutions at 8, 4 and 2 cells a side: Grad-CAM takes the last to run with at
    least grid x grid cells (the network's very last, 2 x 2 here, only when it is that wide), the first when none is."""
    convs = nn.ModuleList([nn.Conv2d(3, 3, 3, stride=2, padding=1) for _ in range(3)])

    def model(pixel_values):
        x = pixel_values
        for conv in reversed(convs):  # runs 2, 1, 0: declared order is not running order
            x = conv(x)
        return SimpleNamespace(logits=x.mean(dim=(2, 3)))
    forward = pixel_attribution.class_probability(model, PLAIN)
    chosen = pixel_attribution.cam_layer(convs, forward, _noise(), grid)
    outputs = {conv: size for conv, size in zip(reversed(convs), (8, 4, 2))}
    assert outputs[chosen] == side


@pytest.mark.parametrize("kind", ["black", "mean", "blur"])
def test_integrated_gradients_are_complete_up_to_the_reported_delta(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, 3)).eval()

    def wrapped(pixel_values):
        return SimpleNamespace(logits=model(pixel_values))
    forward, image = pixel_attribution.class_probability(wrapped, PLAIN), _noise(1)
    base = pixel_attribution.baseline(kind, image, torch.full((1, 3, 1, 1), 0.3))
    scores, delta = pixel_attribution.integrated_gradients(forward, image, base, 2, 32, 16)
    with torch.no_grad():
        expected = float(forward(image)[0, 2] - forward(base)[0, 2])
    assert abs(float(scores.sum()) - expected) == pytest.approx(abs(delta), abs=1e-5)
    assert abs(delta) < 0.01 * max(abs(expected), 1e-3) + 1e-4


@pytest.fixture
def image_explained(workdir, tiny_image_model):
    write_image_folder(workdir / "data/raw/images", 10)
    params = load(tiny_image_params(str(tiny_image_model), train={"epochs": 3},
                                    explain={"examples": 4, "ig_steps": 16, "methods": list(EXPLAIN_METHODS), "patch_grid": 4}))
    for stage in (ingest, preprocess, train, evaluate):
        stage.run(params)
    return params, explain.run(params), json.loads((paths.EXPLAIN / "attributions.json").read_text())


def test_the_stage_explains_the_tiny_resnet_and_the_report_view_is_self_contained(image_explained):
    params, result, saved = image_explained
    assert result["examples"] == 4 and result["baseline"] == "mean"
    assert result["methods"] == ["integrated_gradients", "gradient_x_input", "occlusion", "grad_cam"]
    assert result["methods_skipped"] == {"attention": "ResNetForImageClassification returns no attention weights: attention rollout is for vision transformers"}
    f = result["faithfulness"]
    assert f["k"] == [1, 2, 3, 4, 5] and f["patches"] == 16 and len(f["top_ig_drop"]) == len(f["random_drop"]) == 5
    assert {"aopc_top_ig", "aopc_random", "ig_beats_random", "aopc_top_occlusion", "aopc_top_grad_cam", "aopc_top_gradient_x_input"} <= set(f)
    assert result["convergence_delta"]["max_abs"] < 0.05 and result["compressed_vs_teacher"] == {}
    assert list(f["beats_random"]) == result["methods"]
    for method, verdict in f["beats_random"].items():  # each example's AOPC margin, averaged: the AOPCs' difference
        top = f["aopc_top_ig"] if method == "integrated_gradients" else f[f"aopc_top_{method}"]
        assert verdict["margin"] == pytest.approx(top - f["aopc_random"], abs=2e-5)
        assert verdict["faithful"] is None or verdict["faithful"] == (verdict["ci95"]["low"] > 0)

    task = get_task(params.task)
    model = task.models.load_trained(str(paths.MODEL), False).eval()
    processor = task.models.load_processor(str(paths.MODEL), False)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    forward = pixel_attribution.class_probability(model, processor)
    for example in saved["examples"]:
        assert set(example["maps"]) == set(result["methods"]) and np.shape(example["maps"]["occlusion"]) == (16, 16)
        image = pixel_attribution.pixels(task, test[test["id"] == example["id"]], json.loads(paths.LABEL_MAP.read_text()), processor)
        with torch.no_grad():
            assert forward(image).max().item() == pytest.approx(example["probability"], abs=1e-5)
    assert sum(v["examples"] for v in saved["global"].values()) == 4

    view = task.explanation_view(result, saved, params)
    unshown = [name for method, name in (("integrated_gradients", "integrated gradients"), ("gradient_x_input", "gradient × input"),
                                         ("occlusion", "occlusion"), ("grad_cam", "Grad-CAM")) if f["beats_random"][method]["faithful"] is not True]
    assert (f"Not shown better than random: {', '.join(unshown)}" if unshown else "Every method beats random.") in view
    assert view.count('<img alt="') == 4 * 5 + len(saved["global"]) and '<img alt="integrated gradients, example' in view
    assert '<img alt="Grad-CAM, example' in view and 'src="data:image/png;base64,' in view
    assert "http://" not in view and "https://" not in view
    section = report.explain_section(task, params)  # the family's part (faithfulness curve, skipped methods), then the task's view
    assert view in section and "attention skipped: ResNetForImageClassification returns no attention weights" in section


def test_a_compressed_copy_of_the_teacher_ranks_the_patches_like_it(image_explained):
    params = image_explained[0]
    shutil.copytree(paths.MODEL, paths.COMPRESSED / "pruned")  # pruning at sparsity 0: the teacher itself
    paths.COMPRESS_METRICS.write_text(json.dumps({"teacher": "primary", "models": {"prune": {}}}))
    drift = explain.run(params)["compressed_vs_teacher"]
    assert drift == {"teacher": "primary", "int8": "skipped: no gradients through int8 kernels", "prune": {"mean_spearman": 1.0, "examples": 4}}


def test_attention_rollout_on_a_tiny_vit_and_grad_cam_is_skipped(workdir):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=SIZE, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=32, num_labels=2)).eval()
    processor = SimpleNamespace(mean=[0.5] * 3, std=[0.5] * 3)
    images = (torch.rand(3, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
    frame = pd.DataFrame({"id": [10, 11, 12], "label": [0, 1, 0], "pixels": [p.tobytes() for p in images]})
    paths.PREPARED.mkdir(parents=True)
    paths.LABEL_MAP.write_text(json.dumps({"labels": ["a", "b"], "pixels": {"height": SIZE, "width": SIZE, "channels": 3}}))
    frame.to_parquet(paths.PREPARED / "train.parquet")
    forward = pixel_attribution.class_probability(model, processor)
    task = get_task("image-classification")
    with torch.no_grad():
        probabilities = forward(pixel_attribution.pixels(task, frame, json.loads(paths.LABEL_MAP.read_text()), processor)).numpy()
    predictions = pd.DataFrame({"actual": "a", "predicted": np.array(["a", "b"])[probabilities.argmax(1)], "confidence": probabilities.max(1)})
    params = SimpleNamespace(explain=SimpleNamespace(methods=list(EXPLAIN_METHODS), ig_steps=8, baseline="mean", patch_grid=4, faithfulness_k=3,
                                                     random_draws=2, seed=0), train=SimpleNamespace(eval_batch_size=16, trust_remote_code=False))
    result, saved = pixel_attribution.PixelExplainer().explain(params, task, model, processor, frame, predictions,
                                                              [(0, "random"), (1, "random")], ["a", "b"])
    assert result["methods"] == ["integrated_gradients", "gradient_x_input", "attention", "occlusion"]
    assert result["methods_skipped"]["grad_cam"].startswith("ViTForImageClassification is a vision transformer")
    for example in saved["examples"]:
        rollout = np.array(example["maps"]["attention"])
        assert rollout.shape == (SIZE, SIZE) and (rollout > 0).all()
    assert "aopc_top_attention" in result["faithfulness"]

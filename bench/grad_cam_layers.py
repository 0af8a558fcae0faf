"""Which convolution should Grad-CAM read (issue 36: on the default image model its patch ranking deleted no better than
random)? In an image project after `dvc repro train` (e.g. `bench/small_repro.py --keep DIR`): a seeded sample of
test images, each explained for the model's predicted class by Grad-CAM on the last Conv2d to run at each output
resolution the network has (EfficientNet-Lite0 at 64 px: 32, 16, 8, 4, 2 cells a side), and by integrated gradients
as the reference; the image explainer's own deletion test (explain.patch_grid x patch_grid patches, the top 1..
faithfulness_k replaced by the explain.baseline, vs explain.random_draws random orders) scores each. Prints each
method's AOPC (mean drop of p(predicted) over k), its margin over random with a percentile-bootstrap 95 % interval
over the images, and the share of images where it beat random.

    cd DIR && PYTHONPATH=/path/to/repo python /path/to/repo/bench/grad_cam_layers.py [--images 100]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import bootstrap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402

explainer = __import__("importlib").import_module("finetune.tasks.image-classification.explain")


def main(images: int) -> None:
    params = load_params()
    task, config = get_task(params.task), params.explain
    trust = params.train.trust_remote_code
    model = task.models.load_trained(str(paths.MODEL), trust).eval()
    processor = task.models.load_processor(str(paths.MODEL), trust)
    layout = read_json(paths.LABEL_MAP)
    test = pd.read_parquet(paths.PREPARED / "test.parquet").sample(images, random_state=config.seed)
    forward = explainer.class_probability(model, processor)
    pictures = explainer.pixels(task, test, layout, processor)
    colour = explainer.PixelExplainer.mean_colour(task, layout, processor, config.seed) if config.baseline == "mean" else None
    height, width = pictures.shape[-2:]
    grid = min(config.patch_grid, height, width)
    ids, patches = explainer.patch_ids(height, width, grid), grid * grid
    k_max = min(config.faithfulness_k, patches)
    layers = {side: module for module, side in explainer.convolutions_run(model, forward, pictures[:1])}  # the last at each side
    methods = [f"grad_cam @ {side}x{side}" for side in layers] + ["integrated_gradients"]
    rng = np.random.default_rng(config.seed)
    aopc = []  # images x (methods + random)
    for image in pictures.split(1):
        with torch.no_grad():
            target = int(forward(image).argmax())
        base = explainer.baseline(config.baseline, image, colour)
        maps = [explainer.grad_cam(forward, layer, image, target) for layer in layers.values()]
        maps.append(explainer.integrated_gradients(forward, image, base, target, config.ig_steps, params.train.eval_batch_size)[0])
        orders = [np.argsort(-explainer.patch_scores(m, ids, patches), kind="stable") for m in maps]
        orders += [rng.permutation(patches) for _ in range(config.random_draws)]
        curves = explainer.deletion_drops(forward, image, base, target, ids, orders, k_max, params.train.eval_batch_size)
        aopc.append([*curves[:len(methods)].mean(axis=1), curves[len(methods):].mean()])
    aopc = np.asarray(aopc)
    print(f"{len(aopc)} test images, {patches} patches ({grid}x{grid}), top 1..{k_max} deleted to the {config.baseline} baseline, "
          f"{config.random_draws} random orders; random AOPC {aopc[:, -1].mean():.4f}")
    print(f"{'method':24s} {'AOPC':>7s} {'- random [95 %]':>26s} {'beats random':>13s}")
    for index, method in enumerate(methods):
        margin = aopc[:, index] - aopc[:, -1]
        ci = bootstrap((margin,), np.mean, n_resamples=1000, method="percentile", random_state=0).confidence_interval
        print(f"{method:24s} {aopc[:, index].mean():7.4f} {margin.mean():+8.4f} [{ci.low:+.4f}, {ci.high:+.4f}] {np.mean(margin > 0):12.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    main(parser.parse_args().images)

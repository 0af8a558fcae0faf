"""Attributions over regions of a 2-D input (an image's patches, a spectrogram's mel bands x time slices): which region
each cell belongs to, a map summed per region, the deletion test that replaces the top-ranked regions by a baseline, and
maps pooled small enough to save. Used by the image and audio explainers."""
from __future__ import annotations

import numpy as np
import torch

MAP_SIDE = 32  # saved maps are pooled to at most this many cells a side: attributions.json stays small


def region_ids(height: int, width: int, rows: int, columns: int) -> torch.Tensor:
    """H x W: the region (0..rows x columns - 1, row-major) of every cell; regions differ by at most a cell a side."""
    along_height, along_width = torch.arange(height) * rows // height, torch.arange(width) * columns // width
    return along_height[:, None] * columns + along_width[None, :]


def region_scores(scores: torch.Tensor, ids: torch.Tensor, regions: int) -> np.ndarray:
    """Each region's summed score (cells with an id outside 0..regions - 1 count for none)."""
    inside = (ids >= 0) & (ids < regions)
    return torch.zeros(regions).index_add_(0, ids[inside].flatten(), scores[inside].flatten().float()).numpy()


def deletion_drops(forward, x: torch.Tensor, base: torch.Tensor, target: int, ids: torch.Tensor, orders: list[np.ndarray], k_max: int,
                   batch: int) -> np.ndarray:
    """(orders x k_max): p(x) - p(x with the first k regions of each order replaced by the baseline), in batched forwards.
    x is (1, ..., H, W) with ids H x W (channels in between share the regions)."""
    masks = torch.stack([torch.isin(ids, torch.as_tensor(order[:k])) for order in orders for k in range(1, k_max + 1)])
    masks = masks.reshape(len(masks), *[1] * (x.dim() - 1 - ids.dim()), *ids.shape)
    with torch.no_grad():
        full = forward(x)[0, target]
        kept = torch.cat([forward(part)[:, target] for part in torch.where(masks, base, x).split(batch)])
    return (full - kept).reshape(len(orders), k_max).double().numpy()


def pooled(scores: torch.Tensor) -> list:
    """At most MAP_SIDE cells a side (cell means), 3 decimals of the map's largest |value|: a heatmap's precision."""
    side = (min(scores.shape[0], MAP_SIDE), min(scores.shape[1], MAP_SIDE))
    cells = torch.nn.functional.adaptive_avg_pool2d(scores[None, None].double(), side)[0, 0].numpy()
    return cells.round(3 - int(np.floor(np.log10(np.abs(cells).max() or 1.0)))).tolist()

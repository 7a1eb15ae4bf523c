"""From anomaly maps to image scores and thresholds.

Each map is measured against its own spread (``normalize_by_own_spread``): a novel view that the
field renders worse everywhere (grain on flat faces, blurred edges, a pose a little off) raises
the whole map, while a defect raises a small part of it. A threshold is set from normal data
alone (``threshold_for_fpr``), not from the min and max of the test set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from omnipose.compare.config import SCORE_METHODS, CompareError, canonical_score_method


def image_score(
    anomaly_map: torch.Tensor, method: str = "max", topk_fraction: float = 0.01, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Image score from an anomaly map: its maximum ("max"), or the mean of its top ``topk_fraction``
    of pixels ("topk_mean", also accepted as "topk").

    anomaly_map: (B, H, W) or (H, W); mask: optional bool of the same shape restricting the pixels
    considered (an empty mask scores the whole map). Returns (B,) (or a 0-d tensor for one map).
    """
    single = anomaly_map.dim() == 2
    maps = anomaly_map[None] if single else anomaly_map
    if mask is not None:
        mask = (mask[None] if mask.dim() == 2 else mask).to(maps.device)
        empty = ~mask.flatten(1).any(1)
        mask = mask | empty.view(-1, 1, 1)
        maps = maps.masked_fill(~mask, float("-inf"))
    flat = maps.flatten(1)
    if method == "max":
        scores = flat.amax(1)
    elif canonical_score_method(method) == "topk_mean":
        if not 0.0 < topk_fraction <= 1.0:
            raise CompareError(f"topk_fraction {topk_fraction} must be in (0, 1].")
        counts = (flat > float("-inf")).sum(1)
        scores = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
        for row, count in enumerate(counts.tolist()):
            k = max(1, math.ceil(topk_fraction * count))
            scores[row] = flat[row].topk(k).values.mean()
    else:
        raise CompareError(f"unknown score method '{method}'; use one of {SCORE_METHODS}.")
    return scores[0] if single else scores


def in_mask_spread(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and interquartile range of each map over its mask. maps: (B, H, W); mask: (B, H, W)
    bool (an empty mask takes the whole map). Returns (median (B,), iqr (B,))."""
    medians, spreads = [], []
    for values, inside in zip(maps, mask):
        values = values[inside] if inside.any() else values.flatten()
        low, median, high = torch.quantile(values.float(), torch.tensor([0.25, 0.5, 0.75], device=values.device))
        medians.append(median)
        spreads.append(high - low)
    return torch.stack(medians), torch.stack(spreads)


def normalize_by_own_spread(maps: torch.Tensor, mask: torch.Tensor, normal_spread: float) -> torch.Tensor:
    """(map - its median) / (its interquartile range + ``normal_spread``), over each map's mask; 0 outside.

    maps: (B, H, W) calibrated anomaly maps; mask: (B, H, W) bool; normal_spread: the interquartile
    range that maps of normal views have (``Calibration.normal_spread``), which keeps a clean map
    from being blown up and makes a map as spread as a normal one count half. Why: the calibration
    learns the residuals of training views, which the field fits closely; a novel view can be
    rendered worse everywhere (grain, blur, a pose a little off), and that raises the whole map,
    where a defect raises a few percent of it and leaves median and quartiles in place.
    Returns (B, H, W).
    """
    if normal_spread <= 0:
        raise CompareError(f"normal_spread {normal_spread} must be > 0 (refit the calibration).")
    median, spread = in_mask_spread(maps, mask)
    normalised = (maps - median.view(-1, 1, 1)) / (spread.view(-1, 1, 1) + normal_spread)
    return normalised * mask


def above_normal(maps: torch.Tensor) -> torch.Tensor:
    """Calibrated maps (B, H, W) with their values below 0 raised to 0: a map says how far each pixel
    lies above what normal data shows, and 0 is also its value off the object. Left negative, the
    object's most normal-looking pixels ranked below the background, and the public AUPRO, whose 200
    thresholds span each class's maps from their minimum up, spent part of them below 0."""
    return maps.clamp_min(0.0)


def threshold_for_fpr(normal_values: Any, fpr: float) -> float:
    """The smallest threshold t with at most a fraction ``fpr`` of normal values strictly above it.

    normal_values: normal image scores (N,) or normal anomaly maps of any shape (every element is
    one sample; select in-object pixels first for pixel thresholds). fpr in [0, 1).
    With n values sorted ascending, t is the value at index n - 1 - floor(fpr * n).
    """
    values = torch.as_tensor(
        np.asarray(normal_values, dtype=np.float64) if not isinstance(normal_values, torch.Tensor) else normal_values
    )
    values = values.detach().flatten().double().cpu()
    if values.numel() == 0:
        raise CompareError("threshold_for_fpr needs at least one normal value.")
    if not torch.isfinite(values).all():
        raise CompareError("threshold_for_fpr got NaN or infinite normal values; drop them first.")
    if not 0.0 <= fpr < 1.0:
        raise CompareError(
            f"fpr {fpr} must be in [0, 1): it is the fraction of normal samples allowed above the threshold."
        )
    ordered = values.sort().values
    allowed_above = math.floor(fpr * ordered.numel() + 1e-9)
    return float(ordered[ordered.numel() - 1 - allowed_above])

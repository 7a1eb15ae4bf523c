"""What the metrics accept: checks that name the offending item, score dtypes, and the
benchmarks' resizes of maps (bilinear) and masks (nearest neighbour).

Bad input raises ``MetricInputError`` naming the item: NaN/inf scores, masks with values other
than {0, 1}, maps that are not (H, W). A map whose size differs from its mask is resized
bilinearly to the mask size, as the benchmarks do, and the resizes are reported once with
counts (``describe_resized``), never silently.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Sequence

import numpy as np

from omnipose.core.errors import OmniposeError


class MetricInputError(OmniposeError, ValueError):
    """Scores, maps or masks that no metric can be computed on (the message names the item)."""


class MapResizedWarning(UserWarning):
    """Anomaly maps were resized bilinearly to the size of their masks."""


def item_name(names: Sequence[str] | None, index: int, kind: str) -> str:
    """How messages name item ``index``: "<kind> '<name>'", or "<kind> #<index>" without names."""
    if names is not None:
        return f"{kind} '{names[index]}'"
    return f"{kind} #{index}"


def score_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype scores are compared in: float32/float64 kept (ties stay ties, thresholds are
    compared as the benchmark compares them), float16 -> float32, integers/bool -> float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise MetricInputError(f"scores must be numbers, got dtype {dtype}")


def as_bool_labels(labels: np.ndarray, what: str) -> np.ndarray:
    """labels: any shape, bool or values in {0, 1}. Returns bool of the same shape.

    Raises MetricInputError naming ``what`` for any other value (e.g. a 0/255 mask array).
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels
    if labels.dtype.kind not in "biuf":
        raise MetricInputError(f"{what} must be bool or 0/1 numbers, got dtype {labels.dtype}")
    binary = (labels == 0) | (labels == 1)
    if not binary.all():
        bad = np.unique(labels[~binary])[:5]
        raise MetricInputError(
            f"{what} is not binary: it holds {bad.tolist()} besides 0/1. "
            "Pass bool masks (True = anomalous) or 0/1 labels."
        )
    return labels != 0


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise MetricInputError naming ``what`` when ``values`` hold NaN or inf."""
    finite = np.isfinite(values)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        raise MetricInputError(
            f"{what} has {count} non-finite value(s) (NaN or inf); fix whatever produced it "
            "(a division by zero or an empty crop) before evaluating."
        )


def checked_map(anomaly_map: np.ndarray, name: str) -> np.ndarray:
    """anomaly_map as a finite (H, W) array in its score dtype; ``name`` names it in errors."""
    anomaly_map = np.asarray(anomaly_map)
    if anomaly_map.ndim != 2:
        raise MetricInputError(f"{name} has shape {anomaly_map.shape}; expected (H, W).")
    anomaly_map = anomaly_map.astype(score_dtype(anomaly_map.dtype), copy=False)
    check_finite(anomaly_map, name)
    return anomaly_map


def checked_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """mask as a bool (H, W) array (True = anomalous); ``name`` names it in errors."""
    mask = as_bool_labels(np.asarray(mask), name)
    if mask.ndim != 2:
        raise MetricInputError(f"{name} has shape {mask.shape}; expected (H, W).")
    return mask


def map_at(anomaly_map: np.ndarray, shape: tuple[int, int], resized: list, name: str = "") -> np.ndarray:
    """anomaly_map (h, w) at ``shape`` (H, W): resized bilinearly when the sizes differ, and the
    resize recorded in ``resized`` as ((h, w), (H, W), name) for ``describe_resized``."""
    if anomaly_map.shape != tuple(shape):
        resized.append((anomaly_map.shape, tuple(shape), name))
        anomaly_map = resize_bilinear(anomaly_map, shape)
    return anomaly_map


def describe_resized(resized: list, total: int, target: str) -> str | None:
    """One line on the maps that were resized (as ``map_at`` recorded them), None when none were.

    target: what they were resized to, e.g. 'the evaluation size'. Maps whose size differs from the
    rest are named: one map from another run or model among the others is a mistake to catch.
    """
    if not resized:
        return None
    (src, dst, _) = resized[0]
    line = (f"resized {len(resized)} of {total} anomaly maps bilinearly to {target} "
            f"(e.g. {src[0]}x{src[1]} -> {dst[0]}x{dst[1]})")
    sizes = Counter(tuple(source) for source, _, _ in resized)
    if len(resized) < total:  # the others already had the size: these are the odd ones
        odd = resized
    elif len(sizes) > 1:  # all resized, from several sizes: the rarer sizes are the odd ones
        usual = sizes.most_common(1)[0][0]
        odd = [r for r in resized if tuple(r[0]) != usual]
    else:
        return line
    shown = ", ".join(f"{name or '?'} ({source[0]}x{source[1]})" for source, _, name in odd[:5])
    return line + f"; of another size than the rest: {shown}{', ...' if len(odd) > 5 else ''}"


def warn_resized(resized: list, total: int, target: str = "the size of their masks", advice: str = "", stacklevel: int = 3) -> str | None:
    """``describe_resized`` as one MapResizedWarning (with ``advice`` appended); returns the line."""
    message = describe_resized(resized, total, target)
    if message is not None:
        warnings.warn(message + advice, MapResizedWarning, stacklevel=stacklevel)
    return message


# ----------------------------------------------------------------------------- the benchmarks' resizes
def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres and no antialiasing.

    This is ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)`` and OpenCV's
    ``INTER_LINEAR``, the resize the benchmarks apply to anomaly maps.
    image: (h, w) float. shape: (H, W). Returns (H, W) in the image's float dtype.
    """
    image = np.asarray(image)
    out_dtype = score_dtype(image.dtype)
    work = image.astype(np.float64, copy=False)

    def axis_weights(size_in: int, size_out: int):
        source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        source = np.maximum(source, 0.0)
        low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, source - low

    r0, r1, wr = axis_weights(work.shape[0], int(shape[0]))
    c0, c1, wc = axis_weights(work.shape[1], int(shape[1]))
    rows = work[r0] * (1.0 - wr)[:, None] + work[r1] * wr[:, None]
    return (rows[:, c0] * (1.0 - wc) + rows[:, c1] * wc).astype(out_dtype)


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre sampling (PIL's NEAREST, torchvision's Resize).

    mask: (h, w). shape: (H, W). Returns (H, W) of the same dtype.
    """
    mask = np.asarray(mask)
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * (mask.shape[0] / shape[0])).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * (mask.shape[1] / shape[1])).astype(np.int64), mask.shape[1] - 1)
    return mask[rows][:, cols]

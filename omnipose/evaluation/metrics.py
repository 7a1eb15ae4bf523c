"""Benchmark metrics as pure functions: AUROC, AP, F1max (image and pixel level) and AUPRO.

The numbers equal those printed by the public evaluators (scikit-learn based, see
``docs/metrics.md`` of the shared docs):

- image level, ``labels: (N,)`` in {0, 1} and ``scores: (N,)``:
  ``auroc`` = ``roc_auc_score``, ``average_precision`` = ``average_precision_score``,
  ``f1_max`` = max of ``2PR / (P + R)`` over ``precision_recall_curve``;
- pixel level, ``maps: (N, H, W)`` float and ``masks: (N, H, W)`` bool (or sequences of (H_i, W_i)
  arrays): ``pixel_auroc`` / ``pixel_average_precision`` over all pixels of the raw maps,
  ``pixel_f1_max`` (Dice-style, 21 thresholds on class-wide min-max normalised maps) and ``aupro``
  (200 thresholds, 8-connected regions, PRO averaged over all regions of all images, FPR < 0.3
  rescaled by its own min/max, trapezoid rule).

Each metric is computed on ``RankedScores`` (``ranking.py``: the scores split by label and sorted
once). Ties are handled exactly as scikit-learn does (AUROC counts a tied positive/negative pair
as one half; AP and F1 evaluate the curve only at distinct score values).

Undefined metrics: when only one label is present (no anomalous or no normal instances/pixels),
scikit-learn raises and the benchmarks cannot print a number. Every metric here then returns an
``Undefined`` value that carries the reason; tables print it as ``undefined``. It is never a
silent 0.5 or 1.0, and arithmetic on it fails loudly (``Undefined`` is not a number).

Bad input raises ``MetricInputError`` naming the offending item (``inputs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

# MapResizedWarning, MetricInputError and resize_bilinear are part of what the metrics offer.
from omnipose.compare import SCORE_METHOD_ALIASES, SCORE_METHODS, canonical_score_method
from omnipose.evaluation.inputs import MapResizedWarning, MetricInputError, check_finite, resize_bilinear  # noqa: F401
from omnipose.evaluation.ranking import RankedScores, rank_pixels, rank_scores

IMAGE_METRICS = ("AUROC_sp", "AP_sp", "F1max_sp")
PIXEL_METRICS = ("AUROC_px", "AP_px", "F1max_px", "AUPRO_px")
UNDEFINED_TEXT = "undefined"

# The Dice-style pixel F1 of the ADer/M2AD evaluator: 21 thresholds on normalised maps.
F1_PIXEL_THRESHOLDS = np.arange(0.0, 1.0 + 1e-3, 0.05)
F1_PIXEL_EPS = 1e-8


@dataclass(frozen=True)
class Undefined:
    """A metric without a value for these inputs (e.g. only one label present), and why."""

    reason: str

    def __str__(self) -> str:
        return UNDEFINED_TEXT

    def __format__(self, spec: str) -> str:
        return UNDEFINED_TEXT


MetricValue = Union[float, Undefined]


def is_defined(value: MetricValue) -> bool:
    """True for a number, False for ``Undefined``."""
    return not isinstance(value, Undefined)


def format_metric(value: MetricValue, digits: int = 4, percent: bool = False) -> str:
    """'0.9123' (or '91.23' with percent=True); 'undefined' for an ``Undefined`` value."""
    if not is_defined(value):
        return UNDEFINED_TEXT
    return f"{value * 100 if percent else value:.{digits}f}"


# ----------------------------------------------------------------------------- metrics on ranked scores
def _one_label_reason(ranked: RankedScores, unit: str) -> str | None:
    if ranked.positive.size == 0:
        return f"no anomalous {unit}: only normal ones were given"
    if ranked.negative.size == 0:
        return f"no normal {unit}: only anomalous ones were given"
    return None


def _distinct_positive_values(positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of the ascending ``positive`` scores: (values (D,), first index (D,))."""
    starts = np.flatnonzero(np.concatenate(([True], positive[1:] != positive[:-1])))
    return positive[starts], starts


def auroc_ranked(ranked: RankedScores, unit: str = "instances") -> MetricValue:
    """Area under the ROC curve (= scikit-learn ``roc_auc_score``).

    Equals the Mann-Whitney statistic P(s+ > s-) + 0.5 P(s+ = s-): for each positive, the normal
    scores strictly below it count 1 and the tied ones 1/2, which is exactly the trapezoid over
    scikit-learn's tie-grouped ROC points. Integer counting, so no rounding builds up.
    """
    reason = _one_label_reason(ranked, unit)
    if reason:
        return Undefined(f"AUROC: {reason}")
    below = np.searchsorted(ranked.negative, ranked.positive, side="left")
    below_or_tied = np.searchsorted(ranked.negative, ranked.positive, side="right")
    twice_wins = int(below.sum(dtype=np.int64)) + int(below_or_tied.sum(dtype=np.int64))
    return twice_wins / (2.0 * ranked.positive.size * ranked.negative.size)


def _counts_at_positive_values(ranked: RankedScores):
    """At each distinct positive value v (ascending): (#pos == v, #pos >= v, #neg >= v)."""
    values, starts = _distinct_positive_values(ranked.positive)
    n_pos = ranked.positive.size
    at_value = np.diff(np.append(starts, n_pos))
    true_positive = n_pos - starts
    false_positive = ranked.negative.size - np.searchsorted(ranked.negative, values, side="left")
    return values, at_value, true_positive, false_positive


def average_precision_ranked(ranked: RankedScores, unit: str = "instances") -> MetricValue:
    """Average precision (= scikit-learn ``average_precision_score``): sum over thresholds of
    (recall increase) x precision. Recall only increases at distinct positive values, so only
    those thresholds contribute; predicting "score >= v" there gives the tie-grouped counts."""
    reason = _one_label_reason(ranked, unit)
    if reason:
        return Undefined(f"AP: {reason}")
    _, at_value, tp, fp = _counts_at_positive_values(ranked)
    precision = tp / (tp + fp)
    return float(np.sum(at_value / ranked.positive.size * precision))


def f1_max_ranked(ranked: RankedScores, unit: str = "instances") -> MetricValue:
    """Maximum F1 over the precision-recall curve (ADer's F1max_sp).

    F1 = 2PR/(P+R) = 2TP / (TP + FP + #positives). Between two distinct positive values TP is
    constant while FP can only grow as the threshold drops, so the maximum is reached at a
    distinct positive value; those are the only thresholds evaluated.
    """
    reason = _one_label_reason(ranked, unit)
    if reason:
        return Undefined(f"F1max: {reason}")
    _, _, tp, fp = _counts_at_positive_values(ranked)
    return float(np.max(2.0 * tp / (tp + fp + ranked.positive.size)))


def best_f1_threshold(ranked: RankedScores) -> MetricValue:
    """The score threshold t (predict anomalous where score >= t) that reaches ``f1_max``.

    Among equally good thresholds the lowest is returned, as PAD's ``thresholds[argmax(f1)]``.
    Used to draw predicted masks in qualitative panels.
    """
    reason = _one_label_reason(ranked, "instances")
    if reason:
        return Undefined(f"F1 threshold: {reason}")
    values, _, tp, fp = _counts_at_positive_values(ranked)
    f1 = 2.0 * tp / (tp + fp + ranked.positive.size)
    return float(values[np.argmax(f1)])


def _count_normalised_above(sorted_values: np.ndarray, low, span, threshold) -> int:
    """#{x in sorted_values : (x - low) / span > threshold}, computed in the values' dtype.

    Normalisation by subtraction and division by a positive number is monotone even after
    rounding, so a binary search over the sorted raw values finds the boundary exactly, without
    materialising a normalised copy of 32M scores.
    """
    lo, hi = 0, sorted_values.size
    while lo < hi:
        mid = (lo + hi) // 2
        if (sorted_values[mid] - low) / span > threshold:
            hi = mid
        else:
            lo = mid + 1
    return sorted_values.size - lo


def pixel_f1_max_ranked(ranked: RankedScores) -> MetricValue:
    """Dice-style pixel F1max of the ADer/M2AD evaluator.

    Maps are min-max normalised over the whole class; for s in arange(0, 1 + 1e-3, 0.05) the
    prediction is ``normalised > s``; precision = TP / (#predicted + 1e-8), recall = TP /
    (#anomalous + 1e-8) summed over all pixels, F1 = 2PR / (P + R + 1e-8); the max is reported.
    Comparisons happen in the maps' dtype (thresholds cast to it), as in the benchmark's
    NumPy 1.26 where a float64 scalar compared with a float32 array is cast to float32.
    Constant maps predict nothing at any threshold (the benchmark's 0/0 normalisation gives NaN
    and ``NaN > s`` is False), so F1max is 0 there.
    """
    reason = _one_label_reason(ranked, "pixels")
    if reason:
        return Undefined(f"F1max_px: {reason}")
    dtype = ranked.positive.dtype
    low, high = ranked.minimum, ranked.maximum
    span = high - low
    n_anomalous = ranked.positive.size
    best = 0.0
    if span == 0:
        return best
    for s in F1_PIXEL_THRESHOLDS.astype(dtype):
        tp = _count_normalised_above(ranked.positive, low, span, s)
        fp = _count_normalised_above(ranked.negative, low, span, s)
        precision = tp / (tp + fp + F1_PIXEL_EPS)
        recall = tp / (n_anomalous + F1_PIXEL_EPS)
        best = max(best, 2.0 * precision * recall / (precision + recall + F1_PIXEL_EPS))
    return float(best)


def aupro_curve(ranked: RankedScores, num_thresholds: int = 200):
    """PRO and FPR at the benchmark's thresholds.

    Thresholds are ``arange(min, max, (max - min) / num_thresholds)`` over all maps, computed with
    the maps' dtype scalars exactly as the benchmark does and compared in that dtype.
    Returns (thresholds (T,), pro (T,) float64, fpr (T,) float64), thresholds ascending.
    PRO(t) = mean over all regions of all images of (region pixels > t) / region area, which is
    the sum of 1/area over anomalous pixels above t divided by the number of regions.
    """
    if ranked.positive_region_weight is None:
        raise ValueError("aupro needs region weights: build the RankedScores with rank_pixels(label_regions=True)")
    dtype = ranked.positive.dtype
    low, high = ranked.minimum, ranked.maximum
    delta = (high - low) / num_thresholds
    thresholds = np.arange(low, high, delta).astype(dtype)
    # Weight of the anomalous pixels strictly above each position: suffix sums, summed from the
    # top down so the small high-threshold sums are not the difference of two large numbers.
    suffix = np.append(np.cumsum(ranked.positive_region_weight[::-1])[::-1], 0.0)
    pro = suffix[np.searchsorted(ranked.positive, thresholds, side="right")] / ranked.region_count
    n_normal = np.int64(ranked.negative.size)
    false_positive = n_normal - np.searchsorted(ranked.negative, thresholds, side="right")
    fpr = false_positive / n_normal
    return thresholds, pro, fpr


def aupro_ranked(ranked: RankedScores, num_thresholds: int = 200, fpr_limit: float = 0.3) -> MetricValue:
    """Area under the per-region-overlap curve up to FPR < ``fpr_limit`` (ADer/cflow-ad AUPRO).

    The kept FPRs are rescaled by their own min and max to [0, 1] (not divided by the limit),
    and PRO is integrated over them with the trapezoid rule.
    """
    reason = _one_label_reason(ranked, "pixels")
    if reason:
        return Undefined(f"AUPRO: {reason}")
    if ranked.minimum == ranked.maximum:
        return Undefined("AUPRO: all anomaly maps are constant, so there are no thresholds")
    _, pro, fpr = aupro_curve(ranked, num_thresholds)
    kept = fpr < fpr_limit
    fpr, pro = fpr[kept], pro[kept]
    if fpr.size < 2 or fpr.max() == fpr.min():
        return Undefined(
            f"AUPRO: fewer than two distinct FPR values below {fpr_limit} among the {num_thresholds} "
            "thresholds (the maps barely separate normal pixels)"
        )
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    # FPR falls as the threshold rises, so the integral runs right to left (sklearn.metrics.auc
    # flips the sign in that case).
    return float(-np.trapezoid(pro, fpr))


# ----------------------------------------------------------------------------- public metric functions
def auroc(labels, scores, names: Sequence[str] | None = None) -> MetricValue:
    """Image-level AUROC. labels: (N,) bool/{0,1}; scores: (N,). = ``roc_auc_score``."""
    return auroc_ranked(rank_scores(labels, scores, names))


def average_precision(labels, scores, names: Sequence[str] | None = None) -> MetricValue:
    """Image-level AP. labels: (N,) bool/{0,1}; scores: (N,). = ``average_precision_score``."""
    return average_precision_ranked(rank_scores(labels, scores, names))


def f1_max(labels, scores, names: Sequence[str] | None = None) -> MetricValue:
    """Image-level F1max. labels: (N,) bool/{0,1}; scores: (N,). Max F1 over the PR curve."""
    return f1_max_ranked(rank_scores(labels, scores, names))


def pixel_auroc(maps, masks, names: Sequence[str] | None = None) -> MetricValue:
    """AUROC over all pixels of raw maps. maps: (N, H, W); masks: (N, H, W) bool."""
    return auroc_ranked(rank_pixels(maps, masks, names, label_regions=False), "pixels")


def pixel_average_precision(maps, masks, names: Sequence[str] | None = None) -> MetricValue:
    """AP over all pixels of raw maps. maps: (N, H, W); masks: (N, H, W) bool."""
    return average_precision_ranked(rank_pixels(maps, masks, names, label_regions=False), "pixels")


def pixel_f1_max(maps, masks, names: Sequence[str] | None = None) -> MetricValue:
    """Dice-style F1max on class-wide normalised maps. maps: (N, H, W); masks: (N, H, W) bool."""
    return pixel_f1_max_ranked(rank_pixels(maps, masks, names, label_regions=False))


def aupro(maps, masks, names: Sequence[str] | None = None, num_thresholds: int = 200, fpr_limit: float = 0.3) -> MetricValue:
    """AUPRO (FPR < 0.3, rescaled). maps: (N, H, W); masks: (N, H, W) bool."""
    return aupro_ranked(rank_pixels(maps, masks, names, label_regions=True), num_thresholds, fpr_limit)


def image_metrics(labels, scores, names: Sequence[str] | None = None, metrics: Sequence[str] = IMAGE_METRICS) -> dict[str, MetricValue]:
    """Several image-level metrics from one sort. labels: (N,); scores: (N,).

    metrics: names from ``IMAGE_METRICS`` ('AUROC_sp', 'AP_sp', 'F1max_sp').
    """
    return image_metrics_ranked(rank_scores(labels, scores, names), metrics)


def image_metrics_ranked(ranked: RankedScores, metrics: Sequence[str] = IMAGE_METRICS) -> dict[str, MetricValue]:
    """Image-level metrics on ranked scores; ``metrics`` are matched by their stem (AUROC, AP,
    F1max) so that protocol-specific names such as 'AUROC_obj_sp' work too."""
    functions = {"AUROC": auroc_ranked, "AP": average_precision_ranked, "F1max": f1_max_ranked}
    results = {}
    for name in metrics:
        stem = name.split("_", 1)[0]
        if stem not in functions:
            raise ValueError(f"unknown image metric {name!r}; choose from {IMAGE_METRICS}")
        results[name] = functions[stem](ranked)
    return results


def pixel_metrics(maps, masks, names: Sequence[str] | None = None, metrics: Sequence[str] = PIXEL_METRICS,
                  num_thresholds: int = 200, fpr_limit: float = 0.3) -> dict[str, MetricValue]:
    """Several pixel-level metrics from one pass and one sort.

    maps: (N, H, W) float or a sequence of (H_i, W_i); masks: same layout, bool/{0, 1}.
    metrics: names from ``PIXEL_METRICS`` ('AUROC_px', 'AP_px', 'F1max_px', 'AUPRO_px').
    """
    unknown = [m for m in metrics if m not in PIXEL_METRICS]
    if unknown:
        raise ValueError(f"unknown pixel metric(s) {unknown}; choose from {PIXEL_METRICS}")
    ranked = rank_pixels(maps, masks, names, label_regions="AUPRO_px" in metrics)
    return pixel_metrics_ranked(ranked, metrics, num_thresholds, fpr_limit)


def pixel_metrics_ranked(ranked: RankedScores, metrics: Sequence[str] = PIXEL_METRICS,
                         num_thresholds: int = 200, fpr_limit: float = 0.3) -> dict[str, MetricValue]:
    """Pixel metrics on ranked pixels; ``metrics`` are matched by their stem (AUROC, AP, F1max, AUPRO)
    so that protocol-specific names such as 'AUROC_view_px' or 'AUPRO_view' work too."""
    results = {}
    for name in metrics:
        stem = name.split("_", 1)[0]
        if stem == "AUROC":
            results[name] = auroc_ranked(ranked, "pixels")
        elif stem == "AP":
            results[name] = average_precision_ranked(ranked, "pixels")
        elif stem == "F1max":
            results[name] = pixel_f1_max_ranked(ranked)
        elif stem == "AUPRO":
            results[name] = aupro_ranked(ranked, num_thresholds, fpr_limit)
        else:
            raise ValueError(f"unknown pixel metric {name!r}; choose from {PIXEL_METRICS}")
    return results


# ----------------------------------------------------------------------------- curves for plots
def curve_points(ranked: RankedScores, max_points: int = 1000) -> dict[str, np.ndarray]:
    """ROC and PR curve points for plotting (not for the metric values).

    Evaluated at every distinct score when there are at most ``max_points`` of them, otherwise
    at ``max_points`` quantiles of all scores. Predicting "score >= t", t descending.
    Returns {'fpr', 'tpr', 'recall', 'precision'}: each (T + 1,) float64, starting at the
    strictest threshold (ROC from (0, 0); PR from recall 0, precision 1).
    """
    if _one_label_reason(ranked, "instances"):
        empty = np.zeros(0)
        return {"fpr": empty, "tpr": empty, "recall": empty, "precision": empty}
    both = np.concatenate([ranked.positive[:: max(1, ranked.positive.size // max_points)],
                           ranked.negative[:: max(1, ranked.negative.size // max_points)],
                           [ranked.minimum, ranked.maximum]])
    thresholds = np.unique(both)
    if thresholds.size > max_points:
        thresholds = np.unique(np.quantile(thresholds, np.linspace(0, 1, max_points), method="nearest"))
    thresholds = thresholds[::-1]
    tp = ranked.positive.size - np.searchsorted(ranked.positive, thresholds, side="left")
    fp = ranked.negative.size - np.searchsorted(ranked.negative, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    return {
        "fpr": np.concatenate(([0.0], fp / ranked.negative.size)),
        "tpr": np.concatenate(([0.0], tp / ranked.positive.size)),
        "recall": np.concatenate(([0.0], tp / ranked.positive.size)),
        "precision": np.concatenate(([1.0], precision)),
    }


# ----------------------------------------------------------------------------- image score
# One idea, one name, kept where the comparison defines it: "topk_mean" ("topk" understood).
IMAGE_SCORE_METHODS = SCORE_METHODS
IMAGE_SCORE_ALIASES = SCORE_METHOD_ALIASES


def image_score_method(method: str) -> str:
    """The name an image score method goes by ('topk' -> 'topk_mean'); ValueError for an unknown one."""
    method = canonical_score_method(method)
    if method not in IMAGE_SCORE_METHODS:
        raise ValueError(f"unknown image score method {method!r}; use {' or '.join(map(repr, IMAGE_SCORE_METHODS))}.")
    return method


def image_score_from_map(anomaly_map: np.ndarray, method: str = "max", top_k: int | float = 0.01) -> float:
    """One anomaly score for an image from its map.

    anomaly_map: (H, W) finite float.
    method: 'max' (PAD, ADer default) or 'topk_mean' (also spelt 'topk': the mean of the k
        highest pixels, steadier against single hot pixels).
    top_k: for 'topk_mean': an int = number of pixels, a float in (0, 1] = fraction of pixels.
    """
    method = image_score_method(method)
    values = np.asarray(anomaly_map).ravel()
    if values.size == 0:
        raise MetricInputError("cannot score an empty anomaly map.")
    check_finite(values, "anomaly map")
    if method == "max":
        return float(values.max())
    if isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool):
        k = int(top_k)
    elif 0.0 < float(top_k) <= 1.0:
        k = int(np.ceil(float(top_k) * values.size))
    else:
        raise ValueError(f"top_k={top_k!r}: give a pixel count (int >= 1) or a fraction in (0, 1].")
    if k < 1:
        raise ValueError(f"top_k={top_k!r}: give a pixel count (int >= 1) or a fraction in (0, 1].")
    k = min(k, values.size)
    return float(np.partition(values, values.size - k)[values.size - k :].astype(np.float64).mean())


def decision_metrics(labels, decisions) -> dict[str, MetricValue]:
    """How yes/no decisions fare: {'FAR_sp': share of normal images decided anomalous (false-alarm
    rate), 'Recall_sp': share of anomalous images decided anomalous}. labels, decisions: (N,) bool.
    A rate with no image to count is Undefined."""
    labels = np.asarray(labels, dtype=bool)
    decisions = np.asarray(decisions, dtype=bool)
    if labels.shape != decisions.shape:
        raise MetricInputError(f"{decisions.size} decisions for {labels.size} labels; give one decision per image.")
    normal, anomalous = ~labels, labels
    far = float(decisions[normal].mean()) if normal.any() else Undefined("no normal image to count false alarms on")
    recall = float(decisions[anomalous].mean()) if anomalous.any() else Undefined("no anomalous image to count")
    return {"FAR_sp": far, "Recall_sp": recall}

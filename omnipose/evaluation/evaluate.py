"""Benchmark protocols (PAD, M2AD-Invariant, M2AD-Synergy), result tables and figures.

Protocols
---------
- ``pad``: PAD / OmniposeAD (MAD-Sim, MAD-Real). Maps at 224x224 (bilinear; masks nearest),
  each Gaussian-filtered with sigma 4, all maps of a class min-max normalised together; pixel
  AUROC over all pixels, image AUROC from each map's max; the image label is the defect folder.
- ``m2ad-invariant``: every M2AD image (one view, one illumination) is an instance; the
  ADer metric set (AUROC/AP/F1max at image level, AUROC/AP/F1max/AUPRO at pixel level); the
  image label is ``mask.max()``.
- ``m2ad-synergy``: the illuminations of each (specimen, view) fused into a view instance
  (mask and label: max; score and map: mean for 'add', geometric mean for 'mul'), all metrics on
  view instances; every specimen's image scores fused into an object instance (label: the
  specimen's) for image-level AUROC/AP/F1max.

Prediction directory (our contract; one class per directory)::

    <pred>/<key>.npy             float (H, W) anomaly map, higher = more anomalous
    <pred>/scores.json           optional {"<key>": image score}; without it, scores come from
                                 the maps (the max of the evaluated map)
    <pred>/<key>_reference.png   optional reference view (e.g. the render at the estimated pose),
                                 only used for qualitative panels

The key of a test image is its path below the class's test root, without suffix:
MAD: ``<Type>/<stem>`` for ``<data>/<class>/test/<Type>/<stem>.png`` (Type: good, Burrs, Missing,
Stains; masks ``<data>/<class>/ground_truth/<Type>/<stem>_mask.png``, none for good).
M2AD: ``<Good|NG>/<specimen>/<stem>`` for ``<data>/<class>/<Good|NG>/<specimen>/<stem>.png``.
When several classes are evaluated in one run, each class's predictions are in ``<pred>/<class>/``.

Undefined metrics (only one label present) print as 'undefined'; class means average the classes
where a metric is defined and name the others.
"""
from __future__ import annotations

import argparse
import csv
import io as _stringio
import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from omnipose.core.errors import DataError, OmniposeError
from omnipose.core.files import atomic_path, atomic_write_json, atomic_write_text
from omnipose.core.image import read_mask
from omnipose.data import M2adImage, group_object_instances, group_view_instances, open_m2ad_class
from omnipose.evaluation import metrics as M

PROTOCOLS = ("pad", "m2ad-invariant", "m2ad-synergy")
FUSION_RULES = ("add", "mul")
PAD_METRICS = ("AUROC_sp", "AUROC_px")
ADER_METRICS = ("AUROC_sp", "AP_sp", "F1max_sp", "AUROC_px", "AP_px", "F1max_px", "AUPRO_px")
SYNERGY_METRICS = (
    "AUROC_obj_sp", "AUROC_view_sp", "AUROC_view_px",
    "F1max_obj_sp", "F1max_view_sp", "F1max_view_px",
    "AP_obj_sp", "AP_view_sp", "AP_view_px",
    "AUPRO_view",
)  # fmt: skip
PAD_IMAGE_SIZE = (224, 224)
PAD_GAUSSIAN_SIGMA = 4.0
NATIVE_SIZE = "native"
SCORES_FILE = "scores.json"


class PredictionError(OmniposeError):
    """A prediction directory that is missing, incomplete or malformed."""


# ----------------------------------------------------------------------------- configuration and results
@dataclass(frozen=True)
class EvaluationConfig:
    """How one protocol is run. ``None`` fields take the protocol's default (see ``resolved``).

    image_size: (height, width) everything is evaluated at (maps bilinear, masks nearest), or
        'native' = each mask's own resolution (maps resized to it). None: the protocol's default,
        224x224 for PAD, 'native' for M2AD.
    gaussian_sigma: Gaussian filter on each map before evaluation. PAD: 4; M2AD: 0 (none).
    fusion: 'add' or 'mul', the Synergy fusion rule.
    metrics: metric names; default PAD_METRICS, ADER_METRICS or SYNERGY_METRICS.
    score_method: how image scores are derived from maps without scores.json ('max', 'topk_mean').
    """

    protocol: str = "pad"
    image_size: tuple[int, int] | str | None = None
    gaussian_sigma: float | None = None
    fusion: str = "add"
    metrics: tuple[str, ...] | None = None
    score_method: str = "max"

    def resolved(self) -> "EvaluationConfig":
        """A copy with every default filled in and every field checked."""
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.fusion not in FUSION_RULES:
            raise ValueError(f"unknown fusion rule {self.fusion!r}; choose from {', '.join(FUSION_RULES)}")
        pad = self.protocol == "pad"
        size = self.image_size if self.image_size is not None else (PAD_IMAGE_SIZE if pad else NATIVE_SIZE)
        if size != NATIVE_SIZE:
            if isinstance(size, str) or len(size) != 2:
                raise ValueError(f"image_size {size!r}: give (height, width) or {NATIVE_SIZE!r}")
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise ValueError(f"image_size {size} must be positive")
        sigma = self.gaussian_sigma if self.gaussian_sigma is not None else (PAD_GAUSSIAN_SIGMA if pad else 0.0)
        allowed = SYNERGY_METRICS if self.protocol == "m2ad-synergy" else ADER_METRICS
        chosen = tuple(self.metrics) if self.metrics else (PAD_METRICS if pad else allowed)
        unknown = [m for m in chosen if m not in allowed]
        if unknown:
            raise ValueError(f"metric(s) {unknown} do not exist in protocol {self.protocol}; choose from {', '.join(allowed)}")
        return replace(self, image_size=size, gaussian_sigma=float(sigma), metrics=chosen)

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) to evaluate at, or None for each mask's own resolution."""
        return None if self.image_size in (None, NATIVE_SIZE) else tuple(self.image_size)


@dataclass
class PanelExample:
    """An evaluated anomalous instance kept for a qualitative panel.

    anomaly_map: (H, W) the evaluated map; mask: (H, W) bool.
    """

    key: str
    image_path: Path | None
    reference_path: Path | None
    anomaly_map: np.ndarray
    mask: np.ndarray
    score: float


@dataclass
class ClassResult:
    """The metrics of one class under one protocol, and what is needed to plot them.

    metrics: {name: float or Undefined}. counts: sizes of the evaluation (images, pixels, ...).
    curves: {level: curve_points dict} for ROC/PR plots ('image', 'pixel', 'view', ...).
    pixel_threshold: threshold of the best pixel F1 on the evaluated maps (for predicted masks).
    notes: what the evaluator changed or noticed (resized maps, empty masks, ...).
    """

    class_name: str
    protocol: str
    metrics: dict[str, M.MetricValue]
    counts: dict[str, int]
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pixel_threshold: M.MetricValue = M.Undefined("not computed")
    notes: list[str] = field(default_factory=list)
    examples: list[PanelExample] = field(default_factory=list)


@dataclass(frozen=True)
class ClassMean:
    """Mean of one metric over the classes where it is defined."""

    value: M.MetricValue
    defined_in: tuple[str, ...]
    undefined_in: tuple[str, ...]


# ----------------------------------------------------------------------------- small array steps
def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre sampling (PIL's NEAREST, torchvision's Resize).

    mask: (h, w). shape: (H, W). Returns (H, W) of the same dtype.
    """
    mask = np.asarray(mask)
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * (mask.shape[0] / shape[0])).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * (mask.shape[1] / shape[1])).astype(np.int64), mask.shape[1] - 1)
    return mask[rows][:, cols]


def fuse_scores(scores: Sequence[float], fusion: str, name: str = "instance") -> float:
    """One score from several: 'add' = mean, 'mul' = geometric mean (prod ** (1 / n)).

    scores: (K,). 'mul' needs non-negative scores (a geometric mean of negatives is undefined).
    name: the fused instance, for error messages.
    """
    values = np.asarray(scores, dtype=np.float64)
    if fusion == "add":
        return float(np.mean(values))
    if fusion == "mul":
        if (values < 0).any():
            raise M.MetricInputError(
                f"fusion 'mul' (geometric mean) needs non-negative scores, but {name} has "
                f"{values[values < 0][:3].tolist()}; shift the scores or use fusion 'add'."
            )
        return float(np.prod(values) ** (1.0 / values.size))
    raise ValueError(f"unknown fusion rule {fusion!r}; choose from {', '.join(FUSION_RULES)}")


def fuse_maps(maps: Sequence[np.ndarray], fusion: str, name: str = "instance") -> np.ndarray:
    """One map from several of the same size: pixel-wise mean ('add') or geometric mean ('mul').

    maps: (K, H, W). Returns (H, W) in the maps' dtype. The mean is taken in that dtype, as the
    benchmark does; the geometric mean in float64, because a float32 product of ten small values
    underflows to 0 and would tie pixels that differ.
    """
    stack = np.stack([np.asarray(m) for m in maps])
    if fusion == "add":
        return np.mean(stack, axis=0)
    if fusion == "mul":
        if (stack < 0).any():
            raise M.MetricInputError(
                f"fusion 'mul' (geometric mean) needs non-negative anomaly maps, but those of {name} have "
                "negative values; use fusion 'add' for signed maps."
            )
        return (np.prod(stack.astype(np.float64), axis=0) ** (1.0 / len(stack))).astype(stack.dtype)
    raise ValueError(f"unknown fusion rule {fusion!r}; choose from {', '.join(FUSION_RULES)}")


def _read_benchmark_mask(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    """A ground-truth mask, binary as the benchmarks require, at shape (H, W) when given."""
    return read_mask(path, None if shape is None else (shape[1], shape[0]), strict=True)


def _prepare_map(anomaly_map: np.ndarray, shape: tuple[int, int], sigma: float, name: str, resized: list) -> np.ndarray:
    """Checked (H, W) map at ``shape``, Gaussian-filtered when sigma > 0 (after resizing, as PAD)."""
    anomaly_map = np.asarray(anomaly_map)
    if anomaly_map.ndim != 2:
        raise M.MetricInputError(f"anomaly map '{name}' has shape {anomaly_map.shape}; expected (H, W).")
    anomaly_map = anomaly_map.astype(M.score_dtype(anomaly_map.dtype), copy=False)
    M.check_finite(anomaly_map, f"anomaly map '{name}'")
    if anomaly_map.shape != tuple(shape):
        resized.append((anomaly_map.shape, tuple(shape)))
        anomaly_map = M.resize_bilinear(anomaly_map, shape)
    if sigma > 0:
        anomaly_map = gaussian_filter(anomaly_map, sigma=sigma)
    return anomaly_map


def _prepare_mask(mask: np.ndarray, shape: tuple[int, int] | None, name: str) -> np.ndarray:
    mask = M.as_bool_labels(np.asarray(mask), f"mask of '{name}'")
    if mask.ndim != 2:
        raise M.MetricInputError(f"mask of '{name}' has shape {mask.shape}; expected (H, W).")
    if shape is not None and mask.shape != tuple(shape):
        mask = resize_nearest(mask, shape)
    return mask


def _image_scores(maps: Sequence[np.ndarray], scores, names: Sequence[str], method: str) -> np.ndarray:
    if scores is None:
        return np.array([M.image_score_from_map(m, method) for m in maps], dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(names),):
        raise M.MetricInputError(f"{scores.size} image scores for {len(names)} images; give one score per image.")
    return scores


def _level_metrics(ranked: M.RankedScores, names: Sequence[str], kind: str) -> dict[str, M.MetricValue]:
    if not names:
        return {}
    if kind == "sp":
        return M.image_metrics_ranked(ranked, names)
    return M.pixel_metrics_ranked(ranked, names)


def _split_metrics(metrics: Sequence[str], level: str) -> tuple[list[str], list[str]]:
    """The (image-level, pixel-level) metric names of one level: '' (plain), 'view' or 'obj'."""
    def level_of(name: str) -> str:
        return "obj" if "_obj_" in name else "view" if "_view" in name else ""

    chosen = [m for m in metrics if level_of(m) == level]
    return [m for m in chosen if m.endswith("_sp")], [m for m in chosen if not m.endswith("_sp")]


def _evaluate_instances(maps, masks, labels, scores, names, metrics, level, result: ClassResult) -> M.RankedScores | None:
    """Image- and pixel-level metrics of one level of instances, into ``result``.

    maps: sequence of (H_i, W_i) evaluated maps; masks: same sizes, bool; labels, scores: (N,).
    Returns the ranked pixels (for the panel threshold) or None when no pixel metric was asked.
    """
    image_names, pixel_names = _split_metrics(metrics, level)
    curve_level = {"": "image", "view": "view", "obj": "object"}[level]
    ranked_images = M.rank_scores(labels, scores, names)
    result.metrics.update(_level_metrics(ranked_images, image_names, "sp"))
    result.curves[curve_level] = M.curve_points(ranked_images)
    if not pixel_names:
        return None
    ranked_pixels = M.rank_pixels(maps, masks, names, label_regions=any(m.startswith("AUPRO") for m in pixel_names))
    result.metrics.update(_level_metrics(ranked_pixels, pixel_names, "px"))
    result.curves[f"{level} pixel".strip()] = M.curve_points(ranked_pixels)
    result.counts[f"{level + '_' if level else ''}pixels"] = int(ranked_pixels.positive.size + ranked_pixels.negative.size)
    result.counts[f"{level + '_' if level else ''}anomalous_pixels"] = int(ranked_pixels.positive.size)
    return ranked_pixels


def _note_resized(resized: list, total: int, result: ClassResult, unit: str = "anomaly maps") -> None:
    if resized:
        (src, dst) = resized[0]
        message = (
            f"resized {len(resized)} of {total} {unit} bilinearly to the evaluation size "
            f"(e.g. {src[0]}x{src[1]} -> {dst[0]}x{dst[1]})"
        )
        warnings.warn(message, M.MapResizedWarning, stacklevel=3)
        result.notes.append(message)


def _keep_examples(result: ClassResult, count: int, keys, maps, masks, labels, scores, image_paths, reference_paths) -> None:
    """Keep the ``count`` anomalous instances with the highest scores for qualitative panels."""
    if count <= 0:
        return
    anomalous = [i for i in range(len(keys)) if labels[i]]
    for i in sorted(anomalous, key=lambda i: -scores[i])[:count]:
        result.examples.append(PanelExample(
            keys[i], image_paths[i] if image_paths else None, reference_paths[i] if reference_paths else None,
            np.asarray(maps[i]), np.asarray(masks[i]), float(scores[i]),
        ))


# ----------------------------------------------------------------------------- protocols on arrays
def evaluate_pad(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], labels, scores=None,
                 names: Sequence[str] | None = None, config: EvaluationConfig | None = None,
                 class_name: str = "", examples: int = 0, image_paths=None, reference_paths=None) -> ClassResult:
    """PAD / OmniposeAD protocol on in-memory maps.

    maps: N arrays (h_i, w_i), raw anomaly maps (before PAD's Gaussian filter).
    masks: N arrays (H_i, W_i) bool/{0,1}. labels: (N,) image labels (PAD: defect folder != good).
    scores: optional (N,) image scores; default: max of each evaluated (filtered, normalised) map.
    Maps are resized bilinearly and masks with nearest neighbour to ``config.image_size``
    (default 224x224), Gaussian-filtered, then min-max normalised over the class (float dtype
    kept, as PAD does: it does not change AUROC, but it uses test-set statistics).
    """
    config = replace(config or EvaluationConfig(), protocol="pad").resolved()
    names = list(names) if names is not None else [f"#{i}" for i in range(len(maps))]
    if not (len(maps) == len(masks) == len(names) == len(np.ravel(labels))):
        raise M.MetricInputError(f"{len(maps)} maps, {len(masks)} masks and {np.size(labels)} labels: give one of each per image.")
    result = ClassResult(class_name, "pad", {}, {"images": len(maps)})
    resized: list = []
    eval_masks = [_prepare_mask(masks[i], config.shape, names[i]) for i in range(len(maps))]
    eval_maps = [_prepare_map(maps[i], eval_masks[i].shape, config.gaussian_sigma, names[i], resized) for i in range(len(maps))]
    _note_resized(resized, len(maps), result)
    low = min(m.min() for m in eval_maps)
    high = max(m.max() for m in eval_maps)
    if high > low:
        eval_maps = [(m - low) / (high - low) for m in eval_maps]
    else:
        result.notes.append("all anomaly maps are constant; they were not normalised")
    labels = M.as_bool_labels(np.ravel(labels), "image labels")
    empty = [names[i] for i in range(len(maps)) if labels[i] and not eval_masks[i].any()]
    if empty:
        result.notes.append(f"{len(empty)} anomalous image(s) have an empty mask at the evaluation size (e.g. {empty[0]})")
    image_scores = _image_scores(eval_maps, scores, names, config.score_method)
    result.counts["anomalous_images"] = int(labels.sum())
    ranked = _evaluate_instances(eval_maps, eval_masks, labels, image_scores, names, config.metrics, "", result)
    if ranked is None:
        ranked = M.rank_pixels(eval_maps, eval_masks, names, label_regions=False)
    result.pixel_threshold = M.best_f1_threshold(ranked)
    _keep_examples(result, examples, names, eval_maps, eval_masks, labels, image_scores, image_paths, reference_paths)
    result.metrics = {m: result.metrics[m] for m in config.metrics}  # columns in the protocol's order
    return result


def evaluate_m2ad_invariant(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], scores=None,
                            names: Sequence[str] | None = None, config: EvaluationConfig | None = None,
                            class_name: str = "", examples: int = 0, image_paths=None, reference_paths=None) -> ClassResult:
    """M2AD-Invariant: every image is an instance; ADer metric set; label = mask.max().

    maps: N arrays (h_i, w_i); masks: N arrays (H_i, W_i) bool/{0,1} (all-zero for normal images).
    scores: optional (N,); default: ``config.score_method`` of each evaluated map.
    Maps are resized bilinearly to their mask (or to ``config.image_size``, masks nearest).
    """
    config = replace(config or EvaluationConfig(), protocol="m2ad-invariant").resolved()
    names = list(names) if names is not None else [f"#{i}" for i in range(len(maps))]
    if not (len(maps) == len(masks) == len(names)):
        raise M.MetricInputError(f"{len(maps)} maps and {len(masks)} masks: give one mask per map.")
    result = ClassResult(class_name, "m2ad-invariant", {}, {"images": len(maps)})
    resized: list = []
    eval_masks = [_prepare_mask(masks[i], config.shape, names[i]) for i in range(len(maps))]
    eval_maps = [_prepare_map(maps[i], eval_masks[i].shape, config.gaussian_sigma, names[i], resized) for i in range(len(maps))]
    _note_resized(resized, len(maps), result)
    labels = np.array([m.any() for m in eval_masks], dtype=bool)
    image_scores = _image_scores(eval_maps, scores, names, config.score_method)
    result.counts["anomalous_images"] = int(labels.sum())
    ranked = _evaluate_instances(eval_maps, eval_masks, labels, image_scores, names, config.metrics, "", result)
    if ranked is None:
        ranked = M.rank_pixels(eval_maps, eval_masks, names, label_regions=False)
    result.pixel_threshold = M.best_f1_threshold(ranked)
    _keep_examples(result, examples, names, eval_maps, eval_masks, labels, image_scores, image_paths, reference_paths)
    result.metrics = {m: result.metrics[m] for m in config.metrics}  # columns in the protocol's order
    return result


def evaluate_m2ad_synergy(images: Sequence[M2adImage], maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                          scores=None, config: EvaluationConfig | None = None, class_name: str = "") -> ClassResult:
    """M2AD-Synergy: view instances (illuminations fused) and object instances (specimens).

    images: N test images (specimen, view, illumination). maps, masks: N arrays (H_i, W_i) each,
    indexed like ``images``; they are read one view group at a time, so lazy sequences keep the
    memory at one group. scores: optional (N,) per-image scores (default from each map).
    View instance: mask = pixel-wise max, label = mask.max(), score = fuse(image scores),
    map = fuse(maps). Object instance: score = fuse(all its image scores), label = specimen's.
    """
    config = replace(config or EvaluationConfig(), protocol="m2ad-synergy").resolved()
    if not (len(images) == len(maps) == len(masks)):
        raise M.MetricInputError(f"{len(images)} images, {len(maps)} maps and {len(masks)} masks: give one of each per image.")
    names = [image.key for image in images]
    given_scores = None if scores is None else _image_scores([], scores, names, config.score_method)
    image_scores = np.zeros(len(images), dtype=np.float64)
    view_maps, view_masks, view_scores, view_names = [], [], [], []
    resized: list = []
    group_sizes = set()
    for (specimen_key, view), indices in group_view_instances(images).items():
        group_masks = [_prepare_mask(masks[i], config.shape, names[i]) for i in indices]
        shape = group_masks[0].shape
        if any(m.shape != shape for m in group_masks):
            raise M.MetricInputError(f"the masks of view {view} of {specimen_key} differ in size; set an evaluation image size.")
        group_maps = [_prepare_map(maps[i], shape, config.gaussian_sigma, names[i], resized) for i in indices]
        for i, anomaly_map in zip(indices, group_maps):
            image_scores[i] = given_scores[i] if given_scores is not None else M.image_score_from_map(anomaly_map, config.score_method)
        view_name = f"{specimen_key} view {view}"
        view_maps.append(fuse_maps(group_maps, config.fusion, view_name))
        view_masks.append(np.logical_or.reduce(group_masks))
        view_scores.append(fuse_scores(image_scores[indices], config.fusion, view_name))
        view_names.append(view_name)
        group_sizes.add(len(indices))
    result = ClassResult(class_name, "m2ad-synergy", {}, {"images": len(images), "view_instances": len(view_maps)})
    _note_resized(resized, len(images), result)
    if len(group_sizes) > 1:
        result.notes.append(f"view instances fuse different numbers of illuminations: {sorted(group_sizes)}")
    view_labels = np.array([m.any() for m in view_masks], dtype=bool)
    result.counts["anomalous_view_instances"] = int(view_labels.sum())
    ranked = _evaluate_instances(view_maps, view_masks, view_labels, np.array(view_scores), view_names, config.metrics, "view", result)
    if ranked is not None:
        result.pixel_threshold = M.best_f1_threshold(ranked)
    objects = group_object_instances(images)
    object_labels = np.array([images[indices[0]].anomalous_specimen for indices in objects.values()], dtype=bool)
    object_scores = np.array([fuse_scores(image_scores[indices], config.fusion, key) for key, indices in objects.items()])
    result.counts["object_instances"] = len(objects)
    result.counts["anomalous_object_instances"] = int(object_labels.sum())
    _evaluate_instances([], [], object_labels, object_scores, list(objects), config.metrics, "obj", result)
    result.metrics = {m: result.metrics[m] for m in config.metrics}  # columns in the protocol's order
    return result


# ----------------------------------------------------------------------------- prediction directories
def read_anomaly_map(path: str | Path) -> np.ndarray:
    """Load one ``.npy`` anomaly map. Returns (H, W) float; (1, H, W) and (H, W, 1) are squeezed.

    Raises PredictionError naming the file when it cannot be read, is not 2-D or not numeric,
    or holds NaN/inf.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise PredictionError(f"cannot read anomaly map {path}: {error}. Re-run the prediction for this image.") from error
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise PredictionError(f"anomaly map {path} has shape {array.shape} and dtype {array.dtype}; expected a numeric (H, W) array.")
    finite = np.isfinite(array)
    if not finite.all():
        raise PredictionError(f"anomaly map {path} has {finite.size - int(finite.sum())} NaN/inf value(s); fix the method that wrote it.")
    return array


def _prediction_paths(pred_dir: Path, keys: Sequence[str]) -> list[Path]:
    if not pred_dir.is_dir():
        raise PredictionError(f"prediction directory {pred_dir} does not exist.")
    paths = [pred_dir / f"{key}.npy" for key in keys]
    missing = [key for key, path in zip(keys, paths) if not path.is_file()]
    if missing:
        shown = ", ".join(f"{k} ({pred_dir / (k + '.npy')})" for k in missing[:5])
        raise PredictionError(
            f"{len(missing)} of {len(keys)} test images have no prediction in {pred_dir}: {shown}"
            f"{', ...' if len(missing) > 5 else ''}. Every test image needs <pred>/<key>.npy."
        )
    return paths


def read_scores_file(pred_dir: Path, keys: Sequence[str]) -> np.ndarray | None:
    """Image scores from ``<pred>/scores.json`` in the order of ``keys``; None when there is no file.

    Raises PredictionError for unreadable JSON, missing keys or non-finite scores.
    """
    path = Path(pred_dir) / SCORES_FILE
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PredictionError(f"cannot read {path}: {error}. It must be a JSON object {{\"<key>\": score}}.") from error
    if not isinstance(table, dict):
        raise PredictionError(f"{path} must be a JSON object mapping image keys to scores.")
    missing = [k for k in keys if k not in table]
    if missing:
        raise PredictionError(f"{path} has no score for {len(missing)} test image(s), e.g. {', '.join(missing[:5])}.")
    scores = []
    for key in keys:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PredictionError(f"{path}: the score of {key} is {value!r}; scores must be finite numbers.")
        scores.append(float(value))
    extra = len(set(table) - set(keys))
    if extra:
        warnings.warn(f"{path} holds {extra} score(s) for images that are not test images of this class; they are ignored.", stacklevel=3)
    return np.array(scores)


def _class_prediction_dir(pred_dir: Path, class_name: str) -> Path:
    nested = pred_dir / class_name
    return nested if nested.is_dir() else pred_dir


def _reference_paths(pred_dir: Path, keys: Sequence[str]) -> list[Path | None]:
    paths = [pred_dir / f"{key}_reference.png" for key in keys]
    return [p if p.is_file() else None for p in paths]


def _image_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except OSError as error:
        raise DataError(f"cannot read image {path}: {error}") from error


class _LazySequence(Sequence):
    """A read-only sequence whose items are loaded on access (one view group at a time)."""

    def __init__(self, length: int, load: Callable[[int], np.ndarray]):
        self._length, self._load = length, load

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        return self._load(index)


def evaluate_prediction_dir(pred_dir: str | Path, data_root: str | Path, class_name: str,
                            protocol: str | EvaluationConfig = "pad", examples: int = 0) -> ClassResult:
    """Evaluate one class's prediction directory against a MAD or M2AD dataset.

    pred_dir: ``<pred>/<key>.npy`` maps (+ optional scores.json), or ``<pred>/<class>/...``.
    data_root: MAD root for 'pad', M2AD root for the m2ad protocols.
    protocol: a protocol name or an EvaluationConfig.
    examples: keep this many anomalous instances (highest scores) for qualitative panels.
    Raises PredictionError naming missing/malformed predictions, DataError for the dataset.
    """
    config = (protocol if isinstance(protocol, EvaluationConfig) else EvaluationConfig(protocol=protocol)).resolved()
    pred_dir = _class_prediction_dir(Path(pred_dir), class_name)
    if config.protocol == "pad":
        from omnipose.data import open_mad_class

        items = open_mad_class(data_root, class_name, require_masks=True).test_items
        if not items:
            raise DataError(f"class {class_name} under {data_root} has no test images (test/<Type>/*.png).")
        keys = [item.name for item in items]
        paths = _prediction_paths(pred_dir, keys)
        scores = read_scores_file(pred_dir, keys)
        masks = [
            _read_benchmark_mask(item.mask_path, config.shape) if item.mask_path is not None
            else np.zeros(config.shape or _image_shape(item.image_path), dtype=bool)
            for item in items
        ]
        maps = [read_anomaly_map(p) for p in paths]
        labels = np.array([item.is_anomalous for item in items], dtype=bool)
        return evaluate_pad(maps, masks, labels, scores, keys, config, class_name, examples,
                            [item.image_path for item in items], _reference_paths(pred_dir, keys))

    split = open_m2ad_class(data_root, class_name)
    images = list(split.test)
    if not images:
        raise DataError(f"M2AD class {class_name} has no test images.")
    keys = [image.key for image in images]
    paths = _prediction_paths(pred_dir, keys)
    scores = read_scores_file(pred_dir, keys)
    mask_cache: dict[Path, np.ndarray] = {}

    def load_mask(i: int) -> np.ndarray:
        image = images[i]
        if image.mask_path is None:
            return np.zeros(config.shape or _image_shape(image.image_path), dtype=bool)
        if image.mask_path not in mask_cache:  # one mask serves all illuminations of a view
            mask_cache.clear()
            mask_cache[image.mask_path] = _read_benchmark_mask(image.mask_path, config.shape)
        return mask_cache[image.mask_path]

    if config.protocol == "m2ad-invariant":
        masks = [load_mask(i) for i in range(len(images))]
        maps = [read_anomaly_map(p) for p in paths]
        return evaluate_m2ad_invariant(maps, masks, scores, keys, config, class_name, examples,
                                       [image.image_path for image in images], _reference_paths(pred_dir, keys))
    return evaluate_m2ad_synergy(
        images, _LazySequence(len(paths), lambda i: read_anomaly_map(paths[i])),
        _LazySequence(len(images), load_mask), scores, config, class_name,
    )


# ----------------------------------------------------------------------------- class means and tables
def class_means(results: Sequence[ClassResult]) -> dict[str, ClassMean]:
    """Mean of each metric over classes: {'m<metric>': ClassMean}; undefined classes are left out
    and named, and a metric undefined in every class has an Undefined mean."""
    names = list(dict.fromkeys(m for r in results for m in r.metrics))
    means = {}
    for name in names:
        defined = [(r.class_name, r.metrics[name]) for r in results if name in r.metrics and M.is_defined(r.metrics[name])]
        undefined = tuple(r.class_name for r in results if name in r.metrics and not M.is_defined(r.metrics[name]))
        value = float(np.mean([v for _, v in defined])) if defined else M.Undefined(f"{name} is undefined in every class")
        means[f"m{name}"] = ClassMean(value, tuple(c for c, _ in defined), undefined)
    return means


def _metric_names(results: Sequence[ClassResult]) -> list[str]:
    return list(dict.fromkeys(m for r in results for m in r.metrics))


def _table_rows(results: Sequence[ClassResult], means: dict[str, ClassMean], percent: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (classes, then the mean when there are several classes) and footnotes."""
    names = _metric_names(results)
    header = ["class"] + names
    rows = [[r.class_name] + [M.format_metric(r.metrics.get(n, M.Undefined("not computed")), 2 if percent else 4, percent) for n in names]
            for r in results]
    notes = []
    if len(results) > 1:
        mean_row = ["mean"]
        for n in names:
            mean = means[f"m{n}"]
            text = M.format_metric(mean.value, 2 if percent else 4, percent)
            if mean.undefined_in and M.is_defined(mean.value):
                text += "*"
                notes.append(f"* m{n}: mean over {len(mean.defined_in)} of {len(mean.defined_in) + len(mean.undefined_in)} "
                             f"classes; undefined in {', '.join(mean.undefined_in)}")
            mean_row.append(text)
        rows.append(mean_row)
    return header, rows, notes


def format_table(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """A fixed-width terminal table of the metrics in percent, with a mean row for several classes."""
    means = means if means is not None else class_means(results)
    header, rows, notes = _table_rows(results, means, percent=True)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    protocol = results[0].protocol if results else ""
    text = [f"{protocol} (values in %)", line(header), "  ".join("-" * w for w in widths)]
    text += [line(row) for row in rows] + notes
    return "\n".join(text)


def markdown_table(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """The metrics in percent as a Markdown table, with footnotes for partial means."""
    means = means if means is not None else class_means(results)
    header, rows, notes = _table_rows(results, means, percent=True)
    text = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    text += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        text += [""] + notes
    return "\n".join(text) + "\n"


def csv_text(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """The metrics as CSV, fractions in [0, 1] at full precision, 'undefined' where undefined."""
    means = means if means is not None else class_means(results)
    names = _metric_names(results)
    buffer = _stringio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class"] + names + ["note"])
    for r in results:
        writer.writerow([r.class_name] + [_csv_cell(r.metrics.get(n, M.Undefined("not computed"))) for n in names] + ["; ".join(r.notes)])
    if len(results) > 1:
        partial = [f"m{n} undefined in {', '.join(means[f'm{n}'].undefined_in)}" for n in names if means[f"m{n}"].undefined_in]
        writer.writerow(["mean"] + [_csv_cell(means[f"m{n}"].value) for n in names]
                        + [("mean over defined classes; " + "; ".join(partial)) if partial else ""])
    return buffer.getvalue()


def _csv_cell(value: M.MetricValue) -> str:
    return repr(float(value)) if M.is_defined(value) else M.UNDEFINED_TEXT


def _json_value(value: M.MetricValue) -> float | None:
    return float(value) if M.is_defined(value) else None


def results_to_dict(results: Sequence[ClassResult], config: EvaluationConfig | None = None) -> dict:
    """A JSON-ready summary: undefined metrics are null with their reason under 'undefined'."""
    means = class_means(results)
    return {
        "protocol": results[0].protocol if results else None,
        "config": asdict(config) if config is not None else None,
        "classes": {
            r.class_name: {
                "metrics": {k: _json_value(v) for k, v in r.metrics.items()},
                "undefined": {k: v.reason for k, v in r.metrics.items() if not M.is_defined(v)},
                "counts": r.counts,
                "pixel_threshold": _json_value(r.pixel_threshold),
                "notes": r.notes,
            }
            for r in results
        },
        "means": {
            k: {"value": _json_value(m.value), "defined_in": list(m.defined_in), "undefined_in": list(m.undefined_in)}
            for k, m in means.items()
        },
    }


# ----------------------------------------------------------------------------- figures
def _new_figure(width: float, height: float):
    # An explicit Agg canvas: no pyplot global state, no display needed, safe in threads/notebooks.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def save_curves(result: ClassResult, out_dir: str | Path) -> list[Path]:
    """``<class>_roc.png`` and ``<class>_pr.png``: one line per level (image, pixel, view, ...)."""
    out_dir = Path(out_dir)
    written = []
    for kind, (x, y, xlabel, ylabel) in {
        "roc": ("fpr", "tpr", "false positive rate", "true positive rate"),
        "pr": ("recall", "precision", "recall", "precision"),
    }.items():
        figure = _new_figure(5, 5)
        axes = figure.add_subplot(1, 1, 1)
        for level, points in result.curves.items():
            if points[x].size:
                axes.plot(points[x], points[y], label=level)
        if kind == "roc":
            axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
        axes.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=f"{result.class_name} {kind.upper()} ({result.protocol})")
        if axes.lines:
            axes.legend(loc="lower right" if kind == "roc" else "lower left")
        written.append(_save_figure(figure, out_dir / f"{result.class_name or 'class'}_{kind}.png"))
    return written


def save_panel(path: str | Path, image: np.ndarray | None, reference: np.ndarray | None, mask: np.ndarray,
               anomaly_map: np.ndarray, threshold: float) -> Path:
    """A qualitative panel like PAD's figures: image | reference | ground truth | heat-map overlay |
    predicted mask (anomaly_map > threshold).

    image, reference: (H, W, 3) float in [0, 1], or None (the column says 'not available').
    mask: (h, w) bool. anomaly_map: (h', w') float (resized to the image for the overlay).
    """
    figure = _new_figure(15, 3.3)
    axes = figure.subplots(1, 5)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float64)
    columns = [("image", image), ("reference", reference)]
    for ax, (title, picture) in zip(axes[:2], columns):
        if picture is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(np.clip(picture, 0, 1))
        ax.set_title(title)
    axes[2].imshow(np.asarray(mask, dtype=float), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("ground truth")
    background = image if image is not None else np.zeros(anomaly_map.shape + (3,))
    overlay_map = anomaly_map if anomaly_map.shape == background.shape[:2] else M.resize_bilinear(anomaly_map, background.shape[:2])
    axes[3].imshow(np.clip(background, 0, 1))
    heat = axes[3].imshow(overlay_map, cmap="jet", alpha=0.5, vmin=float(anomaly_map.min()), vmax=float(anomaly_map.max()))
    axes[3].set_title("heat map")
    figure.colorbar(heat, ax=axes[3], fraction=0.046, pad=0.04)
    axes[4].imshow(anomaly_map > threshold, cmap="gray", vmin=0, vmax=1)
    axes[4].set_title(f"predicted mask (> {threshold:.3g})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    return _save_figure(figure, path)


def _save_example_panels(result: ClassResult, out_dir: Path) -> list[Path]:
    from omnipose.core.image import read_image_rgb

    if not result.examples or not M.is_defined(result.pixel_threshold):
        return []
    written = []
    for example in result.examples:
        image = read_image_rgb(example.image_path) if example.image_path else None
        reference = read_image_rgb(example.reference_path) if example.reference_path else None
        name = example.key.replace("/", "_")
        written.append(save_panel(out_dir / "panels" / f"{result.class_name}_{name}.png", image, reference,
                                  example.mask, example.anomaly_map, result.pixel_threshold))
    return written


def write_report(results: Sequence[ClassResult], out_dir: str | Path, config: EvaluationConfig | None = None) -> dict[str, Path]:
    """Write metrics.json, metrics.csv, metrics.md, ROC/PR curves and panels, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    means = class_means(results)
    written = {
        "json": out_dir / "metrics.json",
        "csv": out_dir / "metrics.csv",
        "markdown": out_dir / "metrics.md",
    }
    atomic_write_json(written["json"], results_to_dict(results, config))
    atomic_write_text(written["csv"], csv_text(results, means))
    atomic_write_text(written["markdown"], markdown_table(results, means))
    for r in results:
        roc, pr = save_curves(r, out_dir)
        written[f"{r.class_name}_roc"], written[f"{r.class_name}_pr"] = roc, pr
        for i, panel in enumerate(_save_example_panels(r, out_dir)):
            written[f"{r.class_name}_panel_{i}"] = panel
    return written


# ----------------------------------------------------------------------------- command line
def _parse_size(text: str) -> tuple[int, int] | str:
    if text.lower() == NATIVE_SIZE:
        return NATIVE_SIZE
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: give N, HxW, or 'native'") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size {text!r}: give N, HxW, or 'native'")
    return parts[0], parts[1]


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``omnipose evaluate``."""
    parser.add_argument("--pred", required=True, type=Path, help="prediction directory: <pred>/<key>.npy (+ scores.json)")
    parser.add_argument("--data", required=True, type=Path, help="dataset root: MAD for pad, M2AD for m2ad-*")
    parser.add_argument("--class", dest="class_names", required=True, nargs="+", metavar="NAME",
                        help="class name(s); with several, predictions are read from <pred>/<class>/")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="pad", help="benchmark protocol (default: pad)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>/evaluation-<protocol>)")
    parser.add_argument("--fusion", choices=FUSION_RULES, default="add", help="m2ad-synergy fusion rule (default: add)")
    parser.add_argument("--image-size", type=_parse_size, default=None,
                        help="evaluation size N or HxW, or 'native' (default: 224 for pad, native for m2ad)")
    parser.add_argument("--gaussian-sigma", type=float, default=None,
                        help="Gaussian filter on each map (default: 4 for pad, 0 for m2ad)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: the protocol's set)")
    parser.add_argument("--panels", type=int, default=0, help="qualitative panels for the N highest-scoring anomalous images")
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``omnipose evaluate``: print the table, write JSON/CSV/Markdown/curves. Returns the exit code."""
    try:
        config = EvaluationConfig(
            protocol=args.protocol,
            image_size=args.image_size,
            gaussian_sigma=args.gaussian_sigma,
            fusion=args.fusion,
            metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None,
        )
        config = config.resolved()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if len(args.class_names) > 1:
        missing = [c for c in args.class_names if not (args.pred / c).is_dir()]
        if missing:
            print(f"error: with several classes, predictions must be in <pred>/<class>/; missing: "
                  f"{', '.join(str(args.pred / c) for c in missing)}", file=sys.stderr)
            return 2
    try:
        # Warnings are shown once, as plain lines; resize warnings are already in each class's notes.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = [evaluate_prediction_dir(args.pred, args.data, c, config, examples=args.panels) for c in args.class_names]
            out_dir = args.out or args.pred / f"evaluation-{config.protocol}"
            written = write_report(results, out_dir, config)
    except OmniposeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, M.MapResizedWarning)):
        print(f"warning: {warning}", file=sys.stderr)
    print(format_table(results))
    for r in results:
        for note in r.notes:
            print(f"note ({r.class_name}): {note}")
    print(f"wrote {written['json']}, {written['csv'].name}, {written['markdown'].name} and {len(written) - 3} figure(s) to {out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m omnipose.evaluate``) until the main CLI wires it in."""
    parser = add_evaluate_arguments(argparse.ArgumentParser(prog="omnipose evaluate", description=__doc__.split("\n")[0]))
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark protocols on in-memory maps: PAD, M2AD-Invariant and M2AD-Synergy.

Each takes anomaly maps (any size, raw), ground-truth masks and optional image scores, brings
them to the protocol's evaluation size (``EvaluationConfig``), and returns a ``ClassResult``.
The protocols themselves are described in ``config.py``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from omnipose.data import M2adImage, group_object_instances, group_view_instances
from omnipose.evaluation.config import FUSION_RULES, EvaluationConfig
from omnipose.evaluation.inputs import (
    MetricInputError,
    as_bool_labels,
    checked_map,
    checked_mask,
    map_at,
    resize_nearest,
    warn_resized,
)
from omnipose.evaluation.metrics import (
    best_f1_threshold,
    curve_points,
    image_metrics_ranked,
    image_score_from_map,
    pixel_metrics_ranked,
)
from omnipose.evaluation.ranking import RankedScores, rank_pixels, rank_scores
from omnipose.evaluation.results import ClassResult, PanelExample


# ----------------------------------------------------------------------------- fusion (M2AD-Synergy)
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
            raise MetricInputError(
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
            raise MetricInputError(
                f"fusion 'mul' (geometric mean) needs non-negative anomaly maps, but those of {name} have "
                "negative values; use fusion 'add' for signed maps."
            )
        return (np.prod(stack.astype(np.float64), axis=0) ** (1.0 / len(stack))).astype(stack.dtype)
    raise ValueError(f"unknown fusion rule {fusion!r}; choose from {', '.join(FUSION_RULES)}")


# ----------------------------------------------------------------------------- maps and masks at the evaluation size
def _prepare_map(anomaly_map: np.ndarray, shape: tuple[int, int], sigma: float, name: str, resized: list) -> np.ndarray:
    """Checked (H, W) map at ``shape``, Gaussian-filtered when sigma > 0 (after resizing, as PAD)."""
    anomaly_map = map_at(checked_map(anomaly_map, f"anomaly map '{name}'"), shape, resized, name)
    if sigma > 0:
        anomaly_map = gaussian_filter(anomaly_map, sigma=sigma)
    return anomaly_map


def _prepare_mask(mask: np.ndarray, shape: tuple[int, int] | None, name: str) -> np.ndarray:
    mask = checked_mask(mask, f"mask of '{name}'")
    if shape is not None and mask.shape != tuple(shape):
        mask = resize_nearest(mask, shape)
    return mask


def _prepare_images(maps, masks, names, config: EvaluationConfig, result: ClassResult) -> tuple[list, list]:
    """(maps, masks) of one image per instance at the evaluation size; resizes go into the notes."""
    resized: list = []
    eval_masks = [_prepare_mask(masks[i], config.shape, names[i]) for i in range(len(maps))]
    eval_maps = [_prepare_map(maps[i], eval_masks[i].shape, config.gaussian_sigma, names[i], resized) for i in range(len(maps))]
    _note_resized(resized, len(maps), result, stacklevel=5)  # warn at the protocol's caller
    return eval_maps, eval_masks


def _note_resized(resized: list, total: int, result: ClassResult, stacklevel: int = 4) -> None:
    message = warn_resized(resized, total, "the evaluation size", stacklevel=stacklevel)
    if message is not None:
        result.notes.append(message)


def _image_scores(maps: Sequence[np.ndarray], scores, names: Sequence[str], method: str) -> np.ndarray:
    if scores is None:
        return np.array([image_score_from_map(m, method) for m in maps], dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(names),):
        raise MetricInputError(f"{scores.size} image scores for {len(names)} images; give one score per image.")
    return scores


# ----------------------------------------------------------------------------- metrics of one level of instances
def _split_metrics(metrics: Sequence[str], level: str) -> tuple[list[str], list[str]]:
    """The (image-level, pixel-level) metric names of one level: '' (plain), 'view' or 'obj'."""
    def level_of(name: str) -> str:
        return "obj" if "_obj_" in name else "view" if "_view" in name else ""

    chosen = [m for m in metrics if level_of(m) == level]
    return [m for m in chosen if m.endswith("_sp")], [m for m in chosen if not m.endswith("_sp")]


def _evaluate_instances(maps, masks, labels, scores, names, metrics, level, result: ClassResult) -> RankedScores | None:
    """Image- and pixel-level metrics of one level of instances, into ``result``.

    maps: sequence of (H_i, W_i) evaluated maps; masks: same sizes, bool; labels, scores: (N,).
    Returns the ranked pixels (for the panel threshold) or None when no pixel metric was asked.
    """
    image_names, pixel_names = _split_metrics(metrics, level)
    curve_level = {"": "image", "view": "view", "obj": "object"}[level]
    ranked_images = rank_scores(labels, scores, names)
    if image_names:
        result.metrics.update(image_metrics_ranked(ranked_images, image_names))
    result.curves[curve_level] = curve_points(ranked_images)
    if not pixel_names:
        return None
    ranked_pixels = rank_pixels(maps, masks, names, label_regions=any(m.startswith("AUPRO") for m in pixel_names))
    result.metrics.update(pixel_metrics_ranked(ranked_pixels, pixel_names))
    result.curves[f"{level} pixel".strip()] = curve_points(ranked_pixels)
    prefix = f"{level}_" if level else ""
    result.counts[f"{prefix}pixels"] = int(ranked_pixels.positive.size + ranked_pixels.negative.size)
    result.counts[f"{prefix}anomalous_pixels"] = int(ranked_pixels.positive.size)
    return ranked_pixels


def _evaluate_images(result: ClassResult, maps, masks, labels, scores, names, config: EvaluationConfig,
                     examples: int, image_paths, reference_paths) -> ClassResult:
    """Image- and pixel-level metrics with one image per instance (PAD, M2AD-Invariant), the panel
    threshold and the examples for panels, into ``result``."""
    image_scores = _image_scores(maps, scores, names, config.score_method)
    result.counts["anomalous_images"] = int(labels.sum())
    ranked = _evaluate_instances(maps, masks, labels, image_scores, names, config.metrics, "", result)
    if ranked is None:
        ranked = rank_pixels(maps, masks, names, label_regions=False)
    result.pixel_threshold = best_f1_threshold(ranked)
    _keep_examples(result, examples, names, maps, masks, labels, image_scores, image_paths, reference_paths)
    result.metrics = {m: result.metrics[m] for m in config.metrics}  # columns in the protocol's order
    return result


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


def _names(names: Sequence[str] | None, count: int) -> list[str]:
    return list(names) if names is not None else [f"#{i}" for i in range(count)]


# ----------------------------------------------------------------------------- the protocols
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
    names = _names(names, len(maps))
    if not (len(maps) == len(masks) == len(names) == len(np.ravel(labels))):
        raise MetricInputError(f"{len(maps)} maps, {len(masks)} masks and {np.size(labels)} labels: give one of each per image.")
    result = ClassResult(class_name, "pad", {}, {"images": len(maps)})
    eval_maps, eval_masks = _prepare_images(maps, masks, names, config, result)
    low = min(m.min() for m in eval_maps)
    high = max(m.max() for m in eval_maps)
    if high > low:
        eval_maps = [(m - low) / (high - low) for m in eval_maps]
    else:
        result.notes.append("all anomaly maps are constant; they were not normalised")
    labels = as_bool_labels(np.ravel(labels), "image labels")
    empty = [names[i] for i in range(len(maps)) if labels[i] and not eval_masks[i].any()]
    if empty:
        result.notes.append(f"{len(empty)} anomalous image(s) have an empty mask at the evaluation size (e.g. {empty[0]})")
    return _evaluate_images(result, eval_maps, eval_masks, labels, scores, names, config, examples, image_paths, reference_paths)


def evaluate_m2ad_invariant(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], scores=None,
                            names: Sequence[str] | None = None, config: EvaluationConfig | None = None,
                            class_name: str = "", examples: int = 0, image_paths=None, reference_paths=None) -> ClassResult:
    """M2AD-Invariant: every image is an instance; ADer metric set; label = mask.max().

    maps: N arrays (h_i, w_i); masks: N arrays (H_i, W_i) bool/{0,1} (all-zero for normal images).
    scores: optional (N,); default: ``config.score_method`` of each evaluated map.
    Maps are resized bilinearly to their mask (or to ``config.image_size``, masks nearest).
    """
    config = replace(config or EvaluationConfig(), protocol="m2ad-invariant").resolved()
    names = _names(names, len(maps))
    if not (len(maps) == len(masks) == len(names)):
        raise MetricInputError(f"{len(maps)} maps and {len(masks)} masks: give one mask per map.")
    result = ClassResult(class_name, "m2ad-invariant", {}, {"images": len(maps)})
    eval_maps, eval_masks = _prepare_images(maps, masks, names, config, result)
    labels = np.array([m.any() for m in eval_masks], dtype=bool)
    return _evaluate_images(result, eval_maps, eval_masks, labels, scores, names, config, examples, image_paths, reference_paths)


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
        raise MetricInputError(f"{len(images)} images, {len(maps)} maps and {len(masks)} masks: give one of each per image.")
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
            raise MetricInputError(f"the masks of view {view} of {specimen_key} differ in size; set an evaluation image size.")
        group_maps = [_prepare_map(maps[i], shape, config.gaussian_sigma, names[i], resized) for i in indices]
        for i, anomaly_map in zip(indices, group_maps):
            image_scores[i] = given_scores[i] if given_scores is not None else image_score_from_map(anomaly_map, config.score_method)
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
        result.pixel_threshold = best_f1_threshold(ranked)
    objects = group_object_instances(images)
    object_labels = np.array([images[indices[0]].anomalous_specimen for indices in objects.values()], dtype=bool)
    object_scores = np.array([fuse_scores(image_scores[indices], config.fusion, key) for key, indices in objects.items()])
    result.counts["object_instances"] = len(objects)
    result.counts["anomalous_object_instances"] = int(object_labels.sum())
    _evaluate_instances([], [], object_labels, object_scores, list(objects), config.metrics, "obj", result)
    result.metrics = {m: result.metrics[m] for m in config.metrics}  # columns in the protocol's order
    return result

"""Prediction folders: how a method's output is laid out, read back and evaluated against a dataset.

Prediction directory (our contract; one class per directory)::

    <pred>/<key>.npy             float (H, W) anomaly map, higher = more anomalous
    <pred>/<key>.json            optional; written last by ``Detector.detect_class``, so that a
                                 key with both files is finished (``finished_keys``)
    <pred>/scores.json           optional {"<key>": image score}; without it, scores come from
                                 the maps (the max of the evaluated map)
    <pred>/<key>_reference.png   optional reference view (e.g. the render at the estimated pose),
                                 only used for qualitative panels
    <pred>/config.json           optional; the configs of the run that wrote the folder (runner.py)

When every ``<key>.json`` records a decision (``anomalous``) and ``pose_confident``, as omnipose's
detector writes them, the evaluation adds the decisions' false-alarm rate (``FAR_sp``) and recall
(``Recall_sp``) beside the AUROCs, and the metrics without the queries whose pose is not to be
trusted (``<metric>_confident``), naming those queries.

The key of a test image is its path below the class's test root, without suffix:
MAD: ``<Type>/<stem>`` for ``<data>/<class>/test/<Type>/<stem>.png`` (Type: good, Burrs, Missing,
Stains; masks ``<data>/<class>/ground_truth/<Type>/<stem>_mask.png``, none for good).
M2AD: ``<Good|NG>/<specimen>/<stem>`` for ``<data>/<class>/<Good|NG>/<specimen>/<stem>.png``.
When several classes are evaluated in one run, each class's predictions are in ``<pred>/<class>/``.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from omnipose.core.errors import DataError, OmniposeError
from omnipose.core.image import read_mask
from omnipose.data import open_m2ad_class, open_mad_class
from omnipose.detector import SCORES_FILE, SUMMARY_FILE
from omnipose.evaluation.config import EvaluationConfig
from omnipose.evaluation.inputs import MapResizedWarning
from omnipose.evaluation.metrics import decision_metrics
from omnipose.evaluation.protocols import evaluate_m2ad_invariant, evaluate_m2ad_synergy, evaluate_pad
from omnipose.evaluation.results import ClassResult


class PredictionError(OmniposeError):
    """A prediction directory that is missing, incomplete or malformed."""


# ----------------------------------------------------------------------------- reading one folder
def class_prediction_dir(pred_dir: str | Path, class_name: str) -> Path:
    """``<pred>/<class>/`` when it exists, else ``<pred>`` itself (a folder of one class)."""
    pred_dir = Path(pred_dir)
    nested = pred_dir / class_name
    return nested if nested.is_dir() else pred_dir


def finished_keys(class_dir: str | Path, keys: Sequence[str]) -> list[str]:
    """The keys whose prediction is complete: ``<key>.npy`` and, written last, ``<key>.json``."""
    class_dir = Path(class_dir)
    return [key for key in keys if (class_dir / f"{key}.npy").is_file() and (class_dir / f"{key}.json").is_file()]


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


def _prediction_paths(pred_dir: Path, keys: Sequence[str]) -> list[Path]:
    if not pred_dir.is_dir():
        raise PredictionError(f"prediction directory {pred_dir} does not exist.")
    paths = [pred_dir / f"{key}.npy" for key in keys]
    missing = [key for key, path in zip(keys, paths) if not path.is_file()]
    if missing:
        shown = ", ".join(f"{k} ({pred_dir / (k + '.npy')})" for k in missing[:5])
        failed = _recorded_failures(pred_dir, missing)
        why = (f" {len(failed)} of them failed in detection ({next(iter(failed.values()))}; all reasons in "
               f"{pred_dir / SUMMARY_FILE}): fix those images and run the detection again, it redoes only them.") if failed else ""
        raise PredictionError(
            f"{len(missing)} of {len(keys)} test images have no prediction in {pred_dir}: {shown}"
            f"{', ...' if len(missing) > 5 else ''}. Every test image needs <pred>/<key>.npy.{why}"
        )
    return paths


def _recorded_failures(pred_dir: Path, keys: Sequence[str]) -> dict[str, str]:
    """{key: reason} of the keys that ``summary.json`` records as failed."""
    try:
        failed = json.loads((pred_dir / SUMMARY_FILE).read_text()).get("failed", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {key: str(failed[key]) for key in keys if isinstance(failed, dict) and key in failed}


def _reference_paths(pred_dir: Path, keys: Sequence[str]) -> list[Path | None]:
    paths = [pred_dir / f"{key}_reference.png" for key in keys]
    return [p if p.is_file() else None for p in paths]


# ----------------------------------------------------------------------------- the dataset side
def _read_benchmark_mask(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    """A ground-truth mask, binary as the benchmarks require, at shape (H, W) when given."""
    return read_mask(path, None if shape is None else (shape[1], shape[0]), strict=True)


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


# ----------------------------------------------------------------------------- evaluating a folder
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
    pred_dir = class_prediction_dir(pred_dir, class_name)
    if config.protocol == "pad":
        return _evaluate_mad_class(pred_dir, data_root, class_name, config, examples)
    return _evaluate_m2ad_class(pred_dir, data_root, class_name, config, examples)


def _evaluate_mad_class(pred_dir: Path, data_root, class_name: str, config: EvaluationConfig, examples: int) -> ClassResult:
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
    result = evaluate_pad(maps, masks, labels, scores, keys, config, class_name, examples,
                          [item.image_path for item in items], _reference_paths(pred_dir, keys))
    decisions = read_decisions(pred_dir, keys)
    if decisions is not None:
        anomalous, confident = decisions
        result.metrics.update(decision_metrics(labels, anomalous))
        flagged = [key for key, ok in zip(keys, confident) if not ok]
        result.counts["low_confidence"] = len(flagged)
        confident_metrics = dict(result.metrics)
        kept = np.flatnonzero(confident)
        if flagged and not kept.size:  # nothing left to measure without the flagged queries
            confident_metrics = {}
        elif flagged:
            with warnings.catch_warnings():  # the same maps: their resizes are already reported
                warnings.simplefilter("ignore", MapResizedWarning)
                subset = evaluate_pad([maps[i] for i in kept], [masks[i] for i in kept], labels[kept],
                                      None if scores is None else scores[kept], [keys[i] for i in kept], config, class_name)
            confident_metrics = {**subset.metrics, **decision_metrics(labels[kept], anomalous[kept])}
        result.metrics.update({f"{name}_confident": value for name, value in confident_metrics.items()})
        if flagged:
            result.notes.append(f"{len(flagged)} of {len(keys)} queries have a pose not to be trusted and were decided "
                                f"anomalous for review ({', '.join(flagged[:5])}{', ...' if len(flagged) > 5 else ''}); "
                                "the *_confident metrics leave them out")
    return result


def read_decisions(pred_dir: Path, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(anomalous, pose_confident), bool (N,), from each ``<key>.json``; None when some prediction
    records no decision (another method's folder, or a calibration-free mode)."""
    anomalous, confident = [], []
    for key in keys:
        try:
            record = json.loads((pred_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("anomalous"), bool):
            return None
        anomalous.append(record["anomalous"])
        confident.append(bool(record.get("pose_confident", True)))
    return np.array(anomalous, dtype=bool), np.array(confident, dtype=bool)


def _evaluate_m2ad_class(pred_dir: Path, data_root, class_name: str, config: EvaluationConfig, examples: int) -> ClassResult:
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

"""One query as a unit of work: detect it into the prediction folder, idempotently.

A distributed run hands batches of test images to workers that may die and be retried, so the
unit is made safe to repeat: a query is finished when its ``.npy`` map and, written last, its
``.json`` record are both there and readable; every file is written atomically, so a worker
killed half-way leaves at most a hidden temporary file and never a partial prediction; a finished
query is never detected again. ``scores.json`` is built once per class by whoever drives the run
(``collect_scores``), from the per-query records, never by the workers.

Paths follow ``Detector.detect_class`` (``<class_dir>/<Type>/<stem>.npy|.json|_reference.png``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.core.image import save_image
from omnipose.data import MADClass, QueryItem
from omnipose.detector import Detector
from omnipose.evaluation.predictions import SCORES_FILE, PredictionError


def prediction_paths(class_dir: str | Path, key: str) -> tuple[Path, Path, Path]:
    """(map .npy, record .json, reference .png) of the test image ``key`` ('<Type>/<stem>')."""
    base = Path(class_dir) / key
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json"), base.with_name(base.name + "_reference.png")


def read_score(class_dir: str | Path, key: str) -> float | None:
    """The image score of a finished query; None when the query is not finished (a file missing,
    unreadable or without a finite score), so that it is detected (again)."""
    map_path, info_path, _ = prediction_paths(class_dir, key)
    if not (map_path.is_file() and info_path.is_file()):
        return None
    try:
        score = json.loads(info_path.read_text())["score"]
        anomaly_map = np.load(map_path, mmap_mode="r", allow_pickle=False)  # reads the header only
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or anomaly_map.ndim != 2:
        return None
    return float(score)


def pending_keys(class_dir: str | Path, keys: Iterable[str]) -> list[str]:
    """The keys that have no finished prediction in ``class_dir`` yet, in their order."""
    return [key for key in keys if read_score(class_dir, key) is None]


def detect_items(detector: Detector, class_dir: str | Path, items: Sequence[QueryItem]) -> list[tuple[str, float, float]]:
    """Detect each test image that has no finished prediction and write its files: the reference
    and the map first, the record last (each atomically), so that a repeat of the same batch,
    after a crash or a retry, redoes at most the query that was under way.

    Returns (key, score, seconds) of the queries detected by this call (seconds 0 for those found
    finished).
    """
    done = []
    for item in items:
        score = read_score(class_dir, item.name)
        if score is not None:
            done.append((item.name, score, 0.0))
            continue
        start = time.perf_counter()
        prediction = detector.predict_one(item.image_path)
        map_path, info_path, reference_path = prediction_paths(class_dir, item.name)
        save_image(reference_path, prediction.reference)
        with atomic_path(map_path) as tmp:
            np.save(tmp, prediction.anomaly_map, allow_pickle=False)
        atomic_write_json(info_path, prediction.summary())
        done.append((item.name, prediction.score, time.perf_counter() - start))
    return done


def collect_scores(class_dir: str | Path, mad: MADClass) -> Path:
    """Write ``<class_dir>/scores.json`` from the per-query records of every test image; raises
    PredictionError naming the queries that are not finished."""
    scores = {item.name: read_score(class_dir, item.name) for item in mad.test_items}
    missing = [key for key, score in scores.items() if score is None]
    if missing:
        raise PredictionError(f"{len(missing)} test image(s) of {mad.name} have no finished prediction in {class_dir}, "
                              f"e.g. {', '.join(missing[:5])}; rerun the benchmark to detect them.")
    path = Path(class_dir) / SCORES_FILE
    atomic_write_json(path, scores)
    return path


def remove_temporaries(class_dir: str | Path) -> int:
    """Delete the hidden temporary files (``.<name>.<hex>.tmp<suffix>``, ``core.files``) that a
    worker killed mid-write leaves behind. Call it only when no worker writes to the folder.
    Returns how many were removed."""
    stale = [path for path in Path(class_dir).rglob(".*.tmp*") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)

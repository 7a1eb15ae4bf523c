"""One query as a unit of work: detect it into the prediction folder, idempotently.

A distributed run hands batches of test images to workers that may die and be retried, so the
unit is made safe to repeat. It writes what ``Detector.detect_class`` writes (``detector.batch``:
``<class_dir>/<Type>/<stem>.npy|.json|_reference.png``, every file atomically, the ``.json``
record last; a query that cannot be done gets a failure record), and a query is finished when
``read_finished`` says so (map and record there and readable). A worker killed half-way leaves at
most a temporary file, never a partial prediction, and a finished query is never detected again;
a failed one is tried again by the next run. ``scores.json`` and ``summary.json`` are written once
per class by whoever drives the run (``write_class_files``), from the records, never by workers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.core.image import save_image
from omnipose.data import MADClass, QueryItem
from omnipose.detector import SCORES_FILE, SUMMARY_FILE, Detector, class_summary, predict_or_fail, read_finished
from omnipose.evaluation.predictions import PredictionError


def prediction_paths(class_dir: str | Path, key: str) -> tuple[Path, Path, Path]:
    """(map .npy, record .json, reference .png) of the test image ``key`` ('<Type>/<stem>')."""
    base = Path(class_dir) / key
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json"), base.with_name(base.name + "_reference.png")


def read_score(class_dir: str | Path, key: str) -> float | None:
    """The image score of a finished query; None when it is still to do (missing, damaged or failed)."""
    map_path, info_path, _ = prediction_paths(class_dir, key)
    record = read_finished(map_path, info_path)
    return None if record is None else float(record["score"])


def pending_keys(class_dir: str | Path, keys: Iterable[str]) -> list[str]:
    """The keys that have no finished prediction in ``class_dir`` yet, in their order."""
    return [key for key in keys if read_score(class_dir, key) is None]


def detect_items(detector: Detector, class_dir: str | Path, items: Sequence[QueryItem]) -> list[tuple[str, float | None, float]]:
    """Detect each test image that has no finished prediction and write its files: the reference
    and the map first, the record last (each atomically), so that a repeat of the same batch,
    after a crash or a retry, redoes at most the query that was under way. A query that cannot be
    done gets a failure record, as ``detect_class`` writes it, and the batch goes on.

    Returns (key, score or None for a failure, seconds) of each item (seconds 0 for those found finished).
    """
    done = []
    for item in items:
        score = read_score(class_dir, item.name)
        if score is not None:
            done.append((item.name, score, 0.0))
            continue
        start = time.perf_counter()
        map_path, info_path, reference_path = prediction_paths(class_dir, item.name)
        outcome = predict_or_fail(detector, item.image_path)
        if not outcome.failed:
            save_image(reference_path, outcome.reference)
            with atomic_path(map_path) as tmp:
                np.save(tmp, outcome.anomaly_map, allow_pickle=False)
        atomic_write_json(info_path, outcome.summary())
        done.append((item.name, None if outcome.failed else outcome.score, time.perf_counter() - start))
    return done


def write_class_files(class_dir: str | Path, mad: MADClass, threshold: float | None, false_alarm_rate: float) -> dict:
    """Write ``scores.json`` (every scored query) and ``summary.json`` (``detector.class_summary``)
    of a class from its per-query records; returns the summary. Raises PredictionError naming the
    test images that have neither a prediction nor a failure record."""
    records, failures, missing = {}, {}, []
    for item in mad.test_items:
        map_path, info_path, _ = prediction_paths(class_dir, item.name)
        record = read_finished(map_path, info_path)
        if record is not None:
            records[item.name] = record
            continue
        try:
            failure = json.loads(info_path.read_text())
        except (OSError, ValueError):
            failure = None
        if isinstance(failure, dict) and failure.get("failed"):
            failures[item.name] = failure
        else:
            missing.append(item.name)
    if missing:
        raise PredictionError(f"{len(missing)} test image(s) of {mad.name} have no prediction in {class_dir}, "
                              f"e.g. {', '.join(missing[:5])}; rerun the benchmark to detect them.")
    summary = class_summary(records, failures, threshold, false_alarm_rate)
    atomic_write_json(Path(class_dir) / SCORES_FILE, {key: record["score"] for key, record in records.items()})
    atomic_write_json(Path(class_dir) / SUMMARY_FILE, summary)
    return summary

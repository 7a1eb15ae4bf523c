"""Many queries at once: a result or a recorded failure for every query, and the prediction folder
of a class, resumable.

One unreadable or unusable query must not cost the others, nor hide among them: it becomes a
``QueryFailure`` (its reason in its own ``.json`` and in the class's ``summary.json``) while the
rest are scored, and the next run tries it again. Outputs of ``detect_class``::

    <out>/<class>/<Type>/<stem>.npy              anomaly map, float32 (H, W)
    <out>/<class>/<Type>/<stem>.json             score, decision, pose c2w, reference_c2w, pose residual/confidence,
                                                 seconds
                                                 (or, for a failed query, {"failed": true, "error": ...})
    <out>/<class>/<Type>/<stem>_reference.png    the normal reference (rendered at reference_c2w)
    <out>/<class>/scores.json                    {"Type/stem": image score} of every scored query
    <out>/<class>/summary.json                   counts, threshold, and the keys that failed, were
                                                 decided anomalous, or have a pose not to be trusted

The ``.npy`` is written first and the ``.json`` last, each atomically, so a query with both is
finished; a damaged one (cut short, edited) is detected, named in a warning and done again.
"""
from __future__ import annotations

import json
import math
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from tqdm.auto import tqdm

from omnipose.core.errors import DataError, OmniposeError
from omnipose.core.files import atomic_path, atomic_write_json, remove_stale_temporaries
from omnipose.core.image import save_image
from omnipose.data import MADClass

if TYPE_CHECKING:  # the detector module imports this one
    from omnipose.detector.detector import Detector, Prediction

SCORES_FILE = "scores.json"
SUMMARY_FILE = "summary.json"
REPORT_BUG = "this is a bug in omnipose, not in your data: please report it with the traceback"


@dataclass
class QueryFailure:
    """A query that could not be scored: why (``error``), and for an internal error its traceback."""

    query: str
    error: str
    error_type: str
    traceback: str | None = None
    failed = True

    @property
    def internal(self) -> bool:
        """True when the failure is a bug of the package rather than a problem of the input."""
        return self.traceback is not None

    def summary(self) -> dict[str, Any]:
        record = {"failed": True, "query": self.query, "error": self.error, "error_type": self.error_type}
        if self.traceback is not None:
            record["traceback"] = self.traceback
        return record


def predict_or_fail(detector: "Detector", image) -> "Prediction | QueryFailure":
    """``detector.predict_one(image)``, or the QueryFailure that says why it could not be done."""
    name = str(image) if isinstance(image, (str, Path)) else f"array {getattr(image, 'shape', '?')}"
    try:
        return detector.predict_one(image)
    except OmniposeError as error:
        return QueryFailure(name, str(error), type(error).__name__)
    except Exception as error:  # noqa: BLE001 (one query's bug must not take the night's batch down; it is reported as one)
        return QueryFailure(name, f"{type(error).__name__}: {error} ({REPORT_BUG})", type(error).__name__, traceback.format_exc())


def predict_many(detector: "Detector", images: Iterable, progress: bool = True) -> list:
    """A Prediction or a QueryFailure for every image, in order."""
    images = list(images)
    return [predict_or_fail(detector, image) for image in tqdm(images, desc="detecting", disable=not progress)]


def read_finished(map_path: Path, info_path: Path) -> dict | None:
    """The record of a finished query (its .json, with a readable .npy beside it), or None when the
    query is still to do. A damaged output gets a warning naming it (and is then done again)."""
    if not info_path.is_file():
        return None
    problem = None
    try:
        record = json.loads(info_path.read_text())
    except (OSError, ValueError) as error:
        record, problem = None, f"{info_path} cannot be read ({error})"
    if isinstance(record, dict) and record.get("failed"):
        return None  # a failure is tried again: its image may have been fixed
    if problem is None and not (isinstance(record, dict) and _finite_number(record.get("score"))):
        problem = f"{info_path} has no finite 'score'"
    if problem is None:
        try:
            array = np.load(map_path, mmap_mode="r", allow_pickle=False)
            if array.ndim != 2:
                problem = f"{map_path} holds an array of shape {array.shape}, not a map"
        except (OSError, ValueError) as error:
            problem = f"{map_path} cannot be read ({error})"
    if problem is not None:
        warnings.warn(f"{problem}: the output is damaged and this query is done again.", stacklevel=3)
        return None
    return record


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def detect_class(detector: "Detector", mad: MADClass, out_dir: str | Path, progress: bool = True) -> Path:
    """Run ``detector`` on every test image of a class and write the prediction folder (see the module
    docstring). Finished queries are kept; failed and damaged ones are done (again). Returns the
    class folder; its ``summary.json`` lists what failed."""
    detector._require_fitted()
    class_dir = Path(out_dir) / mad.name
    if not mad.test_items:
        raise DataError(f"class {mad.name} has no test images under {mad.folder / 'test'}: nothing to detect.")
    remove_stale_temporaries(class_dir, recursive=True)
    records: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    bar = tqdm(mad.test_items, desc=f"detecting {mad.name}", disable=not progress)
    for item in bar:
        folder = class_dir / item.defect_type
        map_path, info_path = folder / f"{item.image_path.stem}.npy", folder / f"{item.image_path.stem}.json"
        record = read_finished(map_path, info_path)
        if record is None:
            outcome = predict_or_fail(detector, item.image_path)
            if outcome.failed:
                record = outcome.summary()
                bar.write(f"{item.name}: failed: {outcome.error}")
                if outcome.internal:
                    bar.write(outcome.traceback)
            else:
                save_image(folder / f"{item.image_path.stem}_reference.png", outcome.reference)
                with atomic_path(map_path) as tmp:
                    np.save(tmp, outcome.anomaly_map, allow_pickle=False)
                record = outcome.summary()
            atomic_write_json(info_path, record)  # written last: marks the query as done (or failed)
        (failures if record.get("failed") else records)[item.name] = record
    atomic_write_json(class_dir / SCORES_FILE, {key: record["score"] for key, record in records.items()})
    atomic_write_json(class_dir / SUMMARY_FILE, class_summary(records, failures, detector.decision_threshold(),
                                                              detector.config.false_alarm_rate))
    return class_dir


def class_summary(records: dict[str, dict], failures: dict[str, dict], threshold: float | None, false_alarm_rate: float) -> dict:
    """What ``summary.json`` holds: counts, the decision threshold, and the keys worth a look."""
    return {
        "queries": len(records) + len(failures),
        "scored": len(records),
        "threshold": threshold,
        "false_alarm_rate": false_alarm_rate,
        "anomalous": [key for key, record in records.items() if record.get("anomalous")],
        "low_confidence": [key for key, record in records.items() if not record.get("pose_confident", True)],
        "failed": {key: record.get("error", "") for key, record in failures.items()},
    }

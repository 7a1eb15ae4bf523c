"""The fit -> detect -> evaluate loop, written once: ``omnipose detect``, ``omnipose demo`` and the
original ``anomaly_nerf_lego.py`` / ``auroc_test.py`` all run it.

For each class of a MAD-format root: fit a ``Detector`` (train or load the class's field, prepare
pose estimation and the calibration), detect every test image into ``<predictions>/<class>/``
(the layout of ``predictions.py``; finished queries are skipped, so a rerun resumes), record the
configs of the run in ``<predictions>/<class>/config.json`` (rewritten by every run that runs the
detector on the class, so it describes the last one), and evaluate the folder when an
``EvaluationConfig`` is given.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from omnipose.core.config import to_dict
from omnipose.core.errors import DataError
from omnipose.core.files import atomic_write_json, read_json
from omnipose.data import open_mad_class
from omnipose.detector import SUMMARY_FILE, Detector, DetectorConfig
from omnipose.evaluation.config import EvaluationConfig
from omnipose.evaluation.predictions import evaluate_prediction_dir, finished_keys
from omnipose.evaluation.results import ClassResult

RUN_CONFIG_FILE = "config.json"


@dataclass
class ClassRun:
    """What the runner did for one class.

    predictions: the class's prediction folder ``<predictions>/<class>/``.
    detected: False when every test image had its prediction and the detector was not run.
    result: the evaluation of the folder (None when no evaluation was asked).
    summary: the detection's ``summary.json`` (failed, anomalous and low-confidence keys, the
    decision threshold), or {} when the folder has none.
    """

    class_name: str
    predictions: Path
    queries: int
    fit_seconds: float
    detect_seconds: float
    detected: bool
    result: ClassResult | None = None
    summary: dict = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, str]:
        """{key: reason} of the test images the detector could not score."""
        return dict(self.summary.get("failed", {}))

    def describe(self) -> list[str]:
        """Lines for a person: what was scored, what was decided, and what needs a look."""
        s = self.summary
        if not s:
            return [f"{self.class_name}: predictions in {self.predictions}"]
        lines = [f"{self.class_name}: {s['scored']} of {s['queries']} test images scored; predictions in {self.predictions}"]
        if s.get("threshold") is not None:
            lines.append(f"  {len(s['anomalous'])} decided anomalous at the normal-data threshold {s['threshold']:.3g} "
                         f"(at most {100 * s['false_alarm_rate']:g} % of normal views above it)")
        if s["low_confidence"]:
            lines.append(f"  {len(s['low_confidence'])} with a pose not to be trusted (decided anomalous, for review): "
                         + ", ".join(s["low_confidence"][:10]) + (", ..." if len(s["low_confidence"]) > 10 else ""))
        for key, reason in list(self.failed.items())[:10]:
            lines.append(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more failures (all in {self.predictions / SUMMARY_FILE})")
        return lines

    def timings(self) -> dict[str, float | int]:
        """{'fit_seconds', 'detect_seconds' (0.1 s), 'queries'}, as the demo report lists them."""
        return {"fit_seconds": round(self.fit_seconds, 1), "detect_seconds": round(self.detect_seconds, 1), "queries": self.queries}


def save_run_config(class_dir: str | Path, config: DetectorConfig, evaluation: EvaluationConfig | None = None) -> Path:
    """Write ``<class_dir>/config.json`` atomically: {'detector': the detector's config, 'evaluation':
    the resolved evaluation config or null}, so that a prediction folder says how it was made."""
    path = Path(class_dir) / RUN_CONFIG_FILE
    atomic_write_json(path, {"detector": to_dict(config), "evaluation": None if evaluation is None else evaluation.resolved().to_dict()})
    return path


def run_class(data_root: str | Path, class_name: str, predictions: str | Path, config: DetectorConfig,
              evaluation: EvaluationConfig | None = None, examples: int = 3, skip_finished: bool = False,
              progress: bool = True) -> ClassRun:
    """Fit, detect and (with ``evaluation``) evaluate one class of the MAD-format ``data_root``.

    predictions: the root the class's folder goes under (``<predictions>/<class>/``).
    examples: anomalous instances kept for qualitative panels by the evaluation.
    skip_finished: when every test image already has its prediction, do not fit the detector
        (it would only load the field and the calibration again to detect nothing).
    """
    start = time.perf_counter()
    mad = open_mad_class(data_root, class_name)
    class_dir = Path(predictions) / mad.name
    keys = [item.name for item in mad.test_items]
    missing = len(keys) - len(finished_keys(class_dir, keys))
    detect = missing > 0 or not skip_finished
    fitted = start
    if detect:
        if skip_finished and progress:
            print(f"{mad.name}: {missing} of {len(keys)} test images have no prediction yet; computing them.")
        detector = Detector(config).fit(mad, progress=progress)
        fitted = time.perf_counter()
        detector.detect_class(mad, predictions, progress=progress)
        save_run_config(class_dir, config, evaluation)
    detected = time.perf_counter()
    summary_path = class_dir / SUMMARY_FILE
    summary = read_json(summary_path, DataError, "Run the detection again to rewrite it.") if summary_path.is_file() else {}
    result = None
    if evaluation is not None:
        result = evaluate_prediction_dir(predictions, data_root, mad.name, evaluation, examples=examples)
    return ClassRun(mad.name, class_dir, len(keys), fitted - start, detected - fitted, detect, result, summary)


def run_classes(data_root: str | Path, class_names: Sequence[str], predictions: str | Path, config: DetectorConfig,
                evaluation: EvaluationConfig | None = None, examples: int = 3, skip_finished: bool = False,
                progress: bool = True) -> list[ClassRun]:
    """``run_class`` for each class, in order, with the same configs."""
    return [run_class(data_root, name, predictions, config, evaluation, examples, skip_finished, progress) for name in class_names]

"""A whole benchmark in one call: fit every class, detect every query, evaluate, one table and report.

The fit -> detect part runs on an executor (``executors.py``: here, one class after the other, or
on a Ray cluster); evaluation and the report then run here, the same for both. Layout::

    <out>/predictions/<class>/...   the prediction folders (``predictions.py``)
    <out>/report/                   metrics.json / .csv / .md, ROC and PR curves, panels
    <out>/report.md                 the table, the timings, the figures
    <out>/benchmark.json            executor, wall time, per-class timings and metrics

Everything is resumable: a rerun reuses finished checkpoints and skips finished queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from omnipose.core.errors import ConfigError
from omnipose.core.files import atomic_write_json, atomic_write_text
from omnipose.data import list_classes
from omnipose.detector import DetectorConfig
from omnipose.evaluation.config import ADER_METRICS, EvaluationConfig
from omnipose.evaluation.executors import Executor, LocalExecutor
from omnipose.evaluation.predictions import evaluate_prediction_dir
from omnipose.evaluation.report import write_report
from omnipose.evaluation.results import ClassResult, class_means
from omnipose.evaluation.runner import ClassRun
from omnipose.evaluation.tables import markdown_table, results_to_dict

# Calibrated maps are already smoothed and standardised: evaluate them as they are, at full size.
BENCHMARK_EVALUATION = EvaluationConfig(protocol="pad", image_size="native", gaussian_sigma=0.0, metrics=ADER_METRICS)


@dataclass
class BenchmarkRun:
    """What ``run_benchmark`` did: the runs and results per class, the report and the wall time."""

    executor: str
    runs: list[ClassRun]
    results: list[ClassResult]
    report: Path
    wall_seconds: float
    timings: dict[str, dict] = field(default_factory=dict)


def resolve_classes(data_root: str | Path, classes: str | Sequence[str]) -> list[str]:
    """'all' -> every class under ``data_root``; 'A,B' or ['A', 'B'] -> those, checked to exist."""
    found = list_classes(data_root) if Path(data_root).is_dir() else []
    if isinstance(classes, str):
        classes = found if classes.strip() == "all" else [c.strip() for c in classes.split(",") if c.strip()]
    classes = list(classes)
    if not classes:
        raise ConfigError(f"no classes to run under {data_root}: give --classes all or a comma-separated list of class folders.")
    unknown = [c for c in classes if c not in found]
    if unknown:
        raise ConfigError(f"class(es) {', '.join(unknown)} not found under {data_root}; classes found there: "
                          f"{', '.join(found) or 'none (is it a MAD-format root?)'}.")
    return classes


def run_benchmark(data_root: str | Path, classes: str | Sequence[str], out_dir: str | Path, config: DetectorConfig,
                  executor: Executor | None = None, evaluation: EvaluationConfig = BENCHMARK_EVALUATION,
                  progress: bool = True) -> BenchmarkRun:
    """Fit, detect and evaluate ``classes`` ('all', 'A,B' or a list) of the MAD-format ``data_root``
    on ``executor`` (default: this process), then write the report under ``out_dir``."""
    executor = executor or LocalExecutor()
    class_names = resolve_classes(data_root, classes)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    runs = executor.detect_classes(data_root, class_names, out_dir / "predictions", config, progress=progress)
    detected = time.perf_counter()
    results = [evaluate_prediction_dir(out_dir / "predictions", data_root, run.class_name, evaluation, examples=3) for run in runs]
    for run, result in zip(runs, results):
        run.result = result
    wall = time.perf_counter() - start
    timings = {run.class_name: run.timings() for run in runs}
    report = _write(out_dir, executor.name, results, timings, evaluation, wall, detected - start)
    return BenchmarkRun(executor.name, runs, results, report, wall, timings)


def _write(out_dir: Path, executor: str, results: list[ClassResult], timings: dict, evaluation: EvaluationConfig,
           wall: float, detect_wall: float) -> Path:
    written = write_report(results, out_dir / "report", evaluation)
    summary = {"executor": executor, "wall_seconds": round(wall, 1), "fit_and_detect_wall_seconds": round(detect_wall, 1),
               "timings": timings, "metrics": results_to_dict(results, evaluation)}
    atomic_write_json(out_dir / "benchmark.json", summary)
    lines = ["# omnipose benchmark report", "", f"Executor: {executor}; wall time {wall:.0f} s "
             f"(fit and detect {detect_wall:.0f} s).", "", "## Metrics (%)", "",
             markdown_table(results, class_means(results)), "", "## Time per class", "",
             "| class | fit (s) | detect (s) | queries |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {t['fit_seconds']} | {t['detect_seconds']} | {t['queries']} |" for name, t in timings.items()]
    lines += ["", "Fit and detect times are per class; on a cluster the classes overlap.", "", "## Figures", ""]
    lines += [f"![{key}]({path.relative_to(out_dir).as_posix()})" for key, path in written.items() if path.suffix == ".png"]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report

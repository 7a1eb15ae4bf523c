"""What an evaluation returns: the metrics of one class (``ClassResult``) and their means over classes.

Undefined metrics (only one label present) stay ``Undefined``; class means average the classes
where a metric is defined and name the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from omnipose.evaluation.metrics import MetricValue, Undefined, is_defined


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
    metrics: dict[str, MetricValue]
    counts: dict[str, int]
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pixel_threshold: MetricValue = Undefined("not computed")
    notes: list[str] = field(default_factory=list)
    examples: list[PanelExample] = field(default_factory=list)


@dataclass(frozen=True)
class ClassMean:
    """Mean of one metric over the classes where it is defined."""

    value: MetricValue
    defined_in: tuple[str, ...]
    undefined_in: tuple[str, ...]


def metric_names(results: Sequence[ClassResult]) -> list[str]:
    """Every metric of the results, in the order they first appear."""
    return list(dict.fromkeys(m for r in results for m in r.metrics))


def class_means(results: Sequence[ClassResult]) -> dict[str, ClassMean]:
    """Mean of each metric over classes: {'m<metric>': ClassMean}; undefined classes are left out
    and named, and a metric undefined in every class has an Undefined mean."""
    means = {}
    for name in metric_names(results):
        defined = [(r.class_name, r.metrics[name]) for r in results if name in r.metrics and is_defined(r.metrics[name])]
        undefined = tuple(r.class_name for r in results if name in r.metrics and not is_defined(r.metrics[name]))
        value = float(np.mean([v for _, v in defined])) if defined else Undefined(f"{name} is undefined in every class")
        means[f"m{name}"] = ClassMean(value, tuple(c for c, _ in defined), undefined)
    return means

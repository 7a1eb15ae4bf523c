"""How a benchmark protocol is run: ``EvaluationConfig`` and the protocols' metric sets.

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
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from omnipose.core.config import Config, non_negative, one_of, require
from omnipose.evaluation.metrics import IMAGE_SCORE_ALIASES, IMAGE_SCORE_METHODS, image_score_method

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


def protocol_metrics(protocol: str) -> tuple[str, ...]:
    """The metrics a protocol can report (PAD reports a subset of ADer's by default)."""
    return SYNERGY_METRICS if protocol == "m2ad-synergy" else ADER_METRICS


@dataclass(frozen=True)
class EvaluationConfig(Config):
    """How one protocol is run. ``None`` fields take the protocol's default (see ``resolved``)."""

    protocol: str = "pad"
    """Benchmark protocol: 'pad' (MAD-Sim, MAD-Real), 'm2ad-invariant' or 'm2ad-synergy'."""
    image_size: tuple[int, int] | str | None = None
    """(height, width) everything is evaluated at (maps bilinear, masks nearest), or 'native':
    each mask's own resolution (maps resized to it). None: the protocol's default, 224x224 for PAD
    (its published numbers are at that size), 'native' for M2AD."""
    gaussian_sigma: float | None = None
    """Gaussian filter on each map before evaluation, in pixels at the evaluation size; 0: none.
    None: the protocol's default, 4 for PAD (its recipe), 0 for M2AD."""
    fusion: str = "add"
    """How M2AD-Synergy fuses the illuminations of a view and the images of a specimen: 'add'
    (mean of scores and maps) or 'mul' (geometric mean)."""
    metrics: tuple[str, ...] | None = None
    """Metric names, in the order of the table's columns. None: the protocol's set
    (PAD_METRICS, ADER_METRICS or SYNERGY_METRICS)."""
    score_method: str = "max"
    """How image scores are derived from the maps when the predictions have no scores.json:
    'max' or 'topk_mean' (the mean of the highest 1 % of pixels; 'topk' is understood too)."""

    def check(self) -> None:
        one_of(self, "protocol", PROTOCOLS)
        one_of(self, "fusion", FUSION_RULES)
        size = self.image_size
        require(self, "image_size", size is None or size == NATIVE_SIZE or _is_size(size),
                f"give (height, width) in pixels, {NATIVE_SIZE!r}, or None for the protocol's default")
        if self.gaussian_sigma is not None:
            non_negative(self, "gaussian_sigma")
        metrics = self.metrics
        require(self, "metrics", metrics is None or (isinstance(metrics, (tuple, list)) and all(isinstance(m, str) for m in metrics)),
                "give a tuple of metric names, or None for the protocol's set")
        unknown = [m for m in metrics or () if m not in protocol_metrics(self.protocol)]
        require(self, "metrics", not unknown,
                f"metric(s) {unknown} do not exist in protocol {self.protocol}; choose from {', '.join(protocol_metrics(self.protocol))}")
        one_of(self, "score_method", IMAGE_SCORE_METHODS + tuple(IMAGE_SCORE_ALIASES))

    def resolved(self) -> "EvaluationConfig":
        """A copy with every default filled in (and the score method under its one name)."""
        pad = self.protocol == "pad"
        size = self.image_size if self.image_size is not None else (PAD_IMAGE_SIZE if pad else NATIVE_SIZE)
        if size != NATIVE_SIZE:
            size = (int(size[0]), int(size[1]))
        sigma = self.gaussian_sigma if self.gaussian_sigma is not None else (PAD_GAUSSIAN_SIGMA if pad else 0.0)
        chosen = tuple(self.metrics) if self.metrics else (PAD_METRICS if pad else protocol_metrics(self.protocol))
        return replace(self, image_size=size, gaussian_sigma=float(sigma), metrics=chosen,
                       score_method=image_score_method(self.score_method))

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) to evaluate at, or None for each mask's own resolution."""
        return None if self.image_size in (None, NATIVE_SIZE) else tuple(self.image_size)


def _is_size(size) -> bool:
    return (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size))

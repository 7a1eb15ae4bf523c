"""The pose of one query as the estimator returns it, and how much to trust it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from omnipose.pose.config import PoseConfig


@dataclass
class PoseResult:
    """The pose of one query.

    c2w: (4, 4) OpenGL camera-to-world. residual: trimmed mean colour error (0-1 scale) between the
    query and the field rendered at c2w, on the evaluation rays. confidence in [0, 1];
    low_confidence: True when the pose should not be trusted (``notes`` say why). seconds: wall
    time including retrieval. hypotheses: coarse poses tried. coarse_c2w: the best hypothesis
    before refinement. steps: alignment rounds + iNeRF steps. timings: seconds per stage.
    alternatives: (A, 4, 4) the other aligned hypotheses, best residual first, and
    alternative_residuals: (A,) their residuals: near-symmetric or dark objects can leave the true
    pose a close second, which a caller may judge with another criterion (``Detector`` does).
    """

    c2w: torch.Tensor
    residual: float
    confidence: float
    low_confidence: bool
    seconds: float
    hypotheses: int
    inliers: int
    source: str
    steps: int
    coarse_c2w: torch.Tensor
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    alternatives: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, 4))
    alternative_residuals: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def confident(self) -> bool:
        return not self.low_confidence

    def to_json(self) -> dict:
        return {
            "c2w": self.c2w.tolist(), "residual": self.residual, "confidence": self.confidence,
            "low_confidence": self.low_confidence, "seconds": self.seconds, "hypotheses": self.hypotheses,
            "inliers": self.inliers, "source": self.source, "steps": self.steps,
            "coarse_c2w": self.coarse_c2w.tolist(), "notes": list(self.notes), "timings": dict(self.timings),
        }


def pose_confidence(residual: float, inliers: int, baseline_residual: float, config: PoseConfig) -> tuple[float, bool, list[str]]:
    """Confidence in [0, 1] and the low-confidence flag, with the reasons.

    The photometric residual, compared with the field's own on training views (``baseline_residual``),
    decides: a pose that makes the field reproduce the query is right whatever found it (keypoint
    matches or global appearance). Few matches halve the confidence and lower the residual ratio
    that is tolerated to ``unsupported_residual_ratio``: an image of another object matches few
    keypoints, and alignment can still drape the field over its outline.
    """
    baseline = max(baseline_residual, 0.003)
    ratio = residual / baseline
    ceiling = config.max_residual_ratio
    photometric = float(np.clip((ceiling - ratio) / (ceiling - 1.0), 0.0, 1.0))
    support = float(np.clip(inliers / (2.0 * config.min_inliers), 0.0, 1.0))
    supported = inliers >= config.min_inliers
    limit = ceiling if supported else min(ceiling, config.unsupported_residual_ratio)
    why = []
    if ratio > limit:
        why.append(f"photometric residual {residual:.3f} is {ratio:.1f}x the field's own {baseline:.3f} "
                   "(another object, a wrong pose, or a heavily damaged one)")
    if not supported:
        why.append(f"only {inliers} consistent keypoint matches (< {config.min_inliers}): the pose rests on "
                   "global appearance and its photometric fit")
    return photometric * (0.5 + 0.5 * support), ratio > limit, why

"""The pose of one query as the estimator returns it, and how much to trust it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from omnipose.pose.config import PoseConfig

# Least own residuals a ratio is taken against: a field that fits its training views almost exactly
# would otherwise flag every novel view.
COLOUR_FLOOR = 0.003
CHROMATICITY_FLOOR = 0.001


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


def pose_confidence(residual: float, inliers: int, baseline_residual: float, config: PoseConfig,
                    chromaticity: tuple[float, float] | None = None) -> tuple[float, bool, list[str]]:
    """Confidence in [0, 1] and the low-confidence flag, with the reasons.

    The photometric residual, compared with the field's own on training views (``baseline_residual``),
    decides: a pose that makes the field reproduce the query is right whatever found it (keypoint
    matches or global appearance). Few matches halve the confidence and lower the residual ratio
    that is tolerated to ``unsupported_residual_ratio``: an image of another object matches few
    keypoints, and alignment can still drape the field over its outline.

    Given ``chromaticity`` (the pose's chromaticity residual and the field's own, for a pose chosen
    by ``rank_by_chromaticity``), the query may be lit otherwise: light from another side raises the
    colour residual of a right pose to what a wrong one gives, and keypoints rarely match, while the
    object's colours stay where they are. The chromaticity ratio then decides
    (``max_chromaticity_ratio``), and the colour ratio only beyond ``relit_residual_ratio``, with or
    without matches.
    """
    colour = ("photometric", residual, max(baseline_residual, COLOUR_FLOOR))
    if chromaticity is None:  # (what, measured, own, limit of their ratio); the first sets the confidence
        ceiling = config.max_residual_ratio
        limit = ceiling if inliers >= config.min_inliers else min(ceiling, config.unsupported_residual_ratio)
        checks = [(*colour, limit)]
    else:
        ceiling = config.max_chromaticity_ratio
        checks = [("chromaticity", chromaticity[0], max(chromaticity[1], CHROMATICITY_FLOOR), ceiling),
                  (*colour, config.relit_residual_ratio)]  # fmt: skip
    why = [f"{what} residual {measured:.4f} is {measured / own:.1f}x the field's own {own:.4f} "
           "(another object, a wrong pose, or a heavily damaged one)"
           for what, measured, own, limit in checks if measured > limit * own]  # fmt: skip
    ratio = checks[0][1] / checks[0][2]
    photometric = float(np.clip((ceiling - ratio) / (ceiling - 1.0), 0.0, 1.0))
    support = float(np.clip(inliers / (2.0 * config.min_inliers), 0.0, 1.0))
    low = bool(why)
    if inliers < config.min_inliers:
        why.append(f"only {inliers} consistent keypoint matches (< {config.min_inliers}): the pose rests on "
                   "global appearance and its photometric fit")
    return photometric * (0.5 + 0.5 * support), low, why

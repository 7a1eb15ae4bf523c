"""The pose of a query that comes with none: retrieval, keypoint matching, alignment, iNeRF refinement."""
from omnipose._legacy import legacy_getattr
from omnipose.pose.estimator import (
    PoseConfig,
    PoseEstimator,
    PoseResult,
    model_fingerprint,
    prepare_query,
)
from omnipose.pose.matching import (
    matcher_availability,
    rotation_affine,
)

__getattr__ = legacy_getattr("omnipose.pose")

__all__ = [
    "PoseConfig",
    "PoseEstimator",
    "PoseResult",
    "matcher_availability",
    "model_fingerprint",
    "prepare_query",
    "rotation_affine",
]

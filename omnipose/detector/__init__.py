"""``Detector``: fit once on normal views of an object, then pose, render and compare any query."""
from omnipose._legacy import legacy_getattr
from omnipose.detector.detector import (
    Detector,
    DetectorConfig,
    Prediction,
)
from omnipose.detector.references import (
    Reference,
    best_reference,
    cached_normal_views,
    candidate_poses,
    make_reference,
    registered_reference,
)

# The command line (add_detect_arguments, run_detect) lives in omnipose.cli.detect; omnipose._legacy
# serves it under this package's old name.
__getattr__ = legacy_getattr("omnipose.detector")

__all__ = [
    "Detector",
    "DetectorConfig",
    "Prediction",
    "Reference",
    "best_reference",
    "cached_normal_views",
    "candidate_poses",
    "make_reference",
    "registered_reference",
]

"""``Detector``: fit once on normal views of an object, then pose, render and compare any query."""
from omnipose._legacy import legacy_getattr
from omnipose.detector.detector import (
    Detector,
    DetectorConfig,
    Prediction,
    Reference,
)

__getattr__ = legacy_getattr("omnipose.detector")

__all__ = [
    "Detector",
    "DetectorConfig",
    "Prediction",
    "Reference",
]

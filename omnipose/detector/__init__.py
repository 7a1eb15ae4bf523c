"""``Detector``: fit once on normal views of an object, then pose, render and compare any query."""
from omnipose._legacy import legacy_getattr
from omnipose.detector.batch import (
    SCORES_FILE,
    SUMMARY_FILE,
    QueryFailure,
    class_summary,
    predict_or_fail,
    read_finished,
)
from omnipose.detector.calibration import calibrate_on_queries, stored_calibration
from omnipose.detector.detector import (
    Detector,
    DetectorConfig,
    Prediction,
    decide,
    learnt_views,
    split_held_out,
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
    "QueryFailure",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "Reference",
    "best_reference",
    "cached_normal_views",
    "calibrate_on_queries",
    "candidate_poses",
    "class_summary",
    "decide",
    "learnt_views",
    "make_reference",
    "predict_or_fail",
    "read_finished",
    "registered_reference",
    "split_held_out",
    "stored_calibration",
]

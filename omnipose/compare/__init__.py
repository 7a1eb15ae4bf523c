"""Query against its normal reference: residual terms, pretrained features, calibration, anomaly maps."""
from omnipose._legacy import legacy_getattr
from omnipose.compare.comparator import (
    Calibration,
    Comparator,
    CompareConfig,
    CompareError,
    ContrastStatistics,
    add_calibrate_arguments,
    add_compare_arguments,
    fit_contrast_statistics,
    image_score,
    in_mask_spread,
    location_scale,
    normalize_by_own_spread,
    object_mask,
    reference_contrast,
    run_calibrate,
    run_compare,
    threshold_for_fpr,
)
from omnipose.compare.features import (
    EfficientNet,
    FeatureExtractor,
    SameConv2d,
    WeightsError,
    load_efficientnet,
    spec_from_name,
    spec_from_state_dict,
)
from omnipose.compare.registration import (
    register_reference,
)
from omnipose.compare.reproject import (
    NormalViews,
    neighbour_references,
)

__getattr__ = legacy_getattr("omnipose.compare")

__all__ = [
    "Calibration",
    "Comparator",
    "CompareConfig",
    "CompareError",
    "ContrastStatistics",
    "EfficientNet",
    "FeatureExtractor",
    "NormalViews",
    "SameConv2d",
    "WeightsError",
    "add_calibrate_arguments",
    "add_compare_arguments",
    "fit_contrast_statistics",
    "image_score",
    "in_mask_spread",
    "load_efficientnet",
    "location_scale",
    "neighbour_references",
    "normalize_by_own_spread",
    "object_mask",
    "reference_contrast",
    "register_reference",
    "run_calibrate",
    "run_compare",
    "spec_from_name",
    "spec_from_state_dict",
    "threshold_for_fpr",
]

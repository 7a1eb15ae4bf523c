"""Query against its normal reference: residual terms, pretrained features, calibration, anomaly maps."""
from omnipose._legacy import legacy_getattr
from omnipose.compare.calibration import (
    CALIBRATION_FORMAT,
    Calibration,
    check_signature,
    fit_calibration,
)
from omnipose.compare.comparator import (
    Comparator,
    ComparisonResult,
)
from omnipose.compare.config import (
    MODES,
    SCORE_METHOD_ALIASES,
    SCORE_METHODS,
    CompareConfig,
    CompareError,
    canonical_score_method,
)
from omnipose.compare.efficientnet import (
    EfficientNet,
    SameConv2d,
    WeightsError,
    spec_from_name,
    spec_from_state_dict,
)
from omnipose.compare.features import (
    FeatureExtractor,
)
from omnipose.compare.inputs import (
    as_image_batch,
)
from omnipose.compare.pad import (
    pad_anomaly_map,
)
from omnipose.compare.registration import (
    MOTIONS,
    register_reference,
)
from omnipose.compare.reproject import (
    NormalViews,
    neighbour_references,
    unseen_surface,
)
from omnipose.compare.scoring import (
    image_score,
    in_mask_spread,
    normalize_by_own_spread,
    threshold_for_fpr,
)
from omnipose.compare.statistics import (
    ContrastStatistics,
    TermStatistics,
    fit_contrast_statistics,
    location_scale,
)
from omnipose.compare.terms import (
    color_residual,
    feature_residual,
    object_mask,
    reference_contrast,
    structure_residual,
)
from omnipose.compare.weights import (
    load_efficientnet,
)

# Names that moved out of this package (the command line is omnipose.cli.compare) resolve through
# omnipose._legacy, so that imports written for omnipose 0.1 keep working.
__getattr__ = legacy_getattr("omnipose.compare")

__all__ = [
    "CALIBRATION_FORMAT",
    "Calibration",
    "check_signature",
    "Comparator",
    "CompareConfig",
    "CompareError",
    "ComparisonResult",
    "ContrastStatistics",
    "EfficientNet",
    "FeatureExtractor",
    "MODES",
    "MOTIONS",
    "NormalViews",
    "SCORE_METHODS",
    "SCORE_METHOD_ALIASES",
    "SameConv2d",
    "TermStatistics",
    "WeightsError",
    "as_image_batch",
    "canonical_score_method",
    "color_residual",
    "feature_residual",
    "fit_calibration",
    "fit_contrast_statistics",
    "image_score",
    "in_mask_spread",
    "load_efficientnet",
    "location_scale",
    "neighbour_references",
    "normalize_by_own_spread",
    "object_mask",
    "pad_anomaly_map",
    "reference_contrast",
    "register_reference",
    "spec_from_name",
    "spec_from_state_dict",
    "structure_residual",
    "threshold_for_fpr",
    "unseen_surface",
]

"""The pose of a query that comes with none: retrieval, keypoint matching, alignment, iNeRF refinement.

Modules in the order a query goes through them: ``config`` (settings), ``query`` (the image as the
model takes it), ``scene`` (the field and its cameras), ``matching`` (keypoint matchers),
``retrieval`` (descriptor bank, in-plane turns), ``appearance`` (thumbnails), ``index`` (the cached
training-view index), ``hypotheses`` (coarse poses), ``scoring`` (rendering pixels, the residual),
``align`` (direct alignment), ``refine`` (iNeRF), ``results`` (PoseResult, confidence),
``estimator`` (``PoseEstimator``, which runs them), ``pad`` (PAD's recipe, the baseline).
"""
from omnipose._legacy import legacy_getattr
from omnipose.pose.config import AlignConfig, PoseConfig, RefineConfig
from omnipose.pose.estimator import PoseEstimator
from omnipose.pose.index import feature_cache_path, model_fingerprint
from omnipose.pose.matching import MATCHER_NAMES, make_matcher, matcher_availability
from omnipose.pose.pad import pad_refine_config
from omnipose.pose.query import PoseError, prepare_query, query_zoom, zoom_affine
from omnipose.pose.results import PoseResult
from omnipose.pose.retrieval import rotation_affine

__getattr__ = legacy_getattr("omnipose.pose")

__all__ = [
    "MATCHER_NAMES",
    "AlignConfig",
    "PoseConfig",
    "PoseError",
    "PoseEstimator",
    "PoseResult",
    "RefineConfig",
    "feature_cache_path",
    "make_matcher",
    "matcher_availability",
    "model_fingerprint",
    "pad_refine_config",
    "prepare_query",
    "query_zoom",
    "zoom_affine",
    "rotation_affine",
]

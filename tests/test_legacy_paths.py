"""Old module paths (omnipose 0.1's flat modules) keep working: every public name each of them
defined still imports from the old path (``omnipose._legacy`` serves them from their new homes)."""
import importlib

import pytest

OLD_PUBLIC_NAMES = {
    "omnipose.io": (
        "CheckpointError", "DataError", "OmniposeError", "atomic_path", "atomic_write_bytes",
        "atomic_write_json", "atomic_write_text", "composite_on_background", "load_cache", "pick_device",
        "read_image_rgb", "read_image_rgba", "read_mask", "resize_image", "save_cache", "save_image",
    ),
    "omnipose.geometry": (
        "apply_twist", "axes_focus", "camera_directions", "fibonacci_directions", "focal_from_fov",
        "gap_directions", "generate_rays", "image_rays", "intrinsics_from_fov", "invert_pose", "look_at",
        "make_intrinsics", "opengl_to_opencv", "pixel_centers", "pose_errors", "project", "roll_camera",
        "rotation_error_deg", "scale_intrinsics", "se3_exp", "se3_log", "so3_exp", "so3_log",
        "spherical_pose", "unproject",
    ),
    "omnipose.data": (
        "DEFECT_TYPES", "GOOD", "IMAGE_SUFFIXES", "MADClass", "MAD_CLASSES", "PosedImages", "QueryItem",
        "list_classes", "load_transforms", "natural_key", "open_mad_class",
    ),
    "omnipose.m2ad": (
        "ANOMALOUS_DIR", "IMAGE_SUFFIXES", "M2adClass", "M2adImage", "M2adLayoutWarning", "MASK_DIR",
        "NORMAL_DIR", "NORMAL_RATIO", "SPLIT_SEED", "group_object_instances", "group_view_instances",
        "list_m2ad_classes", "mask_path_for", "open_m2ad_class", "parse_view_illumination",
        "read_binary_mask", "split_normal_specimens",
    ),
    "omnipose.download": (
        "ArchiveError", "DatasetSource", "DownloadError", "ExtractionReport", "SIZE_TOLERANCE", "SOURCES",
        "add_download_arguments", "check_archive", "download_dataset", "extract_archive", "fetch_archive",
        "main", "manual_route", "run_download",
    ),
    "omnipose.raycast": (
        "Lighting", "Render", "Scene", "SceneError", "Stain", "cast_rays", "combine", "make_box",
        "make_cylinder", "occluded", "quantize", "render", "shade", "surface_normals",
    ),
    "omnipose.synth": (
        "AABB_MARGIN", "FIGURE_EXTENT", "FORMAT_VERSION", "Figure", "FigureBuilder", "GROUND_TRUTH_POSES",
        "MARKER", "MASK_TOLERANCE", "PLATE", "RenderedTestView", "SCENE_BOUNDS", "STUD_HEIGHT", "STUD_RADIUS",
        "SYNTH_CLASSES", "SynthConfig", "SynthError", "TEST_TYPES", "add_synth_arguments", "anomaly_mask",
        "build_figure", "camera_distance", "class_intrinsics", "config_from_args", "ensure_class",
        "generate_class", "generate_dataset", "load_ground_truth_poses", "main", "make_test_view",
        "random_test_pose", "read_synth_config", "render_defect_free", "render_scene", "run_synth",
        "training_poses", "write_preview",
    ),
    "omnipose.encoding": (
        "GridLevel", "HASH_PRIMES", "HashGridConfig", "HashGridEncoding", "PositionalEncoding",
        "SphericalHarmonicsEncoding", "TcnnHashGridEncoding", "TriPlaneConfig", "TriPlaneEncoding",
        "cell_index", "config_dict", "grid_levels", "interpolate_rows", "make_grid_encoding", "scatter_rows",
        "tcnn_available", "trilinear_weights",
    ),
    "omnipose.field": (
        "NGPField", "NGPFieldConfig", "NeRFMLP", "NeRFMLPConfig", "load_nerf_mlp", "mlp",
        "nerf_config_from_state_dict", "truncated_exp",
    ),
    "omnipose.render": (
        "DEFAULT_AABB", "OccupancyGrid", "RadianceModel", "RenderConfig", "VanillaNeRFModel", "composite",
        "estimate_aabb", "nerf_raw_to_outputs", "random_uniform", "ray_aabb_intersect", "resample_grid",
        "resolve_aabb", "sample_pdf",
    ),
    "omnipose.train": (
        "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CONFIG_FILE", "CheckpointInfo", "MODEL_FILE",
        "RayBatcher", "STATE_FILE", "TrainConfig", "add_train_arguments", "build_model", "check_views",
        "default_field_config", "evaluate_views", "learning_rate_factor", "load_checkpoint",
        "load_training_data", "make_optimizer", "psnr", "run_train", "save_checkpoint", "split_holdout",
        "ssim", "train_model",
    ),
    "omnipose.matching": (
        "ALIKEDMatcher", "DEFAULT_LOFTR_WEIGHTS", "DISKMatcher", "DescriptorBank", "Features", "LoFTRMatcher",
        "MATCHER_NAMES", "Matcher", "MatcherUnavailableError", "Matches", "RotatedFeatures", "SIFTMatcher",
        "XFeatMatcher", "apply_affine", "describe_rotations", "invert_affine", "make_matcher",
        "matcher_availability", "mutual_nn_counts", "package_file", "pad_to_stride", "rotation_affine",
        "shared_matcher", "to_network_input", "warp_image",
    ),
    "omnipose.appearance": (
        "AppearanceMatch", "ObjectFrame", "RADIUS_SHARE", "THUMBNAIL_SIZE", "best_matches", "object_frame",
        "thumbnail_affine", "thumbnails", "view_to_query_affine",
    ),
    "omnipose.pose": (
        "AlignConfig", "CACHE_VERSION", "Hypothesis", "PoseConfig", "PoseError", "PoseEstimator",
        "PoseResult", "PoseScoring", "RefineConfig", "RefineResult", "RenderRays", "Similarity",
        "TrainingIndex", "add_pose_arguments", "align_poses", "box_blur", "dilate", "evaluation_pixels",
        "fit_similarity", "foreground_mask", "frozen", "gap_filling_poses", "gaussian_blur",
        "image_gradients", "keypoint_mask", "keypoint_points3d", "mask_pixels", "model_fingerprint",
        "pad_refine_config", "pose_from_similarity", "prepare_query", "projection_jacobian", "refine_poses",
        "render_pixels", "robust_loss", "run_pose", "sample_image", "sample_pixels", "solve_pnp",
        "trimmed_residual",
    ),
    "omnipose.features": (
        "BN_EPS", "BlockSpec", "EfficientNet", "EfficientNetSpec", "FeatureExtractor", "IMAGENET_MEAN",
        "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "MBConvBlock", "SameConv2d", "WeightsError",
        "canonical_name", "is_weights_path", "load_efficientnet", "read_state_dict", "shipped_weights_path",
        "spec_from_name", "spec_from_state_dict",
    ),
    "omnipose.registration": (
        "MOTIONS", "register_reference", "warp_image",
    ),
    "omnipose.reproject": (
        "CACHE_VERSION", "NormalViews", "neighbour_references", "sample_view", "surface_points",
    ),
    "omnipose.compare": (
        "CALIBRATION_FORMAT", "Calibration", "Comparator", "CompareConfig", "CompareError",
        "ComparisonResult", "ContrastStatistics", "FEATURE_DISTANCES", "MAD_FLOOR", "MAD_TO_STD", "MODES",
        "SCORE_METHODS", "STATISTICS", "TERMS", "TermStatistics", "add_calibrate_arguments",
        "add_compare_arguments", "as_image_batch", "check_pair", "color_residual", "compared_size",
        "feature_residual", "fit_contrast_statistics", "gaussian_smooth", "image_score", "in_mask_spread",
        "location_scale", "normalize_by_own_spread", "object_mask", "pad_anomaly_map", "reference_contrast",
        "resize_batch", "run_calibrate", "run_compare", "structure_residual", "threshold_for_fpr",
    ),
    "omnipose.detector": (
        "Detector", "DetectorConfig", "Prediction", "Reference", "add_detect_arguments", "run_detect",
    ),
    "omnipose.metrics": (
        "EIGHT_CONNECTED", "F1_PIXEL_EPS", "F1_PIXEL_THRESHOLDS", "IMAGE_METRICS", "MapResizedWarning",
        "MetricInputError", "MetricValue", "PIXEL_METRICS", "RankedScores", "UNDEFINED_TEXT", "Undefined",
        "as_bool_labels", "aupro", "aupro_curve", "aupro_ranked", "auroc", "auroc_ranked",
        "average_precision", "average_precision_ranked", "best_f1_threshold", "check_finite", "curve_points",
        "f1_max", "f1_max_ranked", "format_metric", "image_metrics", "image_metrics_ranked",
        "image_score_from_map", "is_defined", "pixel_auroc", "pixel_average_precision", "pixel_f1_max",
        "pixel_f1_max_ranked", "pixel_metrics", "pixel_metrics_ranked", "rank_pixels", "rank_scores",
        "resize_bilinear", "score_dtype", "warn_resized",
    ),
    "omnipose.evaluate": (
        "ADER_METRICS", "ClassMean", "ClassResult", "EvaluationConfig", "FUSION_RULES", "NATIVE_SIZE",
        "PAD_GAUSSIAN_SIGMA", "PAD_IMAGE_SIZE", "PAD_METRICS", "PROTOCOLS", "PanelExample", "PredictionError",
        "SCORES_FILE", "SYNERGY_METRICS", "add_evaluate_arguments", "class_means", "csv_text",
        "evaluate_m2ad_invariant", "evaluate_m2ad_synergy", "evaluate_pad", "evaluate_prediction_dir",
        "format_table", "fuse_maps", "fuse_scores", "main", "markdown_table", "read_anomaly_map",
        "read_scores_file", "resize_nearest", "results_to_dict", "run_evaluate", "save_curves", "save_panel",
        "write_report",
    ),
    "omnipose.demo": (
        "DEMO_EVALUATION", "add_demo_arguments", "run_demo", "run_pipeline", "write_demo_report",
    ),
    "omnipose.original": (
        "DEFAULT_DATA_DIR", "ORIGINAL_EVALUATION", "anomaly_nerf_lego", "auroc_test",
        "detector_config_from_pad", "parse_value", "read_pad_config",
    ),
    "omnipose.cli": (
        "COMMANDS", "build_parser", "main", "run_guarded",
    ),
}


@pytest.mark.parametrize("old_module", sorted(OLD_PUBLIC_NAMES))
def test_every_public_name_of_an_old_module_still_imports(old_module):
    module = importlib.import_module(old_module)
    missing = [name for name in OLD_PUBLIC_NAMES[old_module] if not hasattr(module, name)]
    assert not missing, f"{old_module} lost {missing}: add their new module to omnipose._legacy.MOVED"


def test_old_conventions_are_kept_where_a_helper_changed_its_own():
    """Three helpers changed convention on their way into core.image; the old paths keep the old one."""
    import numpy as np
    import torch

    from omnipose.core.image import gaussian_blur
    from omnipose.pose import gaussian_blur as old_pose_blur  # (H, W, C), radius 3 sigma

    image = torch.rand(20, 24, 3)
    expected = gaussian_blur(image.permute(2, 0, 1), 1.5, radius=5).permute(1, 2, 0)
    assert torch.equal(old_pose_blur(image, 1.5), expected)
    from omnipose.compare import gaussian_smooth

    maps = torch.rand(2, 20, 24)
    assert torch.equal(gaussian_smooth(maps, 1.5), gaussian_blur(maps, 1.5))
    from omnipose.registration import warp_image  # OpenCV ECC's convention: inverse map

    shifted = warp_image(np.eye(8, dtype=np.float32), np.array([[1, 0, 1], [0, 1, 0]], np.float32), 0.0)
    np.testing.assert_array_equal(shifted[:, :-1], np.eye(8, dtype=np.float32)[:, 1:])


def test_an_unknown_old_name_is_an_attribute_error():
    import omnipose.train

    with pytest.raises(AttributeError, match="no_such_thing"):
        omnipose.train.no_such_thing  # noqa: B018

"""Benchmark metrics and protocols (MAD/PAD, M2AD), reports, and the one fit -> detect -> evaluate runner.

Modules, in the order they build on each other: ``inputs`` (checks, the benchmarks' resizes),
``ranking`` (scores split by label and sorted once), ``metrics`` (AUROC, AP, F1max, AUPRO, image
scores), ``config`` (``EvaluationConfig``, protocol metric sets), ``results`` (``ClassResult``,
class means), ``protocols`` (PAD, M2AD-Invariant, M2AD-Synergy on arrays), ``predictions`` (the
prediction folder layout, evaluating a folder), ``tables``, ``figures``, ``report``, ``runner``
(fit -> detect -> evaluate), ``demo`` and ``original`` (what the demo and OmniposeAD's commands need),
``queries`` (one query as an idempotent unit of work), ``executors`` and ``ray_executor`` (where
fit -> detect runs: here or on a Ray cluster), ``benchmark`` (a whole dataset, one report),
``sim2real`` (the sim-to-real study).
"""

from omnipose.evaluation.benchmark import BENCHMARK_EVALUATION, BenchmarkRun, resolve_classes, run_benchmark
from omnipose.evaluation.config import (
    ADER_METRICS,
    FUSION_RULES,
    NATIVE_SIZE,
    PAD_METRICS,
    PROTOCOLS,
    SYNERGY_METRICS,
    EvaluationConfig,
)
from omnipose.evaluation.demo import (
    DEMO_EVALUATION,
    DemoConfig,
    prepare_demo_data,
    run_demo_pipeline,
    run_pipeline,
)
from omnipose.evaluation.executors import EXECUTORS, Executor, LocalExecutor, make_executor
from omnipose.evaluation.figures import save_curves, save_panel
from omnipose.evaluation.inputs import MapResizedWarning, MetricInputError
from omnipose.evaluation.metrics import (
    IMAGE_SCORE_ALIASES,
    IMAGE_SCORE_METHODS,
    Undefined,
    aupro,
    auroc,
    average_precision,
    decision_metrics,
    f1_max,
    image_score_from_map,
    is_defined,
    pixel_auroc,
    pixel_average_precision,
    pixel_f1_max,
)
from omnipose.evaluation.original import (
    DEFAULT_DATA_DIR,
    ORIGINAL_EVALUATION,
    detector_config_from_pad,
    expand_class_name,
    read_pad_config,
    require_dataset,
)
from omnipose.evaluation.predictions import (
    PredictionError,
    evaluate_prediction_dir,
    read_anomaly_map,
    read_decisions,
    read_scores_file,
)
from omnipose.evaluation.protocols import evaluate_m2ad_invariant, evaluate_m2ad_synergy, evaluate_pad
from omnipose.evaluation.queries import detect_items, pending_keys, read_score, write_class_files
from omnipose.evaluation.ray_executor import BatchDone, RayConfig, RayExecutor
from omnipose.evaluation.report import write_demo_report, write_report
from omnipose.evaluation.results import ClassMean, ClassResult, class_means
from omnipose.evaluation.runner import ClassRun, run_class, run_classes, save_run_config
from omnipose.evaluation.sim2real import (
    CELLS,
    ObjectCheck,
    Sim2RealRun,
    check_same_object,
    run_sim2real,
    sim2real_table,
)
from omnipose.evaluation.tables import csv_text, format_table, markdown_table, results_to_dict

__all__ = [
    "CELLS",
    "ObjectCheck",
    "Sim2RealRun",
    "check_same_object",
    "run_sim2real",
    "sim2real_table",
    "BENCHMARK_EVALUATION",
    "BatchDone",
    "RayConfig",
    "RayExecutor",
    "BenchmarkRun",
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "detect_items",
    "make_executor",
    "pending_keys",
    "read_score",
    "resolve_classes",
    "write_class_files",
    "run_benchmark",
    "ADER_METRICS",
    "ClassMean",
    "ClassResult",
    "ClassRun",
    "DEFAULT_DATA_DIR",
    "DEMO_EVALUATION",
    "DemoConfig",
    "EvaluationConfig",
    "FUSION_RULES",
    "IMAGE_SCORE_ALIASES",
    "IMAGE_SCORE_METHODS",
    "MapResizedWarning",
    "MetricInputError",
    "NATIVE_SIZE",
    "ORIGINAL_EVALUATION",
    "PAD_METRICS",
    "PROTOCOLS",
    "PredictionError",
    "SYNERGY_METRICS",
    "Undefined",
    "aupro",
    "auroc",
    "average_precision",
    "decision_metrics",
    "class_means",
    "csv_text",
    "detector_config_from_pad",
    "evaluate_m2ad_invariant",
    "evaluate_m2ad_synergy",
    "evaluate_pad",
    "evaluate_prediction_dir",
    "expand_class_name",
    "f1_max",
    "format_table",
    "image_score_from_map",
    "is_defined",
    "markdown_table",
    "pixel_auroc",
    "pixel_average_precision",
    "pixel_f1_max",
    "prepare_demo_data",
    "read_anomaly_map",
    "read_decisions",
    "read_pad_config",
    "read_scores_file",
    "require_dataset",
    "results_to_dict",
    "run_class",
    "run_classes",
    "run_demo_pipeline",
    "run_pipeline",
    "save_curves",
    "save_panel",
    "save_run_config",
    "write_demo_report",
    "write_report",
]

"""Benchmark metrics and protocols (MAD/PAD, M2AD), reports, and the one fit -> detect -> evaluate runner."""
from omnipose.evaluation.demo import (
    DEMO_EVALUATION,
    run_pipeline,
    write_demo_report,
)
from omnipose.evaluation.evaluate import (
    EvaluationConfig,
    evaluate_pad,
)
from omnipose.evaluation.metrics import (
    auroc,
    is_defined,
    pixel_auroc,
)
from omnipose.evaluation.original import (
    anomaly_nerf_lego,
    auroc_test,
)

__all__ = [
    "DEMO_EVALUATION",
    "EvaluationConfig",
    "anomaly_nerf_lego",
    "auroc",
    "auroc_test",
    "evaluate_pad",
    "is_defined",
    "pixel_auroc",
    "run_pipeline",
    "write_demo_report",
]

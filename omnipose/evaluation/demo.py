"""``omnipose demo``: the whole method on built-in data, within minutes on 2 CPU cores.

Makes a small MAD-format benchmark with ``omnipose synth``, fits a detector per class (radiance
field, pose estimator, normal-data calibration), detects every test image, evaluates with the
benchmark metrics and writes a report: ``<out>/report.md`` with the table, ROC/PR curves and
panels (query | reference | ground truth | heat map | predicted mask).

Everything is resumable: rerunning the command reuses the data, the checkpoints and every
finished prediction. A class whose data was made with other settings (another --size, say) is made
again, and what came from the old data is dropped: its predictions, and its checkpoint when
the training views changed.
"""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from omnipose.core.files import atomic_write_text
from omnipose.data import open_mad_class
from omnipose.data.synth import SYNTH_CLASSES, SynthConfig, ensure_class
from omnipose.detector import Detector, DetectorConfig
from omnipose.evaluation.evaluate import (
    EvaluationConfig,
    class_means,
    evaluate_prediction_dir,
    format_table,
    write_report,
)

# Calibrated maps are already smoothed and standardised: evaluate them as they are, at full size.
DEMO_EVALUATION = EvaluationConfig(
    protocol="pad", image_size="native", gaussian_sigma=0.0,
    metrics=("AUROC_sp", "AP_sp", "F1max_sp", "AUROC_px", "AP_px", "F1max_px", "AUPRO_px"),
)  # fmt: skip


def run_pipeline(
    data_root: Path,
    class_names: list[str],
    out_dir: Path,
    config: DetectorConfig,
    evaluation: EvaluationConfig = DEMO_EVALUATION,
    progress: bool = True,
) -> tuple[list, dict]:
    """Fit, detect and evaluate each class of a MAD-format root. Returns (class results, timings)."""
    results, timings = [], {}
    for class_name in class_names:
        start = time.perf_counter()
        mad = open_mad_class(data_root, class_name)
        detector = Detector(config).fit(mad, progress=progress)
        fitted = time.perf_counter()
        detector.detect_class(mad, out_dir / "predictions", progress=progress)
        detected = time.perf_counter()
        results.append(evaluate_prediction_dir(out_dir / "predictions", data_root, class_name, evaluation, examples=3))
        timings[class_name] = {
            "fit_seconds": round(fitted - start, 1),
            "detect_seconds": round(detected - fitted, 1),
            "queries": len(mad.test_items),
        }
    return results, timings


def write_demo_report(out_dir: Path, results: list, timings: dict, evaluation: EvaluationConfig) -> Path:
    """report.md: the metrics table, the timings and links to every figure."""
    written = write_report(results, out_dir / "report", evaluation)
    lines = ["# omnipose demo report", "", "## Metrics (%)", "", (out_dir / "report" / "metrics.md").read_text(), ""]
    lines += ["## Time (2 CPU cores unless stated)", "", "| class | fit (s) | detect (s) | queries | s / query |", "|---|---|---|---|---|"]
    for name, t in timings.items():
        per_query = t["detect_seconds"] / max(t["queries"], 1)
        lines.append(f"| {name} | {t['fit_seconds']} | {t['detect_seconds']} | {t['queries']} | {per_query:.1f} |")
    lines += ["", "## Figures", ""]
    for key, path in written.items():
        if path.suffix == ".png":
            lines.append(f"![{key}]({path.relative_to(out_dir).as_posix()})")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", type=Path, default=Path("output/demo"), help="where data, checkpoints and the report go")
    parser.add_argument("--classes", default="01Robot,03Duck", help=f"comma-separated classes of {', '.join(SYNTH_CLASSES)}")
    parser.add_argument("--size", type=int, default=200, help="image width in pixels (default 200)")
    parser.add_argument("--train-views", type=int, default=80)
    parser.add_argument("--test-views-per-type", type=int, default=3, help="test images per type (good, Burrs, Missing, Stains)")
    parser.add_argument("--steps", type=int, default=1200,
                        help="training steps per class (default 1200, about 2 minutes on 2 free cores); a step budget "
                             "gives the same field on a busy machine, only later")
    parser.add_argument("--minutes", type=float, default=None, help="also stop training after this many minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    out_dir: Path = args.out
    data_root = out_dir / "data"
    class_names = [c.strip() for c in args.classes.split(",") if c.strip()]
    synth = SynthConfig(size=args.size, train_views=args.train_views, test_views_per_type=args.test_views_per_type, seed=args.seed)
    config = DetectorConfig(image_size=args.size, dataset="demo", ckpt_root=str(out_dir / "ckpts"), device=args.device)
    for class_name in class_names:
        changed = ensure_class(data_root, class_name, synth)
        # What came from data that changed would be silently reused: predictions, and the field.
        if "test" in changed:
            shutil.rmtree(out_dir / "predictions" / class_name, ignore_errors=True)
        if "train" in changed:
            shutil.rmtree(Path(config.ckpt_root) / config.dataset / class_name, ignore_errors=True)
    config.train = replace(config.train, steps=args.steps, minutes=args.minutes, seed=args.seed)
    results, timings = run_pipeline(data_root, class_names, out_dir, config)
    print(format_table(results, class_means(results)))
    report = write_demo_report(out_dir, results, timings, DEMO_EVALUATION)
    print(f"report: {report}")
    return 0

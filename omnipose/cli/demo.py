"""``omnipose demo``: make data, train, detect, evaluate and write a report (``omnipose.evaluation.demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from omnipose.data.synth import SYNTH_CLASSES
from omnipose.evaluation import DemoConfig, class_means, format_table, run_demo_pipeline


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    defaults = DemoConfig()
    parser.add_argument("--out", type=Path, default=Path("output/demo"), help="where data, checkpoints and the report go")
    parser.add_argument("--classes", default=",".join(defaults.classes), help=f"comma-separated classes of {', '.join(SYNTH_CLASSES)}")
    parser.add_argument("--size", type=int, default=defaults.size, help=f"image width in pixels (default {defaults.size})")
    parser.add_argument("--train-views", type=int, default=defaults.train_views)
    parser.add_argument("--test-views-per-type", type=int, default=defaults.test_views_per_type,
                        help="test images per type (good, Burrs, Missing, Stains)")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"training steps per class (default {defaults.steps}, about 2 minutes on 2 free cores); a step "
                             "budget gives the same field on a busy machine, only later")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="also stop training after this many minutes")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, ... (default: CUDA when present)")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    demo = DemoConfig(
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()),
        size=args.size,
        train_views=args.train_views,
        test_views_per_type=args.test_views_per_type,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed,
        device=args.device,
    )
    results, report = run_demo_pipeline(args.out, demo)
    print(format_table(results, class_means(results)))
    print(f"report: {report}")
    return 0

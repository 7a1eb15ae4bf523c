"""``omnipose benchmark``: fit every class, detect every query, evaluate; here or on a Ray cluster
(``omnipose.evaluation.benchmark``)."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from omnipose.cli.detect import add_size_arguments, detector_config_from_args
from omnipose.evaluation import EXECUTORS, class_means, format_table, make_executor
from omnipose.evaluation import run_benchmark as benchmark_classes


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", type=Path, required=True, help="MAD-format root (MAD-Sim, MAD-Real, or omnipose synth)")
    parser.add_argument("--classes", default="all", help="'all' or comma-separated class folders, e.g. 01Gorilla,02Unicorn")
    parser.add_argument("--out", type=Path, default=Path("output/benchmark"),
                        help="predictions go to <out>/predictions/<class>/, the report to <out>/report.md")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one class after the other in this process; ray: on a Ray cluster (the ray extra)")
    parser.add_argument("--address", default=None,
                        help="with --executor ray: 'auto' (the cluster `ray start` made on this machine) or HOST:PORT; "
                             "default: start a local cluster for this run")
    parser.add_argument("--batch-size", type=int, default=None, help="with --executor ray: queries per call to a class's worker")
    parser.add_argument("--cpus-per-worker", type=float, default=None, help="with --executor ray: CPUs per fit task and per worker")
    parser.add_argument("--ckpt-root", default="ckpts", help="checkpoints in <ckpt-root>/<dataset>/<class>/ (shared filesystem for ray)")
    parser.add_argument("--dataset", default=None, help="dataset name for the checkpoint folders (default: the data folder's name)")
    add_size_arguments(parser)
    parser.add_argument("--steps", type=int, default=None, help="training steps per class when no checkpoint exists")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget per class when no checkpoint exists")
    parser.add_argument("--matcher", default=None, help="keypoint matcher for the coarse pose (default xfeat)")
    parser.add_argument("--neighbour-views", type=int, default=None,
                        help="training views re-projected to each query's pose and compared besides the render")
    parser.add_argument("--device", default=None)
    return parser


def run_benchmark(args: argparse.Namespace) -> int:
    config = detector_config_from_args(args)
    if args.steps is not None:
        config.train = replace(config.train, steps=args.steps)
    options = {name: value for name, value in (("batch_size", args.batch_size), ("cpus_per_worker", args.cpus_per_worker))
               if value is not None}  # fmt: skip
    executor = make_executor(args.executor, args.address, **options)
    run = benchmark_classes(args.data, args.classes, args.out, config, executor)
    print(format_table(run.results, class_means(run.results)))
    print("\n".join(line for class_run in run.runs for line in class_run.describe()))
    print(f"{run.executor}: {run.wall_seconds:.0f} s; report: {run.report}")
    return 0


"""``omnipose sim2real``: the same classes simulated and photographed; sim->sim, real->real and
sim->real in one table (``omnipose.evaluation.sim2real``)."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from omnipose.cli.detect import add_size_arguments, config_from_size_arguments
from omnipose.evaluation import CELLS, sim2real_table
from omnipose.evaluation import run_sim2real as run_study


def add_sim2real_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--sim", type=Path, required=True, help="MAD-format root of simulated views (MAD-Sim, omnipose synth)")
    parser.add_argument("--real", type=Path, required=True,
                        help="MAD-format root of photographs of the same classes (MAD-Real, omnipose synth --style photo)")
    parser.add_argument("--class", dest="classes", default="all",
                        help="'all' (the classes in both roots) or comma-separated class folders, e.g. 01Gorilla,02Unicorn")
    parser.add_argument("--out", type=Path, default=Path("output/sim2real"),
                        help="predictions go to <out>/<cell>/<class>/, the table to <out>/report.md and <out>/sim2real.json")
    parser.add_argument("--cells", default=",".join(CELLS), help=f"which of {', '.join(CELLS)} to run (default: all three)")
    parser.add_argument("--ckpt-root", default="ckpts", help="checkpoints in <ckpt-root>/<root folder name>/<class>/")
    add_size_arguments(parser)
    parser.add_argument("--steps", type=int, default=None, help="training steps per field when no checkpoint exists")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget per field when no checkpoint exists")
    parser.add_argument("--calibrate-on-photos", type=int, default=0, metavar="N",
                        help="in sim->real, calibrate the comparison on N of the real class's normal training "
                             "photographs, posed as queries, instead of on the renders (default 0: the renders)")
    parser.add_argument("--device", default=None)
    return parser


def run_sim2real(args: argparse.Namespace) -> int:
    config = config_from_size_arguments(args)
    if args.steps is not None:
        config.train = replace(config.train, steps=args.steps)
    cells = [cell.strip() for cell in args.cells.split(",") if cell.strip()]
    run = run_study(args.sim, args.real, args.classes, args.out, config, cells,
                    calibration_photos=args.calibrate_on_photos)
    print("\n".join(sim2real_table(run.cells)))
    for check in run.checks.values():
        print(check.message())
    print(f"report: {run.report}; table as JSON: {run.summary}")
    return 0 if all(check.same_object for check in run.checks.values()) else 1


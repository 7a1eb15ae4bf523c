"""The ``omnipose`` command: the table of subcommands, and one way to run them.

Each subcommand lives in ``omnipose/cli/<command>.py`` (``add_<cmd>_arguments`` / ``run_<cmd>``),
a thin layer over the Python API; this file only lists them, in data-flow order, and is the
only place that turns errors on the user's input into one clear line and an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings
from pathlib import Path

from omnipose.core.errors import OmniposeError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed package's folder: warnings raised from files under it are the package's own."""

# (command, module, one-line help), in the order data flows through the package.
COMMANDS = (
    ("synth", "omnipose.cli.synth", "make a built-in MAD-format benchmark (procedural LEGO-like objects)"),
    ("download", "omnipose.cli.download", "download MAD-Sim / MAD-Real with gdown"),
    ("onboard", "omnipose.cli.onboard", "poses of photographs of your own object (structure from motion), as a class folder"),
    ("train", "omnipose.cli.train", "train the radiance field of one object"),
    ("pose", "omnipose.cli.pose", "estimate the pose of a query image"),
    ("calibrate", "omnipose.cli.compare", "fit the normal-data calibration from training views and their renders"),
    ("compare", "omnipose.cli.compare", "anomaly map and score of a query against its rendered reference"),
    ("detect", "omnipose.cli.detect", "detect anomalies in the test images of a class"),
    ("evaluate", "omnipose.cli.evaluate", "compute the benchmark metrics of saved predictions"),
    ("benchmark", "omnipose.cli.benchmark", "fit, detect and evaluate every class of a dataset, here or on a Ray cluster"),
    ("sim2real", "omnipose.cli.sim2real", "the sim-to-real study: sim->sim, real->real and sim->real per class, one table"),
    ("demo", "omnipose.cli.demo", "make data, train, detect, evaluate and write a report, on 2 CPU cores"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnipose", description="Pose-agnostic anomaly detection on 3D objects.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(command, help=help_text, description=help_text)
        getattr(module, f"add_{command}_arguments")(sub)
        sub.set_defaults(run=getattr(module, f"run_{command}"))
    return parser


def command_warnings(name: str):
    """``warnings.formatwarning`` for a command: the package's own warnings (a photo left out, a view that looks
    wrong) as one line each, ``<name>: warning: ...``, like its errors; other libraries' as Python shows them,
    with the file and line a report needs."""
    python_format = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(PACKAGE_DIR):
            return f"{name}: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    return format_warning


def run_guarded(name: str, function, *args) -> int:
    """Run a command, turning input errors and Ctrl-C into one clear line and an exit code, and its warnings into
    one line each (``command_warnings``).

    Anything else is a bug of the package: its traceback is shown, with a line asking for a report.
    """
    python_format, warnings.formatwarning = warnings.formatwarning, command_warnings(name)
    try:
        return int(function(*args) or 0)
    except OmniposeError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished work is saved, rerun to resume.", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 (shown in full: the traceback is what a bug report needs)
        traceback.print_exc()
        print(f"{name}: internal error: this is a bug in omnipose, not a problem with your input. Please report it "
              "to the omnipose maintainers with the traceback above and the command you ran.", file=sys.stderr)
        return 3
    finally:
        warnings.formatwarning = python_format


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return run_guarded(f"omnipose {args.command}", args.run, args)


if __name__ == "__main__":
    sys.exit(main())

"""``omnipose evaluate``: the benchmark metrics of saved predictions, as tables and figures."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from omnipose.core.errors import OmniposeError
from omnipose.evaluation import (
    FUSION_RULES,
    IMAGE_SCORE_ALIASES,
    IMAGE_SCORE_METHODS,
    NATIVE_SIZE,
    PROTOCOLS,
    EvaluationConfig,
    MapResizedWarning,
    evaluate_prediction_dir,
    format_table,
    write_report,
)


def _parse_size(text: str) -> tuple[int, int] | str:
    if text.lower() == NATIVE_SIZE:
        return NATIVE_SIZE
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: give N, HxW, or 'native'") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size {text!r}: give N, HxW, or 'native'")
    return parts[0], parts[1]


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``omnipose evaluate``."""
    parser.add_argument("--pred", required=True, type=Path, help="prediction directory: <pred>/<key>.npy (+ scores.json)")
    parser.add_argument("--data", required=True, type=Path, help="dataset root: MAD for pad, M2AD for m2ad-*")
    parser.add_argument("--class", dest="class_names", required=True, nargs="+", metavar="NAME",
                        help="class name(s); with several, predictions are read from <pred>/<class>/")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="pad", help="benchmark protocol (default: pad)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>/evaluation-<protocol>)")
    parser.add_argument("--fusion", choices=FUSION_RULES, default="add", help="m2ad-synergy fusion rule (default: add)")
    parser.add_argument("--image-size", type=_parse_size, default=None,
                        help="evaluation size N or HxW, or 'native' (default: 224 for pad, native for m2ad)")
    parser.add_argument("--gaussian-sigma", type=float, default=None,
                        help="Gaussian filter on each map (default: 4 for pad, 0 for m2ad)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: the protocol's set)")
    parser.add_argument("--score-method", choices=IMAGE_SCORE_METHODS + tuple(IMAGE_SCORE_ALIASES), default="max",
                        help="image score of a map when the predictions have no scores.json: its max (default) or "
                             "'topk_mean', the mean of its highest 1%% of pixels ('topk' is the same)")
    parser.add_argument("--panels", type=int, default=0, help="qualitative panels for the N highest-scoring anomalous images")
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``omnipose evaluate``: print the table, write JSON/CSV/Markdown/curves. Returns the exit code."""
    try:
        config = EvaluationConfig(
            protocol=args.protocol,
            image_size=args.image_size,
            gaussian_sigma=args.gaussian_sigma,
            fusion=args.fusion,
            metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None,
            score_method=args.score_method,
        ).resolved()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if len(args.class_names) > 1:
        missing = [c for c in args.class_names if not (args.pred / c).is_dir()]
        if missing:
            print(f"error: with several classes, predictions must be in <pred>/<class>/; missing: "
                  f"{', '.join(str(args.pred / c) for c in missing)}", file=sys.stderr)
            return 2
    try:
        # Warnings are shown once, as plain lines; resize warnings are already in each class's notes.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = [evaluate_prediction_dir(args.pred, args.data, c, config, examples=args.panels) for c in args.class_names]
            out_dir = args.out or args.pred / f"evaluation-{config.protocol}"
            written = write_report(results, out_dir, config)
    except OmniposeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, MapResizedWarning)):
        print(f"warning: {warning}", file=sys.stderr)
    print(format_table(results))
    for r in results:
        for note in r.notes:
            print(f"note ({r.class_name}): {note}")
    print(f"wrote {written['json']}, {written['csv'].name}, {written['markdown'].name} and {len(written) - 3} figure(s) to {out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``omnipose evaluate`` on its own (``python -m omnipose.cli.evaluate``)."""
    parser = add_evaluate_arguments(argparse.ArgumentParser(prog="omnipose evaluate", description=__doc__.split("\n")[0]))
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""``omnipose pose``: the pose of query images against a trained field."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from omnipose.core.errors import OmniposeError
from omnipose.core.files import atomic_write_json
from omnipose.pose import MATCHER_NAMES, PoseConfig, PoseEstimator


def add_pose_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``omnipose pose``."""
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint file (model.pt) or its folder")
    parser.add_argument("--image", type=Path, nargs="+", required=True, help="query image(s), any pose")
    parser.add_argument("--matcher", default=PoseConfig.matcher, choices=MATCHER_NAMES,
                        help=f"keypoint matcher for retrieval (default {PoseConfig.matcher})")
    parser.add_argument("--loftr-weights", type=Path, default=None, help="LoFTR checkpoint, needed by --matcher loftr")
    parser.add_argument("--rotations", type=int, default=PoseConfig.rotations,
                        help="in-plane rotations a query is tried at for rotation-sensitive matchers")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (atomically)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> PoseConfig:
    """The PoseConfig the options ask for."""
    return PoseConfig(
        matcher=args.matcher, loftr_weights=None if args.loftr_weights is None else str(args.loftr_weights),
        rotations=args.rotations, device=args.device, progress=not args.quiet,
    )


def run_pose(args: argparse.Namespace) -> int:
    """``omnipose pose``: print each query's c2w, residual, confidence and time; 0 when every pose is
    confident, 1 when some are flagged low-confidence or failed (an image that cannot be read or
    used is recorded with its reason, in the output and the JSON, and the others go on)."""
    config = config_from_args(args)
    start = time.perf_counter()
    estimator = PoseEstimator.from_checkpoint(args.ckpt, config)
    setup = time.perf_counter() - start
    if not args.quiet:
        print(f"loaded {args.ckpt} and {len(estimator.index.features)} training views' features in {setup:.1f} s "
              f"({estimator.matcher.name})", file=sys.stderr)
    results = {}
    for path in args.image:
        try:
            result = estimator.estimate(path)
        except OmniposeError as error:  # one bad image must not cost the others their poses
            results[str(path)] = {"failed": True, "error": str(error)}
            print(f"{path}: FAILED: {error}")
            continue
        results[str(path)] = result.to_json()
        flag = "LOW CONFIDENCE" if result.low_confidence else "ok"
        print(f"{path}: residual {result.residual:.4f}, confidence {result.confidence:.2f} ({flag}), "
              f"{result.seconds:.1f} s, {result.hypotheses} hypotheses, best from {result.source}")
        print("c2w =\n" + np.array2string(result.c2w.numpy(), precision=5, suppress_small=True))
        for note in result.notes:
            print(f"  note: {note}")
    if args.json is not None:
        atomic_write_json(args.json, results if len(results) > 1 else next(iter(results.values())))
    return 0 if all(not r.get("failed") and not r["low_confidence"] for r in results.values()) else 1

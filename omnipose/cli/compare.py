"""``omnipose calibrate`` and ``omnipose compare``: fit a calibration from normal views and their
renders, then the anomaly map and score of one query against its reference."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from omnipose.compare import (
    MODES,
    SCORE_METHOD_ALIASES,
    SCORE_METHODS,
    Calibration,
    Comparator,
    CompareConfig,
    CompareError,
)
from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.core.image import read_image_rgb, save_image
from omnipose.data import IMAGE_SUFFIXES, natural_key


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CompareConfig()
    parser.add_argument(
        "--features",
        default=defaults.features,
        help="feature network: efficientnet-lite0 / -lite2, or a state-dict path (e.g. lukemelas efficientnet-b4 .pth)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="feature strides to compare (default 4 8 16; PAD mode 4 8 16 32)",
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="compare at this shorter side (default: input size; PAD mode 224)"
    )
    parser.add_argument("--sigma", type=float, default=None, help="Gaussian smoothing in pixels (default 4)")
    parser.add_argument(
        "--score",
        choices=SCORE_METHODS + tuple(SCORE_METHOD_ALIASES),
        default=None,
        help="image score: max of the map or topk_mean, the mean of its top --topk-fraction",
    )
    parser.add_argument("--topk-fraction", type=float, default=defaults.topk_fraction)
    parser.add_argument(
        "--contrast-bins",
        type=int,
        default=defaults.contrast_bins,
        help="bins of the reference's local contrast with their own normal statistics (1: pooled)",
    )
    parser.add_argument("--no-mask", action="store_true", help="compare the whole frame, not only the object")
    parser.add_argument(
        "--background",
        type=float,
        nargs=3,
        default=list(defaults.background),
        metavar=("R", "G", "B"),
        help="background colour in [0, 1]",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")


def _config_from_args(args: argparse.Namespace, mode: str = "calibrated") -> CompareConfig:
    config = CompareConfig.pad(features=args.features) if mode == "pad" else CompareConfig(features=args.features)
    changes = {"topk_fraction": args.topk_fraction, "contrast_bins": args.contrast_bins, "background": tuple(args.background)}
    if args.layers:
        changes["feature_layers"] = tuple(args.layers)
    if args.image_size is not None:
        changes["image_size"] = args.image_size
    if args.sigma is not None:
        changes["sigma"] = args.sigma
    if args.score is not None:
        changes["score_method"] = args.score
    if args.no_mask:
        changes["use_object_mask"] = False
    return replace(config, **changes)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `omnipose compare QUERY REFERENCE`: anomaly map and score of one pair of images."""
    parser.add_argument("query", type=Path, help="query image")
    parser.add_argument("reference", type=Path, help="normal reference rendered at the query's pose")
    parser.add_argument("--calibration", type=Path, default=None, help="calibration JSON from `omnipose calibrate`")
    parser.add_argument("--mode", choices=MODES, default="calibrated", help="calibrated (ours) or pad (PAD's recipe)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for anomaly_map.npy, anomaly_map.png and result.json"
    )
    _add_config_arguments(parser)


def run_compare(args: argparse.Namespace) -> int:
    calibration = Calibration.load(args.calibration) if args.calibration else None
    if calibration is not None and args.mode == "pad":
        raise CompareError("--calibration is for mode 'calibrated'; PAD mode is uncalibrated. Drop one of the two.")
    config = _config_from_args(args, args.mode)
    if calibration is not None and calibration.signature:
        # The calibration fixes the config it was fitted with; command-line flags cannot change it.
        config = CompareConfig.from_dict({**calibration.signature, "mode": "calibrated"})
    comparator = Comparator(config, calibration, device=args.device)
    background = config.background
    query = read_image_rgb(args.query, background=background)
    reference = read_image_rgb(args.reference, background=background)
    result = comparator.compare(query, reference)
    anomaly_map = result.anomaly_map[0].cpu().numpy()
    score = float(result.score[0])
    summary = {
        "query": str(args.query),
        "reference": str(args.reference),
        "score": score,
        "calibrated": result.calibrated,
        "mode": config.mode,
        "map_size": list(anomaly_map.shape),
    }
    if calibration is not None:
        summary["score_threshold_fpr_0.05"] = calibration.score_threshold(0.05)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "anomaly_map.npy") as tmp:
            np.save(tmp, anomaly_map.astype(np.float32))
        save_image(args.out / "anomaly_map.png", _heatmap(anomaly_map))
        atomic_write_json(args.out / "result.json", summary)
    units = "normal standard deviations" if result.calibrated else "raw units (uncalibrated)"
    print(f"score {score:.4g} ({units})")
    return 0


def _heatmap(anomaly_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) jet colours over its own range, for viewing."""
    import matplotlib

    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    scaled = (anomaly_map - low) / (high - low) if high > low else np.zeros_like(anomaly_map)
    return matplotlib.colormaps["jet"](scaled)[..., :3].astype(np.float32)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `omnipose calibrate`: fit a calibration from real views and renders at their poses."""
    parser.add_argument("--views", type=Path, required=True, help="folder of real normal training views")
    parser.add_argument(
        "--renders", type=Path, required=True, help="folder of renders at the same poses, same file names"
    )
    parser.add_argument("--out", type=Path, required=True, help="calibration JSON to write")
    _add_config_arguments(parser)


def run_calibrate(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    for folder in (args.views, args.renders):
        if not folder.is_dir():
            raise CompareError(f"folder not found: {folder}.")
    views = sorted((p for p in args.views.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    pairs = [(p, args.renders / p.name) for p in views if (args.renders / p.name).is_file()]
    if len(pairs) < 2:
        raise CompareError(
            f"found {len(pairs)} view/render pairs with matching file names in {args.views} and {args.renders}; "
            "render every training view at its own pose and save it under the view's file name."
        )
    real = np.stack([read_image_rgb(v, background=config.background) for v, _ in pairs])
    rendered = np.stack(
        [read_image_rgb(r, background=config.background, size=(real.shape[2], real.shape[1])) for _, r in pairs]
    )
    comparator = Comparator(config, device=args.device)
    calibration = comparator.fit(real, rendered)
    calibration.save(args.out)
    print(
        f"calibrated on {calibration.num_pairs} normal pairs -> {args.out}; "
        f"score threshold at 5% false positives: {calibration.score_threshold(0.05):.3g}"
    )
    return 0

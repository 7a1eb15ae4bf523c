"""``omnipose detect``: fit the detector of one class and detect every test image (resumable)."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from omnipose.cli.train import add_refinement_arguments, unexplained_check_at
from omnipose.compare import CompareConfig
from omnipose.detector import DetectorConfig
from omnipose.evaluation import run_class


def add_detect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", type=Path, required=True, help="MAD-format root (MAD-Sim, MAD-Real, or omnipose synth)")
    parser.add_argument("--class", dest="class_name", required=True, help="class folder name, e.g. 01Gorilla")
    parser.add_argument("--out", type=Path, default=Path("output"), help="predictions go to <out>/<class>/")
    parser.add_argument("--ckpt-root", default="ckpts", help="checkpoints in <ckpt-root>/<dataset>/<class>/")
    parser.add_argument("--dataset", default=None, help="dataset name for the checkpoint folder (default: the data folder's name)")
    add_size_arguments(parser)
    parser.add_argument("--minutes", type=float, default=None, help="training time budget when no checkpoint exists")
    parser.add_argument("--matcher", default=None, help="keypoint matcher for the coarse pose (default xfeat)")
    parser.add_argument("--neighbour-views", type=int, default=None,
                        help="training views re-projected to each query's pose and compared besides the render "
                             f"(default {CompareConfig().neighbour_views}; 0: the render alone)")
    parser.add_argument("--device", default=None)
    return parser


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """--size and --pose-size, the working widths of ``DetectorConfig``, --held-out-views, --refine-poses for a field
    trained on the way, --focal, the queries' lens, --object-crop for objects small in the frame,
    --rank-by-chromaticity, --side-by-structure, --structure-align and --match-shading, for queries lit otherwise,
    and --highlight-floor."""
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size, help="working image width in pixels")
    parser.add_argument("--held-out-views", type=int, default=DetectorConfig.held_out_views, metavar="N",
                        help="training views a new field does not learn from, run as queries to set the decision "
                             "threshold where new normal views score (default %(default)s: none; 8 of 80 was measured)")
    parser.add_argument("--pose-size", type=int, default=DetectorConfig.pose_size,
                        help="width the pose is searched at when below --size (default %(default)s; "
                             "only the final reference is rendered at --size)")
    add_refinement_arguments(parser, "when a field is trained: ")
    parser.add_argument("--focal", type=float, default=None, metavar="PX",
                        help="focal length of the queries in pixels at their own width, when their lens differs from "
                             "the training views' (default: from the photos' EXIF where both have it, else the same)")
    parser.add_argument("--object-crop", type=float, default=CompareConfig.object_crop, metavar="MARGIN",
                        help="compare on a square crop about the object, grown by this share of its size on each side "
                             "(CompareConfig.object_crop; 0.1 for queries that show the object small, taken from afar "
                             "or with a long lens; sim2real uses 0.1 for the photographs; default 0: the whole frame)")
    parser.add_argument("--rank-by-chromaticity", action="store_true",
                        help="for queries lit otherwise than the training views (another capture session): choose the "
                             "pose by the residual of colour over brightness, which shading from another light leaves")
    parser.add_argument("--side-by-structure", action="store_true",
                        help="for the same queries: where the pose search tries the object's other side, choose the "
                             "side by where edges and marks lie rather than by colour (PoseConfig.side_by_structure; "
                             "sim2real turns it on for photographs)")
    parser.add_argument("--structure-align", action="store_true",
                        help="for the same queries: align the pose last by the object's edges and marks rather than "
                             "by its colours (PoseConfig.structure_align; sim2real turns it on for photographs)")
    parser.add_argument("--match-shading", type=int, default=CompareConfig.match_shading, metavar="PX",
                        help="for the same queries: bring each reference to the query's shading in windows of this "
                             "radius before comparing (CompareConfig.match_shading; 16 at 200 px; default 0, off)")
    parser.add_argument("--highlight-floor", type=lift_or_off, default=CompareConfig.highlight_floor, metavar="LIFT|off",
                        help="in the colour term, take off the query the white light it has over the reference beyond "
                             "this lift (a highlight no training view caught; CompareConfig.highlight_floor; default "
                             f"{'off' if CompareConfig.highlight_floor is None else CompareConfig.highlight_floor})")

    parser.add_argument("--match-sharpness-from", type=width_or_off, default=CompareConfig.match_sharpness_from,
                        metavar="PX|off",
                        help="from this compared width up, blur each query to the render's sharpness before comparing "
                             "(CompareConfig.match_sharpness_from; default %(default)s)")


def width_or_off(text: str) -> int | None:
    """--match-sharpness-from's value: a width in pixels (1 or more), or 'off' (None)."""
    if _is_off(text):
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a width in pixels nor 'off': give e.g. 400, or off")
    return int(text)


def lift_or_off(text: str) -> float | None:
    """--highlight-floor's value: a lift in [0, 1), or 'off' (None)."""
    if _is_off(text):
        return None
    try:
        lift = float(text)
    except ValueError:
        lift = -1.0
    if not 0.0 <= lift < 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a lift in [0, 1) nor 'off': give e.g. 0.05, or off")
    return lift


def _is_off(text: str) -> bool:
    return text.strip().lower() in ("off", "none")


def config_from_size_arguments(args: argparse.Namespace, **fields) -> DetectorConfig:
    """The DetectorConfig of ``add_size_arguments``' options with --ckpt-root, --device and --minutes,
    which every detecting command has, and ``fields`` (other DetectorConfig fields) besides."""
    config = DetectorConfig(image_size=args.size, pose_size=args.pose_size, ckpt_root=args.ckpt_root, device=args.device,
                            query_focal=args.focal, held_out_views=args.held_out_views, **fields)
    if args.minutes is not None:
        config.train = replace(config.train, minutes=args.minutes)
    config.train = replace(config.train, refine_poses=args.refine_poses,
                           unexplained_check_at=unexplained_check_at(args))
    config.pose = replace(config.pose, rank_by_chromaticity=args.rank_by_chromaticity,
                          side_by_structure=args.side_by_structure, structure_align=args.structure_align)
    config.compare = replace(config.compare, match_shading=args.match_shading, highlight_floor=args.highlight_floor,
                             match_sharpness_from=args.match_sharpness_from, object_crop=args.object_crop)
    return config


def detector_config_from_args(args: argparse.Namespace) -> DetectorConfig:
    """The DetectorConfig the options of ``omnipose detect`` describe."""
    config = config_from_size_arguments(args, dataset=args.dataset or Path(args.data).resolve().name)
    if args.matcher:
        config.pose = replace(config.pose, matcher=args.matcher)
    if args.neighbour_views is not None:
        config.compare = replace(config.compare, neighbour_views=args.neighbour_views)
    return config


def run_detect(args: argparse.Namespace) -> int:
    """``omnipose detect``: 0 when every test image was scored, 1 when some failed (listed; the
    others are saved, and a rerun redoes only the failed ones)."""
    run = run_class(args.data, args.class_name, args.out, detector_config_from_args(args))
    print("\n".join(run.describe()))
    print(f"evaluate with: omnipose evaluate --pred {args.out} --data {args.data} --class {args.class_name} --gaussian-sigma 0")
    return 1 if run.failed else 0

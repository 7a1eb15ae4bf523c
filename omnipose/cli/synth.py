"""``omnipose synth``: a built-in benchmark in exactly the MAD-Sim layout, rendered from LEGO-like figures
(``--style photo``: photographed in a studio, MAD-Real conditions)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from omnipose.cli.app import main as omnipose_main
from omnipose.cli.onboard import ONBOARD_MATCHERS, onboard_matcher
from omnipose.core.errors import ConfigError, OmniposeError
from omnipose.data.synth import GROUND_TRUTH_POSES, STYLES, SYNTH_CLASSES, PhotoConfig, SynthConfig, generate_dataset

PHOTO_TRAIN_VIEWS = 50  # MAD-Real: about 40-50 training photos per object


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``omnipose synth``."""
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write (MAD-Sim layout)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--classes", default="", help=f"comma-separated classes, from: {','.join(SYNTH_CLASSES)}")
    which.add_argument("--num-classes", type=int, default=None, help="the first K classes (default: all)")
    parser.add_argument("--size", type=int, default=SynthConfig.size, help="image width = height in pixels (default %(default)s; MAD: 800)")
    parser.add_argument("--style", choices=STYLES, default="sim",
                        help="sim: exact renders on white (MAD-Sim); photo: path-traced photographs on a table among "
                             'clutter (MAD-Real conditions; needs pip install -e ".[photo]")')  # fmt: skip
    parser.add_argument("--train-views", type=int, default=None,
                        help=f"training views per class (default: 40 sim, {PHOTO_TRAIN_VIEWS} photo)")  # fmt: skip
    parser.add_argument(
        "--test-views-per-type", type=int, default=10, help="test views per type (good, Burrs, Missing, Stains)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cameras and defects")
    parser.add_argument("--preview", action="store_true", help="also write <out>/preview_<class>.png contact sheets")
    parser.add_argument("--overwrite", action="store_true", help="replace class folders not made by synth")
    parser.add_argument("--no-antialias", action="store_true", help="one ray per pixel (faster, jagged edges)")
    parser.add_argument("--backdrop", default=None, metavar="GREY|R,G,B",
                        help="a plain backdrop of this colour in [0, 1], a grey level or r,g,b (sim default: white, as "
                             "MAD; photo: a light tent of that colour instead of the table, clutter and room)")
    parser.add_argument("--spp", type=int, default=None,
                        help=f"photo: path-tracing samples per pixel (default {PhotoConfig().samples_per_pixel})")
    parser.add_argument("--threads", type=int, default=None, help="photo: render threads (default: all cores)")
    parser.add_argument("--jpeg-quality", type=int, default=None,
                        help=f"photo: JPEG quality of the photos (default {PhotoConfig().jpeg_quality})")
    parser.add_argument("--onboard-poses", action="store_true",
                        help="photo: recover the training poses from the training photos with omnipose onboard (as a "
                             "user of these photos would; needs the sfm extra) instead of the true poses with 0.5 deg "
                             "of noise")  # fmt: skip
    parser.add_argument("--matcher", default="xfeat", choices=ONBOARD_MATCHERS,
                        help="photo, with --onboard-poses: onboard's keypoints and matches (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The SynthConfig the options ask for."""
    classes = tuple(name.strip() for name in (args.classes or "").split(",") if name.strip())
    train_views = args.train_views or (PHOTO_TRAIN_VIEWS if args.style == "photo" else SynthConfig.train_views)
    photo = {"samples_per_pixel": args.spp, "threads": args.threads, "jpeg_quality": args.jpeg_quality,
             "onboard_poses": args.onboard_poses or None}
    lighting = SynthConfig().lighting
    if args.backdrop is not None and args.style == "sim":
        lighting = dataclasses.replace(lighting, background=_colour(args.backdrop))
    elif args.backdrop is not None:
        colour = _colour(args.backdrop)
        photo["backdrop"] = (colour,) * 3 if isinstance(colour, float) else colour
    return SynthConfig(
        lighting=lighting,
        style=args.style, size=args.size, train_views=train_views, test_views_per_type=args.test_views_per_type,
        seed=args.seed, classes=classes, num_classes=args.num_classes, antialias=not args.no_antialias,
        overwrite=args.overwrite, progress=not args.quiet, preview=args.preview,
        photo=dataclasses.replace(PhotoConfig(), **{k: v for k, v in photo.items() if v is not None}),
    )


def _colour(text: str) -> float | tuple[float, float, float]:
    """'0.95' or '0.5,0.6,0.8' as a grey level or an (r, g, b) triple (SynthConfig checks the range)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--backdrop {text!r}: give a grey level or r,g,b, each in [0, 1] (e.g. 0.95 or 0.5,0.6,0.8)") from None
    if len(values) not in (1, 3):
        raise ConfigError(f"--backdrop {text!r}: give one number (grey) or three (r,g,b), each in [0, 1]")
    return values[0] if len(values) == 1 else values


def run_synth(args: argparse.Namespace) -> int:
    """``omnipose synth``: returns 0 on success, 2 on a bad request (message on stderr)."""
    try:
        config = config_from_args(args)
        matcher = onboard_matcher(args.matcher) if config.style == "photo" and config.photo.onboard_poses else None
        folders = generate_dataset(args.out, config, matcher)
    except OmniposeError as error:
        print(f"omnipose synth: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} class(es) to {args.out}: {', '.join(f.name for f in folders)}")
    print(f"ground-truth test poses (for evaluation only): {Path(args.out) / GROUND_TRUTH_POSES}")
    if config.preview:
        print("previews: " + ", ".join(str(Path(args.out) / f"preview_{f.name}.png") for f in folders))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m omnipose.cli.synth``: the same as ``omnipose synth``."""
    return omnipose_main(["synth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

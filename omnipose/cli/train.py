"""``omnipose train``: train the radiance field of one object (a MAD class, a transforms.json or a COLMAP model)."""
from __future__ import annotations

import argparse
from pathlib import Path

from omnipose.core.errors import DataError
from omnipose.data import PosedImages, load_colmap, load_transforms, open_mad_class
from omnipose.detector import DetectorConfig
from omnipose.nerf import TrainConfig, split_holdout, train_model


def add_train_arguments(parser) -> None:
    """Options of `omnipose train`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="root of a MAD-format dataset (use with --class)")
    source.add_argument("--transforms", type=Path,
                        help="a Blender/NeRF or nerfstudio transforms.json (e.g. nerf_synthetic/lego/transforms_train.json)")
    source.add_argument("--colmap", type=Path, help="a COLMAP sparse model folder (cameras.bin, images.bin), e.g. project/sparse/0")
    parser.add_argument("--colmap-images", type=Path, default=None,
                        help="the images of --colmap (default: images/ beside sparse/)")
    parser.add_argument("--class", dest="class_name", help="class folder under --data (e.g. 01Gorilla)")
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size,
                        help="training image width in pixels (default %(default)s, detect's default)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help=f"optimisation steps (default {TrainConfig.steps})")
    parser.add_argument("--minutes", type=float, default=None, help="time budget; stops at whichever of --steps / --minutes comes first")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default ckpts/<dataset>/<class>)")
    parser.add_argument("--holdout", type=int, default=0, metavar="K", help="hold out every K-th view for PSNR/SSIM (0: none)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from a checkpoint in --out (default on)")  # fmt: skip
    add_refinement_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_training_data(args) -> tuple[PosedImages, str, str]:
    """Views, dataset name and class name for `omnipose train`'s arguments. The scene box is the
    views' own, as ``Detector.fit`` takes it, not the ``aabb`` a transforms.json may declare: both
    train the same field, and starting in the object's tight box trains a worse one (docs/RESULTS.md,
    radiance field)."""
    if args.data is not None:
        if not args.class_name:
            raise DataError("--data needs --class NAME (a class folder under the dataset root).")
        mad = open_mad_class(args.data, args.class_name, require_masks=False)
        views = mad.load_train_views(size=args.size, progress=not args.quiet)
        dataset, class_name = Path(args.data).resolve().name, args.class_name
    elif getattr(args, "colmap", None) is not None:
        views = load_colmap(args.colmap, args.colmap_images, size=args.size, progress=not args.quiet)
        project = Path(args.colmap).resolve()
        project = project.parent.parent if project.parent.name == "sparse" else project.parent
        return views, "colmap", args.class_name or project.name
    else:
        transforms_path = Path(args.transforms)
        views = load_transforms(transforms_path, size=args.size, progress=not args.quiet)
        dataset = transforms_path.resolve().parent.parent.name or "custom"
        class_name = args.class_name or transforms_path.resolve().parent.name
    return views, dataset, class_name


def add_refinement_arguments(parser: argparse.ArgumentParser, when: str = "") -> None:
    """--keep-unexplained and --refine-poses (``TrainConfig.unexplained_check_at``, ``refine_poses``)."""
    parser.add_argument("--keep-unexplained", action="store_true",
                        help=when + "train on every view to the end, also those the field renders far worse than the others "
                             "halfway through (by default they are named and left out: wrong poses, other objects)")
    parser.add_argument("--refine-poses", action="store_true",
                        help=when + "refine the training poses with the field (for poses from a reconstruction: MAD-Real, "
                                    "omnipose onboard, COLMAP); the refined poses are saved with it")


def unexplained_check_at(args) -> float | None:
    """``TrainConfig.unexplained_check_at`` as --keep-unexplained asks."""
    return None if args.keep_unexplained else TrainConfig.unexplained_check_at


def run_train(args) -> int:
    """`omnipose train`: returns 0 on success, 130 when interrupted (checkpoint saved)."""
    views, dataset, class_name = load_training_data(args)
    train_views, holdout = split_holdout(views, args.holdout)
    config = TrainConfig(steps=args.steps, minutes=args.minutes, seed=args.seed, device=args.device,
                         dataset=dataset, class_name=class_name, refine_poses=args.refine_poses,
                         unexplained_check_at=unexplained_check_at(args))  # fmt: skip
    out_dir = args.out if args.out is not None else Path("ckpts") / dataset / class_name
    try:
        model = train_model(train_views, config, out_dir, holdout=holdout, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        return 130
    metrics = getattr(model, "metrics", {})
    summary = f"trained {dataset}/{class_name}: {metrics.get('steps')} steps in {metrics.get('train_seconds', 0):.0f} s"
    if "psnr" in metrics:
        summary += f", held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
    if metrics.get("views_left_out"):
        summary += f"; {len(metrics['views_left_out'])} view(s) left out as unexplained (named above)"
    print(f"{summary}; checkpoint: {out_dir}")
    return 0

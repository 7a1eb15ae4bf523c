"""The original OmniposeAD commands, kept working: ``python anomaly_nerf_lego.py`` and
``python auroc_test.py`` with PAD's options and config files (``omnipose.evaluation.original``).
Both detect through the same runner as ``omnipose detect``."""
from __future__ import annotations

import argparse
from pathlib import Path

from omnipose.evaluation import (
    DEFAULT_DATA_DIR,
    ORIGINAL_EVALUATION,
    class_means,
    detector_config_from_pad,
    expand_class_name,
    format_table,
    read_pad_config,
    require_dataset,
    run_class,
    run_classes,
    write_report,
)


def anomaly_nerf_lego(argv: list[str] | None = None) -> int:
    """``python anomaly_nerf_lego.py --class_name 01Gorilla [--config configs/LEGO-3D/01Gorilla.txt]``.

    Trains (or loads) the class's radiance field, estimates the pose of every test image, renders
    its reference and writes per query the map, score, pose and reference under
    ``<output_dir>/<class>/``. A rerun skips finished queries.
    """
    parser = argparse.ArgumentParser(description="OmniposeAD-compatible detection run (omnipose).")
    parser.add_argument("--config", type=Path, default=None, help="PAD config file (key = value)")
    parser.add_argument("--class_name", default=None, help="MAD class such as 01Gorilla, or 'all'")
    parser.add_argument("--data_dir", type=Path, default=None, help=f"MAD-format root (default from the config, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--output_dir", type=Path, default=None, help="where predictions go (default ./output)")
    parser.add_argument("--ckpt_dir", type=Path, default=None, help="checkpoint root (default ./ckpts)")
    parser.add_argument("--size", type=int, default=None, help="working image width (default 400, PAD's half resolution)")
    parser.add_argument("--full", action="store_true", help="honour half_res = False as 800x800 (slow on CPU)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    config = read_pad_config(args.config) if args.config else {}
    class_name = args.class_name or config.get("model_name")
    if class_name is None:
        parser.error("give --class_name (e.g. 01Gorilla) or a --config with model_name")
    data_dir = require_dataset(args.data_dir or config.get("data_dir", DEFAULT_DATA_DIR))
    output_dir = Path(args.output_dir or config.get("output_dir", "./output"))
    detector = detector_config_from_pad(config, args.ckpt_dir, args.size, args.full, args.device)
    for name in expand_class_name(data_dir, str(class_name)):
        run = run_class(data_dir, name, output_dir, detector)
        print(f"{name}: predictions in {run.predictions}")
    return 0


def auroc_test(argv: list[str] | None = None) -> int:
    """``python auroc_test.py --obj 01Gorilla``: complete missing predictions, then print and write the table."""
    parser = argparse.ArgumentParser(description="OmniposeAD-compatible evaluation (omnipose).")
    parser.add_argument("--obj", default="01Gorilla", help="MAD class, or 'all'")
    parser.add_argument("--dataset_path", type=Path, default=Path(DEFAULT_DATA_DIR))
    parser.add_argument("--output_path", type=Path, default=Path("./output"))
    parser.add_argument("--ckpt_dir", type=Path, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    data_dir = require_dataset(args.dataset_path)

    detector = detector_config_from_pad({}, args.ckpt_dir, args.size, args.full, args.device)
    runs = run_classes(data_dir, expand_class_name(data_dir, args.obj), args.output_path, detector, ORIGINAL_EVALUATION,
                       examples=3, skip_finished=True)
    results = [run.result for run in runs]
    print(format_table(results, class_means(results)))
    out = args.output_path / args.obj / "roc_curve_result"
    write_report(results, out, ORIGINAL_EVALUATION)
    print(f"tables and figures: {out}")
    return 0

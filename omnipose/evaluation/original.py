"""The original OmniposeAD commands, kept working: ``anomaly_nerf_lego.py`` and ``auroc_test.py``.

PAD's config files (``configs/LEGO-3D/<class>.txt``, ``key = value`` lines, read by the original
code with configargparse) are read here too, so that users keep their commands; the keys that
still mean something map onto our dataclass configs.
"""
from __future__ import annotations

import ast
from pathlib import Path

from omnipose.core.errors import DataError


def parse_value(text: str):
    """'True' -> True, '0.01' -> 0.01, 'None' -> None, anything else stays a string."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_pad_config(path: str | Path) -> dict:
    """Read a PAD config file into a dict of typed values. Blank lines and '#' comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file not found: {path}. PAD configs live in configs/LEGO-3D/<class>.txt.")
    config = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DataError(f"{path}:{number}: expected 'key = value', got {line!r}.")
        key, value = line.split("=", 1)
        config[key.strip()] = parse_value(value)
    return config


# ----------------------------------------------------------------------------- the two commands
DEFAULT_DATA_DIR = "./data/MAD-Sim"
# Our maps are smoothed and calibrated already (CompareConfig.sigma): evaluate them at PAD's
# 224x224 without smoothing them a second time.
ORIGINAL_EVALUATION = dict(protocol="pad", gaussian_sigma=0.0, metrics=("AUROC_px", "AUROC_sp", "AP_px", "AUPRO_px"))


def _class_names(data_dir: Path, class_name: str) -> list[str]:
    from omnipose.data import list_classes

    if class_name != "all":
        return [class_name]
    found = list_classes(data_dir) if data_dir.is_dir() else []
    if not found:
        raise DataError(f"no class folders under {data_dir}; --class_name all needs a MAD-format root.")
    return found


def _missing_data_hint(data_dir: Path) -> str:
    return (
        f"dataset not found at {data_dir}. Download MAD-Sim with `omnipose download mad-sim --to {data_dir.parent}`, "
        "or try the built-in data: `omnipose synth --out data/synth` then "
        "`python anomaly_nerf_lego.py --data_dir data/synth --class_name 01Robot`."
    )


def detector_config_from_pad(config: dict, args) -> "DetectorConfig":  # noqa: F821
    """Our DetectorConfig from a PAD config plus command-line overrides."""
    from omnipose.detector import DetectorConfig

    detector = DetectorConfig(dataset="LEGO-3D", ckpt_root=str(args.ckpt_dir or config.get("ckpt_dir", "./ckpts")))
    # PAD renders at half resolution (400x400 of MAD's 800); on CPU we default to 200 unless asked.
    detector.image_size = args.size or (400 if args.full and config.get("half_res", True) else 200)
    if args.device:
        detector.device = args.device
    return detector


def anomaly_nerf_lego(argv: list[str] | None = None) -> int:
    """``python anomaly_nerf_lego.py --class_name 01Gorilla [--config configs/LEGO-3D/01Gorilla.txt]``.

    Trains (or loads) the class's radiance field, estimates the pose of every test image, renders
    its reference and writes per query the map, score, pose and reference under
    ``<output_dir>/<class>/``. A rerun skips finished queries.
    """
    import argparse

    from omnipose.data import open_mad_class
    from omnipose.detector import Detector

    parser = argparse.ArgumentParser(description="OmniposeAD-compatible detection run (omnipose).")
    parser.add_argument("--config", type=Path, default=None, help="PAD config file (key = value)")
    parser.add_argument("--class_name", default=None, help="MAD class such as 01Gorilla, or 'all'")
    parser.add_argument("--data_dir", type=Path, default=None, help=f"MAD-format root (default from the config, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--output_dir", type=Path, default=None, help="where predictions go (default ./output)")
    parser.add_argument("--ckpt_dir", type=Path, default=None, help="checkpoint root (default ./ckpts)")
    parser.add_argument("--size", type=int, default=None, help="working image width (default 200 on CPU)")
    parser.add_argument("--full", action="store_true", help="honour half_res = True as 400x400 like PAD (slow on CPU)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    config = read_pad_config(args.config) if args.config else {}
    class_name = args.class_name or config.get("model_name")
    if class_name is None:
        parser.error("give --class_name (e.g. 01Gorilla) or a --config with model_name")
    data_dir = Path(args.data_dir or config.get("data_dir", DEFAULT_DATA_DIR))
    if not data_dir.is_dir():
        raise DataError(_missing_data_hint(data_dir))
    output_dir = Path(args.output_dir or config.get("output_dir", "./output"))
    for name in _class_names(data_dir, str(class_name)):
        mad = open_mad_class(data_dir, name)
        detector = Detector(detector_config_from_pad(config, args)).fit(mad)
        folder = detector.detect_class(mad, output_dir)
        print(f"{name}: predictions in {folder}")
    return 0


def auroc_test(argv: list[str] | None = None) -> int:
    """``python auroc_test.py --obj 01Gorilla``: complete missing predictions, then print and write the table."""
    import argparse

    from omnipose.data import open_mad_class
    from omnipose.evaluation.evaluate import (
        EvaluationConfig,
        class_means,
        evaluate_prediction_dir,
        format_table,
        write_report,
    )

    parser = argparse.ArgumentParser(description="OmniposeAD-compatible evaluation (omnipose).")
    parser.add_argument("--obj", default="01Gorilla", help="MAD class, or 'all'")
    parser.add_argument("--dataset_path", type=Path, default=Path(DEFAULT_DATA_DIR))
    parser.add_argument("--output_path", type=Path, default=Path("./output"))
    parser.add_argument("--ckpt_dir", type=Path, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if not args.dataset_path.is_dir():
        raise DataError(_missing_data_hint(args.dataset_path))

    results = []
    for name in _class_names(args.dataset_path, args.obj):
        mad = open_mad_class(args.dataset_path, name)
        folder = args.output_path / name
        missing = [item for item in mad.test_items if not (folder / item.defect_type / f"{item.image_path.stem}.json").is_file()]
        if missing:
            print(f"{name}: {len(missing)} of {len(mad.test_items)} test images have no prediction yet; computing them.")
            from omnipose.detector import Detector

            Detector(detector_config_from_pad({}, args)).fit(mad).detect_class(mad, args.output_path)
        results.append(evaluate_prediction_dir(args.output_path, args.dataset_path, name, EvaluationConfig(**ORIGINAL_EVALUATION), examples=3))
    print(format_table(results, class_means(results)))
    out = args.output_path / (args.obj if args.obj != "all" else "all") / "roc_curve_result"
    write_report(results, out, EvaluationConfig(**ORIGINAL_EVALUATION))
    print(f"tables and figures: {out}")
    return 0

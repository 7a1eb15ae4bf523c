"""What the original OmniposeAD commands (``anomaly_nerf_lego.py``, ``auroc_test.py``) need from
the library: PAD's config files, their mapping onto our configs, and the original evaluation.

PAD's config files (``configs/LEGO-3D/<class>.txt``, ``key = value`` lines, read by the original
code with ConfigArgParse) are read here, so that users keep their commands; the keys that still
mean something map onto our dataclass configs. The commands themselves are in
``omnipose/cli/original.py`` and run through ``runner.py`` like every other detection.
"""
from __future__ import annotations

import ast
from pathlib import Path

from omnipose.core.errors import DataError
from omnipose.data import list_classes
from omnipose.detector import DetectorConfig
from omnipose.evaluation.config import EvaluationConfig

DEFAULT_DATA_DIR = "./data/MAD-Sim"
# Our maps are smoothed and calibrated already (CompareConfig.sigma): evaluate them at PAD's
# 224x224 without smoothing them a second time.
ORIGINAL_EVALUATION = EvaluationConfig(protocol="pad", gaussian_sigma=0.0, metrics=("AUROC_px", "AUROC_sp", "AP_px", "AUPRO_px"))


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


def detector_config_from_pad(config: dict, ckpt_dir: str | Path | None = None, size: int | None = None,
                             full: bool = False, device: str | None = None) -> DetectorConfig:
    """Our DetectorConfig from a PAD config (``read_pad_config``) and the command's overrides.

    ckpt_dir: checkpoint root (default: the config's ``ckpt_dir``, else ./ckpts).
    size: working image width; default 400, PAD's half resolution of MAD's 800, or 800 with
        ``full`` when the config sets ``half_res = False``.
    """
    return DetectorConfig(
        image_size=size or (800 if full and not config.get("half_res", True) else DetectorConfig.image_size),
        dataset="LEGO-3D",
        ckpt_root=str(ckpt_dir or config.get("ckpt_dir", "./ckpts")),
        device=device or None,
    )


def expand_class_name(data_dir: str | Path, class_name: str) -> list[str]:
    """[class_name], or every class folder under ``data_dir`` for 'all'."""
    data_dir = Path(data_dir)
    if class_name != "all":
        return [class_name]
    found = list_classes(data_dir) if data_dir.is_dir() else []
    if not found:
        raise DataError(f"no class folders under {data_dir}; --class_name all needs a MAD-format root.")
    return found


def require_dataset(data_dir: str | Path) -> Path:
    """``data_dir`` as a Path; DataError saying how to get the data when it is not a folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"dataset not found at {data_dir}. Download MAD-Sim with `omnipose download mad-sim --to {data_dir.parent}`, "
            "or try the built-in data: `omnipose synth --out data/synth` then "
            "`python anomaly_nerf_lego.py --data_dir data/synth --class_name 01Robot`."
        )
    return data_dir

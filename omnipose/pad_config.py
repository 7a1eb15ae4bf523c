"""PAD / OmniposeAD config files (``configs/LEGO-3D/<class>.txt``, ``key = value`` lines).

The original code reads them with configargparse; we read the same files so that users keep
their commands, and map the keys that still mean something onto our dataclass configs.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .io import DataError


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

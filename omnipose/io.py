"""Small shared utilities: errors, atomic writes, image reading, device choice.

Every file that matters (checkpoints, predictions, reports) is written through the
``atomic_write_*`` helpers, so an interrupted run never leaves a half-written file behind:
the data goes to a temporary file in the same folder first and is then renamed over the target.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class OmniposeError(Exception):
    """An error on the user's input whose message names the problem and the fix."""


class DataError(OmniposeError):
    """A dataset is missing, incomplete or malformed."""


class CheckpointError(OmniposeError):
    """A checkpoint is missing, corrupt, or of another kind than expected."""


# ----------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Use it for writers that want a file name (``torch.save``, ``np.save``, ``fig.savefig``):
    ``with atomic_path(p) as tmp: torch.save(obj, tmp)``. The temporary file keeps the target's
    suffix so that writers which infer the format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_cache(path: str | os.PathLike, payload: dict[str, Any], version: int, key: str) -> None:
    """torch.save ``payload`` atomically, stamped with the cache ``version`` and what it was made for (``key``)."""
    import torch  # here, so that reading images and JSON does not pay for importing torch

    with atomic_path(path) as tmp:
        torch.save({**payload, "version": version, "key": key}, tmp)


def load_cache(path: str | os.PathLike, version: int, key: str) -> dict[str, Any] | None:
    """The payload ``save_cache`` wrote at ``path`` if it has this version and key, else None
    (missing, stale or unreadable: a damaged cache is rebuilt, never trusted)."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("version") != version or payload.get("key") != key:
        return None
    return payload


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image atomically as PNG.

    image: (H, W, 3) or (H, W) float in [0, 1], or uint8.
    """
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


# ----------------------------------------------------------------------------- reading images
def read_image_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGBA in [0, 1].

    Returns: (H, W, 4). Grayscale images are expanded to RGB, images without alpha get alpha 1.
    Raises DataError naming the file when it is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}. Check the path, or the dataset's file list.")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I", "F"):
                array = np.asarray(img, dtype=np.float32)
                array = array / (65535.0 if array.max() > 255 else 255.0)
                rgba = np.concatenate([np.repeat(array[..., None], 3, -1), np.ones_like(array)[..., None]], -1)
                return rgba.astype(np.float32)
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"cannot read image {path}: {error}. The file is corrupt or not an image; "
            "replace it (re-extract the dataset) or remove it from the dataset."
        ) from error
    return rgba


def composite_on_background(rgba: np.ndarray, background: float | tuple[float, float, float] = 1.0) -> np.ndarray:
    """Alpha-composite RGBA over a constant background colour.

    rgba: (H, W, 4) float in [0, 1]. Returns (H, W, 3) float32.
    """
    bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
    alpha = rgba[..., 3:4]
    return (rgba[..., :3] * alpha + bg * (1.0 - alpha)).astype(np.float32)


def read_image_rgb(
    path: str | os.PathLike,
    background: float | tuple[float, float, float] = 1.0,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], compositing any alpha over ``background``.

    size: optional (width, height) to resize to (area filter when shrinking).
    Returns: (H, W, 3).
    """
    rgb = composite_on_background(read_image_rgba(path), background)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = resize_image(rgb, size)
    return rgb


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float image to ``size`` = (width, height): area filter to shrink, bilinear to grow.

    image: (H, W, C) or (H, W) float32. Returns the same layout at the new size.
    """
    import cv2

    width, height = int(size[0]), int(size[1])
    shrinking = width < image.shape[1] or height < image.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (width, height), interpolation=interpolation)


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask: any value > 0 is anomalous.

    size: optional (width, height); masks are resized with nearest neighbour as the benchmarks do.
    Returns: (H, W) bool.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask not found: {path}. Every defect image needs a mask in ground_truth/<Type>/<n>_mask.png.")
    try:
        with Image.open(path) as img:
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.NEAREST)
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read mask {path}: {error}. Replace the corrupt file.") from error
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1)
    return array > 0


# ----------------------------------------------------------------------------- device
def pick_device(device: str | None = None) -> "torch.device":  # noqa: F821
    """The torch device to use: the one asked for, else CUDA when present, else CPU."""
    import torch

    if device not in (None, "", "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

"""Query images as pose estimation takes them: the model's size and colours, the object's region,
PAD's interest regions around keypoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnipose.core.backdrop import on_background
from omnipose.core.errors import OmniposeError
from omnipose.core.image import dilate, foreground_mask, read_image_rgba


class PoseError(OmniposeError):
    """A query image or request the pose estimator cannot work with."""


def info_value(info, name: str, default=None):
    """``info.<name>`` of a CheckpointInfo, or ``info[name]`` of a dict, else ``default``."""
    return info.get(name, default) if isinstance(info, dict) else getattr(info, name, default)


def prepare_query(image, info, foreground_threshold: float = 0.04) -> tuple[np.ndarray, list[str]]:
    """Bring a query to the model's size and colour layout.

    image: a path, or an array/tensor (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float in
    [0, 1]. info: the model's CheckpointInfo (or anything with ``width``, ``height``, ``background``).
    Grayscale is expanded to RGB, RGBA composited on the model's background, a query of another
    size with the same aspect ratio resized (a note says so).
    Returns (H, W, 3) float32 and the notes. Raises PoseError for another aspect ratio, or an image
    that shows nothing but background.
    """
    width, height = int(info_value(info, "width")), int(info_value(info, "height"))
    background = info_value(info, "background", 1.0)
    notes: list[str] = []
    array = read_image_rgba(image) if isinstance(image, (str, Path)) else _float_array(image)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
        notes.append("grayscale query expanded to RGB")
    if array.shape[-1] == 4 and float(array[..., 3].min()) < 1.0:
        notes.append("RGBA query composited on the model's background")
    query_h, query_w = array.shape[:2]
    if (query_w, query_h) != (width, height):
        if abs(query_w / query_h - width / height) > 0.01 * (width / height):
            raise PoseError(
                f"query is {query_w}x{query_h} but the model was trained at {width}x{height}: another aspect "
                f"ratio. Crop the query to {width}:{height} (the object centred) before estimating its pose."
            )
        notes.append(f"query resized from {query_w}x{query_h} to the model's {width}x{height}")
    # As the training views were loaded: resized first, then a plain backdrop replaced.
    rgb, backdrop = on_background(np.clip(array, 0.0, 1.0), background, (width, height))
    if backdrop is not None and not backdrop.is_background(background):
        shown = ", ".join(f"{c:.2f}" for c in backdrop.colour)
        notes.append(f"plain backdrop ({shown}) replaced by the model's background")
    if foreground_mask(rgb, background, foreground_threshold).mean() < 1e-3:
        raise PoseError(
            "query shows only background (no pixel differs from the model's background colour): "
            "nothing to estimate a pose from. Check the file, or the background colour of the model."
        )
    return rgb, notes


def _float_array(image) -> np.ndarray:
    """An in-memory query as float32 (H, W, C) in [0, 1], C in (1, 3, 4); PoseError names what is wrong."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise PoseError(f"query has shape {array.shape}, channels first; pass (H, W, 3) (e.g. image.permute(1, 2, 0)).")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise PoseError(f"query has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    if not np.isfinite(array).all():
        raise PoseError("query contains NaN or infinite values; pass a valid image in [0, 1].")
    if array.max() > 1.0 + 1e-3:
        raise PoseError(f"float query values reach {array.max():.1f}; scale to [0, 1] (divide uint8 data by 255).")
    return array


def object_region(image: np.ndarray, background, threshold: float, margin_px: int | None = None) -> np.ndarray:
    """(H, W) bool: the object of image (H, W, 3), dilated by margin_px (default 3 % of the image size)."""
    height, width = image.shape[:2]
    margin = max(2, round(0.03 * max(width, height))) if margin_px is None else margin_px
    return dilate(foreground_mask(image, background, threshold), margin)


def keypoint_mask(keypoints: torch.Tensor, height: int, width: int, radius: int) -> np.ndarray:
    """PAD's interest regions: keypoint pixels dilated by ``radius``. keypoints: (N, 2) (u, v)."""
    mask = np.zeros((height, width), dtype=bool)
    if len(keypoints):
        uv = keypoints.detach().cpu().numpy()
        u = np.clip(np.floor(uv[:, 0]).astype(int), 0, width - 1)
        v = np.clip(np.floor(uv[:, 1]).astype(int), 0, height - 1)
        mask[v, u] = True
    return dilate(mask, radius)

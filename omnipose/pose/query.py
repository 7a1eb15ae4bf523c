"""Query images as pose estimation takes them: the model's size and colours, the object's region,
PAD's interest regions around keypoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnipose.core.backdrop import is_transparent, on_background
from omnipose.core.errors import OmniposeError
from omnipose.core.image import dilate, focal_35mm, foreground_mask, image_width, read_image_rgba, warp_image


class PoseError(OmniposeError):
    """A query image or request the pose estimator cannot work with."""


def info_value(info, name: str, default=None):
    """``info.<name>`` of a CheckpointInfo, or ``info[name]`` of a dict, else ``default``."""
    return info.get(name, default) if isinstance(info, dict) else getattr(info, name, default)


def prepare_query(image, info, foreground_threshold: float = 0.04, focal: float | None = None,
                  scale_to_model: bool = True) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """Bring a query to the model's size and colour layout.

    image: a path, or an array/tensor (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float in
    [0, 1]. info: the model's CheckpointInfo (or anything with ``width``, ``height``, ``background``).
    Grayscale is expanded to RGB, RGBA composited on the model's background, a query of another
    size with the same aspect ratio resized (a note says so), a plain backdrop replaced by the model's
    background (unless the model's training views kept theirs: ``info.backdrop``), and a query taken
    with another focal length scaled about its centre to the model's:
    focal is the query's focal length in pixels at its own width; without it, the ratio of the 35 mm
    focal lengths in the EXIF of the query file and of the first training photo, where both have one
    (``scale_to_model`` False: left in its own frame, which ``query_zoom`` then takes to the model's).
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
    transparent = is_transparent(array)
    if transparent:
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
    replaces = bool(info_value(info, "backdrop", True))  # as the model's training views were read
    rgb, backdrop = on_background(np.clip(array, 0.0, 1.0), background, (width, height), replaces)
    if backdrop is not None and not backdrop.is_background(background):
        shown = ", ".join(f"{c:.2f}" for c in backdrop.colour)
        notes.append(f"plain backdrop ({shown}) replaced by the model's background")
    elif backdrop is None and not transparent and replaces:
        notes.append("the query's border is not a plain backdrop, so the object could not be separated from its "
                     "surroundings: they enter the pose search and the comparison (photograph it against a plain "
                     "backdrop, or give it an alpha channel)")
    zoom = _zoom_to_model(image, info, focal, query_w) if scale_to_model else None
    if zoom is not None:
        rgb = warp_image(rgb, zoom_affine(zoom, width, height), background)
        notes.append(f"query scaled by {zoom:.3f} about its centre to the model's focal length")
    if foreground_mask(rgb, background, foreground_threshold).mean() < 1e-3:
        raise PoseError(
            "query shows only background (no pixel differs from the model's background colour): "
            "nothing to estimate a pose from. Check the file, or the background colour of the model."
        )
    return rgb, notes


def query_zoom(image, info, focal: float | None = None) -> float | None:
    """The scale ``prepare_query`` applies about the query's centre to bring it to the model's focal
    length (``focal`` and the EXIF as there); None when it applies none. The inverse of
    ``zoom_affine(zoom, ...)`` takes what was computed on the prepared query back to the query's frame."""
    width = image_width(image) if isinstance(image, (str, Path)) else int(np.shape(image)[1])
    return _zoom_to_model(image, info, focal, width)


def zoom_affine(zoom: float, width: int, height: int) -> np.ndarray:
    """(2, 3) affine scaling an image of ``width`` x ``height`` by ``zoom`` about its centre."""
    centre = np.array([width / 2.0, height / 2.0])
    return np.hstack([zoom * np.eye(2), ((1.0 - zoom) * centre)[:, None]])


def _zoom_to_model(image, info, focal: float | None, query_width: int) -> float | None:
    """Model focal / query focal, both in pixels at the model's width (None: no way to tell, or 1)."""
    zoom = _focal_ratio(image, info, focal, query_width)
    return None if zoom is None or abs(zoom - 1.0) <= 0.005 else zoom


def _focal_ratio(image, info, focal: float | None, query_width: int) -> float | None:
    K = info_value(info, "K")
    width = int(info_value(info, "width"))
    if focal is not None:
        if K is None:
            raise PoseError("a query focal length was given but the model stores no intrinsics to match it to.")
        if not np.isfinite(focal) or focal <= 0:
            raise PoseError(f"query focal length {focal} is not a positive number of pixels.")
        return float(K[0][0]) / (float(focal) * width / query_width)
    paths = info_value(info, "train_image_paths") or []
    if not isinstance(image, (str, Path)) or not paths:
        return None
    query_mm = focal_35mm(image)
    train_mm = None if query_mm is None else focal_35mm(paths[0])  # renders carry none: no second read
    return None if train_mm is None else train_mm / query_mm


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

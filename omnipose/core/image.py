"""Images and masks: reading, writing, resizing, foreground, dilation, blur and affine warps.

Conventions used everywhere in omnipose:

- images are float32 in [0, 1], (H, W, 3) as data, (B, 3, H, W) or (B, H, W) for networks;
- masks are bool (H, W), True = anomalous (or foreground, for ``foreground_mask``);
- sizes are given as (width, height), as PIL and OpenCV take them;
- pixel (u, v) = (column, row), the centre of pixel (i, j) at (i + 0.5, j + 0.5); a (2, 3) affine
  maps source pixels to destination pixels in that convention.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omnipose.core.errors import DataError
from omnipose.core.files import atomic_path


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


def read_image_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGBA in [0, 1].

    Returns: (H, W, 4). Grayscale images are expanded to RGB, images without alpha get alpha 1.
    Raises DataError naming the file when it is missing or cannot be decoded.
    """
    return _decode_image(path, "image", "Check the path, or the dataset's file list.",
                         "The file is corrupt or not an image; replace it (re-extract the dataset) or remove it from the dataset.",
                         _rgba_array)


def _rgba_array(img) -> np.ndarray:
    """(H, W, 4) float32 in [0, 1] of a PIL image; 16-bit and float greys scaled to [0, 1]."""
    if img.mode in ("I;16", "I", "F"):
        array = np.asarray(img, dtype=np.float32)
        array = array / (65535.0 if array.max() > 255 else 255.0)
        return np.concatenate([np.repeat(array[..., None], 3, -1), np.ones_like(array)[..., None]], -1).astype(np.float32)
    return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0


def _decode_image(path: str | os.PathLike, what: str, missing: str, damaged: str, decode):
    """``decode(image)`` of the PIL image at ``path``, while the file is open; DataError naming the
    file, and ``missing`` or ``damaged`` as the fix, when it is absent or cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}. {missing}")
    try:
        with Image.open(path) as img:
            img.load()
            return decode(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {what} {path}: {error}. {damaged}") from error


def image_width(path: str | os.PathLike) -> int:
    """The width in pixels of the image at ``path`` (DataError naming a missing or damaged file)."""
    return _decode_image(path, "image", "Check the path.", "Re-export the image.", lambda img: int(img.size[0]))


def focal_35mm(path: str | os.PathLike) -> float | None:
    """The 35 mm-equivalent focal length (mm) in a photo's EXIF, or None when it has none (renders,
    stripped files, or a file that cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            value = img.getexif().get_ifd(0x8769).get(41989)  # Exif IFD, FocalLengthIn35mmFilm
    except (OSError, ValueError, SyntaxError):
        return None
    return float(value) if value else None


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



def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """``resize_image`` to ``width`` pixels, the height keeping the aspect ratio."""
    return resize_image(image, (width, max(1, round(image.shape[0] * width / image.shape[1]))))


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, strict: bool = False) -> np.ndarray:
    """Read a ground-truth mask: any value > 0 is anomalous.

    size: optional (width, height); masks are resized with nearest neighbour as the benchmarks do.
    strict: also refuse masks whose colour channels differ or whose values are not 0/1 or 0/255
    (a mask saved with antialiasing or as JPEG), as M2AD's protocol requires.
    Returns: (H, W) bool. Raises DataError naming the file when it is missing or unreadable.
    """
    from PIL import Image

    # Palette indices are not intensities: a palette mask is read through its colours.
    array = _decode_image(path, "mask", "Every defect image needs a mask in ground_truth/<Type>/<n>_mask.png.",
                          "Replace the corrupt file.", lambda img: np.asarray(img.convert("RGB") if img.mode == "P" else img))
    if array.ndim == 3:
        colour = array[..., : min(3, array.shape[-1])]
        if strict and not (colour == colour[..., :1]).all():
            raise DataError(f"mask {path} has colour channels that differ; a mask must be single channel (grey).")
        array = colour.max(axis=-1)
    if strict:
        values = np.unique(array)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            shown = ", ".join(str(v) for v in values[:8].tolist())
            raise DataError(
                f"mask {path} is not binary: it holds the values {shown}{'...' if values.size > 8 else ''}; "
                "masks must hold only 0/1 or 0/255. Re-save it as a binary PNG (no antialiasing, no JPEG)."
            )
    mask = array > 0
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((int(size[0]), int(size[1])), Image.NEAREST)
        mask = np.asarray(resized) > 0
    return mask


def foreground_mask(image: np.ndarray, background, threshold: float = 0.04) -> np.ndarray:
    """Pixels that differ from the background colour. image: (H, W, 3) float. Returns (H, W) bool."""
    bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
    return np.abs(image - bg).max(-1) > threshold


def dilate(mask: np.ndarray, radius: int, shape: str = "disc") -> np.ndarray:
    """Binary dilation of mask (H, W) bool by a ``shape`` ('disc' or 'square') of ``radius`` pixels
    (a square of radius r is (2r + 1) pixels wide). Returns (H, W) bool."""
    import cv2

    if radius <= 0:
        return mask.copy()
    if shape == "disc":
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    elif shape == "square":
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    else:
        raise ValueError(f"unknown dilation shape {shape!r}; use 'disc' or 'square'.")
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def gaussian_blur(images: "torch.Tensor", sigma: float, radius: int | None = None) -> "torch.Tensor":  # noqa: F821
    """Separable Gaussian blur over the last two dimensions of images (..., H, W), borders replicated.

    sigma in pixels; radius: kernel half-width, default ``max(1, round(4 sigma))`` (scipy's
    truncate=4). sigma <= 0 returns the images unchanged. Returns (..., H, W).
    """
    import torch

    if sigma <= 0:
        return images
    if radius is None:
        radius = max(1, int(4.0 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return _separable(images, kernel / kernel.sum())


def narrow_blur(images: "torch.Tensor", sigma: float) -> "torch.Tensor":  # noqa: F821
    """``gaussian_blur`` whose variance is sigma^2 down to a fraction of a pixel.

    Below 0.6 px a Gaussian sampled at the pixels is nearly a delta (at 0.3 px its side taps are
    0.4 %), so there the kernel is three taps (a, 1 - 2a, a) with 2a = sigma^2, the same variance;
    wider blurs are ``gaussian_blur``'s. images (..., H, W); sigma <= 0 returns them unchanged.
    """
    if sigma > 0.6:
        return gaussian_blur(images, sigma)
    if sigma <= 0:
        return images
    side = sigma * sigma / 2
    return _separable(images, images.new_tensor([side, 1.0 - 2.0 * side, side]))


def _separable(images: "torch.Tensor", kernel: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """images (..., H, W) filtered by the odd 1-D ``kernel`` along each of the last two axes, borders replicated."""
    import torch.nn.functional as F

    radius = kernel.shape[0] // 2
    shape = images.shape
    x = images.reshape(-1, 1, *shape[-2:])
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(shape)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine map."""
    linear_inv = np.linalg.inv(affine[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ affine[:, 2])[:, None]], 1)


def compose_affine(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The (2, 3) affine map that applies ``first`` and then ``second`` (both (2, 3))."""
    return (np.vstack([second, [0, 0, 1]]) @ np.vstack([first, [0, 0, 1]]))[:2]


def square_crop(box: tuple[float, float, float, float], margin: float, size: int, min_side: float = 0.0) -> np.ndarray:
    """(2, 3) affine from an image to a ``size``-pixel square crop about ``box`` (left, top, right, bottom
    in pixels, centres at +0.5): the box's longer side grown on each side by ``margin`` times itself,
    and at least ``min_side`` pixels, centred on the box."""
    left, top, right, bottom = (float(x) for x in box)
    side = max(max(right - left, bottom - top) * (1.0 + 2.0 * margin), min_side)
    scale = size / side
    corner = np.array([(left + right - side) / 2.0, (top + bottom - side) / 2.0])
    return np.hstack([scale * np.eye(2), (-scale * corner)[:, None]])


def warp_image(image: np.ndarray, affine: np.ndarray, fill, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Move image (H, W) or (H, W, C) float by the (2, 3) ``affine`` (source pixel -> destination
    pixel, centres at +0.5), bilinear; uncovered pixels get ``fill`` (one value, or one per
    channel); out_size: (width, height) of the result, default the input's. Returns float32.
    """
    import cv2

    # OpenCV puts pixel centres on integers: shift in by +0.5 and out by -0.5.
    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    full = shift_out @ np.vstack([affine, [0, 0, 1]]) @ shift_in
    fill_value = tuple(float(x) for x in np.broadcast_to(np.asarray(fill, dtype=np.float64), (3,)))
    height, width = image.shape[:2]
    return cv2.warpAffine(
        np.ascontiguousarray(image, dtype=np.float32), full[:2], out_size or (width, height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=fill_value,
    )

"""Posed views from a Blender/NeRF ``transforms.json`` (``PosedImages``, ``load_transforms``).

The MAD layout (``omnipose.data.mad``) keeps its training poses in such a file.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.backdrop import is_transparent, on_background
from omnipose.core.errors import DataError
from omnipose.core.files import read_json
from omnipose.core.geometry import make_intrinsics, rigid_pose_problem, scale_intrinsics
from omnipose.core.image import read_image_rgba, resize_to_width

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


# ----------------------------------------------------------------------------- posed views
@dataclass
class PosedImages:
    """Multi-view images of one object with their cameras.

    images: (N, H, W, 3) float32 in [0, 1], composited on the background colour.
    c2w: (N, 4, 4) float32, OpenGL/Blender convention. K: (3, 3) intrinsics at this resolution.
    """

    images: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    paths: list[Path]
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    backdrop: bool = True
    """Whether a plain backdrop around the object was replaced by the background colour
    (``on_background``); a field trained on these views has its queries read the same way."""

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices) -> "PosedImages":
        """The views at ``indices`` (a list of ints or a bool mask)."""
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            index = index.nonzero()[:, 0]
        kept = [self.paths[i] for i in index.tolist()]
        return replace(self, images=self.images[index], c2w=self.c2w[index], K=self.K.clone(), paths=kept)

    def resized(self, width: int) -> "PosedImages":
        """The same views at ``width`` pixels (the height keeps the aspect ratio; area filter to shrink),
        with the intrinsics scaled to match."""
        height = max(1, round(self.height * width / self.width))
        if (width, height) == (self.width, self.height):
            return self
        images = torch.from_numpy(np.stack([resize_to_width(image.numpy(), width) for image in self.images]))
        return replace(self, images=images, c2w=self.c2w.clone(), paths=list(self.paths),
                       K=scale_intrinsics(self.K, width / self.width, height / self.height))


def natural_key(path: str | Path) -> list:
    """Sort key that orders '2.png' before '10.png' (MAD's names are not zero-padded)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", Path(path).name)]


def _resolve_frame_path(base: Path, file_path: str) -> Path:
    """Image path of a frame: ``file_path`` may lack its extension or start with './'."""
    relative = file_path[2:] if file_path.startswith("./") else file_path
    candidate = base / relative
    if candidate.suffix.lower() in IMAGE_SUFFIXES:
        return candidate
    for suffix in (".png", ".jpg", ".jpeg"):
        with_suffix = candidate.with_name(candidate.name + suffix)
        if with_suffix.is_file():
            return with_suffix
    return candidate.with_name(candidate.name + ".png")


def _warn_backdrop(path: Path, opaque: int, plain: int, total: int) -> None:
    """Warn when opaque training views have no plain backdrop: the field would then learn the room
    around the object as part of it (slowly: no empty space to skip), and queries in another room
    would not match."""
    if opaque and plain < opaque:
        warnings.warn(
            f"{opaque - plain} of the {total} views of {path} are opaque and show no plain backdrop around the "
            "object (a table or a room is in frame): the field will learn that surround as part of the object. "
            "Photograph the object against a plain backdrop of any colour, or give the views an alpha channel "
            "(the object's mask).",
            stacklevel=3,
        )


def _intrinsics_from_meta(meta: dict, width: int, height: int, path: Path) -> torch.Tensor:
    """Intrinsics at the images' native size from explicit fl_x/fl_y/cx/cy or camera_angle_x.

    nerfstudio writes ``fl_x, fl_y, cx, cy, w, h`` per frame; they are read from the frames when the
    top level lacks them, and must then describe one camera (omnipose trains on one).
    """
    if "fl_x" not in meta and "camera_angle_x" not in meta and all("fl_x" in f for f in meta.get("frames", [])):
        per_frame = [_intrinsics_from_meta({k: f[k] for k in _INTRINSIC_KEYS if k in f}, width, height, path)
                     for f in meta["frames"]]  # fmt: skip
        first = per_frame[0]
        for index, K in enumerate(per_frame):
            if not torch.allclose(K, first, rtol=1e-5, atol=1e-4):
                raise DataError(
                    f"frame {index} of {path} has intrinsics {K.tolist()} unlike frame 0's {first.tolist()}: omnipose "
                    "trains on one camera. Resample the views to one camera, or keep the frames of one camera."
                )
        return first
    if "fl_x" in meta:
        declared_w = _number(meta, "w", path, default=width, low=0.0)
        declared_h = _number(meta, "h", path, default=height, low=0.0)
        fx = _number(meta, "fl_x", path, low=0.0)
        fy = _number(meta, "fl_y", path, default=fx, low=0.0)
        cx = _number(meta, "cx", path, default=declared_w / 2.0)
        cy = _number(meta, "cy", path, default=declared_h / 2.0)
        K = make_intrinsics(fx, fy, cx, cy)
        if (declared_w, declared_h) != (width, height):
            K = scale_intrinsics(K, width / declared_w, height / declared_h)
        return K
    if "camera_angle_x" in meta:
        fx = 0.5 * width / math.tan(0.5 * _number(meta, "camera_angle_x", path, low=0.0, high=math.pi))
        fy = fx
        if "camera_angle_y" in meta:
            fy = 0.5 * height / math.tan(0.5 * _number(meta, "camera_angle_y", path, low=0.0, high=math.pi))
        return make_intrinsics(fx, fy, width / 2.0, height / 2.0)
    raise DataError(
        f"{path} gives no camera intrinsics: add 'camera_angle_x' (horizontal field of view in radians) "
        "or 'fl_x', 'fl_y', 'cx', 'cy', 'w', 'h' (pixels)."
    )


def _warn_distortion(meta: dict, path: Path) -> None:
    """nerfstudio may list lens distortion; omnipose renders pinhole cameras, so say so once."""
    for where in [meta, *meta.get("frames", [])]:
        terms = {k: where[k] for k in _DISTORTION_KEYS if isinstance(where.get(k), (int, float)) and where[k] != 0}
        if terms:
            warnings.warn(
                f"{path} lists lens distortion {terms}; omnipose treats the views as pinhole images, so poses "
                "near the borders will be off. Undistort the images first (ns-process-data or colmap image_undistorter).",
                stacklevel=3,
            )
            return


def _number(meta: dict, key: str, path: Path, default: float | None = None, low: float | None = None,
            high: float | None = None) -> float:
    """``meta[key]`` as a finite float strictly between ``low`` and ``high`` (DataError naming the key otherwise)."""
    value = meta.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or value > low) and (high is None or value < high)
    if not ok:
        bounds = " and ".join(part for part in (low is not None and f"above {low:g}", high is not None and f"below {high:g}") if part)
        unit = " radians (the horizontal field of view)" if key.startswith("camera_angle") else ""
        raise DataError(f"{path}: '{key}' is {value!r}; it must be a number{' ' + bounds if bounds else ''}{unit}. "
                        "Fix the value in the file (re-export the cameras).")
    return float(value)


def _target_size(size, native: tuple[int, int]) -> tuple[int, int]:
    """(width, height) for ``size``: an int width (the height keeps the aspect ratio) or (width, height)."""
    width, height = native
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        target = (int(size), round(int(size) * height / width))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, (int, np.integer)) for v in size):
        target = (int(size[0]), int(size[1]))
    else:
        raise DataError(f"image size {size!r} is not a width in pixels or a (width, height) pair of integers.")
    if min(target) < 1:
        raise DataError(f"image size {size!r} gives {target[0]}x{target[1]} pixels; give a width of 1 pixel or more (e.g. --size 200).")
    return target


def load_transforms(
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    background: float | tuple[float, float, float] = 1.0,
    frame_filter: str | None = None,
    progress: bool = True,
    backdrop: bool = True,
) -> PosedImages:
    """Read a Blender/NeRF ``transforms*.json`` and its images.

    path: the JSON file. size: optional target resolution, an int for the width (height keeps the
    aspect ratio) or (width, height); MAD is 800x800, PAD works at 400x400.
    background: colour RGBA images are composited on (white by default, as in MAD).
    frame_filter: keep only frames whose file_path contains this string (e.g. 'train/').
    backdrop: replace a plain backdrop around the object by the background colour (``on_background``);
    False keeps it, as part of the object (an ablation).
    Returns PosedImages with float32 c2w (N, 4, 4) in the OpenGL/Blender convention.
    """
    path = Path(path)
    missing = f"transforms file not found: {path}. A posed dataset needs a Blender/NeRF transforms.json."
    meta = read_json(path, DataError, "Re-extract or re-export the dataset.", missing)
    return posed_images_from_meta(meta, path.parent, path, size, background, frame_filter, progress, backdrop)


def posed_images_from_meta(
    meta: dict,
    base: Path,
    path: Path,
    size: int | tuple[int, int] | None = None,
    background: float | tuple[float, float, float] = 1.0,
    frame_filter: str | None = None,
    progress: bool = True,
    backdrop: bool = True,
) -> PosedImages:
    """``load_transforms`` on an already parsed transforms dictionary whose ``file_path`` are relative to ``base``.

    path names the source in errors. nerfstudio's ``applied_transform`` (the transform that took the
    original, e.g. COLMAP, world to this file's world) is already part of each ``transform_matrix``,
    so it only has to be well formed.
    """
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames or not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise DataError(f"{path} has no list of 'frames': each frame needs 'file_path' and 'transform_matrix'.")
    if frame_filter:
        frames = [f for f in frames if frame_filter in str(f.get("file_path", ""))]
        if not frames:
            raise DataError(f"no frame of {path} has '{frame_filter}' in its file_path.")
        meta = {**meta, "frames": frames}
    if "applied_transform" in meta:
        applied = np.asarray(meta["applied_transform"], dtype=np.float64)
        if applied.shape not in ((3, 4), (4, 4)) or not np.isfinite(applied).all():
            raise DataError(f"'applied_transform' of {path} is not a finite 3x4 or 4x4 matrix; fix or remove it.")
    _warn_distortion(meta, path)

    bg = tuple(float(c) for c in np.broadcast_to(np.asarray(background, dtype=np.float32), (3,)))
    images, poses, paths = [], [], []
    opaque = plain = 0
    native_size = None
    target_size = None
    for index, frame in enumerate(tqdm(frames, desc=f"reading {path.parent.name}", disable=not progress, leave=False)):
        if not isinstance(frame.get("file_path"), str) or "transform_matrix" not in frame:
            raise DataError(f"frame {index} of {path} lacks 'file_path' (a string) or 'transform_matrix'.")
        problem = rigid_pose_problem(frame["transform_matrix"])
        if problem is not None:
            raise DataError(f"frame {index} of {path} ({frame['file_path']}): its transform_matrix {problem}. "
                            "Each frame needs the camera-to-world pose of its view; fix or remove that frame.")
        image_path = _resolve_frame_path(base, frame["file_path"])
        if not image_path.is_file():
            raise DataError(
                f"frame {index} of {path} points to {image_path}, which does not exist. "
                "Restore the image or remove the frame from the JSON."
            )
        rgba = read_image_rgba(image_path)
        this_size = (rgba.shape[1], rgba.shape[0])
        if target_size is None and size is not None:
            target_size = _target_size(size, this_size)
        if native_size is None:
            native_size = this_size
        elif this_size != native_size:
            raise DataError(
                f"mixed image sizes in {path}: {image_path.name} is {this_size[0]}x{this_size[1]} but the first "
                f"frame is {native_size[0]}x{native_size[1]}. Resize all views to one size first."
            )
        pose = np.asarray(frame["transform_matrix"], dtype=np.float32)
        if pose.shape == (3, 4):
            pose = np.concatenate([pose, np.array([[0, 0, 0, 1]], dtype=np.float32)])
        # Resize as we go: 100 views at 800x800 would hold 768 MB before shrinking.
        image, found = on_background(rgba, bg, target_size, backdrop)
        opaque += not is_transparent(rgba)
        plain += found is not None
        images.append(image)
        poses.append(pose)
        paths.append(image_path)

    if backdrop:
        _warn_backdrop(path, opaque, plain, len(frames))
    width, height = native_size
    K = _intrinsics_from_meta(meta, width, height, path)
    if target_size is not None and target_size != (width, height):
        K = scale_intrinsics(K, target_size[0] / width, target_size[1] / height)
    return PosedImages(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(poses)), K, paths, bg, backdrop)

"""Dataset readers: Blender/NeRF ``transforms.json`` and the MAD-Sim / MAD-Real layouts.

MAD-Sim layout (as shipped; we never rename or modify a user's dataset)::

    <root>/<class>/transforms.json            training poses (Blender/NeRF format)
    <root>/<class>/train/good/<n>.png         defect-free training views (n not zero-padded)
    <root>/<class>/test/{good,Burrs,Missing,Stains}/<n>.png   query images, no poses
    <root>/<class>/ground_truth/<Type>/<n>_mask.png           single channel, > 0 is anomalous

MAD-Real follows the same idea; its test images have no poses either.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .geometry import make_intrinsics, scale_intrinsics
from .io import DataError, read_image_rgb, resize_image

MAD_CLASSES = (
    "01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird", "07Owl", "08Sabertooth",
    "09Swan", "10Sheep", "11Pig", "12Zalika", "13Pheonix", "14Elephant", "15Parrot", "16Cat",
    "17Scorpion", "18Obesobeso", "19Bear", "20Puppy",
)  # fmt: skip
DEFECT_TYPES = ("Burrs", "Missing", "Stains")
GOOD = "good"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
        return PosedImages(self.images[index], self.c2w[index], self.K.clone(), kept, self.background)


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


def _intrinsics_from_meta(meta: dict, width: int, height: int, path: Path) -> torch.Tensor:
    """Intrinsics at the images' native size from explicit fl_x/fl_y/cx/cy or camera_angle_x."""
    if "fl_x" in meta:
        declared_w, declared_h = meta.get("w", width), meta.get("h", height)
        fx = float(meta["fl_x"])
        fy = float(meta.get("fl_y", fx))
        cx = float(meta.get("cx", declared_w / 2.0))
        cy = float(meta.get("cy", declared_h / 2.0))
        K = make_intrinsics(fx, fy, cx, cy)
        if (declared_w, declared_h) != (width, height):
            K = scale_intrinsics(K, width / declared_w, height / declared_h)
        return K
    if "camera_angle_x" in meta:
        fx = 0.5 * width / math.tan(0.5 * float(meta["camera_angle_x"]))
        fy = 0.5 * height / math.tan(0.5 * float(meta["camera_angle_y"])) if "camera_angle_y" in meta else fx
        return make_intrinsics(fx, fy, width / 2.0, height / 2.0)
    raise DataError(
        f"{path} gives no camera intrinsics: add 'camera_angle_x' (horizontal field of view in radians) "
        "or 'fl_x', 'fl_y', 'cx', 'cy', 'w', 'h' (pixels)."
    )


def load_transforms(
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    background: float | tuple[float, float, float] = 1.0,
    frame_filter: str | None = None,
    progress: bool = True,
) -> PosedImages:
    """Read a Blender/NeRF ``transforms*.json`` and its images.

    path: the JSON file. size: optional target resolution, an int for the width (height keeps the
    aspect ratio) or (width, height); MAD is 800x800, PAD works at 400x400.
    background: colour RGBA images are composited on (white by default, as in MAD).
    frame_filter: keep only frames whose file_path contains this string (e.g. 'train/').
    Returns PosedImages with float32 c2w (N, 4, 4) in the OpenGL/Blender convention.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"transforms file not found: {path}. A posed dataset needs a Blender/NeRF transforms.json.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}). Re-extract or re-export the dataset.") from error
    frames = meta.get("frames")
    if not frames:
        raise DataError(f"{path} has no 'frames': each frame needs 'file_path' and 'transform_matrix'.")
    if frame_filter:
        frames = [f for f in frames if frame_filter in f.get("file_path", "")]
        if not frames:
            raise DataError(f"no frame of {path} has '{frame_filter}' in its file_path.")

    bg = tuple(float(c) for c in np.broadcast_to(np.asarray(background, dtype=np.float32), (3,)))
    images, poses, paths = [], [], []
    native_size = None
    target_size = None
    for index, frame in enumerate(tqdm(frames, desc=f"reading {path.parent.name}", disable=not progress, leave=False)):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise DataError(f"frame {index} of {path} lacks 'file_path' or 'transform_matrix'.")
        image_path = _resolve_frame_path(path.parent, frame["file_path"])
        if not image_path.is_file():
            raise DataError(
                f"frame {index} of {path} points to {image_path}, which does not exist. "
                "Restore the image or remove the frame from the JSON."
            )
        image = read_image_rgb(image_path, background=bg)
        this_size = (image.shape[1], image.shape[0])
        if target_size is None and size is not None:
            width, height = this_size
            target_size = (int(size), round(int(size) * height / width)) if isinstance(size, int) else tuple(size)
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
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise DataError(f"frame {index} of {path} has a transform_matrix that is not a finite 4x4 matrix.")
        # Resize as we go: 100 views at 800x800 would hold 768 MB before shrinking.
        images.append(image if target_size in (None, this_size) else resize_image(image, target_size))
        poses.append(pose)
        paths.append(image_path)

    width, height = native_size
    K = _intrinsics_from_meta(meta, width, height, path)
    if target_size is not None and target_size != (width, height):
        K = scale_intrinsics(K, target_size[0] / width, target_size[1] / height)
    return PosedImages(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(poses)), K, paths, bg)


# ----------------------------------------------------------------------------- MAD layout
@dataclass
class QueryItem:
    """One test image of a MAD class: its file, defect type and mask (None when good)."""

    image_path: Path
    defect_type: str
    mask_path: Path | None

    @property
    def name(self) -> str:
        """'Type/stem', the key predictions and scores are stored under."""
        return f"{self.defect_type}/{self.image_path.stem}"

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != GOOD


@dataclass
class MADClass:
    """Paths of one class of a MAD-format dataset (MAD-Sim, MAD-Real, or ``omnipose synth``)."""

    root: Path
    name: str
    transforms_path: Path
    train_images: list[Path]
    test_items: list[QueryItem] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def load_train_views(self, size=None, background=1.0, progress=True) -> PosedImages:
        """Posed training views from transforms.json (frames under train/ when it lists more)."""
        if not self.transforms_path.is_file():
            raise DataError(
                f"class {self.name} has no transforms.json at {self.transforms_path}: training the radiance "
                "field needs posed training views. MAD-Sim ships one per class; for your own data, export "
                "poses from Blender or COLMAP in the NeRF transforms.json format."
            )
        meta = json.loads(self.transforms_path.read_text())
        frames = meta.get("frames", [])
        has_train = any("train/" in f.get("file_path", "") for f in frames)
        return load_transforms(
            self.transforms_path, size=size, background=background,
            frame_filter="train/" if has_train else None, progress=progress,
        )


def list_classes(root: str | Path) -> list[str]:
    """Class folders under a MAD-format root (folders holding train/ or test/), sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def open_mad_class(root: str | Path, class_name: str, require_masks: bool = True) -> MADClass:
    """Index one class of a MAD-format dataset, checking its layout.

    Raises DataError for a missing root or class (listing the classes found), a defect image
    without its mask (when ``require_masks``), or an empty class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset root {root} does not exist. Download MAD with `omnipose download mad-sim --to {root}` "
            f"or make a built-in one with `omnipose synth --out {root}`."
        )
    folder = root / class_name
    if not folder.is_dir():
        found = list_classes(root)
        hint = f"classes found there: {', '.join(found)}" if found else "no class folders were found there"
        raise DataError(f"class '{class_name}' not found under {root}; {hint}.")

    train_dir = folder / "train" / GOOD
    train_images = _image_files(train_dir) if train_dir.is_dir() else []
    test_items: list[QueryItem] = []
    test_dir = folder / "test"
    if test_dir.is_dir():
        for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            for image_path in _image_files(type_dir):
                mask_path = None
                if type_dir.name != GOOD:
                    mask_path = folder / "ground_truth" / type_dir.name / f"{image_path.stem}_mask.png"
                    if require_masks and not mask_path.is_file():
                        raise DataError(
                            f"defect image {image_path} has no mask: expected {mask_path}. "
                            "Every test/<Type>/<n>.png needs ground_truth/<Type>/<n>_mask.png."
                        )
                test_items.append(QueryItem(image_path, type_dir.name, mask_path))
    if not train_images and not test_items:
        raise DataError(f"class folder {folder} holds neither train/good/ images nor test/<Type>/ images.")
    return MADClass(root, class_name, folder / "transforms.json", train_images, test_items)

"""The M2AD layout (multi-view, multi-illumination anomaly detection): specimens, views,
illuminations, masks, and the benchmark's 60/40 split.

Layout of one class (as the dataset ships; read only, never modified)::

    <root>/<class>/Good/<specimen>/<image>      normal specimens, e.g. Good/000/
    <root>/<class>/NG/<specimen>/<image>        anomalous specimens, e.g. NG/damage_1_001/
    <root>/<class>/GT/<specimen>/<image[:-8]>_mask.png   masks of anomalous specimens

An image's file name encodes its view in ``name[1:4]`` and its illumination in ``name[6:8]``
(both digits; e.g. ``V001_L01.png``: view '001', illumination '01'). All illuminations of a view
share one mask, ``name[:-8] + '_mask.png'``. An image of an anomalous specimen without a mask
file (the defect is not visible from that view) is a normal image at image and view level; the
specimen stays anomalous at object level.

Split (the benchmark's): the normal specimens of a class, sorted by name and shuffled with
Python's ``random`` seeded 42, go 60 % to train (the first ``int(0.6 n)``) and the rest to test;
all anomalous specimens are test.

The Synergy protocol groups test images into view instances (one specimen, one view, all its
illuminations) and object instances (one specimen, all its images):
``group_view_instances`` and ``group_object_instances``.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omnipose.core.errors import DataError
from omnipose.data.blender import IMAGE_SUFFIXES

NORMAL_DIR = "Good"
ANOMALOUS_DIR = "NG"
MASK_DIR = "GT"
NORMAL_RATIO = 0.6
SPLIT_SEED = 42


class M2adLayoutWarning(UserWarning):
    """Something in an M2AD tree that is allowed but probably not intended."""


@dataclass(frozen=True)
class M2adImage:
    """One M2AD image: its file, specimen, view, illumination and mask file."""

    image_path: Path
    specimen: str
    """The specimen's folder name, e.g. '000' or 'damage_1_001'."""
    anomalous_specimen: bool
    """True for a specimen under NG/ (even where this view does not show its defect)."""
    view: str
    """Three digits, ``name[1:4]`` of the file name."""
    illumination: str
    """Two digits, ``name[6:8]`` of the file name."""
    mask_path: Path | None
    """GT/<specimen>/<name[:-8]>_mask.png; None when the specimen is normal or the file does not exist."""

    @property
    def specimen_key(self) -> str:
        """'Good/<specimen>' or 'NG/<specimen>': unique within a class."""
        folder = ANOMALOUS_DIR if self.anomalous_specimen else NORMAL_DIR
        return f"{folder}/{self.specimen}"

    @property
    def key(self) -> str:
        """'NG/<specimen>/<stem>': the key predictions and scores are stored under."""
        return f"{self.specimen_key}/{self.image_path.stem}"


@dataclass(frozen=True)
class M2adClass:
    """One class of an M2AD tree, split into train and test images."""

    root: Path
    name: str
    train: tuple[M2adImage, ...]
    test: tuple[M2adImage, ...]

    @property
    def folder(self) -> Path:
        return self.root / self.name


def parse_view_illumination(file_name: str) -> tuple[str, str]:
    """(view, illumination) = (name[1:4], name[6:8]) of an M2AD image file name.

    Raises DataError when the name is too short or those characters are not digits.
    """
    view, illumination = file_name[1:4], file_name[6:8]
    if len(file_name) < 9 or not (view.isdigit() and len(view) == 3 and illumination.isdigit() and len(illumination) == 2):
        raise DataError(
            f"M2AD image name '{file_name}' does not follow the M2AD pattern: characters 2-4 (the view) "
            "and 7-8 (the illumination) must be digits, e.g. 'V001_L01.png' (view 001, illumination 01). "
            "Remove or rename files that are not M2AD images."
        )
    return view, illumination


def mask_path_for(class_folder: Path, specimen: str, file_name: str) -> Path:
    """GT/<specimen>/<name[:-8]>_mask.png: the mask shared by all illuminations of a view."""
    return Path(class_folder) / MASK_DIR / specimen / f"{file_name[:-8]}_mask.png"


def split_normal_specimens(specimens: Sequence[str], normal_ratio: float = NORMAL_RATIO, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """The benchmark's split of normal specimens: (train, test).

    Sorted by name, shuffled with ``random.seed(seed); random.shuffle(...)`` (an isolated
    ``random.Random(seed)`` draws the same sequence without touching the global state), the first
    ``int(len * normal_ratio)`` train.
    """
    order = sorted(specimens)
    random.Random(seed).shuffle(order)
    cut = int(len(order) * normal_ratio)
    return order[:cut], order[cut:]


def list_m2ad_classes(root: str | Path) -> list[str]:
    """Class folders under an M2AD root (those holding Good/ or NG/), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"M2AD root {root} does not exist; point --data at the folder holding the class folders.")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / NORMAL_DIR).is_dir() or (p / ANOMALOUS_DIR).is_dir()))


def _specimen_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _specimen_images(class_folder: Path, specimen: str, anomalous: bool) -> list[M2adImage]:
    folder = class_folder / (ANOMALOUS_DIR if anomalous else NORMAL_DIR) / specimen
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"M2AD specimen folder {folder} holds no images; remove the empty folder or restore its images.")
    images = []
    for path in files:
        view, illumination = parse_view_illumination(path.name)
        mask_path = None
        if anomalous:
            candidate = mask_path_for(class_folder, specimen, path.name)
            mask_path = candidate if candidate.is_file() else None
        images.append(M2adImage(path, specimen, anomalous, view, illumination, mask_path))
    return images


def open_m2ad_class(root: str | Path, class_name: str, normal_ratio: float = NORMAL_RATIO, seed: int = SPLIT_SEED) -> M2adClass:
    """Index one M2AD class and split it as the benchmark does.

    Raises DataError for a missing root or class (listing the classes found), a class without
    Good/ and NG/, an empty specimen folder, or an image name without view/illumination digits.
    Warns (M2adLayoutWarning) when an anomalous specimen has no GT/<specimen>/ folder at all.
    Images are ordered by (normal first, specimen, view, illumination).
    """
    root = Path(root)
    classes = list_m2ad_classes(root)
    folder = root / class_name
    if not folder.is_dir():
        hint = f"classes found there: {', '.join(classes)}" if classes else "no M2AD class folders (with Good/ or NG/) were found there"
        raise DataError(f"M2AD class '{class_name}' not found under {root}; {hint}.")
    normal = _specimen_names(folder / NORMAL_DIR)
    anomalous = _specimen_names(folder / ANOMALOUS_DIR)
    if not normal and not anomalous:
        raise DataError(
            f"M2AD class folder {folder} has no specimen folders under {NORMAL_DIR}/ or {ANOMALOUS_DIR}/; "
            f"expected {folder}/{NORMAL_DIR}/<specimen>/<images> and {folder}/{ANOMALOUS_DIR}/<specimen>/<images>."
        )
    without_gt = [s for s in anomalous if not (folder / MASK_DIR / s).is_dir()]
    if without_gt:
        warnings.warn(
            f"{len(without_gt)} anomalous specimen(s) of {class_name} have no {MASK_DIR}/<specimen>/ folder "
            f"(e.g. {without_gt[0]}); their images count as normal at image and view level.",
            M2adLayoutWarning,
            stacklevel=2,
        )
    train_names, test_names = split_normal_specimens(normal, normal_ratio, seed)
    train = [image for s in train_names for image in _specimen_images(folder, s, False)]
    test = [image for s in test_names for image in _specimen_images(folder, s, False)]
    test += [image for s in anomalous for image in _specimen_images(folder, s, True)]

    def order(image: M2adImage):
        return (image.anomalous_specimen, image.specimen, image.view, image.illumination, image.image_path.name)

    return M2adClass(root, class_name, tuple(sorted(train, key=order)), tuple(sorted(test, key=order)))


def group_view_instances(images: Sequence[M2adImage]) -> dict[tuple[str, str], list[int]]:
    """Indices of the images of each view instance: {(specimen_key, view): [i, ...]}, sorted keys."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault((image.specimen_key, image.view), []).append(i)
    return dict(sorted(groups.items()))


def group_object_instances(images: Sequence[M2adImage]) -> dict[str, list[int]]:
    """Indices of the images of each object instance (specimen): {specimen_key: [i, ...]}, sorted keys."""
    groups: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.specimen_key, []).append(i)
    return dict(sorted(groups.items()))


"""Contact sheets of a synth class: a row of training views, then a row per test type with the
masks outlined in red, to see at a glance what a class and its defects look like."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnipose.core.files import atomic_path
from omnipose.core.image import dilate, read_image_rgb, read_mask
from omnipose.data import GOOD
from omnipose.data.synth.config import TEST_TYPES
from omnipose.data.synth.defects import RenderedTestView
from omnipose.data.synth.raycast import quantize


def _tile(image: np.ndarray, tile: int, mask: np.ndarray | None = None) -> np.ndarray:
    """image (H, W, 3) uint8 -> (tile, tile, 3), the mask's outline drawn in red just outside it."""
    import cv2

    out = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    if mask is not None:
        small = cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST) > 0
        if not small.any():  # a defect smaller than a tile pixel still gets marked
            rows, cols = np.nonzero(mask)
            small[int(rows.mean() * tile / mask.shape[0]), int(cols.mean() * tile / mask.shape[1])] = True
        grown = dilate(small, 1, shape="square")
        out[grown & ~small] = (255, 0, 0)
    return out


def _read_back(class_folder: Path, per_type: int) -> list[RenderedTestView]:
    """The first test views of each type of a written class, with their masks."""
    views = []
    for defect_type in TEST_TYPES:
        folder = class_folder / "test" / defect_type
        paths = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:per_type] if folder.is_dir() else []
        for image_path in paths:
            image = quantize(read_image_rgb(image_path))
            mask = None
            if defect_type != GOOD:
                mask = read_mask(class_folder / "ground_truth" / defect_type / f"{image_path.stem}_mask.png")
            views.append(RenderedTestView(defect_type, int(image_path.stem), torch.eye(4), image, mask))
    return views


def write_preview(
    path: str | Path, class_folder: str | Path, views: list[RenderedTestView] | None = None, columns: int = 6
) -> Path:
    """A contact sheet: a row of training views, then a row per test type with the masks outlined in red.

    views: the test views in memory; None reads them back from ``class_folder``.
    """
    from PIL import Image, ImageDraw

    class_folder = Path(class_folder)
    views = _read_back(class_folder, columns) if views is None else views
    train_paths = sorted((class_folder / "train" / GOOD).glob("*.png"), key=lambda p: int(p.stem))
    spread = np.linspace(0, len(train_paths) - 1, min(columns, len(train_paths))).round().astype(int)
    train_images = [quantize(read_image_rgb(train_paths[i])) for i in spread]
    rows = [("train", train_images, [None] * len(train_images))]
    for defect_type in TEST_TYPES:
        chosen = [v for v in views if v.defect_type == defect_type][:columns]
        if chosen:
            label = f"test/{defect_type}" + ("" if defect_type == GOOD else "  (red: outline of the mask)")
            rows.append((label, [v.image for v in chosen], [v.mask for v in chosen]))
    tile, header = 160, 18
    sheet = np.full((len(rows) * (tile + header), columns * tile, 3), 255, np.uint8)
    for r, (_, images, masks) in enumerate(rows):
        top = r * (tile + header) + header
        for c, (image, mask) in enumerate(zip(images, masks)):
            sheet[top : top + tile, c * tile : (c + 1) * tile] = _tile(image, tile, mask)
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for r, (label, _, _) in enumerate(rows):
        draw.text((4, r * (tile + header) + 3), f"{class_folder.name}  {label}", fill=(0, 0, 0))
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


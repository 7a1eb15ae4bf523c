"""Global appearance retrieval: which training view, turned by which angle, looks like the query.

Keypoint matching fails where an object has little texture, where the query is far from every
training view, or at small image sizes; then it yields no hypothesis, or only a wrong one. This
is the complementary coarse stage: every image is reduced to an object-centred *thumbnail*
(the object's centroid at the centre, its RMS radius at a fixed share of the side, the background
subtracted), the query's thumbnail is turned through a full circle, and every (view, angle) pair is
scored by the squared difference of the thumbnails. The best pairs become similarity transforms
(rotation, scale and shift between the view and the query) and so camera poses, which the
pose estimator's alignment then refines; the photometric residual decides between them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from omnipose.core.image import warp_image

THUMBNAIL_SIZE = 32
RADIUS_SHARE = 0.22  # object's RMS radius / thumbnail side: the whole object fits, with margin


@dataclass
class ObjectFrame:
    """Where the object sits in an image: centroid (u, v) in pixels and RMS radius in pixels."""

    centroid: np.ndarray
    radius: float


def object_frame(foreground: np.ndarray) -> ObjectFrame | None:
    """Centroid and RMS radius of a foreground mask (H, W) bool; None when it is empty."""
    rows, cols = np.nonzero(foreground)
    if len(rows) < 4:
        return None
    u, v = cols + 0.5, rows + 0.5
    centroid = np.array([u.mean(), v.mean()])
    radius = float(np.sqrt(((u - centroid[0]) ** 2 + (v - centroid[1]) ** 2).mean()))
    return ObjectFrame(centroid, max(radius, 1.0))


def thumbnail_affine(frame: ObjectFrame, angle_deg: float, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """(2, 3) affine from image pixels to thumbnail pixels: centre the object, scale its radius to
    ``RADIUS_SHARE * size`` and turn its content ``angle_deg`` counter-clockwise on screen."""
    scale = RADIUS_SHARE * size / frame.radius
    theta = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    return np.concatenate([rotation, (np.full(2, size / 2.0) - rotation @ frame.centroid)[:, None]], 1)


def thumbnails(image: np.ndarray, frame: ObjectFrame, background, angles_deg, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """Object-centred thumbnails of one image at several turns.

    image: (H, W, 3) in [0, 1]; background: its colour (3,). Returns (A, 3 * size * size) float32,
    the image minus the background (so the background is 0 and only the object counts).
    """
    import cv2

    background = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
    shrink = RADIUS_SHARE * size / frame.radius
    source = np.ascontiguousarray(image, dtype=np.float32) - background
    if shrink < 1.0:  # low-pass before sampling, or thin parts alias in and out
        source = cv2.GaussianBlur(source, (0, 0), 0.5 / shrink)
    out = [warp_image(source, thumbnail_affine(frame, angle, size), 0.0, (size, size)) for angle in angles_deg]
    return torch.from_numpy(np.stack(out).reshape(len(out), -1))


@dataclass
class AppearanceMatch:
    """A training view and the turn that makes it look like the query.

    view: training view index; angle_deg: the query's content turns by -angle_deg relative to the
    view (the query was turned by angle_deg to look like it); distance: mean squared thumbnail
    difference; similarity: (2, 3) affine taking view pixels to query pixels.
    """

    view: int
    angle_deg: float
    distance: float
    similarity: np.ndarray


def view_to_query_affine(view_frame: ObjectFrame, query_frame: ObjectFrame, angle_deg: float) -> np.ndarray:
    """(2, 3) similarity taking view pixels to query pixels when the query turned by ``angle_deg``
    matches the view: the inverse of the query's thumbnail map composed with the view's."""
    to_thumb_view = np.vstack([thumbnail_affine(view_frame, 0.0), [0, 0, 1]])
    to_thumb_query = np.vstack([thumbnail_affine(query_frame, angle_deg), [0, 0, 1]])
    return (np.linalg.inv(to_thumb_query) @ to_thumb_view)[:2]


def best_matches(
    query_thumbs: torch.Tensor, view_thumbs: torch.Tensor, angles_deg, count: int, min_angle_gap_deg: float = 30.0
) -> list[tuple[int, float, float]]:
    """The ``count`` best (view, angle, distance), best first, at most one per view and angle basin.

    query_thumbs: (A, D) the query at each angle; view_thumbs: (V, D). Distances are mean squared
    differences. A pair within ``min_angle_gap_deg`` of a kept pair of the same view is skipped.
    """
    distance = torch.cdist(query_thumbs.double(), view_thumbs.double()).pow(2) / query_thumbs.shape[1]  # (A, V)
    order = distance.flatten().argsort()
    angles = list(angles_deg)
    kept: list[tuple[int, float, float]] = []
    for flat in order.tolist():
        a, v = divmod(flat, distance.shape[1])
        if any(v == kv and abs((angles[a] - ka + 180) % 360 - 180) < min_angle_gap_deg for kv, ka, _ in kept):
            continue
        kept.append((v, float(angles[a]), float(distance[a, v])))
        if len(kept) == count:
            break
    return kept


def thumbnail_object_colour(thumbnails_: torch.Tensor, background, threshold: float) -> np.ndarray | None:
    """The median colour (3,) of the object over thumbnails (V, 3 * size * size) made by ``thumbnails``:
    the pixels more than ``threshold`` from the background; None when there are none."""
    pixels = thumbnails_.reshape(-1, 3).cpu().numpy()
    pixels = pixels[np.abs(pixels).max(-1) > threshold]
    if len(pixels) == 0:
        return None
    return np.median(pixels, 0) + np.broadcast_to(np.asarray(background, np.float32), (3,))


def colour_gains(object_pixels: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """One gain per channel (3,), within [1/3, 3], that brings the median colour of ``object_pixels``
    (N, 3) to ``target`` (3,); None for next to no pixels."""
    if len(object_pixels) < 16:
        return None
    return np.clip(np.asarray(target) / np.maximum(np.median(object_pixels, 0), 1e-3), 1 / 3, 3.0).astype(np.float32)

"""Retrieval among many views: a query's descriptors scored against every view at once (mutual
nearest neighbours over a stacked descriptor bank), and a query described at several in-plane turns
for matchers whose descriptors are not rotation invariant.

Pixel convention (docs/ARCHITECTURE.md): (u, v) with the centre of pixel (i, j) at (i + 0.5, j + 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from omnipose.core.device import all_torch_threads
from omnipose.core.errors import OmniposeError
from omnipose.core.image import compose_affine, invert_affine, warp_image
from omnipose.pose.matching import Features, Matcher


# ----------------------------------------------------------------------------- shortlist
@dataclass
class DescriptorBank:
    """Descriptors of many images stacked for one-matmul scoring against a query.

    descriptors: (V, P, D) zero-padded; valid: (V, P) bool. V images, at most P keypoints each.
    """

    descriptors: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.counts = self.valid.sum(1)

    @classmethod
    def from_features(cls, features: list[Features], device=None) -> "DescriptorBank":
        if not features:
            raise OmniposeError("no training features to build a retrieval bank from.")
        longest = max(max(len(f) for f in features), 1)
        dim = features[0].descriptors.shape[-1]
        descriptors = torch.zeros(len(features), longest, dim)
        valid = torch.zeros(len(features), longest, dtype=torch.bool)
        for view, f in enumerate(features):
            descriptors[view, : len(f)] = f.descriptors.float().cpu()
            valid[view, : len(f)] = True
        device = device if device is not None else features[0].descriptors.device
        return cls(descriptors.to(device), valid.to(device))


def mutual_nn_counts(query: Features, bank: DescriptorBank, min_similarity: float, view_chunk: int = 16) -> torch.Tensor:
    """Number of mutual nearest-neighbour descriptor pairs between a query and every bank image.

    A cheap, order-free proxy of how many matches a view would give: no geometry, one matmul per
    chunk of views. query: N descriptors (N, D). Returns (V,) float counts.
    """
    V = bank.descriptors.shape[0]
    q = query.descriptors.to(bank.descriptors.device, torch.float32)
    if q.shape[0] == 0:
        return torch.zeros(V)
    counts = []
    rows = torch.arange(q.shape[0], device=q.device)
    with all_torch_threads():
        for start in range(0, V, view_chunk):
            chunk = bank.descriptors[start:start + view_chunk]  # (C, P, D)
            # Padding rows are zero vectors: similarity 0, below any useful threshold, so no mask is needed.
            similarity = torch.matmul(chunk, q.T).transpose(1, 2)  # (C, N, P)
            best_sim, best_p = similarity.max(dim=2)  # query -> view keypoint (C, N)
            best_q = similarity.max(dim=1).indices  # view keypoint -> query (C, P)
            back = torch.gather(best_q, 1, best_p)  # (C, N)
            mutual = (back == rows[None]) & (best_sim > min_similarity)
            counts.append(mutual.sum(1).float())
    return torch.cat(counts).cpu()


# ----------------------------------------------------------------------------- in-plane rotation
def rotation_affine(angle_deg: float, width: int, height: int) -> np.ndarray:
    """Affine (2, 3) turning (u, v) pixels of an image about its centre, in the same frame.

    The image content turns by ``angle_deg`` counter-clockwise on screen (v points down).
    Pixel-centre convention +0.5 on both sides.
    """
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    # Counter-clockwise on screen with v down is clockwise in (u, v) maths coordinates.
    rotation = np.array([[c, s], [-s, c]])
    centre = np.array([width / 2.0, height / 2.0])
    return np.concatenate([rotation, (centre - rotation @ centre)[:, None]], 1)


def apply_affine(points: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """points: (N, 2) (u, v); affine: (2, 3). Returns (N, 2)."""
    A = torch.as_tensor(affine, dtype=points.dtype, device=points.device)
    return points @ A[:, :2].T + A[:, 2]


@dataclass
class RotatedFeatures:
    """Query features described after turning the query in-plane by ``angle_deg``.

    rotated: keypoints in the turned image's frame, what a rotation-sensitive matcher must see.
    features: the same keypoints mapped back to the query's own pixel frame (same descriptors).
    """

    angle_deg: float
    rotated: Features
    features: Features
    to_query: np.ndarray

    def points_in_query(self, points: torch.Tensor) -> torch.Tensor:
        """Map (M, 2) pixels of the turned image back to the query's frame."""
        return apply_affine(points.float(), self.to_query)


def describe_rotations(matcher: Matcher, image: np.ndarray, angles_deg, background,
                       magnify: tuple[np.ndarray, float] | None = None) -> list[RotatedFeatures]:  # fmt: skip
    """Describe ``image`` turned about its centre by each angle, in one batch.

    image: (H, W, 3) float. angles_deg: iterable of degrees. background: colour of the corners the
    turn uncovers (MAD objects sit in the middle, so the lost corners hold background only).
    magnify: (centre (2,), factor): first magnify the image by factor about that pixel, brought to the
    image's centre (an object small in the frame, brought to the retrieval views' scale).
    """
    height, width = image.shape[:2]
    angles = [float(a) for a in angles_deg]
    affines = [rotation_affine(angle, width, height) for angle in angles]
    if magnify is not None:
        centre, factor = magnify
        offset = np.array([width / 2.0, height / 2.0]) - factor * np.asarray(centre, dtype=np.float64)
        scale = np.hstack([factor * np.eye(2), offset[:, None]])
        affines = [compose_affine(affine, scale) for affine in affines]
    warped = np.stack([image if angle == 0.0 and magnify is None else warp_image(image, affine, background)
                       for angle, affine in zip(angles, affines)])
    out = []
    for angle, affine, rotated in zip(angles, affines, matcher.extract(warped)):
        to_query = invert_affine(affine)
        back = apply_affine(rotated.keypoints.float(), to_query)
        out.append(RotatedFeatures(angle, rotated, replace(rotated, keypoints=back, image=None), to_query))
    return out

"""Training views re-projected to another camera through the field's depth.

A render is only as good as the field: on thin parts or surfaces seen at a grazing angle it can
show a colour the object does not have, and the comparison then flags a normal query. The nearest
training photographs, carried to the query's pose by the rendered depth, show the real object
there. A defect is in none of these references, a field error only in the render, so the
comparison keeps per pixel the smallest residual over them (``Comparator``, ``neighbours=``).

Where a training view does not see the point (outside its frame, or hidden behind something
nearer, told by its own rendered depth), the re-projected image falls back to the render. Where no
training view sees it (``unseen_surface``), the render shows what the field made up: the underside
of a base plate that every training camera looked down on, seen from a little lower.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from omnipose.core.files import load_cache, save_cache
from omnipose.core.geometry import generate_rays, pixel_centers, project

CACHE_VERSION = 1


@dataclass
class NormalViews:
    """Posed training views with the field's depth at each of them.

    images: (N, H, W, 3) in [0, 1]; depths: (N, H, W), distance along the unit ray (0 where the
    render is empty); c2w: (N, 4, 4) OpenGL; K: (3, 3). key: what a cache was built for.
    """

    images: torch.Tensor
    depths: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    key: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def nearest(self, c2w: torch.Tensor, count: int, exclude: int | None = None) -> list[int]:
        """Indices of the ``count`` views whose viewing direction is closest to that of c2w (4, 4),
        leaving out view ``exclude`` (a training view is no neighbour of itself)."""
        axes = -self.c2w[:, :3, 2].float()
        similarity = axes @ (-c2w[:3, 2].float().cpu())
        if exclude is not None:
            similarity[exclude] = -float("inf")
        count = min(count, len(self) - (exclude is not None))
        return [int(i) for i in torch.argsort(similarity, descending=True)[:count]]

    def save(self, path: str | Path) -> None:
        payload = {"images": (self.images * 255).round().byte(), "depths": self.depths.float(),
                   "c2w": self.c2w.float(), "K": self.K.float()}  # fmt: skip
        save_cache(path, payload, CACHE_VERSION, self.key)

    @classmethod
    def load(cls, path: str | Path, key: str) -> "NormalViews | None":
        """The views cached at ``path`` if they were made for ``key``, else None (stale or unreadable)."""
        payload = load_cache(path, CACHE_VERSION, key)
        if payload is None:
            return None
        return cls(payload["images"].float() / 255, payload["depths"], payload["c2w"], payload["K"], key)


def surface_points(c2w: torch.Tensor, K: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """World points a camera sees. c2w: (4, 4); K: (3, 3); depth: (H, W) along the unit ray.
    Returns (H * W, 3) in row-major pixel order."""
    height, width = depth.shape
    origins, directions = generate_rays(c2w.float(), K.float(), pixel_centers(height, width, depth.device))
    return origins + directions * depth.reshape(-1, 1)


def sample_view(
    points: torch.Tensor, image: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a posed view shows at world points, and where it sees them.

    points: (P, 3); image: (H, W, 3); depth: (H, W) the view's rendered depth; c2w: (4, 4); K: (3, 3).
    A point counts as seen when it projects inside the frame, in front of the camera, and its
    distance to the camera is within ``tolerance`` (relative) of the depth the view renders there.
    Returns colours (P, 3) (bilinear) and seen (P,) bool.
    """
    height, width = depth.shape
    pixels, z = project(points, c2w.float(), K.float())
    grid = torch.stack([pixels[:, 0] / width * 2 - 1, pixels[:, 1] / height * 2 - 1], -1)[None, None]
    colours = F.grid_sample(image.permute(2, 0, 1)[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    # Nearest depth: interpolating across a depth edge would invent a surface between the two.
    view_depth = F.grid_sample(depth[None, None].float(), grid, mode="nearest", align_corners=False)[0, 0, 0]
    distance = (points - c2w[:3, 3].float()).norm(dim=-1)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height) & (z > 1e-3)
    seen = inside & (view_depth > 0) & ((distance - view_depth).abs() < tolerance * distance)
    return colours, seen


def neighbour_references(
    views: NormalViews,
    c2w: torch.Tensor,
    depth: torch.Tensor,
    opacity: torch.Tensor,
    render: torch.Tensor,
    count: int,
    tolerance: float = 0.02,
    exclude: int | None = None,
    K: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``count`` training views nearest to c2w, re-projected to it through the rendered depth.

    c2w: (4, 4); depth, opacity: (H, W) of the render at c2w; render: (H, W, 3), used wherever a
    view does not see the surface (and off the object, opacity <= 0.5). exclude: a view to leave
    out (calibration re-projects the other training views to each training view). K: (3, 3) the
    render's camera, when it is not the views' own (a crop about the object).
    Returns (count, H, W, 3); fewer when there are not that many other views.
    """
    height, width = depth.shape
    points = surface_points(c2w, views.K if K is None else K, depth.float().cpu())
    on_object = opacity.reshape(-1).cpu() > 0.5
    fallback = render.reshape(-1, 3).float().cpu()
    references = []
    for index in views.nearest(c2w, count, exclude):
        colours, seen = sample_view(points, views.images[index], views.depths[index], views.c2w[index], views.K, tolerance)
        references.append(torch.where((seen & on_object)[:, None], colours, fallback).reshape(height, width, 3))
    return torch.stack(references) if references else torch.zeros(0, height, width, 3)


def unseen_surface(
    views: NormalViews, c2w: torch.Tensor, depth: torch.Tensor, opacity: torch.Tensor, tolerance: float = 0.02,
    K: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixels of the render at c2w (4, 4) that show a surface no training view sees (``sample_view``).

    depth, opacity: (H, W) of the render, through camera K (3, 3) (default the views'). Off the object
    (opacity <= 0.5) nothing is unseen. A view that sees a point within about 25 deg of its horizon may
    not count: its depth changes across a pixel by more than ``tolerance`` there. The views nearest in direction are asked first, each
    about the points still unseen, so that the cost is a few full views, not all of them.
    Returns (H, W) bool.
    """
    height, width = depth.shape
    points = surface_points(c2w, views.K if K is None else K, depth.float().cpu())
    unseen = torch.nonzero(opacity.reshape(-1).cpu() > 0.5)[:, 0]
    for index in views.nearest(c2w, len(views)):
        if len(unseen) == 0:
            break
        _, seen = sample_view(points[unseen], views.images[index], views.depths[index], views.c2w[index], views.K,
                              tolerance)  # fmt: skip
        unseen = unseen[~seen]
    mask = torch.zeros(height * width, dtype=torch.bool)
    mask[unseen] = True
    return mask.reshape(height, width)

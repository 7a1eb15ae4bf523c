"""The scene box: where a field lives, from the user, from the cameras' frustums, or a default.

Every ray is marched only inside this axis-aligned box (``ray_aabb_intersect``); a box that fits
the object gives the field's grid finer cells for the same memory.
"""
from __future__ import annotations

import torch

from omnipose.core.errors import OmniposeError
from omnipose.core.geometry import invert_pose

DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


def ray_aabb_intersect(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through a box (slab method).

    rays_o, rays_d: (N, 3); aabb: (2, 3). Returns t_near, t_far: (N,); a ray misses the box
    where t_far <= t_near. t_near may be negative for origins inside the box.
    """
    safe_d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (aabb[0] - rays_o) / safe_d
    t1 = (aabb[1] - rays_o) / safe_d
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def estimate_aabb(
    c2w: torch.Tensor, K: torch.Tensor, width: int, height: int, resolution: int = 64, margin: float = 0.05
) -> torch.Tensor | None:
    """Box around the region every camera sees (intersection of the view frustums).

    Object-centric captures (MAD, Blender) keep the object in every view, so this box holds it.
    c2w: (N, 4, 4); K: (3, 3). Returns aabb (2, 3), or None when no point is seen by all views.
    """
    c2w = c2w.float().cpu()
    K = K.float().cpu()
    centres = c2w[:, :3, 3]
    forward = -c2w[:, :3, 2]
    # The point closest to every optical axis (least squares) is where the cameras look.
    projector = torch.eye(3) - forward[:, :, None] * forward[:, None, :]
    focus = torch.linalg.lstsq(projector.sum(0), (projector @ centres[:, :, None]).sum(0)).solution[:, 0]
    reach = float((centres - focus).norm(dim=-1).max())
    low, high = focus - reach, focus + reach
    axes = [torch.linspace(float(low[i]), float(high[i]), resolution) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    seen = torch.ones(points.shape[0], dtype=torch.bool)
    w2c = invert_pose(c2w)
    for view in range(c2w.shape[0]):
        camera = points @ w2c[view, :3, :3].T + w2c[view, :3, 3]
        depth = -camera[:, 2]
        u = K[0, 0] * camera[:, 0] / depth.clamp(min=1e-6) + K[0, 2]
        v = -K[1, 1] * camera[:, 1] / depth.clamp(min=1e-6) + K[1, 2]
        seen &= (depth > 1e-3) & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)
    if not seen.any():
        return None
    inside = points[seen]
    cell = (high - low) / (resolution - 1)
    lo, hi = inside.amin(0) - cell, inside.amax(0) + cell
    pad = margin * (hi - lo)
    return torch.stack([lo - pad, hi + pad])


def resolve_aabb(aabb, c2w: torch.Tensor | None = None, K=None, width=None, height=None) -> tuple[torch.Tensor, str]:
    """The scene box and where it came from: given ('given'), frustums ('frustums') or the default.

    aabb: (2, 3)-like or None. Returns (aabb (2, 3) float32, source).
    """
    if aabb is not None:
        box = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        if not bool((box[1] > box[0]).all()):
            raise OmniposeError(f"scene box {box.tolist()} is empty: give [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min.")
        return box, "given"
    if c2w is not None and K is not None and width and height:
        box = estimate_aabb(c2w, K, width, height)
        if box is not None:
            return box, "frustums"
    return torch.tensor(DEFAULT_AABB, dtype=torch.float32), "default"

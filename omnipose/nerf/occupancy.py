"""Instant-NGP's occupancy grid: which cells of the scene box may hold something, so marching skips the rest."""
from __future__ import annotations

import math

import torch

from omnipose.nerf.sampling import generator_device, random_uniform


class OccupancyGrid(torch.nn.Module):
    """Instant-NGP's occupancy grid: an EMA of the field's density per cell of the scene box.

    A cell is occupied when its density could make a marching step at least ``alpha_threshold``
    opaque (capped by the grid's mean density, so a grid never empties itself). Buffers:
    ``density`` (R^3,) float, ``occupied`` (R^3,) bool, flattened with x fastest.
    """

    def __init__(self, aabb: torch.Tensor, resolution: int = 64):
        super().__init__()
        self.resolution = int(resolution)
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        n = self.resolution**3
        # Start full: until the field has been queried, every cell may hold something.
        self.register_buffer("density", torch.zeros(n))
        self.register_buffer("occupied", torch.ones(n, dtype=torch.bool))
        self.register_buffer("measured", torch.tensor(False))
        self._bounds: tuple[tuple, torch.Tensor | None] | None = None  # (what they were taken of, bounds)

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Flat cell index of world points (N, 3) -> (N,) int64 (clamped into the grid)."""
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        ijk = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        return ijk[..., 0] + self.resolution * (ijk[..., 1] + self.resolution * ijk[..., 2])

    def is_occupied(self, points: torch.Tensor) -> torch.Tensor:
        """points: (..., 3). Returns (...) bool."""
        return self.occupied[self.cell_index(points)]

    def is_occupied_along(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Occupancy at o + t d for rays (R, 3) and distances t (R, S). Returns (R, S) bool.

        The same as ``is_occupied`` on the points, in grid units from the start: marching tests
        millions of candidate steps per image, and this skips three full passes over them.
        """
        r = self.resolution
        scale = r / (self.aabb[1] - self.aabb[0])
        start = (rays_o - self.aabb[0]) * scale  # grid coordinates at t = 0
        grid = torch.addcmul(start[:, None, :], t[..., None], (rays_d * scale)[:, None, :])
        ijk = grid.to(torch.int32).clamp_(0, r - 1)
        index = (ijk[..., 2] * r + ijk[..., 1]) * r + ijk[..., 0]
        return self.occupied[index.long()]

    def occupied_bounds(self) -> torch.Tensor | None:
        """World box (2, 3) of the occupied cells, half a cell wider (clipped to the grid's box), or
        None when no cell is occupied. Every step outside it falls in an empty cell, so marching
        need not begin before it nor go on past it: the steps inside are the same, and the rays
        that miss it need none.

        Taken again only after the grid changed (an update, a new box, a loaded state), since
        marching asks for it on every call.
        """
        key = tuple((t.data_ptr(), t._version) for t in (self.occupied, self.aabb))
        if self._bounds is None or self._bounds[0] != key:
            self._bounds = (key, self._occupied_bounds())
        return self._bounds[1]

    def _occupied_bounds(self) -> torch.Tensor | None:
        r = self.resolution
        grid = self.occupied.view(r, r, r)  # [z][y][x]
        if not bool(grid.any()):
            return None
        low, high = [], []
        for axis in (2, 1, 0):  # x, y, z
            cells = grid.any(dim=tuple(a for a in range(3) if a != axis)).nonzero()[:, 0]
            low.append(float(cells[0]) - 0.5)
            high.append(float(cells[-1]) + 1.5)
        size = (self.aabb[1] - self.aabb[0]) / r
        cells = torch.tensor([low, high], dtype=size.dtype, device=size.device)
        return torch.minimum(torch.maximum(self.aabb[0] + cells * size, self.aabb[0]), self.aabb[1])

    def cell_points(self, cells: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
        """World points inside cells (M,) at offsets jitter (M, 3) in [0, 1). Returns (M, 3)."""
        r = self.resolution
        ijk = torch.stack([cells % r, (cells // r) % r, cells // (r * r)], -1).float()
        return self.aabb[0] + (ijk + jitter) / r * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(
        self,
        density_fn,
        step_size: float,
        alpha_threshold: float = 0.01,
        decay: float = 0.95,
        fraction: float = 1.0,
        chunk: int = 65536,
        generator: torch.Generator | None = None,
    ) -> None:
        """Decay every cell, re-measure some, and re-threshold.

        density_fn: (M, 3) world points -> (M,) density. fraction < 1 re-measures that share of all
        cells at random plus every occupied cell (instant-ngp's schedule after warm-up).
        """
        device = self.density.device
        n = self.density.numel()
        if fraction >= 1.0:
            cells = torch.arange(n, device=device)
        else:
            count = max(1, int(n * fraction))
            random_cells = torch.randint(0, n, (count,), generator=generator, device=generator_device(generator, device)).to(device)
            cells = torch.unique(torch.cat([random_cells, self.occupied.nonzero()[:, 0]]))
        jitter = random_uniform((cells.shape[0], 3), generator, device)
        points = self.cell_points(cells, jitter)
        measured = torch.cat([density_fn(points[i : i + chunk]).float() for i in range(0, points.shape[0], chunk)])
        decayed = self.density * decay if bool(self.measured) else torch.zeros_like(self.density)
        decayed[cells] = torch.maximum(decayed[cells], measured)
        self.density.copy_(decayed)
        density_threshold = -math.log(1.0 - alpha_threshold) / step_size
        threshold = min(density_threshold, float(self.density.mean()))
        self.occupied.copy_(self.density > threshold)
        self.measured.fill_(True)

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def occupied_box(self, dilation: int = 2, min_share: float = 0.05) -> torch.Tensor | None:
        """World box (2, 3) around the object the grid has found, grown by ``dilation`` cells.

        Early in training the grid also holds scattered floaters; the object is the largest
        connected group of occupied cells (after closing one-cell gaps), and any group at least
        ``min_share`` of its size is kept with it. Returns None when nothing is occupied.
        """
        import numpy as np
        from scipy import ndimage

        r = self.resolution
        grid = self.occupied.view(r, r, r).cpu().numpy()  # [z][y][x]
        if not grid.any():
            return None
        labels, _ = ndimage.label(ndimage.binary_dilation(grid), structure=np.ones((3, 3, 3)))
        sizes = np.bincount(labels[grid])
        sizes[0] = 0
        kept = np.flatnonzero(sizes >= min_share * sizes.max())
        zyx = np.argwhere(grid & np.isin(labels, kept))
        low = torch.from_numpy(np.maximum(zyx.min(0)[::-1] - dilation, 0).copy()).float()
        high = torch.from_numpy(np.minimum(zyx.max(0)[::-1] + 1 + dilation, r).copy()).float()
        size = self.aabb[1] - self.aabb[0]
        return torch.stack([self.aabb[0] + low.to(size) / r * size, self.aabb[0] + high.to(size) / r * size])

    def set_box(self, aabb: torch.Tensor) -> None:
        """Move the grid onto a new box; every cell counts as occupied until the next update."""
        self.aabb.copy_(aabb)
        self.occupied.fill_(True)
        self.density.zero_()
        self.measured.fill_(False)

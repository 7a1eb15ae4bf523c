"""Multi-resolution tri-plane encoding (K-Planes / EG3D style), a CPU-friendly alternative to the hash grid.

Per resolution, three axis-aligned feature planes (xy, xz, yz) are sampled bilinearly; the three
samples are multiplied (K-Planes' Hadamard product) and the resolutions concatenated. A point
costs 12 table rows per resolution instead of 8 per hash-grid level, and the table is small
enough to stay in cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from omnipose.core.config import Config, positive, require
from omnipose.nerf.interpolation import interpolate_rows


@dataclass
class TriPlaneConfig(Config):
    """Resolutions and channels of a multi-resolution tri-plane."""

    resolutions: tuple[int, ...] = (64, 128, 256)
    """Cells per side of the planes, one set of three planes per resolution (each at least 2)."""
    features: int = 8
    """Channels per plane; the encoding has len(resolutions) * features channels."""
    init_low: float = 0.1
    """Table entries start uniform in [init_low, init_high]: positive, so that the product of
    three planes starts away from zero (K-Planes)."""
    init_high: float = 0.5
    """Upper end of the initial uniform range (see init_low)."""

    def check(self) -> None:
        resolutions = self.resolutions
        require(self, "resolutions", isinstance(resolutions, (tuple, list)) and len(resolutions) > 0
                and all(isinstance(r, int) and not isinstance(r, bool) and r >= 2 for r in resolutions),
                "must be a non-empty sequence of integers of 2 or more")  # fmt: skip
        positive(self, "features")
        require(self, "init_low", isinstance(self.init_low, (int, float)) and self.init_low == self.init_low, "must be a number")
        require(self, "init_high", isinstance(self.init_high, (int, float)) and self.init_low <= self.init_high,
                "must be a number of at least init_low")  # fmt: skip

    @property
    def n_output_dims(self) -> int:
        return len(self.resolutions) * self.features


class TriPlaneEncoding(torch.nn.Module):
    """forward(x: (N, 3) in [0, 1]) -> (N, len(resolutions) * features). One flat table
    (sum_r 3 r^2, features) of all planes; plane p of resolution r starts at its offset, rows are
    indexed ``i + r j`` with i along the plane's first axis."""

    backend = "torch"

    def __init__(self, config: TriPlaneConfig | None = None, accumulate_in_place: bool = False):
        super().__init__()
        self.config = config or TriPlaneConfig()
        self.accumulate_in_place = accumulate_in_place
        offsets, total = [], 0
        for r in self.config.resolutions:
            offsets.append(total)
            total += 3 * r * r
        self.offsets = offsets
        table = torch.empty(total, self.config.features)
        # Positive init so that the product of three planes starts away from zero (K-Planes).
        torch.nn.init.uniform_(table, self.config.init_low, self.config.init_high)
        self.table = torch.nn.Parameter(table)
        self.register_buffer("_axes", torch.tensor([[0, 1], [0, 2], [1, 2]]), persistent=False)

    @property
    def n_output_dims(self) -> int:
        return self.config.n_output_dims

    def corner_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) in [0, 1]. Returns index: (N, R, 3, 4) int64 and weights (N, R, 3, 4)."""
        x = x.clamp(0.0, 1.0)
        planar = x[:, self._axes]  # (N, 3, 2)
        indices, weights = [], []
        for r, offset in zip(self.config.resolutions, self.offsets):
            position = planar * (r - 1)
            cell = position.detach().floor().clamp(max=r - 2)
            fraction = position - cell
            cell = cell.to(torch.int64)
            plane_offset = offset + torch.arange(3, device=x.device) * (r * r)
            base = plane_offset + cell[..., 0] + r * cell[..., 1]  # (N, 3)
            corner = torch.tensor([0, 1, r, r + 1], device=x.device)
            indices.append(base[..., None] + corner)
            fu, fv = fraction[..., 0], fraction[..., 1]
            weights.append(torch.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], -1))
        return torch.stack(indices, 1), torch.stack(weights, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index, weights = self.corner_indices(x)
        planes = interpolate_rows(self.table, index, weights, self.accumulate_in_place and self.training)  # (N, R, 3, F)
        return planes.prod(2).reshape(x.shape[0], self.n_output_dims)

"""Encodings of points and directions that have no parameters: NeRF frequencies, spherical harmonics.

- ``PositionalEncoding``: nerf-pytorch's embedder, bit for bit (checkpoints depend on the order).
- ``SphericalHarmonicsEncoding``: real SH basis of a unit direction, the NGP colour input.

The encodings with learned tables live in ``hash_grid.py`` (Instant-NGP's hash grid, with its
tiny-cuda-nn backend) and ``triplane.py``.
"""
from __future__ import annotations

import torch


# ----------------------------------------------------------------------------- frequencies
class PositionalEncoding(torch.nn.Module):
    """NeRF's frequency encoding, ordered exactly like nerf-pytorch's ``get_embedder``.

    Output: ``[x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ..., cos(2^(L-1) x)]`` where each
    entry is a 3-vector: input first (when ``include_input``), then per frequency sin of all three
    coordinates followed by cos of all three. ``num_frequencies=10`` gives 63 channels, ``4`` gives 27.
    No factor of pi: nerf-pytorch multiplies by the bare powers of two.
    """

    def __init__(self, num_frequencies: int, include_input: bool = True, input_dims: int = 3):
        super().__init__()
        self.num_frequencies = int(num_frequencies)
        self.include_input = include_input
        self.input_dims = input_dims
        # 2 ** linspace(0, L-1, L), computed as nerf-pytorch does (float32 powers of two are exact).
        bands = 2.0 ** torch.linspace(0.0, max(self.num_frequencies - 1, 0), steps=self.num_frequencies)
        self.register_buffer("frequency_bands", bands, persistent=False)

    @property
    def n_output_dims(self) -> int:
        return self.input_dims * (int(self.include_input) + 2 * self.num_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D). Returns (N, n_output_dims)."""
        scaled = x[:, None, :] * self.frequency_bands[:, None]  # (N, L, D)
        # Interleave per frequency: [sin(f0 x), cos(f0 x), sin(f1 x), ...], each block D wide.
        periodic = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=2).reshape(x.shape[0], -1)
        return torch.cat([x, periodic], -1) if self.include_input else periodic


# ----------------------------------------------------------------------------- directions
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip


class SphericalHarmonicsEncoding(torch.nn.Module):
    """Real spherical-harmonics basis of unit directions up to ``degree`` bands (1..4).

    ``degree=4`` gives the 16 coefficients of bands l = 0..3, the NGP colour-network input.
    """

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
        self.degree = degree

    @property
    def n_output_dims(self) -> int:
        return self.degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        """directions: (N, 3) unit vectors. Returns (N, degree**2)."""
        x, y, z = directions.unbind(-1)
        out = [torch.full_like(x, _SH_C0)]
        if self.degree > 1:
            out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
        if self.degree > 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out += [
                _SH_C2[0] * xy, _SH_C2[1] * yz, _SH_C2[2] * (2 * zz - xx - yy),
                _SH_C2[3] * xz, _SH_C2[4] * (xx - yy),
            ]  # fmt: skip
        if self.degree > 3:
            out += [
                _SH_C3[0] * y * (3 * xx - yy), _SH_C3[1] * xy * z, _SH_C3[2] * y * (4 * zz - xx - yy),
                _SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _SH_C3[4] * x * (4 * zz - xx - yy),
                _SH_C3[5] * z * (xx - yy), _SH_C3[6] * x * (xx - 3 * yy),
            ]  # fmt: skip
        return torch.stack(out, -1)

"""Input encodings for radiance fields: NeRF frequencies, spherical harmonics, hash grids.

- ``PositionalEncoding``: nerf-pytorch's embedder, bit for bit (checkpoints depend on the order).
- ``SphericalHarmonicsEncoding``: real SH basis of a unit direction, the NGP colour input.
- ``HashGridEncoding``: the multi-resolution hash grid of Instant-NGP in pure PyTorch; it is the
  reference implementation. ``TcnnHashGridEncoding`` runs the same encoding through tiny-cuda-nn
  and is picked by ``make_grid_encoding`` on CUDA when ``tinycudann`` imports.

Grid inputs are positions already normalised to the unit cube, ``x: (N, 3)`` in [0, 1].

Hash-grid semantics follow tiny-cuda-nn's ``HashGrid`` so that one ``HashGridConfig`` means the
same function on either backend and a table can move between them unchanged:
level ``l`` has scale ``s_l = base_resolution * per_level_scale**l - 1`` and resolution
``r_l = ceil(s_l) + 1``; a point sits at ``x * s_l + 0.5`` in grid units; a level holds
``min(next_multiple_of_8(r_l**3), 2**log2_table_size)`` entries of ``features_per_level`` floats,
indexed densely (``i + j r + k r^2``, modulo the level size) when ``r_l**3`` fits, else by the
spatial hash ``(i * 1) xor (j * 2654435761) xor (k * 805459861)`` modulo ``2**log2_table_size``.
All levels live in one flat table ``(total_entries, features_per_level)`` in level order.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from omnipose.core.errors import OmniposeError

# Large primes of the spatial hash (Teschner et al.; the ones Instant-NGP uses); the first is 1
# so that neighbouring x stay neighbours in memory.
HASH_PRIMES = (1, 2654435761, 805459861)


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


# ----------------------------------------------------------------------------- hash grid
@dataclass
class HashGridConfig:
    """Multi-resolution hash grid (Instant-NGP), the same fields as tiny-cuda-nn's ``HashGrid``.

    n_levels (L), features_per_level (F), log2_table_size (T: at most 2**T entries per level),
    base_resolution (coarsest grid), per_level_scale (growth factor b between levels; None derives
    it from ``max_resolution`` as b = exp((ln N_max - ln N_min) / (L - 1))).
    """

    n_levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    per_level_scale: float | None = None
    init_scale: float = 1e-4  # table entries start uniform in [-init_scale, init_scale]

    def __post_init__(self):
        if self.n_levels < 1 or self.features_per_level < 1:
            raise OmniposeError("hash grid needs n_levels >= 1 and features_per_level >= 1.")
        if not 8 <= self.log2_table_size <= 30:
            raise OmniposeError(f"log2_table_size={self.log2_table_size} is out of range; use 14..24 (19 is usual).")

    @property
    def growth(self) -> float:
        """Per-level scale b."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.features_per_level

    def tcnn_config(self) -> dict:
        """The encoding config tiny-cuda-nn expects for the same grid."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.features_per_level,
            "log2_hashmap_size": self.log2_table_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.growth,
        }


@dataclass(frozen=True)
class GridLevel:
    """Geometry of one level: scale s, resolution r = ceil(s) + 1, entries, table offset, dense?"""

    scale: float
    resolution: int
    size: int
    offset: int
    dense: bool


def grid_levels(config: HashGridConfig) -> list[GridLevel]:
    """The levels of a hash grid, laid out as tiny-cuda-nn lays them out."""
    levels, offset = [], 0
    log2_growth = math.log2(config.growth)
    for level in range(config.n_levels):
        # float32 like tcnn: exp2(l * log2(b)) * N_min - 1
        scale = float(torch.tensor(2.0 ** (level * log2_growth) * config.base_resolution - 1.0, dtype=torch.float32))
        resolution = math.ceil(scale) + 1
        dense_entries = resolution**3
        size = min(-(-dense_entries // 8) * 8, 2**config.log2_table_size)
        levels.append(GridLevel(scale, resolution, size, offset, dense_entries <= size))
        offset += size
    return levels


def cell_index(cell: torch.Tensor, resolution: torch.Tensor) -> torch.Tensor:
    """Dense row of integer grid coordinates, x fastest. cell: (..., L, 3); resolution: (L,). Returns (..., L)."""
    return cell[..., 0] + resolution * (cell[..., 1] + resolution * cell[..., 2])


def trilinear_weights(fraction: torch.Tensor) -> torch.Tensor:
    """Weights of the 8 cell corners, corner order (z, y, x) with x fastest.

    fraction: (..., 3) position inside the cell in [0, 1). Returns (..., 8).
    """
    fx, fy, fz = fraction.unbind(-1)
    wx = torch.stack([1 - fx, fx], -1)
    wy = torch.stack([1 - fy, fy], -1)
    wz = torch.stack([1 - fz, fz], -1)
    weights = wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]
    return weights.reshape(fraction.shape[:-1] + (8,))


class _InterpolateRows(torch.autograd.Function):
    """out = sum_c w[..., c] * table[index[..., c]] with a hand-written backward.

    The forward is ``embedding_bag`` (one fused gather-and-weigh pass: the (M, C, F) corner rows
    are never materialised). The table gradient is a scatter-add over the touched rows. With
    ``in_place`` it is added straight into ``table.grad`` and None is returned to autograd: a fresh
    multi-million-entry gradient per step costs more in page faults than the whole scatter on CPU,
    so the buffer is kept and zeroed in place (``optimizer.zero_grad(set_to_none=False)``).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, in_place: bool) -> torch.Tensor:
        corners = index.shape[-1]
        flat_index = index.reshape(-1, corners)
        flat_weights = weights.reshape(-1, corners).to(table.dtype)
        out = torch.nn.functional.embedding_bag(flat_index, table, per_sample_weights=flat_weights, mode="sum")
        ctx.in_place = in_place
        ctx.save_for_backward(table, index, weights)
        return out.view(index.shape[:-1] + (table.shape[1],))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, index, weights = ctx.saved_tensors
        features = table.shape[1]
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            contributions = (weights[..., None] * grad_out[..., None, :]).reshape(-1, features)
            if ctx.in_place:
                if table.grad is None:
                    table.grad = torch.zeros_like(table)
                target = table.grad
            else:
                target = grad_table = torch.zeros_like(table)
            scatter_rows(target, index.reshape(-1), contributions)
        if ctx.needs_input_grad[2]:
            rows = table.index_select(0, index.reshape(-1)).view(index.shape + (features,))
            grad_weights = (rows * grad_out[..., None, :]).sum(-1)
        return grad_table, None, grad_weights, None


def scatter_rows(target: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """target[index[i]] += rows[i], in place. target: (E, F); index: (M,); rows: (M, F).

    Narrow rows go through one flat scatter over (entry, feature) pairs, wide rows through
    index_add_: whichever PyTorch's CPU kernels do faster for that width.
    """
    features = target.shape[1]
    if features >= 4:
        target.index_add_(0, index, rows)
    else:
        flat_index = (index[:, None] * features + torch.arange(features, device=index.device)).reshape(-1)
        target.view(-1).scatter_add_(0, flat_index, rows.reshape(-1))


def interpolate_rows(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Weighted sum of table rows. table: (E, F); index: (..., C) int64; weights: (..., C).

    Returns (..., F). Differentiable in ``table`` and ``weights``. in_place: accumulate the
    table's gradient directly into ``table.grad`` (fast training path; autograd then sees no
    gradient for the table, so ``torch.autograd.grad`` w.r.t. it needs in_place=False).
    """
    return _InterpolateRows.apply(table, index, weights, in_place)


class HashGridEncoding(torch.nn.Module):
    """Multi-resolution hash encoding in pure PyTorch (the reference backend).

    forward(x: (N, 3) in [0, 1]) -> (N, n_levels * features_per_level), level-major like tcnn.
    Differentiable in the table and in ``x`` (the trilinear weights carry the position gradient).
    accumulate_in_place: see ``interpolate_rows`` (True: the fast CPU training path).
    """

    backend = "torch"

    def __init__(self, config: HashGridConfig | None = None, accumulate_in_place: bool = False):
        super().__init__()
        self.config = config or HashGridConfig()
        self.accumulate_in_place = accumulate_in_place
        self.levels = grid_levels(self.config)
        n_entries = self.levels[-1].offset + self.levels[-1].size
        table = torch.empty(n_entries, self.config.features_per_level)
        torch.nn.init.uniform_(table, -self.config.init_scale, self.config.init_scale)
        self.table = torch.nn.Parameter(table)
        dense = [lv for lv in self.levels if lv.dense]
        hashed = [lv for lv in self.levels if not lv.dense]
        # Levels are grouped by indexing mode so that each group is a few whole-tensor ops. Dense
        # levels are the coarse ones, so dense-then-hashed keeps tcnn's level order.
        if dense and hashed and max(self.levels.index(lv) for lv in dense) > min(self.levels.index(lv) for lv in hashed):
            raise OmniposeError("hash grid levels must grow in resolution (per_level_scale >= 1).")
        for name, group in (("dense", dense), ("hashed", hashed)):
            self.register_buffer(f"_{name}_scale", torch.tensor([lv.scale for lv in group], dtype=torch.float32), persistent=False)
            self.register_buffer(f"_{name}_resolution", torch.tensor([lv.resolution for lv in group], dtype=torch.int64), persistent=False)
            self.register_buffer(f"_{name}_size", torch.tensor([lv.size for lv in group], dtype=torch.int64), persistent=False)
            self.register_buffer(f"_{name}_offset", torch.tensor([lv.offset for lv in group], dtype=torch.int64), persistent=False)
        self.register_buffer("_primes", torch.tensor(HASH_PRIMES, dtype=torch.int64), persistent=False)
        self.register_buffer("_corner_bits", torch.tensor([0, 1], dtype=torch.int64), persistent=False)
        bits = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)  # x fastest
        offsets = [bits[:, 0] + lv.resolution * (bits[:, 1] + lv.resolution * bits[:, 2]) for lv in dense]
        self.register_buffer(
            "_dense_corner_offsets", torch.stack(offsets) if offsets else torch.zeros(0, 8, dtype=torch.int64), persistent=False
        )

    @property
    def n_output_dims(self) -> int:
        return self.config.n_output_dims

    def corner_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and trilinear weights of every level's 8 surrounding corners.

        x: (N, 3) in [0, 1]. Returns index: (N, L, 8) int64 and weights: (N, L, 8), corners in
        (z, y, x) order with x fastest.
        """
        x = x.clamp(0.0, 1.0)
        indices, weights = [], []
        for name in ("dense", "hashed"):
            scale = getattr(self, f"_{name}_scale")
            if scale.numel() == 0:
                continue
            position = x[:, None, :] * scale[:, None] + 0.5  # (N, Lg, 3)
            cell = torch.floor(position.detach())
            weights.append(trilinear_weights(position - cell))
            size = getattr(self, f"_{name}_size")[:, None]
            if name == "dense":
                # Row of the lower corner plus each level's constant offsets of the 8 corners.
                base = cell_index(cell.to(torch.int64), getattr(self, f"_{name}_resolution"))  # (N, Lg)
                index = base[..., None] + self._dense_corner_offsets
                index = torch.where(index >= size, index - size, index)  # tcnn's "% size" (never > 2 size)
            else:
                # Corner coordinates per axis times the primes: (N, Lg, 3, 2).
                hashed = (cell.to(torch.int64)[..., None] + self._corner_bits) * self._primes[:, None]
                cx, cy, cz = hashed[..., 0, :], hashed[..., 1, :], hashed[..., 2, :]
                index = cz[..., :, None, None] ^ cy[..., None, :, None] ^ cx[..., None, None, :]
                # size is 2**T here, so "% size" of the uint32 hash is a mask of the low bits.
                index = index.reshape(index.shape[:2] + (8,)) & (size - 1)
            indices.append(index + getattr(self, f"_{name}_offset")[:, None])
        return torch.cat(indices, 1), torch.cat(weights, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) in [0, 1]. Returns (N, L * F)."""
        index, weights = self.corner_indices(x)
        features = interpolate_rows(self.table, index, weights, self.accumulate_in_place and self.training)
        return features.reshape(x.shape[0], self.n_output_dims)


# ----------------------------------------------------------------------------- tri-plane
@dataclass
class TriPlaneConfig:
    """Multi-resolution tri-plane (K-Planes / EG3D style): per resolution, three axis-aligned
    feature planes (xy, xz, yz) of ``features`` channels, sampled bilinearly; the three samples are
    multiplied (K-Planes' Hadamard product) and resolutions concatenated.

    A CPU-friendly alternative to the hash grid: 12 table rows per point and resolution instead of
    8 per level, and a table small enough to stay in cache.
    """

    resolutions: tuple[int, ...] = (64, 128, 256)
    features: int = 8
    init_low: float = 0.1
    init_high: float = 0.5

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


class TcnnHashGridEncoding(torch.nn.Module):
    """The same hash grid through tiny-cuda-nn (CUDA only), float32 parameters.

    Its flat parameter vector has the torch backend's layout, and checkpoints store it as
    ``table`` (E, F) like the torch backend, so a model trained with one loads into the other.
    """

    backend = "tcnn"

    def __init__(self, config: HashGridConfig | None = None):
        super().__init__()
        import tinycudann as tcnn  # noqa: PLC0415 (optional dependency, CUDA only)

        self.config = config or HashGridConfig()
        self.levels = grid_levels(self.config)
        # Kept out of the module tree so that state dicts hold one "table" entry, not tcnn's names.
        object.__setattr__(self, "_tcnn", tcnn.Encoding(3, self.config.tcnn_config(), dtype=torch.float32))
        self.params = self._tcnn.params
        n_entries = self.levels[-1].offset + self.levels[-1].size
        if self.params.numel() != n_entries * self.config.features_per_level:
            raise OmniposeError(
                f"tinycudann lays out {self.params.numel()} grid parameters where omnipose expects "
                f"{n_entries * self.config.features_per_level}; this tinycudann version is incompatible. "
                "Use the torch backend (encoding_backend='torch')."
            )
        with torch.no_grad():
            self.params.uniform_(-self.config.init_scale, self.config.init_scale)

    @property
    def n_output_dims(self) -> int:
        return self.config.n_output_dims

    @property
    def table(self) -> torch.Tensor:
        """(E, F) view of the parameters, the torch backend's layout."""
        return self.params.view(-1, self.config.features_per_level)

    def load_table(self, table: torch.Tensor) -> None:
        with torch.no_grad():
            self.params.copy_(table.reshape(-1))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "table"] = self.table if keep_vars else self.table.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "table"
        if key not in state_dict:
            missing_keys.append(key)
        elif state_dict[key].numel() != self.params.numel():
            error_msgs.append(f"{key}: {tuple(state_dict[key].shape)} does not fit {self.params.numel()} grid parameters")
        else:
            self.load_table(state_dict[key].to(self.params.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tcnn(x.clamp(0.0, 1.0)).float()


def tcnn_available() -> bool:
    """True when tiny-cuda-nn imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 (any import failure means: not usable here)
        return False
    return True


def make_grid_encoding(
    config: HashGridConfig, device: torch.device | str | None = None, backend: str = "auto", accumulate_in_place: bool = False
) -> torch.nn.Module:
    """A hash-grid encoding on ``device``: tinycudann on CUDA when it imports, else pure torch.

    backend: 'auto', 'torch' or 'tcnn'. accumulate_in_place: the torch backend's fast training
    path (see ``interpolate_rows``).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if backend not in ("auto", "torch", "tcnn"):
        raise OmniposeError(f"unknown encoding backend '{backend}'; use 'auto', 'torch' or 'tcnn'.")
    use_tcnn = backend == "tcnn" or (backend == "auto" and device.type == "cuda" and tcnn_available())
    if use_tcnn:
        if device.type != "cuda" or not tcnn_available():
            raise OmniposeError("the tcnn encoding backend needs CUDA and `pip install tinycudann`; use backend 'torch'.")
        return TcnnHashGridEncoding(config).to(device)
    return HashGridEncoding(config, accumulate_in_place).to(device)


def config_dict(config) -> dict:
    """A dataclass config as a plain dict (for JSON)."""
    return asdict(config)

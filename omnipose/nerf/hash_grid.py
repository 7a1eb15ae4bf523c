"""Instant-NGP's multi-resolution hash grid: a pure-PyTorch reference and a tiny-cuda-nn backend.

``HashGridEncoding`` is the reference implementation; ``TcnnHashGridEncoding`` runs the same
encoding through tiny-cuda-nn and is picked by ``make_grid_encoding`` on CUDA when ``tinycudann``
imports. ``resample_grid`` moves a trained grid onto a smaller scene box.

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
from dataclasses import dataclass

import torch

from omnipose.core.config import (
    Config,
    non_negative,
    optional_positive,
    positive,
    require,
)
from omnipose.core.errors import OmniposeError
from omnipose.nerf.interpolation import interpolate_rows

# Large primes of the spatial hash (Teschner et al.; the ones Instant-NGP uses); the first is 1
# so that neighbouring x stay neighbours in memory.
HASH_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig(Config):
    """Multi-resolution hash grid (Instant-NGP), the same fields as tiny-cuda-nn's ``HashGrid``."""

    n_levels: int = 16
    """Number of levels L, from the coarsest grid to the finest."""
    features_per_level: int = 2
    """Features F stored per table entry; the encoding has L * F channels."""
    log2_table_size: int = 19
    """T: a level holds at most 2**T entries (8..30; 14..24 is usual, 19 is Instant-NGP's)."""
    base_resolution: int = 16
    """Resolution of the coarsest level."""
    max_resolution: int = 2048
    """Resolution of the finest level; sets the growth between levels when per_level_scale is None."""
    per_level_scale: float | None = None
    """Growth factor b between levels; None derives it from max_resolution as
    b = exp((ln N_max - ln N_min) / (L - 1))."""
    init_scale: float = 1e-4
    """Table entries start uniform in [-init_scale, init_scale]."""

    def check(self) -> None:
        positive(self, "n_levels", "features_per_level", "base_resolution", "max_resolution")
        require(self, "log2_table_size", isinstance(self.log2_table_size, int) and 8 <= self.log2_table_size <= 30,
                "must be an integer in 8..30 (14..24 is usual, 19 is Instant-NGP's)")  # fmt: skip
        optional_positive(self, "per_level_scale")
        non_negative(self, "init_scale")

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
    gx, gy, gz = (1 - fraction).unbind(-1)
    # The (y, x) face once, then both z layers: a third of the work of the full outer product.
    face = torch.stack([gy * gx, gy * fx, fy * gx, fy * fx], -1)
    return torch.cat([gz[..., None] * face, fz[..., None] * face], -1)


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


@torch.no_grad()
def resample_grid(encoding, old_aabb: torch.Tensor, new_aabb: torch.Tensor) -> None:
    """Re-express a pure-torch hash grid defined on ``old_aabb`` on ``new_aabb``, in place.

    Every node of a dense level takes the old level's (trilinear) value at the node's world position;
    hashed levels cannot be resampled node by node and restart at the initial small random values.
    """
    table = encoding.table
    new_table = torch.empty_like(table).uniform_(-encoding.config.init_scale, encoding.config.init_scale)
    features = encoding.config.features_per_level
    for level_index, level in enumerate(encoding.levels):
        if not level.dense:
            continue
        r = level.resolution
        axis = torch.arange(r, device=table.device, dtype=torch.float32)
        nodes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).flip(-1).reshape(-1, 3)  # x fastest
        unit = (nodes - 0.5) / level.scale  # where the encoding puts node i: x * scale + 0.5 = i
        world = new_aabb[0] + unit * (new_aabb[1] - new_aabb[0])
        old_unit = (world - old_aabb[0]) / (old_aabb[1] - old_aabb[0])
        values = []
        for start in range(0, old_unit.shape[0], 262144):
            index, weights = encoding.corner_indices(old_unit[start : start + 262144])
            rows = table.index_select(0, index[:, level_index].reshape(-1)).view(-1, 8, features)
            values.append((rows * weights[:, level_index, :, None]).sum(1))
        new_table[level.offset : level.offset + r**3] = torch.cat(values)
    table.copy_(new_table)

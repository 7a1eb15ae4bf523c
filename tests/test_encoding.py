"""Encodings: nerf-pytorch frequencies, SH basis, hash grid and tri-plane against independent references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnipose.core.errors import OmniposeError
from omnipose.nerf import (
    HashGridConfig,
    HashGridEncoding,
    PositionalEncoding,
    SphericalHarmonicsEncoding,
    TriPlaneConfig,
    TriPlaneEncoding,
    grid_levels,
    interpolate_rows,
    make_grid_encoding,
    tcnn_available,
)


# ----------------------------------------------------------------------------- positional encoding
def test_positional_encoding_follows_nerf_pytorch_order():
    x = torch.randn(7, 3)
    encoding = PositionalEncoding(10)
    out = encoding(x)
    assert encoding.n_output_dims == 63 and out.shape == (7, 63)
    assert PositionalEncoding(4).n_output_dims == 27
    # nerf-pytorch: [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ...], 3 channels each.
    assert torch.equal(out[:, :3], x)
    for k in range(10):
        block = out[:, 3 + 6 * k : 9 + 6 * k]
        torch.testing.assert_close(block[:, :3], torch.sin(x * 2.0**k))
        torch.testing.assert_close(block[:, 3:], torch.cos(x * 2.0**k))


def test_spherical_harmonics_are_orthonormal():
    # Fibonacci sphere: a near-uniform quadrature of the unit sphere.
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z**2).sqrt()
    directions = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    basis = SphericalHarmonicsEncoding(4)(directions)
    assert basis.shape == (n, 16)
    gram = 4 * math.pi * basis.T @ basis / n
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)


# ----------------------------------------------------------------------------- hash grid
def reference_hash_encoding(x: np.ndarray, table: np.ndarray, config: HashGridConfig) -> np.ndarray:
    """Point-by-point hash encoding written from tiny-cuda-nn's definition (float32 arithmetic)."""
    out = np.zeros((x.shape[0], config.n_levels * config.features_per_level), dtype=np.float64)
    offset = 0
    for level in range(config.n_levels):
        scale = np.float32(2.0 ** (level * math.log2(config.growth)) * config.base_resolution - 1.0)
        resolution = int(math.ceil(scale)) + 1
        size = min(-(-(resolution**3) // 8) * 8, 2**config.log2_table_size)
        dense = resolution**3 <= size
        for p in range(x.shape[0]):
            position = x[p].astype(np.float32) * scale + np.float32(0.5)
            cell = np.floor(position).astype(np.int64)
            fraction = position - cell
            feature = np.zeros(config.features_per_level)
            for corner in range(8):
                bits = [(corner >> d) & 1 for d in range(3)]
                c = [int(cell[d]) + bits[d] for d in range(3)]
                weight = np.prod([fraction[d] if bits[d] else 1 - fraction[d] for d in range(3)])
                if dense:
                    index = (c[0] + c[1] * resolution + c[2] * resolution * resolution) % size
                else:
                    index = ((c[0] * 1) ^ (c[1] * 2654435761) ^ (c[2] * 805459861)) & 0xFFFFFFFF
                    index %= size
                feature += weight * table[offset + index]
            out[p, level * config.features_per_level : (level + 1) * config.features_per_level] = feature
        offset += size
    return out


def test_grid_levels_follow_tcnn_layout():
    config = HashGridConfig(n_levels=3, features_per_level=2, log2_table_size=12, base_resolution=8, per_level_scale=2.0)
    levels = grid_levels(config)
    # scales 7, 15, 31 -> resolutions 8, 16, 32; entries 512, 4096 (= 2^12, still dense), then hashed.
    assert [lv.resolution for lv in levels] == [8, 16, 32]
    assert [lv.size for lv in levels] == [512, 4096, 4096]
    assert [lv.dense for lv in levels] == [True, True, False]
    assert [lv.offset for lv in levels] == [0, 512, 4608]


def test_hash_grid_matches_pointwise_reference():
    torch.manual_seed(0)
    config = HashGridConfig(n_levels=5, features_per_level=2, log2_table_size=10, base_resolution=4, max_resolution=40, init_scale=1.0)
    encoding = HashGridEncoding(config)
    assert any(lv.dense for lv in encoding.levels) and any(not lv.dense for lv in encoding.levels)
    x = torch.cat([torch.rand(40, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5]])])
    expected = reference_hash_encoding(x.numpy(), encoding.table.detach().numpy().astype(np.float64), config)
    out = encoding(x)
    assert out.shape == (43, 10)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_hash_grid_gradients():
    torch.manual_seed(1)
    config = HashGridConfig(n_levels=3, features_per_level=2, log2_table_size=8, base_resolution=3, max_resolution=12, init_scale=1.0)
    encoding = HashGridEncoding(config).double()
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    table = encoding.table

    def run(table_, x_):
        index, weights = encoding.corner_indices(x_)
        return interpolate_rows(table_, index, weights).reshape(x_.shape[0], -1)

    assert torch.autograd.gradcheck(run, (table, x), eps=1e-6, atol=1e-6)
    # The in-place training path accumulates exactly the autograd gradient into table.grad.
    reference = torch.autograd.grad(run(table, x.detach()).pow(2).sum(), table)[0]
    encoding.accumulate_in_place = True
    encoding.train()
    encoding.table.grad = None
    for _ in range(2):
        encoding(x.detach()).pow(2).sum().backward()
    torch.testing.assert_close(encoding.table.grad, 2 * reference)


def test_dense_levels_index_a_plain_grid():
    # A single level that fits the table is a plain trilinear grid: compare with grid_sample.
    config = HashGridConfig(n_levels=1, features_per_level=4, log2_table_size=14, base_resolution=9, max_resolution=9, init_scale=1.0)
    encoding = HashGridEncoding(config)
    level = encoding.levels[0]
    assert level.dense and level.resolution == 9
    r = level.resolution
    x = torch.rand(100, 3) * 0.85 + 0.05  # stays inside the lattice: x * 8 + 0.5 < 8
    volume = encoding.table.detach()[: r**3].reshape(r, r, r, 4).permute(3, 0, 1, 2)[None]  # (1, F, z, y, x)
    # Lattice node i sits at grid coordinate i and the encoding puts x at x * scale + 0.5.
    grid = ((x * level.scale + 0.5) / (r - 1) * 2 - 1).view(1, 1, 1, -1, 3)
    expected = F.grid_sample(volume, grid, mode="bilinear", align_corners=True).view(4, -1).T
    torch.testing.assert_close(encoding(x), expected, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- tri-plane
def test_triplane_matches_grid_sample_product():
    torch.manual_seed(2)
    config = TriPlaneConfig(resolutions=(5, 9), features=3)
    encoding = TriPlaneEncoding(config)
    x = torch.rand(50, 3)
    out = encoding(x)
    assert out.shape == (50, 6)
    expected = []
    for r, offset in zip(config.resolutions, encoding.offsets):
        planes = encoding.table.detach()[offset : offset + 3 * r * r].reshape(3, r, r, 3).permute(0, 3, 1, 2)  # (3, F, v, u)
        product = torch.ones(50, 3)
        for p, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):
            uv = torch.stack([x[:, a], x[:, b]], -1) * 2 - 1
            sample = F.grid_sample(planes[p : p + 1], uv.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
            product = product * sample.view(3, -1).T
        expected.append(product)
    torch.testing.assert_close(out, torch.cat(expected, -1), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- backends
def test_tcnn_backend_needs_cuda():
    if tcnn_available():
        pytest.skip("tinycudann is usable here; the CPU-only error path cannot be exercised")
    with pytest.raises(OmniposeError, match="tinycudann"):
        make_grid_encoding(HashGridConfig(), backend="tcnn")
    assert isinstance(make_grid_encoding(HashGridConfig(n_levels=2, log2_table_size=12)), HashGridEncoding)


@pytest.mark.skipif(not tcnn_available(), reason="needs CUDA and tinycudann")
def test_tcnn_matches_torch_backend():
    from omnipose.nerf import TcnnHashGridEncoding

    config = HashGridConfig(n_levels=8, features_per_level=2, log2_table_size=15, base_resolution=16, max_resolution=512, init_scale=1.0)
    reference = HashGridEncoding(config).cuda()
    fast = TcnnHashGridEncoding(config).cuda()
    fast.load_table(reference.table.detach())
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(fast(x), reference(x), atol=1e-4, rtol=1e-3)
    # Same table gradient.
    fast(x).pow(2).sum().backward()
    reference(x).pow(2).sum().backward()
    torch.testing.assert_close(fast.params.grad.view_as(reference.table), reference.table.grad, atol=1e-4, rtol=1e-3)
    # Checkpoints move between backends.
    again = HashGridEncoding(config).cuda()
    again.load_state_dict(fast.state_dict())
    torch.testing.assert_close(again.table, reference.table)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "config_class, field, value",
    [
        (HashGridConfig, "n_levels", 0),
        (HashGridConfig, "features_per_level", -2),
        (HashGridConfig, "log2_table_size", 40),
        (HashGridConfig, "base_resolution", float("nan")),
        (HashGridConfig, "per_level_scale", 0.0),
        (HashGridConfig, "init_scale", -1e-4),
        (TriPlaneConfig, "resolutions", ()),
        (TriPlaneConfig, "resolutions", (64, 1)),
        (TriPlaneConfig, "features", 0),
        (TriPlaneConfig, "init_high", 0.05),
    ],
)
def test_encoding_configs_refuse_nonsense(config_class, field, value):
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{config_class.__name__}.{field}"):
        config_class(**{field: value})


def test_encoding_configs_round_trip_through_dicts():
    grid = HashGridConfig(n_levels=3, per_level_scale=1.5)
    assert HashGridConfig.from_dict(grid.to_dict()) == grid
    planes = TriPlaneConfig(resolutions=(8, 16), features=4)
    assert planes.to_dict()["resolutions"] == [8, 16]
    assert TriPlaneConfig.from_dict(planes.to_dict()) == planes

"""Fields: the NGP field, and nerf-pytorch / PAD checkpoints loaded and rendered like nerf-pytorch."""
import math
from dataclasses import replace

import pytest
import torch

from omnipose.core.errors import CheckpointError, OmniposeError
from omnipose.core.geometry import look_at, make_intrinsics
from omnipose.nerf import HashGridConfig, NGPField, NGPFieldConfig, VanillaNeRFModel, load_checkpoint, truncated_exp

SMALL_GRID = HashGridConfig(n_levels=4, features_per_level=2, log2_table_size=12, base_resolution=4, max_resolution=32)


def test_ngp_field_outputs_and_gradients():
    torch.manual_seed(0)
    field = NGPField(NGPFieldConfig(grid=SMALL_GRID, encoding_backend="torch"), aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    x = torch.rand(64, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    sigma, rgb = field(x, d)
    assert sigma.shape == (64,) and rgb.shape == (64, 3)
    assert (sigma > 0).all() and ((rgb >= 0) & (rgb <= 1)).all()
    # Points leave the box through its faces, not by wrapping around the table.
    outside = field.density(torch.tensor([[5.0, 0.0, 0.0]]))
    torch.testing.assert_close(outside, field.density(torch.tensor([[1.0, 0.0, 0.0]])))
    (sigma.sum() + rgb.sum()).backward()
    assert field.encoding.table.grad is not None and field.encoding.table.grad.abs().sum() > 0
    assert all(p.grad is not None for p in field.network_parameters())


def test_a_reflecting_field_colours_by_the_view_direction_mirrored_about_its_density_gradient():
    """``NGPFieldConfig.reflection``: normals are the density's gradient (against central differences),
    colour is the plain field's colour of the mirrored direction, and the normals' own pass leaves the
    hash grid's in-place gradient alone (training sees the colour loss's gradient only)."""
    torch.manual_seed(0)
    config = NGPFieldConfig(grid=replace(SMALL_GRID, init_scale=1.0), encoding_backend="torch", reflection=True)
    field = NGPField(config, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])).double().train()
    x = (torch.rand(32, 3, dtype=torch.float64) * 1.6 - 0.8)
    d = torch.nn.functional.normalize(torch.randn(32, 3, dtype=torch.float64), dim=-1)

    def logit(points):
        return field.density_net(field.encoding(field.normalize(points)))[:, 0]

    h, eye = 1e-8, torch.eye(3, dtype=torch.float64)  # narrower than the gap to any kink of these points
    with torch.no_grad():
        gradient = torch.stack([(logit(x + h * e) - logit(x - h * e)) / (2 * h) for e in eye], -1)
        normals = field.surface_normals(x)
    torch.testing.assert_close(normals, -torch.nn.functional.normalize(gradient, dim=-1), atol=1e-6, rtol=0)
    assert field.encoding.table.grad is None

    mirrored = d - 2 * (d * normals).sum(-1, keepdim=True) * normals
    sigma, features = field.density(x, with_features=True)
    field.color(features, d, x).sum().backward()
    reflected_grad = field.encoding.table.grad.clone()
    field.zero_grad(set_to_none=True)
    field.config.reflection = False
    sigma, features = field.density(x, with_features=True)
    plain = field.color(features, mirrored)
    plain.sum().backward()
    torch.testing.assert_close(reflected_grad, field.encoding.table.grad)
    field.config.reflection = True
    torch.testing.assert_close(field.color(features, d, x), plain)
    with pytest.raises(OmniposeError, match="needs the points"):
        field.color(features, d)


def test_truncated_exp_gradient_is_clamped():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    truncated_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, math.exp(15.0)]))


# ----------------------------------------------------------------------------- nerf-pytorch checkpoints
def nerf_pytorch_state(generator: torch.Generator, scale: float = 0.15) -> dict:
    """A state dict with nerf-pytorch's NeRF names and shapes (D=8, W=256, skips=[4], use_viewdirs)."""

    def linear(out_features, in_features):
        return {
            "weight": torch.randn(out_features, in_features, generator=generator) * scale,
            "bias": torch.randn(out_features, generator=generator) * scale,
        }

    layers = {f"pts_linears.{i}": linear(256, 63 if i == 0 else (256 + 63 if i == 5 else 256)) for i in range(8)}
    layers["views_linears.0"] = linear(128, 256 + 27)
    layers["feature_linear"] = linear(256, 256)
    layers["alpha_linear"] = linear(1, 256)
    layers["rgb_linear"] = linear(3, 128)
    return {f"{name}.{kind}": value for name, params in layers.items() for kind, value in params.items()}


def reference_render(state_coarse: dict, state_fine: dict, rays_o, rays_d, near=2.0, far=6.0, n=64, n_fine=64):
    """nerf-pytorch's render_rays (perturb=0, white background) written out step by step for a few rays.

    rays_d are nerf-pytorch's directions (camera z = -1), not unit.
    """

    def embed(x, frequencies):
        parts = [x]
        for k in range(frequencies):
            parts += [torch.sin(x * 2.0**k), torch.cos(x * 2.0**k)]
        return torch.cat(parts, -1)

    def network(state, points, views):
        h = points
        for i in range(8):
            h = torch.relu(h @ state[f"pts_linears.{i}.weight"].T + state[f"pts_linears.{i}.bias"])
            if i == 4:
                h = torch.cat([points, h], -1)
        alpha = h @ state["alpha_linear.weight"].T + state["alpha_linear.bias"]
        feature = h @ state["feature_linear.weight"].T + state["feature_linear.bias"]
        h = torch.relu(torch.cat([feature, views], -1) @ state["views_linears.0.weight"].T + state["views_linears.0.bias"])
        return torch.cat([h @ state["rgb_linear.weight"].T + state["rgb_linear.bias"], alpha], -1)

    results = []
    for o, d in zip(rays_o, rays_d):
        view = embed((d / d.norm())[None], 4)

        def shade(state, z):
            raw = network(state, embed(o[None] + d[None] * z[:, None], 10), view.expand(len(z), -1))
            dists = torch.cat([z[1:] - z[:-1], torch.tensor([1e10])]) * d.norm()
            alpha = 1 - torch.exp(-torch.relu(raw[:, 3]) * dists)
            weights, survive = [], 1.0
            for a in alpha:
                weights.append(a * survive)
                survive = survive * (1 - a + 1e-10)
            weights = torch.stack(weights)
            rgb = (weights[:, None] * torch.sigmoid(raw[:, :3])).sum(0) + (1 - weights.sum())
            return rgb, weights

        z = torch.linspace(near, far, n)
        _, weights = shade(state_coarse, z)
        # Deterministic inverse-CDF sampling of the coarse weights (nerf-pytorch's sample_pdf, det=True).
        bins = 0.5 * (z[1:] + z[:-1])
        w = weights[1:-1] + 1e-5
        cdf = torch.cat([torch.zeros(1), torch.cumsum(w / w.sum(), 0)])
        extra = []
        for u in torch.linspace(0, 1, n_fine):
            above = int((cdf <= u).sum())  # first index with cdf > u
            below = max(above - 1, 0)
            above = min(above, len(cdf) - 1)
            span = cdf[above] - cdf[below]
            span = span if span >= 1e-5 else torch.tensor(1.0)
            extra.append(bins[below] + (u - cdf[below]) / span * (bins[above] - bins[below]))
        z_all, _ = torch.sort(torch.cat([z, torch.stack(extra)]))
        rgb, _ = shade(state_fine, z_all)
        results.append(rgb)
    return torch.stack(results)


@pytest.fixture
def nerf_tar(tmp_path):
    generator = torch.Generator().manual_seed(0)
    coarse, fine = nerf_pytorch_state(generator), nerf_pytorch_state(generator)
    path = tmp_path / "ckpts" / "LEGO-3D" / "01Gorilla.tar"
    path.parent.mkdir(parents=True)
    torch.save({"global_step": 200000, "network_fn_state_dict": coarse, "network_fine_state_dict": fine,
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)  # fmt: skip
    return path, coarse, fine


def test_nerf_pytorch_checkpoint_renders_like_nerf_pytorch(nerf_tar):
    path, coarse, fine = nerf_tar
    model, info = load_checkpoint(path, device="cpu", field_type="nerf")
    assert isinstance(model, VanillaNeRFModel)
    assert (info.dataset, info.class_name, info.field_type, info.step) == ("LEGO-3D", "01Gorilla", "nerf", 200000)
    # Rays of a camera 4 units away, as nerf-pytorch builds them: pixel (i, j), no half-pixel offset.
    c2w = look_at(torch.tensor([0.0, -4.0, 1.0]), torch.zeros(3))
    K = make_intrinsics(50.0, 50.0, 20.0, 20.0)
    pixels_nerf = torch.tensor([[20.0, 20.0], [3.0, 31.0], [37.0, 5.0]])
    directions = torch.stack([(pixels_nerf[:, 0] - 20) / 50, -(pixels_nerf[:, 1] - 20) / 50, -torch.ones(3)], -1)
    rays_d = directions @ c2w[:3, :3].T
    rays_o = c2w[:3, 3].expand_as(rays_d)
    expected = reference_render(coarse, fine, rays_o, rays_d)
    with torch.no_grad():
        out = model.render_pixels(c2w, K, pixels_nerf + 0.5)  # our pixel centres
    torch.testing.assert_close(out["rgb"], expected, atol=2e-4, rtol=1e-3)
    assert ((out["opacity"] >= 0) & (out["opacity"] <= 1 + 1e-5)).all()
    assert not torch.allclose(expected, torch.ones_like(expected), atol=1e-2), "the test network should not be empty"


def test_nerf_checkpoint_errors(tmp_path, nerf_tar):
    path, coarse, fine = nerf_tar
    with pytest.raises(CheckpointError, match="dataset 'LEGO-3D', not 'MAD-Sim'"):
        load_checkpoint(path, dataset="MAD-Sim")
    with pytest.raises(CheckpointError, match="field type 'nerf', not 'ngp'"):
        load_checkpoint(path, field_type="ngp")
    missing = dict(coarse)
    del missing["alpha_linear.weight"]
    torch.save({"global_step": 1, "network_fn_state_dict": missing}, tmp_path / "missing.tar")
    with pytest.raises(CheckpointError, match="alpha_linear"):
        load_checkpoint(tmp_path / "missing.tar")
    misshaped = dict(coarse)
    misshaped["rgb_linear.weight"] = torch.zeros(3, 64)
    torch.save({"global_step": 1, "network_fn_state_dict": misshaped}, tmp_path / "misshaped.tar")
    with pytest.raises(CheckpointError, match="rgb_linear.weight"):
        load_checkpoint(tmp_path / "misshaped.tar")


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "values, field",
    [
        ({"encoding": "voxels"}, "encoding"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"density_layers": -1}, "density_layers"),
        ({"sh_degree": 5}, "sh_degree"),
        ({"density_bias": float("nan")}, "density_bias"),
        ({"encoding_backend": "cuda"}, "encoding_backend"),
        ({"grid": {"n_levels": 2}}, "grid"),
    ],
)
def test_field_config_refuses_nonsense(values, field):
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"NGPFieldConfig.{field}"):
        NGPFieldConfig(**values)


def test_nerf_mlp_config_refuses_nonsense():
    from omnipose.core.errors import ConfigError
    from omnipose.nerf import NeRFMLPConfig

    with pytest.raises(ConfigError, match="NeRFMLPConfig.width"):
        NeRFMLPConfig(width=0)
    with pytest.raises(ConfigError, match="NeRFMLPConfig.skips"):
        NeRFMLPConfig(depth=4, skips=(4,))


def test_field_config_reads_nested_dicts():
    config = NGPFieldConfig(encoding="triplane", grid=SMALL_GRID, sh_degree=4)
    again = NGPFieldConfig.from_dict(config.to_dict())
    assert again == config and isinstance(again.grid, HashGridConfig) and again.triplane.resolutions == (64, 128, 256)

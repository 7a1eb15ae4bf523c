"""Rendering: scene bounds, occupancy grid, compositing, images, and gradients w.r.t. the camera pose."""
import json

import numpy as np
import pytest
import torch

from omnipose.core.geometry import apply_twist, look_at, make_intrinsics, project
from omnipose.core.image import read_image_rgba, resize_image
from omnipose.data import load_transforms
from omnipose.nerf import (
    HashGridConfig,
    NGPField,
    NGPFieldConfig,
    RadianceModel,
    RenderConfig,
    composite,
    composite_samples,
    distortion,
    ray_aabb_intersect,
    resolve_aabb,
)


class SphereField(torch.nn.Module):
    """Analytic field: a solid sphere of one colour (features are the positions)."""

    field_type = "sphere"

    def __init__(self, radius=0.5, density=200.0, color=(0.2, 0.4, 0.6)):
        super().__init__()
        self.radius, self.inside = radius, density
        self.register_buffer("rgb", torch.tensor(color))

    def density(self, x, with_features=False):
        sigma = torch.where(x.norm(dim=-1) < self.radius, self.inside, 0.0).to(x.dtype)
        return (sigma, x) if with_features else sigma

    def color(self, features, directions):
        return self.rgb.to(features.dtype).expand(features.shape[0], 3)

    def forward(self, x, directions):
        sigma, features = self.density(x, True)
        return sigma, self.color(features, directions)


class BlobField(SphereField):
    """Smooth analytic field: a Gaussian density blob whose colour varies with position."""

    field_type = "blob"

    def __init__(self, peak=8.0):
        super().__init__()
        self.peak = peak

    def density(self, x, with_features=False):
        sigma = self.peak * torch.exp(-((x - torch.tensor([0.1, -0.05, 0.0], dtype=x.dtype)) ** 2).sum(-1) / (2 * 0.3**2))
        return (sigma, x) if with_features else sigma

    def color(self, features, directions):
        return torch.sigmoid(features @ torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0], [-1.0, 0.4, 1.0]], dtype=features.dtype))


def camera(distance=3.0):
    c2w = look_at(torch.tensor([0.3, -distance, 0.4]), torch.zeros(3))
    return c2w, make_intrinsics(40.0, 40.0, 16.0, 16.0)


# ----------------------------------------------------------------------------- bounds
def test_ray_aabb_intersection():
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    rays_o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    t_near, t_far = ray_aabb_intersect(rays_o, rays_d, box)
    torch.testing.assert_close(t_near[:2], torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(t_far[:2], torch.tensor([4.0, 1.0]))
    assert t_far[2] <= t_near[2]  # misses


def test_scene_box_from_lego_cameras_holds_the_object(lego_dir):
    """The frustum box must contain lego's visual hull, carved independently from the alpha masks."""
    views = load_transforms(lego_dir / "transforms_train.json", size=50, progress=False)
    box, source = resolve_aabb(None, views.c2w, views.K, views.width, views.height)
    assert source == "frustums"
    assert (box[0] > -2.5).all() and (box[1] < 2.5).all(), box
    frames = json.loads((lego_dir / "transforms_train.json").read_text())["frames"][::5]
    axis = torch.linspace(-2.0, 2.0, 48)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    hull = torch.ones(points.shape[0], dtype=torch.bool)
    for frame in frames:
        alpha = resize_image(read_image_rgba(lego_dir / (frame["file_path"][2:] + ".png")), (50, 50))[..., 3]
        c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float32)
        pixels, depth = project(points, c2w, views.K)
        u, v = pixels[:, 0].long().clamp(0, 49), pixels[:, 1].long().clamp(0, 49)
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < 50) & (pixels[:, 1] >= 0) & (pixels[:, 1] < 50) & (depth > 0)
        hull &= inside & torch.from_numpy(alpha)[v, u].gt(0.5)
    assert hull.sum() > 50
    carved = points[hull]
    assert (carved.min(0).values >= box[0]).all() and (carved.max(0).values <= box[1]).all(), (carved.min(0), carved.max(0), box)


def test_given_box_is_checked():
    box, source = resolve_aabb([[-1, -2, -3], [1, 2, 3]])
    assert source == "given" and box.shape == (2, 3)
    with pytest.raises(Exception, match="empty"):
        resolve_aabb([[1, 0, 0], [0, 1, 1]])


# ----------------------------------------------------------------------------- compositing
def test_composite_two_samples_by_hand():
    sigma = torch.tensor([[1.0, 2.0]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    t = torch.tensor([[1.0, 2.0]])
    out = composite(sigma, rgb, t, 0.5, torch.tensor([1.0, 1.0, 1.0]))
    a1, a2 = 1 - np.exp(-0.5), 1 - np.exp(-1.0)
    w1, w2 = a1, (1 - a1) * a2
    expected_rgb = torch.tensor([[w1 + (1 - w1 - w2), w2 + (1 - w1 - w2), 1 - w1 - w2]], dtype=torch.float32)
    torch.testing.assert_close(out["rgb"], expected_rgb)
    torch.testing.assert_close(out["opacity"], torch.tensor([w1 + w2], dtype=torch.float32))
    torch.testing.assert_close(out["depth"], torch.tensor([(w1 * 1 + w2 * 2) / (w1 + w2)], dtype=torch.float32))


def test_composite_of_the_samples_is_the_padded_composite():
    """The samples rays have, composited alone, give what the padded layout gives with density 0 at
    the absent steps: colour, depth, opacity and the gradients of each."""
    g = torch.Generator().manual_seed(0)
    rays, steps = 7, 11
    present = torch.rand(rays, steps, generator=g) < 0.5
    present[3] = False  # a ray with no sample at all
    t = torch.linspace(0.5, 3.0, steps).expand(rays, steps)
    row, step = present.nonzero(as_tuple=True)
    sigma = (5 * torch.rand(row.numel(), generator=g, dtype=torch.float64)).requires_grad_(True)
    rgb = torch.rand(row.numel(), 3, generator=g, dtype=torch.float64).requires_grad_(True)
    background = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    packed = composite_samples(sigma, rgb, t[row, step].double(), row, step, rays, steps, 0.25, background)
    padded = composite(torch.zeros(rays, steps, dtype=torch.float64).index_put((row, step), sigma),
                       torch.zeros(rays, steps, 3, dtype=torch.float64).index_put((row, step), rgb), t.double(), 0.25,
                       background)  # fmt: skip
    for name in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(packed[name], padded[name])
    weights = torch.rand(3, generator=g, dtype=torch.float64)

    def loss(out):
        return (out["rgb"] * weights).sum() + 0.3 * out["depth"].sum() + 0.7 * out["opacity"].sum()

    for a, b in zip(torch.autograd.grad(loss(packed), (sigma, rgb)), torch.autograd.grad(loss(padded), (sigma, rgb))):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(packed["rgb"][3], background)
    assert float(packed["opacity"][3].detach()) == 0.0 and float(packed["depth"][3].detach()) == 0.0


def test_distortion_is_the_sum_over_pairs_of_samples():
    """Mip-NeRF 360's distortion, from running sums, against its definition written out pair by pair;
    and its gradient against finite differences."""
    g = torch.Generator().manual_seed(1)
    rays, steps, dt = 6, 13, 0.1
    present = torch.rand(rays, steps, generator=g) < 0.6
    row, step = present.nonzero(as_tuple=True)
    t = 0.7 + step.double() * dt
    weights = torch.rand(row.numel(), generator=g, dtype=torch.float64).requires_grad_(True)
    fast = distortion(weights, t, row, step, rays, steps, dt)
    for r in range(rays):
        w, s = weights[row == r], t[row == r]
        by_pairs = (w[:, None] * w[None] * (s[:, None] - s[None]).abs()).sum() + dt / 3 * (w**2).sum()
        torch.testing.assert_close(fast[r], by_pairs)
    assert torch.autograd.gradcheck(lambda w: distortion(w, t, row, step, rays, steps, dt), (weights,))


def test_a_solid_surface_has_little_distortion_and_fog_much():
    """The model's distortion per ray: a solid sphere stops the ray within a step or two, a faint blob
    spreads its weight along the whole chord."""
    solid = sphere_model(occupancy_resolution=32, steps_per_diagonal=512)
    fog = RadianceModel(BlobField(peak=4.0), aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                        config=RenderConfig(occupancy_resolution=32, steps_per_diagonal=512)).eval()  # fmt: skip
    rays_o = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 1.5]])
    rays_d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    surface = solid.render_rays(rays_o, rays_d, with_distortion=True)["distortion"]
    spread = fog.render_rays(rays_o, rays_d, with_distortion=True)["distortion"]
    assert float(surface[1]) == 0.0  # the ray misses the sphere
    assert float(surface[0]) < solid.step_size
    assert float(spread[0]) > 20 * float(surface[0])


# ----------------------------------------------------------------------------- occupancy and marching
def sphere_model(**config):
    model = RadianceModel(SphereField(), aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), config=RenderConfig(**config))
    return model.eval()


def test_occupancy_grid_finds_the_sphere():
    model = sphere_model(occupancy_resolution=32)
    model.update_occupancy(1.0, generator=torch.Generator().manual_seed(0))
    grid = model.occupancy
    assert 0.03 < grid.occupied_fraction < 0.12  # sphere of radius 0.5 in a 2-unit box: 6.5 %
    assert grid.is_occupied(torch.tensor([[0.0, 0.0, 0.0]])).item()
    assert not grid.is_occupied(torch.tensor([[0.9, 0.9, 0.9]])).item()


def test_render_sphere_opacity_depth_color_and_skipping():
    model = sphere_model(occupancy_resolution=32, steps_per_diagonal=512)
    rays_o = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 0.9]])
    rays_d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    full = model.render_rays(rays_o, rays_d)
    model.update_occupancy(1.0, generator=torch.Generator().manual_seed(0))
    skipped = model.render_rays(rays_o, rays_d)
    for out in (full, skipped):
        torch.testing.assert_close(out["opacity"], torch.tensor([1.0, 0.0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out["rgb"][0], torch.tensor([0.2, 0.4, 0.6]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out["rgb"][1], torch.ones(3))  # white background
        assert 2.5 <= float(out["depth"][0]) < 2.5 + 2 * model.step_size  # first step inside, then decaying
    # Empty space is skipped and samples behind the opaque front are dropped.
    assert skipped["samples"] < 10 < full["samples"]


def brute_force_render(model, rays_o, rays_d):
    """Every lattice step in the scene box whose cell is occupied, composited on the padded layout:
    no occupied-bounds clipping, no early termination, no skipped colour."""
    dt = model.step_size
    t_near, t_far = ray_aabb_intersect(rays_o, rays_d, model.aabb)
    first = torch.ceil(t_near.clamp(min=model.config.near) / dt - 0.5)
    count = torch.floor(t_far / dt - 0.5) - first + 1
    steps = torch.arange(int(count.max()), dtype=rays_o.dtype)
    t = (first[:, None] + steps + 0.5) * dt
    points = rays_o[:, None] + rays_d[:, None] * t[..., None]
    keep = (steps < count[:, None]) & model.occupancy.is_occupied(points)
    sigma, features = model.field.density(points.reshape(-1, 3), with_features=True)
    rgb = model.field.color(features, rays_d[:, None].expand_as(points).reshape(-1, 3)).reshape(points.shape)
    out = composite(torch.where(keep, sigma.reshape(keep.shape), 0.0), rgb, t, dt, model.background)
    return {**out, "occupied": int(keep.sum()), "t": t}


def test_marching_only_the_occupied_front_renders_what_every_step_renders():
    """Marching clipped to the box of occupied cells, densities taken front to back until each ray
    turns opaque give the render of every occupied step (up to the early-termination threshold), also
    where a ray crosses nothing occupied; a grid that
    changes (an update, a loaded state) moves the clipping box with it."""
    model = RadianceModel(BlobField(peak=40.0), aabb=torch.tensor([[-1.5] * 3, [1.5] * 3]),
                          config=RenderConfig(occupancy_resolution=32, early_stop=1e-6, color_threshold=0.0)).eval()  # fmt: skip
    assert torch.equal(model.occupancy.occupied_bounds(), model.aabb)  # nothing measured: all may be occupied
    model.update_occupancy(1.0, generator=torch.Generator().manual_seed(0))
    bounds = model.occupancy.occupied_bounds()
    assert (bounds[1] - bounds[0] < model.aabb[1] - model.aabb[0]).all()  # the blob fills part of the box
    c2w, K = camera(3.0)
    pixels = torch.stack(torch.meshgrid(torch.arange(0, 32, 3.0), torch.arange(0, 32, 3.0), indexing="xy"), -1).reshape(-1, 2) + 0.5
    rays_o, rays_d = model.camera_rays(c2w, K, pixels)
    rays_o = torch.cat([rays_o, torch.tensor([[0.0, 1.4, 5.0]])])  # passes beside the blob
    rays_d = torch.cat([rays_d, torch.tensor([[0.0, 0.0, -1.0]])])
    fast, reference = model.render_rays(rays_o, rays_d), brute_force_render(model, rays_o, rays_d)
    assert float(reference["opacity"].max()) > 0.99 and float(reference["opacity"][-1]) == 0.0
    for name in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(fast[name], reference[name], atol=1e-5, rtol=0)
    every_step = torch.ones_like(reference["weights"], dtype=torch.bool).nonzero(as_tuple=True)
    torch.testing.assert_close(model.render_rays(rays_o, rays_d, with_distortion=True)["distortion"],
                               distortion(reference["weights"][every_step], reference["t"][every_step], *every_step,
                                          *reference["weights"].shape, model.step_size), atol=1e-5, rtol=0)  # fmt: skip
    # Steps behind an opaque front were neither evaluated nor rendered.
    assert fast["samples"] <= fast["candidates"] < reference["occupied"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.occupancy.occupied.zero_()
    assert model.occupancy.occupied_bounds() is None
    torch.testing.assert_close(model.render_rays(rays_o, rays_d)["rgb"], model.background.expand(rays_o.shape[0], 3))
    model.load_state_dict(state)
    torch.testing.assert_close(model.occupancy.occupied_bounds(), bounds)


def test_render_image_chunks_and_gradients():
    torch.manual_seed(0)
    field = NGPField(NGPFieldConfig(grid=HashGridConfig(4, 2, 12, 4, 32, init_scale=1.0), encoding_backend="torch", density_bias=1.0))
    model = RadianceModel(field, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), config=RenderConfig(occupancy_resolution=16)).eval()
    c2w, K = camera()
    a = model.render_image(c2w, K, 24, 32, chunk=100)
    b = model.render_image(c2w, K, 24, 32, chunk=10000)
    assert a["rgb"].shape == (24, 32, 3) and a["depth"].shape == (24, 32) and a["opacity"].shape == (24, 32)
    torch.testing.assert_close(a["rgb"], b["rgb"])
    assert not a["rgb"].requires_grad
    assert model.render_image(c2w, K, 4, 4, requires_grad=True)["rgb"].requires_grad
    # Eval mode is deterministic.
    torch.testing.assert_close(model.render_image(c2w, K, 24, 32)["depth"], a["depth"])


# ----------------------------------------------------------------------------- pose gradients
def pose_gradient_check(model, pixels, eps):
    c2w, K = camera()
    c2w, K = c2w.double(), K.double()
    target = torch.rand(pixels.shape[0], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def loss_at(xi):
        out = model.render_pixels(apply_twist(c2w, xi), K, pixels)
        return ((out["rgb"] - target) ** 2).sum()

    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_at(xi), xi)
    numeric = torch.zeros(6, dtype=torch.float64)
    with torch.no_grad():
        for k in range(6):
            step = torch.zeros(6, dtype=torch.float64)
            step[k] = eps
            numeric[k] = (loss_at(step) - loss_at(-step)) / (2 * eps)
    return grad, numeric


def test_pose_gradient_matches_finite_differences_analytic_field():
    box = torch.tensor([[-1.5] * 3, [1.5] * 3])
    model = RadianceModel(BlobField(), aabb=box, config=RenderConfig(steps_per_diagonal=512)).double().eval()
    pixels = torch.tensor([[14.5, 15.5], [18.5, 12.5], [10.5, 20.5], [16.5, 16.5]], dtype=torch.float64)
    grad, numeric = pose_gradient_check(model, pixels, 1e-5)
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, numeric, rtol=1e-4, atol=1e-6)


def test_pose_gradient_matches_finite_differences_ngp_field():
    torch.manual_seed(4)
    config = NGPFieldConfig(grid=HashGridConfig(3, 2, 12, 4, 16, init_scale=1.0), encoding_backend="torch", density_bias=0.0)
    model = RadianceModel(NGPField(config), aabb=torch.tensor([[-1.5] * 3, [1.5] * 3]), config=RenderConfig(steps_per_diagonal=128))
    model = model.double().eval()
    pixels = torch.tensor([[14.5, 15.5], [18.5, 12.5], [10.5, 20.5]], dtype=torch.float64)
    grad, numeric = pose_gradient_check(model, pixels, 1e-6)
    assert grad.abs().max() > 1e-4
    torch.testing.assert_close(grad, numeric, rtol=2e-3, atol=1e-6)


def test_shrinking_the_box_keeps_dense_levels():
    """Resampling a dense grid onto a smaller box reproduces any field trilinear cells can hold exactly:
    a linear function of position."""
    from omnipose.nerf import resample_grid

    config = NGPFieldConfig(grid=HashGridConfig(2, 2, 16, 8, 16), encoding_backend="torch")
    old_box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    field = NGPField(config, aabb=old_box)
    encoding = field.encoding
    coefficients = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.1]])
    with torch.no_grad():
        for level in encoding.levels:
            r = level.resolution
            axis = torch.arange(r, dtype=torch.float32)
            nodes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).flip(-1).reshape(-1, 3)
            world = old_box[0] + (nodes - 0.5) / level.scale * (old_box[1] - old_box[0])
            encoding.table[level.offset : level.offset + r**3] = world @ coefficients
    new_box = torch.tensor([[-0.3, -0.6, 0.1], [0.5, 0.4, 0.8]])
    # Inside the box's inner 90 %: like tiny-cuda-nn, a dense level wraps its last half cell around.
    points = new_box[0] + (0.05 + 0.85 * torch.rand(200, 3)) * (new_box[1] - new_box[0])
    before = encoding(field.normalize(points))
    resample_grid(encoding, old_box, new_box)
    field.aabb.copy_(new_box)
    after = encoding(field.normalize(points))
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after[:, :2], points @ coefficients, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value",
    [("steps_per_diagonal", 0), ("occupancy_resolution", -8), ("alpha_threshold", 1.0), ("alpha_threshold", 0.0),
     ("occupancy_decay", 1.5), ("early_stop", -1e-4), ("near", float("nan")), ("chunk", 0)],
)  # fmt: skip
def test_render_config_refuses_nonsense(field, value):
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"RenderConfig.{field}"):
        RenderConfig(**{field: value})


def test_settings_are_plain_dicts_of_the_configs():
    field = NGPField(NGPFieldConfig(grid=HashGridConfig(2, 2, 12, 4, 8), encoding_backend="torch"))
    model = RadianceModel(field, config=RenderConfig(chunk=512))
    settings = model.settings()
    assert settings["render"] == RenderConfig(chunk=512).to_dict()
    assert NGPFieldConfig.from_dict(settings["field"]) == field.config
    json.dumps(settings)  # JSON-safe

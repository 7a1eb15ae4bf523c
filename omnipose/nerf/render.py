"""Rendering radiance fields: scene bounds, occupancy grid, ray marching, volume rendering.

``RadianceModel`` bundles a field with everything needed to turn rays into pixels: the scene box,
an occupancy grid that lets marching skip empty space, the background colour and the marching
settings. ``VanillaNeRFModel`` renders nerf-pytorch networks with nerf-pytorch's own sampling
(64 stratified + 64 importance samples between near and far) behind the same interface.

Both expose
- ``render_rays(rays_o, rays_d)``: rays (N, 3), unit directions, world frame -> dict of
  'rgb' (N, 3), 'depth' (N,), 'opacity' (N,); differentiable w.r.t. the rays and the field,
  deterministic in eval mode (marching jitter only in training mode);
- ``render_pixels(c2w, K, pixels)``: the same for pixels (N, 2) of a camera, differentiable
  w.r.t. ``c2w`` (what iNeRF needs);
- ``render_image(c2w, K, height, width)``: a full image in chunks of bounded memory.

'depth' is the expected distance of the ray's termination along the unit ray, normalised by the
opacity (0 where nothing is hit). Marching works on a padded (rays, steps) layout: every ray gets
the same number of candidate steps, empty ones cost a few bytes and no network evaluation, and
transmittance is a plain cumulative sum along dim 1, exact for every ray.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from omnipose.core.errors import OmniposeError
from omnipose.core.geometry import generate_rays, pixel_centers
from omnipose.nerf.field import NeRFMLP

DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


# ----------------------------------------------------------------------------- randomness
def _generator_device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def random_uniform(shape: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) float32 of ``shape`` drawn from ``generator`` (on its own device) and put on ``device``.

    A CPU generator keeps CPU runs reproducible; a CUDA generator avoids host-to-device copies.
    """
    return torch.rand(shape, generator=generator, device=_generator_device(generator, device)).to(device)


# ----------------------------------------------------------------------------- scene bounds
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
    from omnipose.core.geometry import invert_pose

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


# ----------------------------------------------------------------------------- occupancy grid
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
            random_cells = torch.randint(0, n, (count,), generator=generator, device=_generator_device(generator, device)).to(device)
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


# ----------------------------------------------------------------------------- compositing
def composite(
    sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: torch.Tensor | float, background: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Alpha-composite samples along rays (emission-absorption model).

    sigma: (R, S) density, 0 at empty steps; rgb: (R, S, 3); t: (R, S) sample distances; dt: step
    lengths, (R, S) or a float; background: (3,). Returns 'rgb' (R, 3), 'depth' (R,),
    'opacity' (R,), 'weights' (R, S).
    """
    optical = sigma * dt
    alpha = 1.0 - torch.exp(-optical)
    # Transmittance before each sample: exp(-sum of the optical depth of the samples in front).
    transmittance = torch.exp(-(torch.cumsum(optical, 1) - optical))
    weights = alpha * transmittance
    opacity = weights.sum(1)
    color = (weights[..., None] * rgb).sum(1) + (1.0 - opacity)[:, None] * background
    depth = (weights * t).sum(1) / opacity.clamp(min=1e-6)
    depth = torch.where(opacity > 1e-6, depth, torch.zeros_like(depth))
    return {"rgb": color, "depth": depth, "opacity": opacity, "weights": weights}


# ----------------------------------------------------------------------------- models
@dataclass
class RenderConfig:
    """How an NGP model marches rays.

    steps_per_diagonal: marching step = box diagonal / this (256 -> ~0.02 for the 3-unit lego box).
    occupancy_resolution: cells per axis of the occupancy grid. alpha_threshold: a cell is empty
    when one step through it would be less opaque than this. early_stop: samples behind
    transmittance below this are dropped (early ray termination); color_threshold: steps whose
    weight is below this get no colour evaluation (their share of the pixel is negligible). chunk: rays per chunk when
    rendering images.
    """

    steps_per_diagonal: int = 256
    occupancy_resolution: int = 64
    alpha_threshold: float = 0.01
    occupancy_decay: float = 0.95
    early_stop: float = 1e-4
    color_threshold: float = 1e-4
    near: float = 0.05
    chunk: int = 8192

    @classmethod
    def from_dict(cls, values: dict) -> "RenderConfig":
        return cls(**values)


class RadianceModel(torch.nn.Module):
    """A field plus what rendering it needs: scene box, occupancy grid, background, step size.

    field: an ``NGPField`` (anything with ``density(x, with_features)`` and ``color(features, d)``).
    aabb: (2, 3) scene box. background: RGB in [0, 1] behind the object (white for MAD/Blender).
    """

    # Where this model's pixel (i, j) ray passes, relative to our pixel centre (i + 0.5, j + 0.5).
    pixel_offset = 0.0

    def __init__(self, field, aabb=None, background=(1.0, 1.0, 1.0), config: RenderConfig | None = None):
        super().__init__()
        self.field = field
        self.config = config or RenderConfig()
        box = torch.as_tensor(DEFAULT_AABB if aabb is None else aabb, dtype=torch.float32)
        self.register_buffer("aabb", box.clone())
        self.register_buffer("background", torch.as_tensor(background, dtype=torch.float32).reshape(3).clone())
        self.occupancy = OccupancyGrid(box, self.config.occupancy_resolution)

    @property
    def field_type(self) -> str:
        return self.field.field_type

    @property
    def device(self) -> torch.device:
        return self.aabb.device

    @property
    def step_size(self) -> float:
        return float((self.aabb[1] - self.aabb[0]).norm()) / self.config.steps_per_diagonal

    # ------------------------------------------------------------------ marching
    def march(
        self, rays_o: torch.Tensor, rays_d: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate steps of every ray inside the box, and which fall in occupied cells.

        Steps sit on a fixed lattice along each ray, t_k = (k + offset) * dt, so that moving the
        camera slides the samples through space smoothly (no jumps when the box entry point moves):
        the render is then differentiable in the pose the way finite differences see it.
        offset is 0.5 in eval mode and random per ray in training mode (jitter).
        rays_o, rays_d: (R, 3). Returns t: (R, S) step distances and mask: (R, S) bool.
        """
        dt = self.step_size
        with torch.no_grad():
            t_near, t_far = ray_aabb_intersect(rays_o, rays_d, self.aabb)
            t_near = t_near.clamp(min=self.config.near)
            if self.training:
                offset = random_uniform((rays_o.shape[0],), generator, rays_o.device).to(rays_o.dtype)
            else:
                offset = torch.full((rays_o.shape[0],), 0.5, device=rays_o.device)
            first = torch.ceil(t_near / dt - offset)
            count = torch.floor(t_far / dt - offset) - first + 1
            n_steps = int(count.max().clamp(min=0)) if count.numel() else 0
            if n_steps == 0:
                empty = rays_o.new_zeros(rays_o.shape[0], 0)
                return empty, empty.bool()
            steps = torch.arange(n_steps, device=rays_o.device, dtype=rays_o.dtype)
            t = (first[:, None] + steps + offset[:, None]) * dt
            mask = steps < count[:, None]
            mask &= self.occupancy.is_occupied_along(rays_o, rays_d, t)
        return t, mask

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Render rays. rays_o, rays_d: (N, 3), unit directions, world frame.

        Returns 'rgb' (N, 3), 'depth' (N,), 'opacity' (N,), and the counts 'candidates' (steps in
        occupied cells, density evaluated without gradient) and 'samples' (steps rendered).
        Gradients reach the field and ``rays_o`` / ``rays_d`` (sample positions are o + t d with
        the step distances t held fixed).
        """
        t, mask = self.march(rays_o, rays_d, generator)
        n_rays, n_steps = t.shape
        dt = self.step_size
        needs_grad = torch.is_grad_enabled() and (
            rays_o.requires_grad or rays_d.requires_grad or any(p.requires_grad for p in self.field.parameters())
        )
        ray_index, step_index = mask.nonzero(as_tuple=True)
        # Pass 1 without gradients: densities of every occupied step give transmittance and weights;
        # steps hidden behind opaque ones (early termination) are dropped before the costly pass,
        # and colour is only evaluated where a step can contribute to the pixel.
        with torch.no_grad():
            points = rays_o[ray_index] + rays_d[ray_index] * t[ray_index, step_index, None]
            if needs_grad:
                sigma = self.field.density(points)
            else:
                sigma, features = self.field.density(points, with_features=True)
            sigma_dense = t.new_zeros(n_rays, n_steps).index_put_((ray_index, step_index), sigma)
            optical = sigma_dense * dt
            transmittance = torch.exp(-(torch.cumsum(optical, 1) - optical))[ray_index, step_index]
            weight = transmittance * (1.0 - torch.exp(-sigma * dt))
            visible = transmittance > self.config.early_stop
            colored = weight[visible] > self.config.color_threshold
        ray_index, step_index = ray_index[visible], step_index[visible]
        if needs_grad:
            # Pass 2 with gradients on the visible steps only.
            points = rays_o[ray_index] + rays_d[ray_index] * t[ray_index, step_index, None]
            sigma, features = self.field.density(points, with_features=True)
        else:
            sigma, features = sigma[visible], features[visible]
        rgb = sigma.new_zeros(sigma.shape[0], 3)
        rgb = rgb.index_put((colored,), self.field.color(features[colored], rays_d[ray_index[colored]]))
        sigma_dense = t.new_zeros(n_rays, n_steps).index_put((ray_index, step_index), sigma)
        rgb_dense = t.new_zeros(n_rays, n_steps, 3).index_put((ray_index, step_index), rgb)
        out = composite(sigma_dense, rgb_dense, t, dt, self.background)
        out.pop("weights")
        out["samples"] = int(ray_index.numel())
        out["candidates"] = int(visible.numel())
        return out

    # ------------------------------------------------------------------ cameras
    def camera_rays(self, c2w: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit world rays of pixels (N, 2) in our convention (centre of pixel i at i + 0.5)."""
        return generate_rays(c2w, K.to(c2w), pixels + self.pixel_offset)

    def render_pixels(self, c2w: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor) -> dict:
        """Render pixels (N, 2) as (u, v) of a camera c2w (4, 4) OpenGL, K (3, 3).

        Differentiable w.r.t. c2w (and the field). Returns the ``render_rays`` dict.
        """
        rays_o, rays_d = self.camera_rays(c2w, K, pixels)
        return self.render_rays(rays_o, rays_d)

    def render_image(
        self, c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, chunk: int | None = None, requires_grad: bool = False
    ) -> dict:
        """Render a full image in chunks of ``chunk`` rays.

        c2w: (4, 4) OpenGL; K: (3, 3). Returns 'rgb' (H, W, 3), 'depth' (H, W), 'opacity' (H, W).
        Without ``requires_grad`` (or with grad disabled) no graph is kept, so memory stays bounded.
        """
        chunk = chunk or self.config.chunk
        c2w = c2w.to(self.device, torch.float32)
        K = K.to(self.device, torch.float32)
        pixels = pixel_centers(height, width, device=self.device)
        keep_graph = requires_grad and torch.is_grad_enabled()
        parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
        with torch.set_grad_enabled(keep_graph):
            for start in range(0, pixels.shape[0], chunk):
                out = self.render_pixels(c2w, K, pixels[start : start + chunk])
                for key in parts:
                    parts[key].append(out[key])
        return {
            "rgb": torch.cat(parts["rgb"]).reshape(height, width, 3),
            "depth": torch.cat(parts["depth"]).reshape(height, width),
            "opacity": torch.cat(parts["opacity"]).reshape(height, width),
        }

    # ------------------------------------------------------------------ training support
    def update_occupancy(self, fraction: float = 1.0, generator: torch.Generator | None = None) -> None:
        """Refresh the occupancy grid from the field's current densities."""
        self.occupancy.update(
            self.field.density, self.step_size, self.config.alpha_threshold, self.config.occupancy_decay, fraction, generator=generator
        )

    @torch.no_grad()
    def shrink_box(self, margin: float = 0.05, min_gain: float = 0.7, generator: torch.Generator | None = None) -> bool:
        """Tighten the scene box around what the occupancy grid has found (DVGO's coarse-to-fine idea).

        A box from camera frustums is several times larger than the object; fitting the grid to
        the object gives it finer cells for the same memory. Dense grid levels are resampled onto the
        new box (their content is kept); hashed levels restart from small random values. Returns
        True when the box changed (only if the new volume is below ``min_gain`` of the old one).
        Only the pure-torch hash-grid encoding supports this; other fields keep their box.
        """
        from omnipose.nerf.encoding import HashGridEncoding

        encoding = getattr(self.field, "encoding", None)
        box = self.occupancy.occupied_box()
        if not isinstance(encoding, HashGridEncoding) or box is None or not bool(self.occupancy.measured):
            return False
        pad = margin * (box[1] - box[0])
        box = torch.stack([torch.maximum(box[0] - pad, self.aabb[0]), torch.minimum(box[1] + pad, self.aabb[1])])
        if float((box[1] - box[0]).prod()) > min_gain * float((self.aabb[1] - self.aabb[0]).prod()):
            return False
        resample_grid(encoding, self.aabb, box)
        self.aabb.copy_(box)
        self.field.aabb.copy_(box)
        self.occupancy.set_box(box)
        self.update_occupancy(1.0, generator=generator)
        return True

    def settings(self) -> dict:
        """What is needed to rebuild this model (JSON-safe)."""
        return {
            "aabb": self.aabb.tolist(),
            "background": self.background.tolist(),
            "render": asdict(self.config),
            "field": _config_to_dict(self.field.config),
        }


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


def _config_to_dict(config) -> dict:
    values = asdict(config)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


# ----------------------------------------------------------------------------- vanilla NeRF
def nerf_raw_to_outputs(raw: torch.Tensor, z: torch.Tensor, direction_norm: torch.Tensor, background: torch.Tensor) -> dict:
    """nerf-pytorch's ``raw2outputs`` (no density noise).

    raw: (R, S, 4) network outputs; z: (R, S) sample parameters along the (camera z = -1) rays;
    direction_norm: (R,) length of those ray directions; background: (3,).
    Distances between samples are scaled to world units, the last one is 1e10;
    alpha = 1 - exp(-relu(sigma) dist); weights use the cumulative product of (1 - alpha + 1e-10).
    Returns 'rgb' (R, 3), 'depth_z' (R,) (sum of weights * z), 'opacity' (R,), 'weights' (R, S).
    """
    gaps = z[:, 1:] - z[:, :-1]
    gaps = torch.cat([gaps, torch.full_like(gaps[:, :1], 1e10)], -1) * direction_norm[:, None]
    rgb = torch.sigmoid(raw[..., :3])
    alpha = 1.0 - torch.exp(-torch.relu(raw[..., 3]) * gaps)
    survive = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * survive
    opacity = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2) + (1.0 - opacity)[:, None] * background
    return {"rgb": color, "depth_z": (weights * z).sum(-1), "opacity": opacity, "weights": weights}


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, deterministic: bool, generator=None) -> torch.Tensor:
    """Inverse-transform samples of the piecewise-constant pdf ``weights`` over ``bins``.

    Same sampling as nerf-pytorch's ``sample_pdf`` (weights + 1e-5, right-sided search, evenly
    spaced u in [0, 1] when deterministic). bins: (R, B + 1) edges; weights: (R, B).
    Returns (R, n_samples).
    """
    weights = weights + 1e-5
    cdf = torch.cumsum(weights / weights.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n_samples, device=bins.device).expand(cdf.shape[0], n_samples).contiguous()
    else:
        u = random_uniform((cdf.shape[0], n_samples), generator, bins.device).to(bins.dtype)
    upper = torch.searchsorted(cdf, u, right=True)
    lower = (upper - 1).clamp(min=0)
    upper = upper.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, lower), cdf.gather(-1, upper)
    bin_lo, bin_hi = bins.gather(-1, lower), bins.gather(-1, upper)
    span = cdf_hi - cdf_lo
    span = torch.where(span < 1e-5, torch.ones_like(span), span)
    return bin_lo + (u - cdf_lo) / span * (bin_hi - bin_lo)


class VanillaNeRFModel(RadianceModel):
    """nerf-pytorch coarse + fine networks rendered exactly as nerf-pytorch renders them.

    nerf-pytorch samples z in [near, far] along directions scaled to camera z = -1; for camera
    pixels (``render_pixels`` / ``render_image``) we rebuild exactly those rays. Its pixel (i, j)
    ray passes through (i, j) in our coordinates, not the centre (i + 0.5, j + 0.5), because
    nerf-pytorch has no half-pixel offset: ``pixel_offset = -0.5`` makes our image (i, j) the same
    ray as nerf-pytorch's (i, j), so renders line up with the images the network was trained on.
    ``render_rays`` with plain unit rays (no ``ray_scale``) samples [near, far] in world distance.
    """

    pixel_offset = -0.5

    def __init__(
        self, coarse: NeRFMLP, fine: NeRFMLP | None = None, near: float = 2.0, far: float = 6.0,
        n_samples: int = 64, n_importance: int = 64, background=(1.0, 1.0, 1.0), chunk: int = 1024,
    ):  # fmt: skip
        super().__init__(coarse, aabb=None, background=background, config=RenderConfig(chunk=chunk))
        self.fine = fine
        self.near, self.far = float(near), float(far)
        self.n_samples, self.n_importance = int(n_samples), int(n_importance)

    @property
    def field_type(self) -> str:
        return "nerf"

    def render_rays(
        self, rays_o: torch.Tensor, rays_d: torch.Tensor, ray_scale: torch.Tensor | None = None, generator=None
    ) -> dict:
        """rays_o, rays_d: (N, 3), unit directions. ray_scale: (N,) optional length of
        nerf-pytorch's camera-z = -1 direction of each ray (then z is depth along the optical axis).
        Returns 'rgb' (N, 3), 'depth' (N,), 'opacity' (N,) of the fine network (coarse if none).
        """
        scale = torch.ones_like(rays_d[:, 0]) if ray_scale is None else ray_scale
        directions = rays_d * scale[:, None]  # nerf-pytorch's rays_d
        n_rays = rays_o.shape[0]
        steps = torch.linspace(0.0, 1.0, self.n_samples, device=rays_o.device)
        z = (self.near * (1.0 - steps) + self.far * steps).expand(n_rays, self.n_samples)
        if self.training:  # stratified jitter, as nerf-pytorch with perturb=1
            mids = 0.5 * (z[:, 1:] + z[:, :-1])
            upper, lower = torch.cat([mids, z[:, -1:]], -1), torch.cat([z[:, :1], mids], -1)
            z = lower + (upper - lower) * random_uniform(tuple(z.shape), generator, z.device).to(z.dtype)
        out = self._evaluate(self.field, rays_o, directions, rays_d, scale, z)
        if self.n_importance > 0:
            mids = 0.5 * (z[:, 1:] + z[:, :-1])
            extra = sample_pdf(mids, out["weights"][:, 1:-1], self.n_importance, not self.training, generator).detach()
            z, _ = torch.sort(torch.cat([z, extra], -1), -1)
            out = self._evaluate(self.fine if self.fine is not None else self.field, rays_o, directions, rays_d, scale, z)
        depth = out["depth_z"] * scale / out["opacity"].clamp(min=1e-6)
        depth = torch.where(out["opacity"] > 1e-6, depth, torch.zeros_like(depth))
        return {"rgb": out["rgb"], "depth": depth, "opacity": out["opacity"], "samples": int(z.numel())}

    def _evaluate(self, network, rays_o, directions, unit_directions, scale, z) -> dict:
        points = rays_o[:, None, :] + directions[:, None, :] * z[..., None]
        views = unit_directions[:, None, :].expand_as(points)
        raw = network(points.reshape(-1, 3), views.reshape(-1, 3)).reshape(z.shape + (-1,))
        return nerf_raw_to_outputs(raw, z, scale, self.background)

    def render_pixels(self, c2w: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor) -> dict:
        rays_o, rays_d = generate_rays(c2w, K.to(c2w), pixels + self.pixel_offset, normalize=False)
        scale = rays_d.norm(dim=-1)
        return self.render_rays(rays_o, rays_d / scale[:, None], ray_scale=scale)

    def update_occupancy(self, *args, **kwargs) -> None:
        raise OmniposeError("a vanilla NeRF model has no occupancy grid; it samples [near, far] on every ray.")

    def settings(self) -> dict:
        return {
            "near": self.near, "far": self.far, "n_samples": self.n_samples, "n_importance": self.n_importance,
            "background": self.background.tolist(), "coarse": _config_to_dict(self.field.config),
            "fine": _config_to_dict(self.fine.config) if self.fine is not None else None,
        }  # fmt: skip

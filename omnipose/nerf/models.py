"""Models: a field plus everything needed to turn rays into pixels.

``RadianceModel`` bundles an NGP field with the scene box, an occupancy grid that lets marching
skip empty space, the background colour and the marching settings. ``VanillaNeRFModel`` renders
nerf-pytorch networks with nerf-pytorch's own sampling (64 stratified + 64 importance samples
between near and far) behind the same interface.

Both expose
- ``render_rays(rays_o, rays_d)``: rays (N, 3), unit directions, world frame -> dict of
  'rgb' (N, 3), 'depth' (N,), 'opacity' (N,); differentiable w.r.t. the rays and the field,
  deterministic in eval mode (marching jitter only in training mode);
- ``render_pixels(c2w, K, pixels)``: the same for pixels (N, 2) of a camera, differentiable
  w.r.t. ``c2w`` (what iNeRF needs);
- ``render_image(c2w, K, height, width)``: a full image in chunks of bounded memory.

'depth' is the expected distance of the ray's termination along the unit ray, normalised by the
opacity (0 where nothing is hit). Marching works on a padded (rays, steps) layout: every ray that
crosses occupied space gets the same number of candidate steps, empty ones cost a few bytes and no
network evaluation, and transmittance is a plain cumulative sum along dim 1, exact for every ray.
Densities are taken front to back only until a ray turns opaque, and colour is composited on the
samples alone (``composite_samples``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from omnipose.core.config import (
    Config,
    fraction,
    non_negative,
    positive,
    require,
    to_dict,
)
from omnipose.core.errors import OmniposeError
from omnipose.core.geometry import generate_rays, pixel_centers
from omnipose.nerf.bounds import DEFAULT_AABB, ray_aabb_intersect
from omnipose.nerf.compositing import composite_samples, distortion, nerf_raw_to_outputs, transmittance_before
from omnipose.nerf.hash_grid import HashGridEncoding, resample_grid
from omnipose.nerf.nerf_mlp import NeRFMLP
from omnipose.nerf.occupancy import OccupancyGrid
from omnipose.nerf.sampling import random_uniform, sample_pdf

FRONT_STEPS = 16
"""Occupied steps per ray whose density is taken first (``RadianceModel._densities_in_front``): each
further round costs a pass over the ray's steps, so the first one takes enough for a ray through
an opaque surface to turn opaque."""


@dataclass
class RenderConfig(Config):
    """How an NGP model marches rays."""

    steps_per_diagonal: int = 256
    """Marching step = box diagonal / this (256 gives about 0.02 for the 3-unit lego box)."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid."""
    alpha_threshold: float = 0.01
    """A cell is empty when one step through it would be less opaque than this."""
    occupancy_decay: float = 0.95
    """Each occupancy update first multiplies the remembered densities by this (an EMA)."""
    early_stop: float = 1e-4
    """Samples behind transmittance below this are dropped (early ray termination)."""
    color_threshold: float = 1e-4
    """Steps whose weight is below this get no colour evaluation (their share of the pixel is negligible)."""
    near: float = 0.05
    """Marching starts at least this far along each ray."""
    chunk: int = 8192
    """Rays per chunk when rendering images (bounds memory)."""

    def check(self) -> None:
        positive(self, "steps_per_diagonal", "occupancy_resolution", "chunk")
        fraction(self, "alpha_threshold", open_low=True)
        require(self, "alpha_threshold", self.alpha_threshold < 1, "must be below 1 (a step cannot be fully opaque)")
        fraction(self, "occupancy_decay")
        non_negative(self, "early_stop", "color_threshold", "near")


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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate steps of the rays that cross occupied space, and which fall in occupied cells.

        Steps sit on a fixed lattice along each ray, t_k = (k + offset) * dt, so that moving the
        camera slides the samples through space smoothly (no jumps when the box entry point moves):
        the render is then differentiable in the pose the way finite differences see it.
        offset is 0.5 in eval mode and random per ray in training mode (jitter).
        Only the part of a ray inside the box of occupied cells (``OccupancyGrid.occupied_bounds``)
        is laid out: the lattice is the same, and the steps left out are all empty.
        rays_o, rays_d: (R, 3). Returns t: (H, S) step distances, mask: (H, S) bool, and rows: (H,)
        the rays (indices into rays_o) those H rows belong to.
        """
        dt = self.step_size
        with torch.no_grad():
            bounds = self.occupancy.occupied_bounds()
            if bounds is None:  # nothing anywhere
                rows = rays_o.new_zeros(0, dtype=torch.long)
                return rays_o.new_zeros(0, 0), rays_o.new_zeros(0, 0, dtype=torch.bool), rows
            t_near, t_far = ray_aabb_intersect(rays_o, rays_d, bounds)
            t_near = t_near.clamp(min=self.config.near)
            if self.training:
                offset = random_uniform((rays_o.shape[0],), generator, rays_o.device).to(rays_o.dtype)
            else:
                offset = torch.full((rays_o.shape[0],), 0.5, device=rays_o.device)
            first = torch.ceil(t_near / dt - offset)
            count = torch.floor(t_far / dt - offset) - first + 1
            rows = (count > 0).nonzero()[:, 0]
            first, count, offset = first[rows], count[rows], offset[rows]
            n_steps = int(count.max()) if rows.numel() else 0
            steps = torch.arange(n_steps, device=rays_o.device, dtype=rays_o.dtype)
            t = (first[:, None] + steps + offset[:, None]) * dt
            mask = steps < count[:, None]
            mask &= self.occupancy.is_occupied_along(rays_o[rows], rays_d[rows], t)
        return t, mask, rows

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, generator: torch.Generator | None = None,
                    with_distortion: bool = False) -> dict:  # fmt: skip
        """Render rays. rays_o, rays_d: (N, 3), unit directions, world frame.

        Returns 'rgb' (N, 3), 'depth' (N,), 'opacity' (N,), and the counts 'candidates' (occupied
        steps whose density was taken without gradient) and 'samples' (steps rendered); with
        ``with_distortion`` also 'distortion' (N,), ``compositing.distortion`` of each ray's weights.
        Gradients reach the field and ``rays_o`` / ``rays_d`` (sample positions are o + t d with
        the step distances t held fixed).
        """
        t, mask, rows = self.march(rays_o, rays_d, generator)
        n_rows, n_steps = t.shape
        dt = self.step_size
        needs_grad = torch.is_grad_enabled() and (
            rays_o.requires_grad or rays_d.requires_grad or any(p.requires_grad for p in self.field.parameters())
        )
        # Pass 1 without gradients: densities of the occupied steps in front of where each ray turns
        # opaque give transmittance and weights; steps hidden behind opaque ones (early termination)
        # are dropped before the costly pass, and colour is only evaluated where a step can
        # contribute to the pixel.
        with torch.no_grad():
            row_index, step_index, sigma, features = self._densities_in_front(rays_o, rays_d, t, mask, rows, needs_grad)
            ray_index = rows[row_index]
            transmittance = transmittance_before(sigma * dt, row_index, step_index, n_rows, n_steps)
            weight = transmittance * (1.0 - torch.exp(-sigma * dt))
            visible = transmittance > self.config.early_stop
            colored = weight[visible] > self.config.color_threshold
        candidates = int(visible.numel())
        row_index, step_index, ray_index = row_index[visible], step_index[visible], ray_index[visible]
        # Only a field colouring by the reflected direction takes the points; the protocol is color(features, d).
        reflects = getattr(self.field, "reflects", False)
        if needs_grad or reflects:
            points = rays_o[ray_index] + rays_d[ray_index] * t[row_index, step_index, None]
        if needs_grad:  # pass 2 with gradients on the visible steps only
            sigma, features = self.field.density(points, with_features=True)
        else:
            sigma, features = sigma[visible], features[visible]
        rgb = sigma.new_zeros(sigma.shape[0], 3)
        at = (points[colored],) if reflects else ()
        colour = self.field.color(features[colored], rays_d[ray_index[colored]], *at)
        rgb = rgb.index_put((colored,), colour)
        crossing = composite_samples(sigma, rgb, t[row_index, step_index], row_index, step_index, n_rows, n_steps, dt,
                                     self.background)  # fmt: skip
        # Rays that cross no occupied space see the background alone.
        n_rays = rays_o.shape[0]
        empty = rays_o.new_zeros(n_rays)
        out = {
            "rgb": self.background.to(rays_o).expand(n_rays, 3).index_put((rows,), crossing["rgb"]),
            "depth": empty.index_put((rows,), crossing["depth"]),
            "opacity": empty.index_put((rows,), crossing["opacity"]),
            "samples": int(ray_index.numel()),
            "candidates": candidates,
        }
        if with_distortion:
            along = distortion(crossing["weights"], t[row_index, step_index], row_index, step_index, n_rows, n_steps,
                               dt)  # fmt: skip
            out["distortion"] = empty.index_put((rows,), along)
        return out

    def _densities_in_front(
        self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
        density_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Density (and, unless ``density_only``, geometry features) of the occupied steps of ``march``
        up to where each ray's transmittance falls to ``early_stop``, the ray's first
        ``FRONT_STEPS`` occupied steps first, then twice as many of those still clear, and so on.

        A step behind that point is dropped by early termination whatever its density, so it need
        not be evaluated: on an opaque object most occupied steps lie behind its surface.
        Returns row and step indices into t (M,), sigma (M,) and features (M, G) or None.
        """
        dt = self.step_size
        row_index, step_index = mask.nonzero(as_tuple=True)  # row-major: a row's steps in order
        per_row = torch.bincount(row_index, minlength=t.shape[0])
        rank = torch.arange(row_index.numel(), device=t.device) - (torch.cumsum(per_row, 0) - per_row)[row_index]
        clear = per_row > 0
        optical = t.new_zeros(t.shape[0])
        parts = []
        start, width = 0, FRONT_STEPS
        while True:
            take = ((rank >= start) & (rank < start + width) & clear[row_index]).nonzero()[:, 0]
            rows_taken, steps_taken = row_index[take], step_index[take]
            points = rays_o[rows[rows_taken]] + rays_d[rows[rows_taken]] * t[rows_taken, steps_taken, None]
            sigma, features = (self.field.density(points), None) if density_only else self.field.density(points, True)
            parts.append((rows_taken, steps_taken, sigma, features))
            optical.index_add_(0, rows_taken, sigma * dt)
            start, width = start + width, 2 * width
            clear &= (torch.exp(-optical) > self.config.early_stop) & (per_row > start)
            if not bool(clear.any()):
                break
        rows_taken, steps_taken, sigma, features = zip(*parts)
        return (torch.cat(rows_taken), torch.cat(steps_taken), torch.cat(sigma),
                None if density_only else torch.cat(features))  # fmt: skip

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
            "render": to_dict(self.config),
            "field": to_dict(self.field.config),
        }


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
            "background": self.background.tolist(), "coarse": to_dict(self.field.config),
            "fine": to_dict(self.fine.config) if self.fine is not None else None,
        }  # fmt: skip

"""What the pose stages share: rendering the same pixels from several poses, drawing pixels of the
query, and the fixed yardstick hypotheses are ranked by (``PoseScoring``)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from omnipose.core.geometry import generate_rays
from omnipose.core.image import gaussian_blur

RenderRays = Callable[[torch.Tensor, torch.Tensor], dict]

STRUCTURE_BAND = (0.7, 3.0)
"""Gaussian sigmas (pixels) whose difference keeps the structure ``structure_fits`` compares: edges,
studs and printed marks, which stay where they are under other light, without the shading and colour
that light changes."""
SIDES_DIFFER = 0.05
"""Mean colour difference between two renders above which a pixel shows where they differ (``structure_fits``)."""
GREY = (0.299, 0.587, 0.114)
"""Weights of red, green and blue in the grey image ``structure_fits`` compares (ITU-R BT.601 luma)."""


# ----------------------------------------------------------------------------- rendering
def render_pixels(
    render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor, chunk: int = 16384,
) -> dict[str, torch.Tensor]:
    """Render the same pixels from several poses in one batch of rays (one ``render_rays`` call
    per ``chunk`` rays, whatever the number of poses).

    c2w: (P, 4, 4); K: (3, 3); pixels: (N, 2) or (P, N, 2) (u, v), pixel centres at +0.5.
    Returns {'rgb': (P, N, 3), 'depth': (P, N), 'opacity': (P, N)}, differentiable w.r.t. c2w.
    """
    poses = c2w.shape[0]
    K = K.to(c2w.device, c2w.dtype)
    pixel_sets = pixels.to(c2w.device).expand(poses, -1, -1)
    count = pixel_sets.shape[1]
    origins, directions = [], []
    for pose, pix in zip(c2w, pixel_sets):
        o, d = generate_rays(pose, K, pix)
        origins.append(o)
        directions.append(d)
    rays_o, rays_d = torch.cat(origins), torch.cat(directions)
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, rays_o.shape[0], chunk):
        out = render_rays(rays_o[start:start + chunk], rays_d[start:start + chunk])
        for key in ("rgb", "depth", "opacity"):
            outputs.setdefault(key, []).append(out[key])
    result = {key: torch.cat(value) for key, value in outputs.items()}
    result["rgb"] = result["rgb"].reshape(poses, count, 3)
    result["depth"] = result["depth"].reshape(poses, count)
    result["opacity"] = result["opacity"].reshape(poses, count)
    return result


# ----------------------------------------------------------------------------- pixels of the query
def mask_pixels(mask: np.ndarray) -> torch.Tensor:
    """(M, 2) integer (u, v) of the True pixels of a (H, W) mask."""
    v, u = np.nonzero(mask)
    return torch.from_numpy(np.stack([u, v], -1).astype(np.int64))


def sample_pixels(mask_pixels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` integer pixel positions (u, v) drawn with replacement from (M, 2)."""
    index = torch.randint(0, mask_pixels.shape[0], (count,), generator=generator)
    return mask_pixels[index]


def ray_pools(sample_mask: np.ndarray, interest_mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (M, 2) pixels rays are drawn from uniformly (sample_mask (H, W)) and around keypoints
    (interest_mask (H, W), or the uniform pool when it is None or empty)."""
    random_pool = mask_pixels(sample_mask)
    interest_pool = mask_pixels(interest_mask) if interest_mask is not None and interest_mask.any() else random_pool
    return random_pool, interest_pool


def draw_pixels(
    random_pool: torch.Tensor, interest_pool: torch.Tensor, count: int, interest: int, generator: torch.Generator,
) -> torch.Tensor:
    """``count`` integer pixels (count, 2): the first ``interest`` from interest_pool, the rest from random_pool."""
    return torch.cat([
        sample_pixels(interest_pool, interest, generator), sample_pixels(random_pool, count - interest, generator)
    ])


def evaluation_pixels(mask: np.ndarray, count: int, seed: int = 0) -> torch.Tensor:
    """A fixed set of pixel centres (N, 2) spread over the mask, for comparing hypotheses."""
    candidates = mask_pixels(mask)
    generator = torch.Generator().manual_seed(seed)
    if candidates.shape[0] > count:
        candidates = candidates[torch.randperm(candidates.shape[0], generator=generator)[:count]]
    return candidates.float() + 0.5


# ----------------------------------------------------------------------------- residuals
def cauchy(residual: torch.Tensor, scale: float) -> torch.Tensor:
    """Cauchy cost log(1 + |r|^2 / c^2) of colour residuals (..., 3) -> (...): it grows only
    logarithmically, so a defect's large residuals pull little."""
    return torch.log1p((residual * residual).sum(-1) / scale**2)


def chromaticity(rgb: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Colours (..., 3) divided by their brightness (r + g + b, with ``floor`` so that near-black
    pixels do not blow up): what stays of a surface's colour when light falls on it differently."""
    return rgb / (rgb.sum(-1, keepdim=True) + floor)


def trimmed_residual(rendered: torch.Tensor, target: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean absolute colour error after dropping the worst ``trim`` share of pixels (see ``PoseScoring``).

    rendered: (P, N, 3); target: (N, 3). Returns (P,).
    """
    error = (rendered - target[None]).abs().mean(-1)  # (P, N)
    keep = max(1, int(round(error.shape[1] * (1.0 - trim))))
    return error.sort(dim=1).values[:, :keep].mean(1)


@dataclass
class PoseScoring:
    """The fixed yardstick pose hypotheses are compared with: pixels of the query and its colours there.

    pixels: (E, 2) pixel centres over the query's dilated object; colours: (E, 3). The residual is
    the mean absolute colour error without the worst ``trim`` share of pixels (``trimmed_residual``).
    Why the trim is small: a wide trim also drops the thin band where a slightly turned pose's
    outline misses the query's, and on a dark box (MAD-like 12Penguin) a pose 12 degrees off then
    fits better than the true one. A defect shifts the residual of nearby poses alike, so a wide
    trim buys little against defects and lets wrong poses win on the benchmark's queries.
    """

    pixels: torch.Tensor
    colours: torch.Tensor
    trim: float  # PoseConfig.eval_trim: one default, kept there

    @classmethod
    def of_region(cls, image: np.ndarray, region: np.ndarray, count: int, trim: float, seed: int = 0) -> "PoseScoring":
        """``count`` fixed pixels of image (H, W, 3) inside region (H, W) bool."""
        pixels = evaluation_pixels(region, count, seed=seed)
        u, v = pixels[:, 0].long().numpy(), pixels[:, 1].long().numpy()
        return cls(pixels, torch.from_numpy(np.ascontiguousarray(image[v, u])), trim)

    def to(self, device) -> "PoseScoring":
        return replace(self, pixels=self.pixels.to(device), colours=self.colours.to(device))

    def residual(self, rendered: torch.Tensor, by_chromaticity: bool = False) -> torch.Tensor:
        """rendered: (P, E, 3) colours of the field at these pixels for P poses; the residual of
        colours or (``by_chromaticity``) of their chromaticities. Returns (P,)."""
        if by_chromaticity:
            return trimmed_residual(chromaticity(rendered), chromaticity(self.colours.to(rendered)), self.trim)
        return trimmed_residual(rendered, self.colours.to(rendered), self.trim)

    def score(self, render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, chunk: int = 16384,
              by_chromaticity: bool = False) -> torch.Tensor:
        """The residual of the field at poses c2w (P, 4, 4), of colours or (``by_chromaticity``) of
        their chromaticities. Returns (P,), no gradient."""
        with torch.no_grad():
            rendered = render_pixels(render_rays, c2w, K, self.pixels, chunk)["rgb"]
        return self.residual(rendered, by_chromaticity)

    def disagreement(self, render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, share: float = 0.05,
                     chunk: int = 16384) -> torch.Tensor:
        """Chromaticity residuals of two poses c2w (2, 4, 4) where their renders disagree: on the
        ``share`` of these pixels whose rendered chromaticities differ most between the two. Two views
        of a near-symmetric object differ in few pixels; over the whole object the noise of the rest
        ties them. The trim does not apply. Returns (2,) on the CPU, no gradient."""
        with torch.no_grad():
            rendered = chromaticity(render_pixels(render_rays, c2w, K, self.pixels, chunk)["rgb"].float())  # (2, N, 3)
        target = chromaticity(self.colours.to(rendered))
        disagreement = (rendered[0] - rendered[1]).abs().mean(-1)
        chosen = disagreement.topk(max(1, int(round(share * len(disagreement))))).indices
        return (rendered[:, chosen] - target[chosen]).abs().mean(-1).mean(-1).cpu()


def band_passed(greys: torch.Tensor, band: tuple[float, float] = STRUCTURE_BAND) -> torch.Tensor:
    """Grey images (B, H, W) band-passed: the difference of their Gaussian blurs of sigmas ``band`` (pixels),
    what is left of edges, studs and printed marks once shading (wider) and noise (finer) are taken off."""
    return gaussian_blur(greys, band[0]) - gaussian_blur(greys, band[1])


def structure_fits(render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, image: np.ndarray, region: np.ndarray,
                   chunk: int = 16384) -> torch.Tensor | None:
    """How well the field's structure at two poses c2w (2, 4, 4) matches image (H, W, 3): the
    correlation of band-passed grey (``STRUCTURE_BAND``) with the image's, over the pixels of the
    object where the two renders differ (by ``SIDES_DIFFER``, widened by 2 pixels), within the
    bounding box of region (H, W) bool. Returns (2,) on the CPU, higher fits better, no gradient;
    None where the renders differ in fewer than 25 pixels.

    A near-symmetric object turned half-way differs from itself in few pixels, and under other light
    than the field's their colours mislead (a shaded side fits the other side's shadow); where its
    edges and marks lie does not change with the light."""
    rows, cols = np.nonzero(region)
    pad = int(np.ceil(3 * STRUCTURE_BAND[1]))
    top, left = max(int(rows.min()) - pad, 0), max(int(cols.min()) - pad, 0)
    bottom, right = min(int(rows.max()) + pad + 1, region.shape[0]), min(int(cols.max()) + pad + 1, region.shape[1])
    v, u = torch.meshgrid(torch.arange(top, bottom), torch.arange(left, right), indexing="ij")
    pixels = torch.stack([u.reshape(-1), v.reshape(-1)], -1).float() + 0.5
    with torch.no_grad():
        out = render_pixels(render_rays, c2w, K, pixels, chunk)
    shape = (2, bottom - top, right - left)
    rendered = out["rgb"].float().cpu().reshape(*shape, 3)
    grey = torch.tensor(GREY)
    differ = ((rendered[0] - rendered[1]).abs().mean(-1) > SIDES_DIFFER).float()
    differ = torch.nn.functional.max_pool2d(differ[None, None], 5, stride=1, padding=2)[0, 0] > 0
    chosen = differ & (out["opacity"].float().cpu().reshape(shape).amax(0) > 0.5)
    if int(chosen.sum()) < 25:
        return None
    target = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right], dtype=np.float32)) @ grey
    greys = torch.cat([rendered @ grey, target[None]])
    band = band_passed(greys)
    values = band[:, chosen]
    values = values - values.mean(1, keepdim=True)
    norms = values.norm(dim=1)
    return (values[:2] @ values[2]) / (norms[:2] * norms[2] + 1e-12)

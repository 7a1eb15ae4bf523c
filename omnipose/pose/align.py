"""Direct photometric alignment of pose hypotheses: one forward render of colour and depth per round,
then robust Levenberg-Marquardt on the query's blurred image gradients, so a round converges from
tens of degrees at the cost of a single render."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from omnipose.core.device import one_torch_thread
from omnipose.core.geometry import (
    apply_twist,
    generate_rays,
    invert_pose,
    pixel_centers,
    project,
    rotation_error_deg,
    se3_log,
    warped_intrinsics,
)
from omnipose.core.image import gaussian_blur, square_crop, warp_image
from omnipose.pose.config import AlignConfig, PoseConfig
from omnipose.pose.hypotheses import twins
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import (
    GREY,
    STRUCTURE_BAND,
    RenderRays,
    band_passed,
    cauchy,
    draw_pixels,
    ray_pools,
    render_pixels,
)

STRUCTURE_CROP_PX = 96
"""Side of the square crop about the object that ``align_structure`` works on: the object about 70 pixels
across whether the query shows it 40 or 180 pixels wide, so the bands below mean the same on every query."""
STRUCTURE_CROP_MARGIN = 0.15
"""Margin of that crop on each side, as a share of the object's longer side: room for the render's
edges to move into."""
STRUCTURE_BANDS = ((2.0, 6.0), (1.0, 3.0), STRUCTURE_BAND)
"""Band-pass levels (Gaussian sigmas, crop pixels) of ``align_structure``, coarse to fine: the wide band
first, for a wide basin."""
STRUCTURE_ROUNDS = 2
"""Renders (each followed by Levenberg-Marquardt) per band level."""
STRUCTURE_LOSS_SCALE = 1.0
"""Cauchy scale of the band-passed grey error, in units of its spread over the object."""
STRUCTURE_GAIN = 0.02
"""Gain in correlation a structure-aligned pose must bring to replace the pose it started from: from
the true pose, the light's own effect on the bands moves it a few tenths of a degree for nothing."""
SIDE_MARGIN = 0.005
"""Gain in that correlation the structure-aligned half turn must bring over the pose to replace it: a
tie keeps the side the search chose."""
STRUCTURE_STEP_DEG = 3.0
"""Trust radius (degrees, and translation as a share of the camera distance in radians) of each round's move."""


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences d/du, d/dv of an (H, W, C) image, one-sided at the borders."""
    padded = torch.nn.functional.pad(image.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")[0].permute(1, 2, 0)
    du = 0.5 * (padded[1:-1, 2:] - padded[1:-1, :-2])
    dv = 0.5 * (padded[2:, 1:-1] - padded[:-2, 1:-1])
    return du, dv


def sample_image(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of an (H, W, C) image at (N, 2) (u, v) pixels (centres at +0.5). Returns (N, C)."""
    height, width = image.shape[:2]
    grid = torch.stack([2 * pixels[:, 0] / width - 1, 2 * pixels[:, 1] / height - 1], -1)
    sampled = torch.nn.functional.grid_sample(
        image.permute(2, 0, 1)[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0, :, 0].T


def projection_jacobian(points: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels of world points and their derivative w.r.t. a camera-frame twist (c2w @ exp(xi), xi = 0).

    points: (N, 3); c2w: (4, 4) OpenGL; K: (3, 3). Returns pixels (N, 2), depth (N,) and
    J: (N, 2, 6), d(u, v) / d(v_x, v_y, v_z, w_x, w_y, w_z).
    """
    w2c = invert_pose(c2w)
    camera = points @ w2c[:3, :3].T + w2c[:3, 3]  # OpenGL camera frame, z < 0 in front
    x, y, z = camera.unbind(-1)
    fx, fy = K[0, 0], K[1, 1]
    pixels = torch.stack([fx * x / -z + K[0, 2], fy * y / z + K[1, 2]], -1)
    zero = torch.zeros_like(z)
    # d(u, v) / d(camera point)
    d_pixel = torch.stack([
        torch.stack([fx / -z, zero, fx * x / (z * z)], -1),
        torch.stack([zero, fy / z, -fy * y / (z * z)], -1),
    ], 1)  # (N, 2, 3)
    # The point seen from the moved camera is exp(-xi) P ~ P - v - w x P: d/dv = -I, d/dw = [P]x,
    # and a row a of d_pixel times [P]x is the cross product a x P.
    d_rotation = torch.linalg.cross(d_pixel, camera[:, None, :].expand_as(d_pixel), dim=-1)
    return pixels, -z, torch.cat([-d_pixel, d_rotation], -1)


def align_poses(
    render_rays: RenderRays,
    c2w_init: torch.Tensor,
    K: torch.Tensor,
    query: torch.Tensor,
    config: AlignConfig,
    sample_mask: np.ndarray,
    interest_mask: np.ndarray | None,
    scene_scale: float,
) -> tuple[torch.Tensor, int]:
    """Direct photometric alignment of several pose hypotheses to a query.

    Each round renders colour and depth at the current poses on one fixed pixel set (one batched
    forward render), lifts the pixels to 3D, and moves each pose by robust Levenberg-Marquardt so
    that those points, projected into the query, find their rendered colours there. That cost only
    looks from the render into the query, so the next round's render checks every move both ways
    (rendered vs. query colours on the same pixels, object and background): a move that made it
    worse is undone and the hypothesis' trust radius halved. Hypotheses that can no longer win
    (``AlignConfig``: twins of a better one, or far worse) drop out of the later rounds.
    c2w_init: (P, 4, 4); K: (3, 3); query: (H, W, 3). Returns the surviving hypotheses' aligned
    poses (S, 4, 4), the rounds run, and their indices into c2w_init (S,), in input order.
    """
    device = query.device
    K = K.to(device, torch.float32)
    count = c2w_init.shape[0]
    poses = c2w_init.to(device, torch.float32).clone()
    generator = torch.Generator().manual_seed(config.seed)
    random_pool, interest_pool = ray_pools(sample_mask, interest_mask)
    n_interest = int(round(config.rays * config.interest_fraction))
    pixels = draw_pixels(random_pool, interest_pool, config.rays, n_interest, generator).to(device).float() \
        + torch.rand(config.rays, 2, generator=generator).to(device)  # anywhere in the pixel
    query_colours = sample_image(query, pixels)
    # Translations are compared with, and damped like, rotations once divided by the scene scale.
    column_scale = torch.tensor([1.0 / scene_scale] * 3 + [1.0] * 3, device=device)
    radius = torch.full((count,), math.radians(config.max_step_deg))
    best_cost = torch.full((count,), float("inf"))
    best_pose = poses.clone()
    best_render: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    moved = torch.full((count, 2), float("inf"))
    alive = list(range(count))
    rounds = 0
    for round_index in range(config.max_rounds + 1):
        with torch.no_grad():
            rendered = render_pixels(render_rays, poses[alive], K, pixels)
        cost = _robust_mean(rendered["rgb"] - query_colours[None], config.loss_scale).cpu()  # both ways, (A,)
        for a, p in enumerate(alive):
            if cost[a] <= best_cost[p]:
                best_cost[p], best_pose[p] = cost[a], poses[p]
                best_render[p] = (rendered["rgb"][a], rendered["depth"][a], rendered["opacity"][a])
            else:  # the last move made things worse: go back, and take smaller steps from there
                radius[p] *= 0.5
                moved[p] = float("inf")
        poses = best_pose.clone()
        if round_index > 0:
            alive = _hopeful(alive, best_pose, best_cost, scene_scale, config, round_index)
        sharpest = round_index >= len(config.blur_sigmas) - 1
        settled = (moved[alive, 0] < config.converge_rotation_deg) & (moved[alive, 1] < config.converge_translation)
        if round_index == config.max_rounds or (sharpest and bool(settled.all())):
            break
        rounds += 1
        sigma = config.blur_sigmas[min(round_index, len(config.blur_sigmas) - 1)]
        # A radius of 3 sigma (not scipy's 4): the coarse rounds only need the blur's centre.
        target = gaussian_blur(query.permute(2, 0, 1), sigma, radius=max(1, math.ceil(3 * sigma))).permute(1, 2, 0)
        grad_u, grad_v = image_gradients(target)
        with one_torch_thread():
            for p in alive:
                rgb, depth, opacity = best_render[p]
                solid = opacity > config.min_opacity
                if int(solid.sum()) < 12:
                    moved[p] = 0.0
                    continue
                rays_o, rays_d = generate_rays(poses[p], K, pixels[solid])
                points = rays_o + depth[solid, None] * rays_d
                start = poses[p].clone()
                poses[p] = _lm_align(points, rgb[solid], start, K, target, grad_u, grad_v, column_scale,
                                     float(radius[p]), config)
                change = invert_pose(start) @ poses[p]
                moved[p] = torch.tensor([
                    float(rotation_error_deg(start[:3, :3], poses[p][:3, :3])), float(change[:3, 3].norm()) / scene_scale
                ])
    return best_pose[alive], rounds, torch.tensor(alive, dtype=torch.long)


def align_structure(render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, query: np.ndarray, region: np.ndarray,
                    background, scene_scale: float, config: AlignConfig, chunk: int = 16384,
                    ) -> tuple[torch.Tensor, float, float]:  # fmt: skip
    """One pose c2w (4, 4) aligned to query (H, W, 3) by the band-passed grey of the object (edges,
    studs, printed marks) instead of its colours, on a square crop about region (H, W) bool, the
    object's pixels: coarse to fine over ``STRUCTURE_BANDS``, each level ``STRUCTURE_ROUNDS`` renders of
    the whole crop, each followed by robust Levenberg-Marquardt as in ``align_poses``, both images'
    bands in units of their spread over the object. Returns the aligned pose (4, 4) on the CPU and the
    correlation of the finest band with the query's over the object, at c2w and at the aligned pose.

    Under another light than the field's (photographs against a field learnt from renders) the colours
    mislead alignment: from 3 - 15 degrees off, the colour cost holds a pose where it is, while the
    object's edges and marks, which stay where they are under any light, still pull it in. The crop
    keeps the bands' meaning when the query shows the object a few dozen pixels across."""
    rows, cols = np.nonzero(region)
    affine = square_crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1), STRUCTURE_CROP_MARGIN,
                         STRUCTURE_CROP_PX)
    size = (STRUCTURE_CROP_PX, STRUCTURE_CROP_PX)
    crop = torch.from_numpy(warp_image(query, affine, background, size))
    inside = torch.from_numpy(warp_image(region.astype(np.float32), affine, 0.0, size) > 0.5)
    crop_K = warped_intrinsics(K, affine)
    pixels = pixel_centers(*size)
    grey = torch.tensor(GREY)
    query_grey = crop @ grey
    column_scale = torch.tensor([1.0 / scene_scale] * 3 + [1.0] * 3)
    steps = replace(config, loss_scale=STRUCTURE_LOSS_SCALE)
    device = c2w.device

    def render(pose: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = render_pixels(render_rays, pose[None].to(device), crop_K.to(device), pixels.to(device), chunk)
        return {name: value[0].float().cpu() for name, value in out.items()}

    finest = _band(query_grey, STRUCTURE_BANDS[-1], inside)[inside]

    def fit(rgb: torch.Tensor) -> float:
        rendered = _band((rgb @ grey).reshape(size), STRUCTURE_BANDS[-1], inside)[inside]
        return float((rendered * finest).mean() / (rendered.std() * finest.std() + 1e-9))

    pose = c2w.detach().cpu().float()
    out = render(pose)  # always the render at the current pose
    before = fit(out["rgb"])
    with one_torch_thread():
        for band in STRUCTURE_BANDS:
            target = _band(query_grey, band, inside)[..., None]
            grad_u, grad_v = image_gradients(target)
            for _ in range(STRUCTURE_ROUNDS):
                rendered = _band((out["rgb"] @ grey).reshape(size), band, inside).reshape(-1)
                solid = (out["opacity"] > config.min_opacity) & inside.reshape(-1)
                if int(solid.sum()) < 12:
                    break
                rays_o, rays_d = generate_rays(pose, crop_K, pixels[solid])
                points = rays_o + out["depth"][solid, None] * rays_d
                pose = _lm_align(points, rendered[solid, None], pose, crop_K, target, grad_u, grad_v, column_scale,
                                 math.radians(STRUCTURE_STEP_DEG), steps)
                out = render(pose)
    return pose, before, fit(out["rgb"])


def structure_aligned(scene: PoseScene, config: PoseConfig, poses: torch.Tensor, residual: torch.Tensor, best: int,
                      query: np.ndarray, region: np.ndarray, rescore: Callable[[torch.Tensor], torch.Tensor],
                      notes: list[str]) -> None:
    """With ``PoseConfig.structure_align``, pose ``best`` of poses (P, 4, 4) aligned on the band-passed grey
    of query (H, W, 3) as it is (``align_structure``), kept where its structure then correlates better by
    ``STRUCTURE_GAIN``; with ``half_turn`` on, its half turn (``PoseScene.half_turned``) aligned so too, and
    taken where it correlates better still by ``SIDE_MARGIN``. What is taken replaces pose ``best`` with its
    residual (``rescore`` of (1, 4, 4) poses), in place, and is noted.

    The side was chosen before (``half_turn``, ``side_by_structure``) between poses aligned by colour, a
    few degrees off under another light; aligned on their structure both, the two sides of a
    near-symmetric object differ more clearly."""
    if not config.structure_align:
        return

    def aligned_from(start: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        return align_structure(scene.render_rays, start, scene.render_K, query, region, scene.background,
                               scene.distance, config.align or AlignConfig(), config.chunk)

    aligned, before, after = aligned_from(poses[best])
    chosen, fit, note = None, before, None
    if after > before + STRUCTURE_GAIN:
        chosen, fit, note = aligned, after, "pose aligned on the object's edges and marks"
    if config.half_turn is not None:
        turned, _, turned_fit = aligned_from(scene.half_turned(poses[best]))
        if turned_fit > fit + SIDE_MARGIN:
            chosen, fit = turned, turned_fit
            note = "pose turned half-way about the object's vertical and aligned on its edges and marks"
    if chosen is not None:
        poses[best] = chosen.to(poses)
        residual[best] = rescore(chosen[None])[0]
        notes.append(f"{note}: their correlation with the query's {before:.2f} -> {fit:.2f}")


def _band(grey: torch.Tensor, band: tuple[float, float], inside: torch.Tensor) -> torch.Tensor:
    """A grey image (H, W) band-passed (difference of Gaussians of sigmas ``band``), centred and scaled
    to unit spread over ``inside`` (H, W) bool."""
    passed = band_passed(grey[None], band)[0]
    values = passed[inside]
    return (passed - values.mean()) / (values.std() + 1e-6)


def _hopeful(alive: list[int], poses: torch.Tensor, cost: torch.Tensor, scene_scale: float, config: AlignConfig,
             round_index: int) -> list[int]:
    """The hypotheses of ``alive`` still worth aligning, in input order: not a twin of one with a lower
    cost, and (from round ``prune_after_round``) not above ``prune_ratio`` times the lowest cost.
    poses: (P, 4, 4) and cost: (P,) of every hypothesis."""
    kept: list[int] = []
    for p in sorted(alive, key=lambda i: float(cost[i])):
        if not any(twins(poses[p], poses[k], scene_scale, config.merge_rotation_deg, config.merge_translation) for k in kept):
            kept.append(p)
    if config.prune_ratio is not None and round_index >= config.prune_after_round:
        limit = config.prune_ratio * float(cost[kept[0]])
        kept = [p for p in kept if float(cost[p]) <= limit]
    return sorted(kept)


def _robust_mean(residual: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean Cauchy cost over the last-but-one axis. residual: (..., N, 3) -> (...)."""
    return cauchy(residual, scale).mean(-1)


def _alignment_cost(points, colours, c2w, K, target, scale) -> float:
    """Robust (Cauchy) colour cost of 3D points with known colours seen from ``c2w`` in ``target``.

    Points projecting off the image read its border, the background: leaving the frame costs."""
    projected, _ = project(points, c2w, K)
    return float(cauchy(sample_image(target, projected) - colours, scale).sum())


def _lm_align(points, colours, start, K, target, grad_u, grad_v, column_scale, radius: float, config: AlignConfig):
    """Levenberg-Marquardt on the Cauchy colour cost of 3D points with known colours seen in
    ``target``, within ``radius`` (radians, translation / scene scale) of ``start``. Returns c2w."""
    pose = start
    damping = config.damping
    cost = _alignment_cost(points, colours, pose, K, target, config.loss_scale)
    for _ in range(config.gauss_newton_steps):
        projected, _, J_pixel = projection_jacobian(points, pose, K)
        residual = sample_image(target, projected) - colours  # (M, 3)
        # d residual / d xi = image gradient . d pixel / d xi, per colour channel.
        J = sample_image(grad_u, projected)[..., None] * J_pixel[:, None, 0, :] \
            + sample_image(grad_v, projected)[..., None] * J_pixel[:, None, 1, :]  # (M, 3, 6)
        J = (J / column_scale).reshape(-1, 6)  # in scaled coordinates, one row per colour channel
        weight = 1.0 / (1.0 + (residual * residual).sum(-1) / config.loss_scale**2)  # Cauchy IRLS
        weighted = J * weight.repeat_interleave(residual.shape[-1])[:, None]
        H = weighted.T @ J
        g = weighted.T @ residual.reshape(-1)
        for _attempt in range(6):  # a step must lower the cost and stay in the trust region
            damped = H + damping * torch.diag(H.diagonal().clamp(min=1e-9)) + 1e-9 * torch.eye(6, device=H.device)
            candidate = apply_twist(pose, -torch.linalg.solve(damped, g) / column_scale)
            total = se3_log(invert_pose(start) @ candidate) * column_scale
            if float(total.abs().max()) <= radius:
                new_cost = _alignment_cost(points, colours, candidate, K, target, config.loss_scale)
                if new_cost < cost:
                    pose, cost, damping = candidate, new_cost, max(damping / 3.0, 1e-6)
                    break
            damping *= 8.0
        else:
            break  # no step lowers the cost: the minimum of this round
    return pose

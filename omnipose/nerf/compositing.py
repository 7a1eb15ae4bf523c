"""Volume rendering: samples along rays (density, colour) become pixels (colour, depth, opacity).

``composite`` is the emission-absorption model on a padded (rays, steps) layout, the reference;
``composite_samples`` is the same model on the samples a ray actually has (the NGP model's path:
on a padded layout most entries are empty steps, and colour there would be carried for nothing);
``nerf_raw_to_outputs`` is nerf-pytorch's ``raw2outputs``, kept separate because its
arithmetic (the 1e10 last gap, the cumulative product of 1 - alpha + 1e-10) is what the
original checkpoints were trained with.
"""
from __future__ import annotations

import torch


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


def transmittance_before(optical: torch.Tensor, ray_index: torch.Tensor, step_index: torch.Tensor, n_rays: int,
                         n_steps: int) -> torch.Tensor:
    """Transmittance in front of each sample: exp(-optical depth of the ray's samples before it).

    optical: (M,) optical depth (density x step) of samples at (ray_index, step_index) of a
    (n_rays, n_steps) layout, each pair once. The running sum is taken per ray on that layout, so
    no ray's sum carries another's rounding. Returns (M,).
    """
    dense = optical.new_zeros(n_rays, n_steps).index_put((ray_index, step_index), optical)
    return torch.exp(-(torch.cumsum(dense, 1) - dense)[ray_index, step_index])


def composite_samples(
    sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, ray_index: torch.Tensor, step_index: torch.Tensor,
    n_rays: int, n_steps: int, dt: float, background: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """``composite`` of the samples rays have, not of a padded layout: the same emission-absorption
    model (an absent step has no density), at the cost of the samples.

    sigma: (M,) density and rgb: (M, 3) colour of samples at distance t (M,) on ray ray_index (M,),
    step step_index (M,) of a (n_rays, n_steps) layout; dt: step length; background: (3,).
    Returns 'rgb' (n_rays, 3), 'depth' (n_rays,), 'opacity' (n_rays,), 'weights' (M,).
    """
    optical = sigma * dt
    weights = transmittance_before(optical, ray_index, step_index, n_rays, n_steps) * (1.0 - torch.exp(-optical))
    opacity = weights.new_zeros(n_rays).index_add(0, ray_index, weights)
    color = rgb.new_zeros(n_rays, 3).index_add(0, ray_index, weights[:, None] * rgb) + (1.0 - opacity)[:, None] * background
    depth = weights.new_zeros(n_rays).index_add(0, ray_index, weights * t) / opacity.clamp(min=1e-6)
    depth = torch.where(opacity > 1e-6, depth, torch.zeros_like(depth))
    return {"rgb": color, "depth": depth, "opacity": opacity, "weights": weights}


def distortion(
    weights: torch.Tensor, t: torch.Tensor, ray_index: torch.Tensor, step_index: torch.Tensor, n_rays: int,
    n_steps: int, dt: float,
) -> torch.Tensor:
    """Mip-NeRF 360's distortion of each ray's weights: the sum over pairs of samples of w_i w_j |t_i - t_j|,
    plus dt / 3 times the sum of w_i^2 (each sample an interval of length dt). Small when a ray's
    weight sits in one short stretch (a surface), large when it is spread along the ray (fog,
    floaters, a thin part drawn half-transparent over a depth range).

    weights, t: (M,) of samples at (ray_index, step_index) of a (n_rays, n_steps) layout, each pair
    once, t increasing with the step. Returns (n_rays,), in the units of t.
    """
    layout = weights.new_zeros(n_rays, n_steps)
    dense_w = layout.index_put((ray_index, step_index), weights)
    dense_t = layout.index_put((ray_index, step_index), t)
    # Each pair once, the nearer sample j in front of i: 2 sum_i w_i (t_i sum_{j<i} w_j - sum_{j<i} w_j t_j).
    weight_before = torch.cumsum(dense_w, 1) - dense_w
    moment_before = torch.cumsum(dense_w * dense_t, 1) - dense_w * dense_t
    between = 2.0 * (dense_w * (dense_t * weight_before - moment_before)).sum(1)
    within = (dt / 3.0) * (dense_w**2).sum(1)
    return between + within


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

"""Where samples go: reproducible uniform draws, and inverse-transform sampling of a pdf along rays.

Marching on a fixed lattice (``RadianceModel.march``) and the stratified samples of nerf-pytorch
(``VanillaNeRFModel.render_rays``) draw their jitter here, so that one ``torch.Generator`` drives
every random choice of a training run.
"""
from __future__ import annotations

import torch


def generator_device(generator: torch.Generator | None, device) -> torch.device:
    """Where draws from ``generator`` are made: its own device (a generator cannot draw elsewhere)."""
    return generator.device if generator is not None else torch.device(device)


def random_uniform(shape: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) float32 of ``shape`` drawn from ``generator`` (on its own device) and put on ``device``.

    A CPU generator keeps CPU runs reproducible; a CUDA generator avoids host-to-device copies.
    """
    return torch.rand(shape, generator=generator, device=generator_device(generator, device)).to(device)


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

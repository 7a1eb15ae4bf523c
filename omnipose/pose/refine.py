"""iNeRF refinement: an se(3) twist per pose hypothesis, optimised with Adam through the
differentiable renderer so that the rendered pixels match the query."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.geometry import apply_twist
from omnipose.pose.config import RefineConfig
from omnipose.pose.query import PoseError
from omnipose.pose.scoring import (
    PoseScoring,
    RenderRays,
    draw_pixels,
    ray_pools,
    render_pixels,
)


@dataclass
class RefineResult:
    """c2w: (P, 4, 4) refined poses of the hypotheses still alive, best first; residual: (P,);
    indices: (P,) which input hypotheses they are; steps: total optimisation steps."""

    c2w: torch.Tensor
    residual: torch.Tensor
    indices: torch.Tensor
    steps: int
    history: list[dict] = field(default_factory=list)


def robust_loss(residual: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """Per-pixel robust penalty of colour residuals (..., 3) -> (...).

    Cauchy: log(1 + r^2 / c^2) grows only logarithmically, so a defect's large residuals pull
    little; Huber is quadratic near 0 and linear beyond c; l2 is iNeRF's plain squared error.
    """
    squared = (residual * residual).sum(-1)
    if kind == "cauchy":
        return scale * scale * torch.log1p(squared / (scale * scale))
    if kind == "huber":
        norm = (squared + 1e-12).sqrt()
        return torch.where(norm < scale, 0.5 * squared, scale * (norm - 0.5 * scale))
    return squared


def box_blur(image: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size x size box around each pixel (replicated border). image: (H, W, 3)."""
    if size <= 1:
        return image
    padded = torch.nn.functional.pad(image.permute(2, 0, 1)[None], (size // 2,) * 4, mode="replicate")
    return torch.nn.functional.avg_pool2d(padded, size, stride=1)[0].permute(1, 2, 0)


def refine_poses(
    render_rays: RenderRays,
    c2w_init: torch.Tensor,
    K: torch.Tensor,
    query: torch.Tensor,
    config: RefineConfig,
    sample_mask: np.ndarray,
    interest_mask: np.ndarray | None,
    scoring: PoseScoring,
    scene_scale: float,
    progress: bool = False,
) -> RefineResult:
    """iNeRF: optimise a camera-frame twist per hypothesis so the rendered pixels match the query.

    c2w_init: (P, 4, 4) starting poses; K: (3, 3); query: (H, W, 3) float in [0, 1] on the render
    device. sample_mask / interest_mask: (H, W) bool regions rays are drawn from (random / around
    keypoints). scoring: the fixed pixels that rank hypotheses after each level. scene_scale: the
    camera's distance to the object, so translation steps are relative (the same settings work at
    any scene size). Returns the surviving hypotheses, best first.
    """
    config.validate()
    device = query.device
    c2w_init = c2w_init.to(device, torch.float32)
    K = K.to(device, torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    random_pool, interest_pool = ray_pools(sample_mask, interest_mask)
    if random_pool.shape[0] == 0:
        raise PoseError("nothing to refine against: the query's object region is empty.")
    scoring = scoring.to(device)
    height, width = query.shape[:2]

    alive = torch.arange(c2w_init.shape[0])
    base = c2w_init.clone()
    twist = torch.zeros(c2w_init.shape[0], 6, device=device)
    scale_vector = torch.tensor([scene_scale] * 3 + [1.0] * 3, device=device)
    total_steps, history = 0, []
    bar = tqdm(total=None, desc="refine", disable=not progress, leave=False)

    def poses_of(params: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        return apply_twist(base[which], params[which] * scale_vector)

    for level, box in enumerate(config.box_sizes):
        target_image = box_blur(query, box)
        subsamples = config.subsamples if box > 1 else 1
        targets_per_step = max(8, config.rays // subsamples)
        n_interest = int(round(targets_per_step * config.interest_fraction))
        level_lr = config.learning_rate * config.level_lr_factor**level
        param = twist.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([param], lr=level_lr)
        trail = [twist.clone()]  # poses of the last steps, for the convergence test
        active = alive.clone()
        steps = config.fixed_steps if config.fixed_steps is not None else config.max_steps_per_level
        step = -1
        for step in range(steps):
            lr = level_lr * config.lr_decay ** (step / config.lr_decay_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pixels = draw_pixels(random_pool, interest_pool, targets_per_step, n_interest, generator).to(device)
            targets = target_image[pixels[:, 1], pixels[:, 0]]  # (T, 3)
            jitter = (torch.rand(targets_per_step, subsamples, 2, generator=generator) - 0.5) * box
            ray_pixels = (pixels.float()[:, None, :] + 0.5 + jitter.to(device)).reshape(-1, 2)
            ray_pixels[:, 0].clamp_(0.0, width)
            ray_pixels[:, 1].clamp_(0.0, height)
            poses = poses_of(param, active)
            rgb = render_pixels(render_rays, poses, K, ray_pixels, config.chunk)["rgb"]
            rgb = rgb.reshape(len(active), targets_per_step, subsamples, 3).mean(2)
            per_pixel = robust_loss(rgb - targets[None], config.loss, config.loss_scale)  # (A, T)
            loss = per_pixel.mean(1).sum()  # hypotheses are independent: the sum keeps their gradients apart
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_steps += 1
            bar.update()
            with torch.no_grad():
                # Adam's momentum would still move a hypothesis that is done: pin it back.
                done = torch.ones(c2w_init.shape[0], dtype=torch.bool)
                done[active] = False
                param[done] = twist[done]
                twist = param.detach().clone()
                trail = (trail + [twist])[-(config.patience + 1):]
            if config.fixed_steps is not None or step + 1 < config.min_steps_per_level or len(trail) <= config.patience:
                continue
            active = active[~_settled(trail, active, lr, config)]
            if len(active) == 0:
                break
        history.append({"level": level, "box": box, "steps": step + 1})
        # Score the hypotheses on the fixed evaluation rays; keep the best few for the next level.
        with torch.no_grad():
            residual = scoring.score(render_rays, poses_of(twist, alive), K, config.chunk)
        order = residual.argsort().cpu()
        keep = config.keep[min(level, len(config.keep) - 1)] if config.keep else len(alive)
        alive = alive[order[:keep]]
        residual = residual[order[:keep]]
    bar.close()
    with torch.no_grad():
        final = poses_of(twist, alive)
    return RefineResult(final.detach(), residual.detach().cpu(), alive, total_steps, history)


def _settled(trail: list[torch.Tensor], active: torch.Tensor, lr: float, config: RefineConfig) -> torch.Tensor:
    """Which active hypotheses (A,) bool are done with the level: over the trail of twists (P, 6) their
    pose moved less than the converge thresholds, or less than ``plateau`` of the steady Adam path."""
    net = (trail[-1] - trail[0])[active]
    rotation = net[:, 3:].norm(dim=1).cpu()
    translation = net[:, :3].norm(dim=1).cpu()
    steady = lr * config.patience  # what consistent Adam steps would cover per component
    small = (torch.rad2deg(rotation) < config.converge_rotation_deg) & (translation < config.converge_translation)
    oscillating = torch.maximum(rotation, translation) < config.plateau * steady
    return small | oscillating


def refine_best(
    render_rays: RenderRays, poses: torch.Tensor, residual: torch.Tensor, K: torch.Tensor, query: torch.Tensor,
    config: RefineConfig, top: int, region: np.ndarray, interest: np.ndarray | None, scoring: PoseScoring,
    scene_scale: float, lead: int | None = None,
) -> tuple[int, int]:
    """Refine the ``top`` hypotheses of lowest residual and keep the refined best where it beats
    the best before refinement, updating poses (P, 4, 4) and residual (P,) in place. With ``lead``,
    that hypothesis alone is refined and stays the best, whatever the residuals.

    Returns (index of the best hypothesis, iNeRF steps run).
    """
    order = residual.argsort() if lead is None else torch.tensor([lead])
    best = int(order[0])
    keep = order[: max(1, top)]
    refined = refine_poses(render_rays, poses[keep], K, query, config, region, interest, scoring, scene_scale)
    refined_best = int(keep[int(refined.indices[0])])
    # iNeRF's stochastic steps can end a little worse than where they started: keep the better.
    if float(refined.residual[0]) < float(residual[best]):
        best = refined_best
        poses[best] = refined.c2w[0].to(poses)
        residual[best] = refined.residual[0]
    return best, refined.steps

"""Restarts around aligned poses that fit worse than the field fits its own training views.

On a plain object, alignment from a global-appearance hypothesis (no keypoint matches) can settle
5-10 degrees off, in a basin the true pose is a short step from; on a near-symmetric one the best
hypothesis can be the object's other side while the runner-up lies a few degrees from the true pose.
Poses a few degrees around them (``PoseScene.nearby``), aligned in their turn, reach the true basin
(``PoseConfig.restart_deg``); the best turned half-way about the object's vertical reaches the other side
(``PoseConfig.half_turn``). Where the keypoints' best pose is weakly supported or fits poorly, the
global-appearance hypotheses are aligned too (``PoseConfig.appearance_on_demand``)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from omnipose.pose.align import align_poses
from omnipose.pose.config import PoseConfig
from omnipose.pose.hypotheses import Hypothesis
from omnipose.pose.results import COLOUR_FLOOR
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import structure_fits

APPEARANCE_RATIO = 1.5
"""With ``appearance_on_demand``, the appearance hypotheses are aligned where the best keypoint one fits
the query worse than this many times the field fits its own training views: the lego's held-out views,
posed right, fit 0.95 - 1.1 times as well; beyond 1.5 the keypoints' pose may be wrong."""
RESTART_GAIN = 0.9
"""A restart joins the hypotheses only where its residual is below this share of the best so far:
on a defective or near-symmetric object, poses degrees apart fit within a few per cent of each
other, and which of them wins is noise."""


def worth_restarting(residual: float, own_residual: float, config: PoseConfig) -> bool:
    """Whether the best aligned pose, of this residual, deserves restarts nearby: it fits the query
    worse than the field fits its own training views (``own_residual``)."""
    if config.restart_deg is None or config.align is None:
        return False
    return fits_worse_than_training(residual, own_residual)


def fits_worse_than_training(residual: float, own_residual: float) -> bool:
    """Whether a pose of this residual fits the query worse than the field fits its own training views
    (``own_residual``; at least ``COLOUR_FLOOR``, what noise alone leaves)."""
    return residual > max(own_residual, COLOUR_FLOOR)


def appearance_needed(best: Hypothesis, residual: float, own_residual: float, config: PoseConfig) -> bool:
    """Whether the appearance hypotheses, left out with ``PoseConfig.appearance_on_demand``, must be aligned
    now: the best aligned keypoint pose, of this residual, came from fewer than ``min_inliers`` matches or
    fits the query worse than ``APPEARANCE_RATIO`` times the field fits its own training views."""
    if not config.appearance_deferred:
        return False
    return best.inliers < config.min_inliers or fits_worse_than_training(residual, APPEARANCE_RATIO * own_residual)


def with_appearance(scene: PoseScene, poses: torch.Tensor, residual: torch.Tensor, candidates: list[Hypothesis],
                    best: int, own_residual: float, config: PoseConfig, query: torch.Tensor, region: np.ndarray,
                    interest: np.ndarray, residual_of: Callable[[torch.Tensor], torch.Tensor],
                    appearance_of: Callable[[list[Hypothesis]], list[Hypothesis]],
                    ) -> tuple[torch.Tensor, torch.Tensor, list[Hypothesis], int, int]:  # fmt: skip
    """The aligned poses (P, 4, 4), their residuals (P,) and hypotheses, joined where ``appearance_needed``
    by the appearance hypotheses (``appearance_of(known)``: those not twin to a known one) aligned in
    their turn; the index of the best and the alignment rounds that took. residual_of: poses -> residuals."""
    more = appearance_of(candidates) if appearance_needed(candidates[best], float(residual[best]), own_residual,
                                                          config) else []  # fmt: skip
    if not more:
        return poses, residual, candidates, best, 0
    start = torch.stack([h.c2w for h in more]).to(poses)
    aligned, rounds, kept = align_poses(scene.render_rays, start, scene.render_K, query, config.align, region, interest,
                                        scene.distance)  # fmt: skip
    residual = torch.cat([residual, residual_of(aligned)])
    return torch.cat([poses, aligned]), residual, candidates + [more[int(i)] for i in kept], int(residual.argmin()), rounds


def restart_nearby(scene: PoseScene, poses: torch.Tensor, residual: torch.Tensor, candidates: list[Hypothesis],
                   config: PoseConfig, query: torch.Tensor, region: np.ndarray, interest: np.ndarray,
                   residual_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[Hypothesis], int, int]:
    """Rings of restarts (``PoseConfig.restart_deg``, ``restart_from``, ``restart_rounds``): the first
    around the ``restart_from`` best aligned poses (P, 4, 4) by ``residual`` (P,), each next one at
    half the angle around a restart that won. residual_of: poses (R, 4, 4) -> their residuals (R,).
    Returns the poses, residuals and hypotheses with the restarts that joined, the index of the best
    and the alignment rounds run."""
    best, rounds = int(residual.argmin()), 0
    angle, around = config.restart_deg, residual.argsort()[: config.restart_from].tolist()
    for _ in range(config.restart_rounds):
        poses, residual, candidates, ran = ring(scene, poses, residual, candidates, around, angle, config, query, region,
                                                interest, residual_of)
        rounds += ran
        if int(residual.argmin()) == best:
            break  # nothing nearby fits better
        best = int(residual.argmin())
        angle, around = angle / 2, [best]
    return poses, residual, candidates, best, rounds


def ring(scene: PoseScene, poses: torch.Tensor, residual: torch.Tensor, candidates: list[Hypothesis], around: list[int],
         angle_deg: float, config: PoseConfig, query: torch.Tensor, region: np.ndarray, interest: np.ndarray,
         residual_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[Hypothesis], int]:
    """The poses (P, 4, 4), residuals (P,) and hypotheses with the poses ``angle_deg`` around each pose
    of ``around`` (``PoseScene.nearby``) added once aligned in their turn, those that fit clearly
    better than the best so far (``RESTART_GAIN``), and the alignment rounds run."""
    rings = [scene.nearby(poses[i].cpu(), angle_deg) for i in around]
    aligned, rounds, kept = align_poses(scene.render_rays, torch.cat(rings).to(poses), scene.render_K, query,
                                        config.align, region, interest, scene.distance)
    fits = residual_of(aligned)
    better = fits < RESTART_GAIN * residual.min()
    aligned, fits, kept = aligned[better.to(aligned.device)], fits[better], kept[better]
    restarted = []
    for c2w, k in zip(aligned, kept.tolist()):
        origin = candidates[around[k // len(rings[0])]]
        restarted.append(Hypothesis(c2w.cpu(), f"{origin.source}, restarted {angle_deg:g} deg away", origin.inliers,
                                    origin.view, origin.angle_deg))
    return torch.cat([poses, aligned]), torch.cat([residual, fits]), candidates + restarted, rounds


def half_turned(scene: PoseScene, poses: torch.Tensor, residual: torch.Tensor, candidates: list[Hypothesis], best: int,
                config: PoseConfig, query: torch.Tensor, region: np.ndarray, interest: np.ndarray,
                residual_of: Callable[[torch.Tensor], torch.Tensor],
                within: float | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Hypothesis], int]:
    """The poses (P, 4, 4), residuals (P,) and hypotheses with pose ``best`` turned half-way about the
    object's vertical (``PoseScene.half_turned``) and aligned in its turn added last, and the alignment
    rounds run. With ``within``, the turned pose is left out (nothing added, no alignment run) where, as
    turned, it fits more than ``within`` times worse than pose ``best``. residual_of: see ``ring``."""
    turned = scene.half_turned(poses[best:best + 1].cpu()).to(poses)
    if within is not None and float(residual_of(turned)[0]) > within * float(residual[best]):
        return poses, residual, candidates, 0
    rounds = 0
    if config.align is not None:
        turned, rounds, _ = align_poses(scene.render_rays, turned, scene.render_K, query, config.align, region,
                                        interest, scene.distance)
    origin = candidates[best]
    turn = Hypothesis(turned[0].cpu(), f"{origin.source}, turned about the object's vertical", 0, origin.view,
                      origin.angle_deg)
    return torch.cat([poses, turned]), torch.cat([residual, residual_of(turned)]), candidates + [turn], rounds


def choose_side(scene: PoseScene, poses: torch.Tensor, residual: torch.Tensor, best: int, config: PoseConfig,
                photo: np.ndarray, region: np.ndarray, notes: list[str]) -> tuple[int, int | None]:
    """Which of pose ``best`` and its aligned half turn (the last of poses (P, 4, 4), ``half_turned``) is the
    estimate, noted when it is the turn: by residual (P,), where the turn fits clearly better
    (``RESTART_GAIN``, as a restart must), or with ``PoseConfig.side_by_structure`` by the structure of
    photo (H, W, 3), the query before any colour matching, where the two renders differ (``structure_fits``
    within region (H, W)). Returns that index, and it again where it alone must be refined (a choice
    against the residuals), else None."""
    turn = len(poses) - 1
    if config.side_by_structure:
        fit = structure_fits(scene.render_rays, poses[[best, turn]], scene.render_K, photo, region, config.chunk)
        if fit is None:
            return best, None
        if float(fit[1]) <= float(fit[0]):
            return best, best
        notes.append(f"pose turned half-way about the object's vertical: its structure correlates "
                     f"{float(fit[1]):.3f} with the query's against {float(fit[0]):.3f} where the two views differ")
        return turn, turn
    if float(residual[turn]) < RESTART_GAIN * float(residual[best]):
        notes.append(f"pose turned half-way about the object's vertical: it fits {float(residual[turn]):.4f} "
                     f"against {float(residual[best]):.4f}, the other side's")
        return turn, None
    return best, None

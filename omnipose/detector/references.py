"""Normal references for a query: what it is compared with, and which of them wins.

A reference is the field rendered at a pose, with the nearest training views re-projected there
through the field's depth (``omnipose.compare.neighbour_references``). A query is compared at its
estimated pose and at distinct runners-up of the pose search, each as rendered and as registered
onto the query in the image plane; the reference that explains the query best is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.compare import (
    Comparator,
    ComparisonResult,
    NormalViews,
    neighbour_references,
    register_reference,
    unseen_surface,
)
from omnipose.core.errors import OmniposeError
from omnipose.core.geometry import pose_errors
from omnipose.core.image import warp_image
from omnipose.data import PosedImages
from omnipose.pose import PoseResult

# c2w (4, 4) -> the field's render there on the CPU: {"rgb": (H, W, 3), "opacity": (H, W), "depth": (H, W)}
RenderAt = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Reference:
    """A normal reference for one query: the field rendered at c2w (4, 4) as image (H, W, 3) with
    its opacity alpha (1, H, W), neighbours (R, H, W, 3), the nearest training views re-projected
    to c2w (R = 0 when the comparison uses none), and unseen (1, H, W) bool, where the render shows
    a surface no training view sees (None: not looked for)."""

    c2w: torch.Tensor
    image: torch.Tensor
    alpha: torch.Tensor
    neighbours: torch.Tensor
    unseen: torch.Tensor | None = None

    def compare(self, comparator: Comparator, query: torch.Tensor) -> ComparisonResult:
        """comparator.compare of query (H, W, 3) with this reference."""
        neighbours = self.neighbours[None] if len(self.neighbours) else None
        return comparator.compare(query, self.image, self.alpha, neighbours, self.unseen)


def make_reference(
    render_at: RenderAt,
    normal_views: NormalViews | None,
    c2w: torch.Tensor,
    count: int,
    tolerance: float,
    exclude: int | None = None,
    find_unseen: bool = False,
) -> Reference:
    """The normal reference at c2w (4, 4): the render and the ``count`` training views of
    ``normal_views`` nearest to it re-projected there (none when ``normal_views`` is None), leaving
    out training view ``exclude``; with ``find_unseen`` (and ``normal_views``) also where the render
    shows a surface none of them sees (``unseen_surface``); ``tolerance``: see ``neighbour_references``."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32).cpu()
    out = render_at(c2w)
    neighbours, unseen = torch.zeros(0, *out["rgb"].shape), None
    if normal_views is not None:
        neighbours = neighbour_references(normal_views, c2w, out["depth"], out["opacity"], out["rgb"], count, tolerance,
                                          exclude)  # fmt: skip
        if find_unseen:
            unseen = unseen_surface(normal_views, c2w, out["depth"], out["opacity"], tolerance)[None]
    return Reference(c2w, out["rgb"], out["opacity"][None], neighbours, unseen)


OTHER_SIDE_DEG = 90.0
"""A runner-up turned this far from the estimate shows the object's other side, not a pose beside it."""


def candidate_poses(pose: PoseResult, count: int, residual_ratio: float, separation_deg: float) -> list[torch.Tensor]:
    """The poses worth comparing at: the estimate and up to ``count - 1`` runners-up whose residual is
    within ``residual_ratio`` of the estimate's, whose rotation differs from every pose already
    taken by at least ``separation_deg`` and from the estimate by at most ``OTHER_SIDE_DEG``. Each
    (4, 4) on the CPU.

    On dark or near-symmetric objects a wrong pose can win the residual by a hair. Near twins are
    not tried: the lowest of several noisy scores would only pull small defects down. The object's
    other side is not tried either: the pose search weighs it over the whole object
    (``PoseConfig.half_turn``), while the comparison's score follows the map's peak, and on a
    near-symmetric object the wrong side can explain a defect away (a part missing on one side is
    background on the other).
    """
    candidates = [torch.as_tensor(pose.c2w).float().cpu()]
    limit = residual_ratio * max(pose.residual, 1e-6)
    for c2w, residual in zip(pose.alternatives, pose.alternative_residuals):
        if len(candidates) >= count or float(residual) > limit:
            break
        c2w = c2w.float().cpu()
        if float(pose_errors(c2w, candidates[0])[0]) > OTHER_SIDE_DEG:
            continue
        if all(float(pose_errors(c2w, taken)[0]) >= separation_deg for taken in candidates):
            candidates.append(c2w)
    return candidates


def registered_reference(
    query: np.ndarray, reference: Reference, motion: str, background: Sequence[float]
) -> Reference | None:
    """``reference`` warped in the image plane onto query (H, W, 3) (``register_reference``; its
    neighbours and unseen pixels get the same 2-D warp), or None when the registration is refused."""
    warped, warped_alpha, warp = register_reference(query, reference.image.numpy(), reference.alpha[0].numpy(),
                                                    motion, background=background)  # fmt: skip
    if warp is None:
        return None
    neighbours = [torch.from_numpy(warp_image(n.numpy(), warp, background)) for n in reference.neighbours]
    unseen = reference.unseen
    if unseen is not None:
        unseen = torch.from_numpy(warp_image(unseen[0].float().numpy(), warp, 0.0) > 0.5)[None]
    return Reference(reference.c2w, torch.from_numpy(warped), torch.from_numpy(warped_alpha)[None],
                     torch.stack(neighbours) if neighbours else reference.neighbours, unseen)  # fmt: skip


def best_reference(
    comparator: Comparator, query: np.ndarray, candidates: Sequence[Reference]
) -> tuple[ComparisonResult, Reference]:
    """Of the candidates, the one whose comparison with query (H, W, 3) has the lowest ``fit_score``:
    the reference that explains the query best (a comparison costs a few hundredths of a second).
    The score before normalising by the map's own spread decides, because a wrong pose raises the
    whole map, which that normalisation would excuse. Returns (ComparisonResult, Reference).
    """
    best = None
    query_t = torch.as_tensor(query)
    for reference in candidates:
        result = reference.compare(comparator, query_t)
        if best is None or float(result.fit_score[0]) < float(best[0].fit_score[0]):
            best = (result, reference)
    return best


def cached_normal_views(
    path: Path, key: str, views: PosedImages | None, render_at: RenderAt, progress: bool = True
) -> NormalViews:
    """The training views with the field's depth at each (what re-projected references are made
    of), read from ``path`` when it was made for the field ``key``, else rendered and saved there
    (which needs ``views``)."""
    cached = NormalViews.load(path, key)
    if cached is not None:
        return cached
    if views is None:
        raise OmniposeError(
            f"{path} is missing or was made for another field: fit the detector on the class's training views "
            "(Detector.fit) to make it again."
        )
    poses = tqdm(views.c2w, desc="rendering depth of the training views", disable=not progress, leave=False)
    depths = [render_at(c2w)["depth"] for c2w in poses]
    normal = NormalViews(views.images.float(), torch.stack(depths), views.c2w.float(), views.K.float(), key)
    normal.save(path)
    return normal

"""Normal references for a query: what it is compared with, and which of them wins.

A reference is the field rendered at a pose, with the nearest training views re-projected there
through the field's depth (``omnipose.compare.neighbour_references``), over the whole frame or over
a square crop about the object (``CompareConfig.object_crop``). A query is compared at its
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
from omnipose.core.geometry import pose_errors, scale_intrinsics, warped_intrinsics
from omnipose.core.image import compose_affine, square_crop, warp_image
from omnipose.data import PosedImages
from omnipose.pose import PoseResult, prepare_query, query_zoom, zoom_affine

# (c2w (4, 4), camera K (3, 3) or None for the field's own, (width, height) or None for its own) -> the field's
# render there on the CPU: {"rgb": (H, W, 3), "opacity": (H, W), "depth": (H, W)}
RenderAt = Callable[..., dict[str, torch.Tensor]]

BOX_SHRINK = 4
"""The object's box for a crop is found on a render this many times narrower than the frame."""
MAX_CROP_ZOOM = 4.0
"""A crop about the object magnifies it at most this much: past it a query's pixels are only interpolated."""


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
    crop: np.ndarray | None = None
    """(2, 3) affine from the frame the pose was searched in to this reference's, a crop about the
    object (None: that frame itself)."""

    def compare(self, comparator: Comparator, query: torch.Tensor) -> ComparisonResult:
        """comparator.compare of query (H, W, 3), in this reference's frame (``QueryView.in_frame``), with it."""
        neighbours = self.neighbours[None] if len(self.neighbours) else None
        return comparator.compare(query, self.image, self.alpha, neighbours, self.unseen)


@dataclass
class QueryView:
    """A query as the comparison takes it: image (H, W, 3), in the frame its pose was searched in (the
    model's lens), and for comparisons on a crop about the object, own (H, W, 3), the query in its own
    frame, with to_image (2, 3), the affine from own to image's frame (None: the same frame)."""

    image: np.ndarray
    background: Sequence[float] = (1.0, 1.0, 1.0)
    own: np.ndarray | None = None
    to_image: np.ndarray | None = None

    def in_frame(self, reference: Reference) -> torch.Tensor:
        """The query in ``reference``'s frame: image itself, or the reference's crop sampled from the
        query's own frame (no pixel resampled twice)."""
        if reference.crop is None:
            return torch.as_tensor(self.image)
        source, affine = self.image, reference.crop
        if self.own is not None:
            source = self.own
            affine = affine if self.to_image is None else compose_affine(affine, self.to_image)
        size = (int(reference.image.shape[1]), int(reference.image.shape[0]))
        return torch.from_numpy(warp_image(source, affine, self.background, size))


def as_query_view(query: "np.ndarray | QueryView") -> QueryView:
    """A QueryView as given, or of a prepared query (H, W, 3) alone."""
    return query if isinstance(query, QueryView) else QueryView(np.asarray(query))


def query_view(image, query: np.ndarray, info, config) -> QueryView:
    """The query as the comparison takes it: query (H, W, 3), ``image`` prepared (``prepare_query``), and
    for comparisons on a crop about the object (``config.compare.object_crop``, a DetectorConfig), ``image``
    in its own frame too, not scaled to the lens of the model ``info`` describes: so that a crop takes
    every pixel the query has."""
    if config.compare.object_crop == 0:
        return QueryView(query, info.background)
    own, _ = prepare_query(image, info, config.pose.foreground_threshold, config.query_focal, scale_to_model=False)
    zoom = query_zoom(image, info, config.query_focal)
    return QueryView(query, info.background, own, None if zoom is None else zoom_affine(zoom, own.shape[1], own.shape[0]))


def make_reference(
    render_at: RenderAt,
    normal_views: NormalViews | None,
    c2w: torch.Tensor,
    count: int,
    tolerance: float,
    exclude: int | None = None,
    find_unseen: bool = False,
    crop_margin: float = 0.0,
    frame: tuple[torch.Tensor, int, int] | None = None,
) -> Reference:
    """The normal reference at c2w (4, 4): the render and the ``count`` training views of
    ``normal_views`` nearest to it re-projected there (none when ``normal_views`` is None), leaving
    out training view ``exclude``; with ``find_unseen`` (and ``normal_views``) also where the render
    shows a surface none of them sees (``unseen_surface``); ``tolerance``: see ``neighbour_references``.
    With ``crop_margin`` > 0, all of it on a crop about the object (``object_crop``) of ``frame``, the
    field's own camera (K (3, 3), width, height)."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32).cpu()
    crop = object_crop(render_at, c2w, frame, crop_margin) if crop_margin > 0 else None
    camera, size = None, None
    if crop is not None:
        camera = warped_intrinsics(frame[0], crop)
        size = (frame[1], frame[1])
    out = render_at(c2w, camera, size)
    neighbours, unseen = torch.zeros(0, *out["rgb"].shape), None
    if normal_views is not None:
        neighbours = neighbour_references(normal_views, c2w, out["depth"], out["opacity"], out["rgb"], count, tolerance,
                                          exclude, camera)  # fmt: skip
        if find_unseen:
            unseen = unseen_surface(normal_views, c2w, out["depth"], out["opacity"], tolerance, camera)[None]
    return Reference(c2w, out["rgb"], out["opacity"][None], neighbours, unseen, crop)


def object_crop(render_at: RenderAt, c2w: torch.Tensor, frame: tuple[torch.Tensor, int, int], margin: float
                ) -> np.ndarray | None:  # fmt: skip
    """(2, 3) affine from ``frame`` (K (3, 3), width, height) to a square crop about the object at c2w,
    sampled as wide as the frame: the box of the render's opacity (above 0.5, on a render ``BOX_SHRINK``
    times narrower) grown on each side by ``margin`` times its longer side, magnified at most
    ``MAX_CROP_ZOOM`` times. None when nothing is opaque or the crop would not fit inside the frame."""
    K, width, height = frame
    small = (max(1, width // BOX_SHRINK), max(1, height // BOX_SHRINK))
    opacity = render_at(c2w, scale_intrinsics(K.float().cpu(), small[0] / width, small[1] / height), small)["opacity"]
    rows, cols = torch.nonzero(opacity > 0.5, as_tuple=True)
    if len(rows) == 0:
        return None
    left, right = float(cols.min()) * width / small[0], float(cols.max() + 1) * width / small[0]
    top, bottom = float(rows.min()) * height / small[1], float(rows.max() + 1) * height / small[1]
    crop = square_crop((left, top, right, bottom), margin, width, min_side=width / MAX_CROP_ZOOM)
    side = width / crop[0, 0]  # in the frame's pixels
    return None if side >= min(width, height) else crop


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
    query: "np.ndarray | QueryView", reference: Reference, motion: str, background: Sequence[float]
) -> Reference | None:
    """``reference`` warped in the image plane onto query (H, W, 3) (``register_reference``; its
    neighbours and unseen pixels get the same 2-D warp), or None when the registration is refused."""
    query = as_query_view(query).in_frame(reference).numpy()
    warped, warped_alpha, warp = register_reference(query, reference.image.numpy(), reference.alpha[0].numpy(),
                                                    motion, background=background)  # fmt: skip
    if warp is None:
        return None
    neighbours = [torch.from_numpy(warp_image(n.numpy(), warp, background)) for n in reference.neighbours]
    unseen = reference.unseen
    if unseen is not None:
        unseen = torch.from_numpy(warp_image(unseen[0].float().numpy(), warp, 0.0) > 0.5)[None]
    return Reference(reference.c2w, torch.from_numpy(warped), torch.from_numpy(warped_alpha)[None],
                     torch.stack(neighbours) if neighbours else reference.neighbours, unseen, reference.crop)  # fmt: skip


def best_reference(
    comparator: Comparator, query: "np.ndarray | QueryView", candidates: Sequence[Reference]
) -> tuple[ComparisonResult, Reference]:
    """Of the candidates, the one whose comparison with query (H, W, 3) has the lowest ``fit_score``:
    the reference that explains the query best (a comparison costs a few hundredths of a second).
    The score before normalising by the map's own spread decides, because a wrong pose raises the
    whole map, which that normalisation would excuse. Returns (ComparisonResult, Reference).
    """
    best, query = None, as_query_view(query)
    for reference in candidates:
        result = reference.compare(comparator, query.in_frame(reference))
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

"""Planted defects and the test views that show them.

``Burrs`` (a lump of plastic grown on a face), ``Missing`` (a stud, or a small part that nothing
else rests on, removed), ``Stains`` (a discoloured, irregular patch). The mask of a defect image is
exactly the set of pixels whose quantised colour differs by more than ``MASK_TOLERANCE`` (in
0..255 levels, any channel) from the defect-free render at the same pose, less specks of fewer than
``MASK_MIN_REGION`` pixels (ties along a plane a burr's box shares with its face); a defect is
grown or shrunk, or redrawn on another view, until that set covers ``defect_area`` of the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from omnipose.data import GOOD
from omnipose.data.synth.config import SCENE_BOUNDS, TEST_TYPES, SynthConfig, SynthError
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.figures import Figure
from omnipose.data.synth.raycast import BOX, Render, Scene, Stain, combine, make_box
from omnipose.data.synth.views import anomaly_mask, class_intrinsics, class_rng, random_test_pose, render_scene

_STAIN_COLOURS = ((0.24, 0.14, 0.07), (0.07, 0.07, 0.08), (0.62, 0.32, 0.1), (0.86, 0.84, 0.66), (0.42, 0.47, 0.36))


@dataclass
class Proposal:
    """A defective figure: its solids, a stain on them, and the solids removed (``Missing``)."""

    scene: Scene
    stain: Stain | None = None
    removed: tuple[int, ...] = ()


def _anchor_pixels(good: Render, figure: Figure, c2w: np.ndarray, boxes_only: bool) -> np.ndarray:
    """Flat indices of pixels that can host a burr or a stain: on the figure, facing the camera,
    away from silhouettes (so the defect sits on the surface that is seen)."""
    hit = good.solid >= 0
    if not hit.any():
        return np.zeros(0, dtype=np.int64)
    eye = c2w[:3, 3]
    to_eye = eye - good.points
    to_eye /= np.maximum(np.linalg.norm(to_eye, axis=-1, keepdims=True), 1e-12)
    facing = (good.normals * to_eye).sum(-1) > 0.4
    ok = hit & facing & ~good.edge
    if boxes_only:
        solid = np.where(hit, good.solid, 0)
        ok &= (figure.scene.kind[solid] == BOX) & (good.face < 6)
    return np.flatnonzero(ok.ravel())


def _pick_anchor(good: Render, figure: Figure, rng: np.random.Generator, c2w: np.ndarray, boxes_only: bool):
    """A random pixel (flat index, int) that can host a burr or a stain; None when the view shows none."""
    anchors = _anchor_pixels(good, figure, c2w, boxes_only)
    return int(rng.choice(anchors)) if anchors.size else None


def _draw_area(rng: np.random.Generator, config: SynthConfig) -> float:
    """A defect's first share of the image: log-uniform well inside ``defect_area``, so that the
    first proposal rarely needs growing or shrinking."""
    low, high = config.defect_area
    return math.exp(rng.uniform(math.log(2 * low), math.log(0.5 * high)))


def _world_size(good: Render, flat: int, area: float, config: SynthConfig, c2w: np.ndarray) -> float:
    """World length whose square covers ``area`` of the image at the depth of pixel ``flat``."""
    fx = float(class_intrinsics(config)[0, 0])
    depth = float(np.linalg.norm(good.points.reshape(-1, 3)[flat] - c2w[:3, 3]))
    pixels = math.sqrt(area * config.size * config.size)
    return pixels * depth / fx


def _burr(figure: Figure, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig):
    """Yields scenes with a lump of plastic grown on a face seen by the camera; ``send`` a growth factor."""
    flat = _pick_anchor(good, figure, rng, c2w, boxes_only=True)
    if flat is None:
        return
    point = good.points.reshape(-1, 3)[flat]
    solid = int(good.solid.ravel()[flat])
    face = int(good.face.ravel()[flat])
    axis, sign = face // 2, (1.0 if face % 2 else -1.0)
    across = [a for a in (0, 1, 2) if a != axis]
    albedo = figure.scene.albedo[solid]
    size = _world_size(good, flat, _draw_area(rng, config), config, c2w)
    shape = rng.uniform(0.6, 1.0, size=5)
    lumps = int(rng.integers(1, 4))
    offsets = rng.uniform(-0.35, 0.35, size=(lumps, 2))
    part = int(figure.scene.part.max()) + 1
    while True:
        solids = []
        for lump in range(lumps):
            scale = size * (1.0 if lump == 0 else 0.55)
            lo, hi = np.empty(3), np.empty(3)
            centre = point.copy()
            centre[across] += offsets[lump] * size * (lump > 0)
            height = scale * (0.55 * shape[0] + (0.5 * shape[1] if lump else 0.0))
            base, top = point[axis] - sign * 0.15 * scale, point[axis] + sign * height
            lo[axis], hi[axis] = min(base, top), max(base, top)
            for k, a in enumerate(across):
                half = 0.5 * scale * shape[2 + k]
                lo[a], hi[a] = centre[a] - half, centre[a] + half
            lo, hi = np.maximum(lo, SCENE_BOUNDS[0]), np.minimum(hi, SCENE_BOUNDS[1])  # defects stay in bounds
            if (hi > lo).all():
                solids.append(make_box(lo, hi, albedo, part=part))
        growth = yield Proposal(figure.scene.concat(combine(solids)) if solids else figure.scene)
        size *= growth


def _stain(figure: Figure, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig):
    """Yields stains on a surface seen by the camera; ``send`` a growth factor."""
    flat = _pick_anchor(good, figure, rng, c2w, boxes_only=False)
    if flat is None:
        return
    point = good.points.reshape(-1, 3)[flat]
    albedo = figure.scene.albedo[int(good.solid.ravel()[flat])]
    distances = [float(np.abs(np.asarray(c) - albedo).sum()) for c in _STAIN_COLOURS]
    colour = _STAIN_COLOURS[int(np.argsort(distances)[::-1][int(rng.integers(0, 2))])]
    radius = 0.6 * _world_size(good, flat, _draw_area(rng, config), config, c2w)
    wobble = tuple(
        (*(rng.normal(size=3) * rng.uniform(2.0, 4.0)), float(rng.uniform(0, 2 * math.pi))) for _ in range(3)
    )
    opacity = float(rng.uniform(0.6, 0.85))
    while True:
        growth = yield Proposal(figure.scene, Stain(tuple(point), radius, colour, wobble, opacity))
        radius *= growth


def _missing(figure: Figure, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig):
    """Yields scenes with one visible stud or leaf part (with its studs) removed, in random order among
    those whose visible share suits ``defect_area``; growth factors are ignored (a part has its size)."""
    scene = figure.scene
    seen = good.solid[good.solid >= 0]
    counts = np.bincount(seen, minlength=len(scene)) / good.solid.size
    low, high = config.defect_area
    candidates = []
    for solid in np.flatnonzero(scene.stud & (counts > 0)):
        candidates.append(("stud", int(solid), counts[solid]))
    for part in figure.leaf_parts:
        share = counts[scene.part == part].sum()
        if share > 0:
            candidates.append(("part", int(part), share))
    plausible = [c for c in candidates if 0.3 * low <= c[2] <= 0.8 * high]
    for index in rng.permutation(len(plausible)):
        kind, which, _ = plausible[index]
        keep = np.ones(len(scene), bool)
        if kind == "stud":
            keep[which] = False
        else:
            keep[scene.part == which] = False
        yield Proposal(scene.subset(keep), removed=tuple(int(i) for i in np.flatnonzero(~keep)))


_PROPOSERS = {"Burrs": _burr, "Missing": _missing, "Stains": _stain}


@dataclass
class RenderedTestView:
    """One rendered query: its pose, image (uint8) and mask (None for good views)."""

    defect_type: str
    index: int
    c2w: torch.Tensor
    image: np.ndarray
    mask: np.ndarray | None
    attempts: int = 1


def fit_defect(
    figure: Figure, defect_type: str, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig,
    mask_of: Callable[[Proposal], np.ndarray], max_tries: int = 6,
) -> tuple[Proposal | None, np.ndarray | None, int]:
    """Plant a defect on one view and grow or shrink it until ``mask_of(proposal)`` ((H, W) bool)
    covers ``config.defect_area`` of the image.

    good: the exact render of the defect-free figure at ``c2w`` (4, 4). Returns (proposal, mask,
    tries); (None, None, tries) when the view has no place for the defect or no size fits.
    """
    low, high = config.defect_area
    proposals = _PROPOSERS[defect_type](figure, good, rng, c2w, config)
    tries = 0
    try:
        proposal = next(proposals)
        for _ in range(max_tries):
            tries += 1
            mask = mask_of(proposal)
            share = float(mask.mean())
            if low <= share <= high:
                return proposal, mask, tries
            target = math.sqrt(low * high)
            growth = 1.6 if share == 0 else float(np.clip(math.sqrt(target / share), 0.5, 1.6))
            proposal = proposals.send(growth)
    except StopIteration:
        pass
    return None, None, tries


def make_test_view(
    class_name: str, defect_type: str, index: int, config: SynthConfig, distance: float,
    max_views: int = 12, max_tries: int = 6,
) -> RenderedTestView:
    """Render test view ``index`` of a type: a random pose, and for defect types a defect whose mask
    (pixels changed vs. the defect-free render) covers ``config.defect_area`` of the image.

    A defect that is too small (or invisible) is grown, one too large shrunk; after ``max_tries``
    the defect is redrawn on a new random view, up to ``max_views`` views.
    """
    figure = build_figure(class_name)
    type_id = TEST_TYPES.index(defect_type)
    attempts = 0
    for view in range(max_views):
        rng = class_rng(config.seed, class_name, 1, type_id, index, view)
        c2w = random_test_pose(rng, distance)
        good = render_scene(figure.scene, c2w, config)
        attempts += 1
        if defect_type == GOOD:
            return RenderedTestView(defect_type, index, c2w, good.to_uint8(), None, attempts)
        good_image = good.to_uint8()
        images = []

        def mask_of(proposal: Proposal) -> np.ndarray:
            images.append(render_scene(proposal.scene, c2w, config, proposal.stain).to_uint8())
            return anomaly_mask(images[-1], good_image)

        proposal, mask, tries = fit_defect(
            figure, defect_type, good, rng, c2w.numpy().astype(np.float64), config, mask_of, max_tries
        )
        attempts += tries
        if proposal is not None:
            return RenderedTestView(defect_type, index, c2w, images[-1], mask, attempts)
    raise defect_not_placed(class_name, defect_type, index, config, max_views)


def defect_not_placed(class_name: str, defect_type: str, index: int, config: SynthConfig, views: int) -> SynthError:
    low, high = config.defect_area
    return SynthError(
        f"could not place a visible {defect_type} defect of {low:.1%}-{high:.1%} of the image on {class_name} "
        f"(test view {index}) in {views} views; widen defect_area or raise --size."
    )

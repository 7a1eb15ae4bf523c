"""The figure language: LEGO parts placed on a stud grid (``FigureBuilder``), built into a ``Figure``.

Scene conventions: the object frame is the world frame, +Z up. Each figure is centred on the origin
(its bounding-box centre) and scaled so that its longest side is ``FIGURE_EXTENT``, so that every
figure lies inside the scene bounds [-1, 1]^3 with room for defects. ``Figure.aabb`` is the
figure's own box grown by ``AABB_MARGIN``, written to transforms.json as ``"aabb"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from omnipose.data.synth.raycast import Scene, combine, make_box, make_cylinder

FIGURE_EXTENT = 1.8
AABB_MARGIN = 0.1
PLATE = 0.4  # LEGO proportions in stud pitches: a plate is 3.2 mm on an 8 mm pitch
STUD_RADIUS = 0.3
STUD_HEIGHT = 0.2


@dataclass
class _Part:
    lo: np.ndarray
    hi: np.ndarray
    colour: tuple
    cylinder_axis: int = -1  # -1: a box
    cut: tuple | None = None
    stud_cells: list = field(default_factory=list)  # (x, y) centres of studs on its top


class FigureBuilder:
    """Places LEGO parts on the stud grid; ``build`` adds the studs and normalises the figure.

    Units: x, y in stud pitches, z in plates (a brick is 3 plates) for brick positions and heights;
    rods take their radius and length in stud pitches. Parts may touch or overlap (the union is drawn).
    Add supporting parts before what rests on them: a part that nothing added later touches is a
    "leaf" that ``Missing`` defects may remove.
    """

    def __init__(self) -> None:
        self.parts: list[_Part] = []

    def brick(self, x, y, z, w, d, h, colour, slope: tuple[str, float] | None = None, studs: bool = True) -> None:
        """A w x d brick, h plates high, corner at (x, y, z plates). slope=('+x', low): the top falls
        towards +x down to ``low`` plates at that edge (no studs on slopes)."""
        lo = np.array([x, y, z * PLATE], float)
        hi = np.array([x + w, y + d, (z + h) * PLATE], float)
        cut = None
        if slope is not None:
            direction, low = slope
            axis = {"x": 0, "y": 1}[direction[1]]
            run = hi[axis] - lo[axis]
            drop = hi[2] - (lo[2] + low * PLATE)
            normal = np.zeros(3)
            normal[2] = run
            normal[axis] = drop if direction[0] == "+" else -drop
            anchor = lo.copy() if direction[0] == "+" else hi.copy()
            anchor[2] = hi[2]
            cut = tuple(normal) + (float(normal @ anchor),)
        cells = []
        if studs and slope is None:
            cells = [(x + i + 0.5, y + j + 0.5) for i in range(int(round(w))) for j in range(int(round(d)))]
        self.parts.append(_Part(lo, hi, colour, cut=cut, stud_cells=cells))

    def round_brick(self, cx, cy, z, radius, h, colour, studs: bool = True) -> None:
        """A round brick (vertical cylinder) of ``radius`` pitches, h plates high, base at z plates."""
        lo = np.array([cx - radius, cy - radius, z * PLATE])
        hi = np.array([cx + radius, cy + radius, (z + h) * PLATE])
        cells = []
        if studs:
            span = int(math.floor(radius))
            for i in range(-span, span + 1):
                for j in range(-span, span + 1):
                    offset_x, offset_y = (i, j) if radius >= 1 else (0, 0)
                    if math.hypot(offset_x, offset_y) + STUD_RADIUS <= radius + 1e-9:
                        cells.append((cx + offset_x, cy + offset_y))
            cells = sorted(set(cells))
        self.parts.append(_Part(lo, hi, colour, cylinder_axis=2, stud_cells=cells))

    def legs(self, corners, footprint, segments) -> None:
        """A leg at each of ``corners`` ((x, y) pitches): bricks of ``footprint`` (w, d) pitches stacked
        from the ground (z = 0), ``segments`` ((plates, colour), ...) from the bottom up; leg by leg."""
        for x, y in corners:
            z = 0
            for height, colour in segments:
                self.brick(x, y, z, *footprint, height, colour)
                z += height

    def block(self, x0, y0, z0, x1, y1, z1, colour) -> None:
        """A plain box between two corners (z in plates): tiles, windows, fins, ears."""
        self.parts.append(_Part(np.array([x0, y0, z0 * PLATE]), np.array([x1, y1, z1 * PLATE]), colour))

    def rod(self, axis: int, cx, cy, cz, radius, length, colour) -> None:
        """A cylinder along axis 0/1/2 centred at (cx, cy, cz plates): eyes, wheels, poles."""
        centre = np.array([cx, cy, cz * PLATE])
        half = np.full(3, float(radius))
        half[axis] = 0.5 * length
        self.parts.append(_Part(centre - half, centre + half, colour, cylinder_axis=axis))

    def build(self) -> "Figure":
        solids: list[Scene] = []
        eps = 1e-6
        los = np.array([p.lo for p in self.parts])
        his = np.array([p.hi for p in self.parts])
        for index, part in enumerate(self.parts):
            if part.cylinder_axis < 0:
                solids.append(make_box(part.lo, part.hi, part.colour, part=index, cut=part.cut))
            else:
                centre = 0.5 * (part.lo + part.hi)
                radius = 0.5 * (part.hi - part.lo)[(part.cylinder_axis + 1) % 3]
                length = (part.hi - part.lo)[part.cylinder_axis]
                solids.append(make_cylinder(centre, part.cylinder_axis, radius, length, part.colour, part=index))
            for cx, cy in part.stud_cells:
                stud_lo = np.array([cx - STUD_RADIUS, cy - STUD_RADIUS, part.hi[2]]) + eps
                stud_hi = np.array([cx + STUD_RADIUS, cy + STUD_RADIUS, part.hi[2] + STUD_HEIGHT]) - eps
                overlap = ((los < stud_hi) & (his > stud_lo)).all(1)
                overlap[index] = False
                for other in np.flatnonzero(overlap):  # a round part covers the stud only where the discs meet
                    if self.parts[other].cylinder_axis == 2:
                        other_centre = 0.5 * (los[other] + his[other])
                        reach = 0.5 * (his[other] - los[other])[0] + STUD_RADIUS
                        overlap[other] = math.hypot(cx - other_centre[0], cy - other_centre[1]) < reach - eps
                covered = overlap.any()
                if not covered:
                    centre = (cx, cy, part.hi[2] + 0.5 * STUD_HEIGHT)
                    stud = make_cylinder(centre, 2, STUD_RADIUS, STUD_HEIGHT, part.colour, part=index, stud=True)
                    solids.append(stud)
        scene = combine(solids)
        low, high = scene.bounds()
        scale = FIGURE_EXTENT / float((high - low).max())
        scene = scene.transformed(scale, -0.5 * (low + high) * scale)
        # Leaves: parts that no later part touches, so removing one leaves nothing floating.
        touch = (los[:, None, :] <= his[None, :, :] + eps) & (his[:, None, :] >= los[None, :, :] - eps)
        touch = touch.all(-1)
        later = np.triu(np.ones_like(touch), k=1)
        leaves = np.flatnonzero(~(touch & later).any(1))
        return Figure(scene, tuple(int(i) for i in leaves))


@dataclass
class Figure:
    """A normalised figure: its solids (scene, object frame) and the ids of its leaf parts."""

    scene: Scene
    leaf_parts: tuple[int, ...]

    def aabb(self) -> list[list[float]]:
        low, high = self.scene.bounds()
        return [[round(float(v) - AABB_MARGIN, 4) for v in low], [round(float(v) + AABB_MARGIN, 4) for v in high]]



"""``omnipose synth``: a built-in benchmark in exactly the MAD-Sim layout, rendered from LEGO-like figures.

MAD and M2AD cannot be downloaded everywhere, yet every command must run out of the box; so this
module builds procedural LEGO-like figures (bricks with studs, slopes, round bricks, rods), renders
them with ``omnipose.raycast`` and writes, per class::

    <out>/<class>/transforms.json          training poses, Blender/NeRF format, + "aabb"
    <out>/<class>/train/good/<n>.png        defect-free training views (white background, RGB)
    <out>/<class>/test/{good,Burrs,Missing,Stains}/<n>.png   unposed query views
    <out>/<class>/ground_truth/<Type>/<n>_mask.png          uint8 0/255, 255 = anomalous
    <out>/<class>/synth.json                 marker with the generator settings
    <out>/ground_truth_poses/<class>.json    {"Type/n": c2w} for evaluation only (outside the class)

Scene conventions: the object frame is the world frame, +Z up. Each figure is centred on the origin
(its bounding-box centre) and scaled so that its longest side is ``FIGURE_EXTENT`` = 1.8; so every
figure lies inside the scene bounds ``SCENE_BOUNDS`` = [-1, 1]^3, defects included. transforms.json
carries the figure's own box grown by ``AABB_MARGIN`` as ``"aabb"``.

Cameras: training views sit on rings (equal azimuth steps, several elevations from below to above
the object, like MAD's camera every 15 degrees on rings along Z); test views look at the origin from
directions spread over the whole sphere, with a random roll about the viewing axis, at the same
distance. Lighting is fixed in the object frame (see ``raycast.Lighting``).

Defects: ``Burrs`` (a lump of plastic grown on a face), ``Missing`` (a stud or a small part that
nothing else rests on removed), ``Stains`` (a discoloured, irregular patch). The mask of a defect
image is exactly the set of pixels whose quantised colour differs by more than ``MASK_TOLERANCE``
(in 0..255 levels, any channel) from the defect-free render at the same pose; a defect is redrawn,
or the view redrawn, until that set covers ``defect_area`` of the image (0.1 - 2 % by default).
Everything is a deterministic function of (class name, seed, config).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.errors import DataError, OmniposeError
from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.core.geometry import intrinsics_from_fov, look_at, roll_camera, spherical_pose
from omnipose.core.image import dilate, save_image
from omnipose.data import DEFECT_TYPES, GOOD
from omnipose.data.synth.raycast import (
    BOX,
    Lighting,
    Render,
    Scene,
    Stain,
    combine,
    make_box,
    make_cylinder,
    quantize,
    render,
)

SYNTH_CLASSES = (
    "01Robot", "02Tower", "03Duck", "04Turtle", "05Giraffe", "06Car",
    "07House", "08Elephant", "09Rocket", "10Fish", "11Dog", "12Penguin",
)  # fmt: skip
TEST_TYPES = (GOOD,) + DEFECT_TYPES  # good, Burrs, Missing, Stains
FIGURE_EXTENT = 1.8
SCENE_BOUNDS = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
AABB_MARGIN = 0.1
MASK_TOLERANCE = 1  # a pixel is anomalous where some channel differs by more than 1/255
GROUND_TRUTH_POSES = "ground_truth_poses"
MARKER = "synth.json"
FORMAT_VERSION = 1


class SynthError(OmniposeError):
    """A synth request that cannot be carried out as asked."""


# ============================================================================= configuration
@dataclass
class SynthConfig:
    """Settings of the generator; the defaults make a MAD-like class at 200x200.

    classes: class names to make (``generate_dataset``); empty = the first ``num_classes`` of
    SYNTH_CLASSES, or all of them when ``num_classes`` is None.
    defect_area: the range of the mask's share of the image for defect images.
    """

    size: int = 200
    train_views: int = 40
    test_views_per_type: int = 10
    seed: int = 0
    classes: tuple[str, ...] = ()
    num_classes: int | None = None
    camera_angle_x: float = 0.6911112070083618  # Blender's default 50 mm lens, as in nerf_synthetic
    camera_distance: float | None = None  # None: per figure, so that it fills the view
    train_elevation_range_deg: tuple[float, float] = (-40.0, 70.0)
    train_rings: int | None = None  # None: about sqrt(train_views / 2.5), 4 rings for 40 views
    antialias: bool = True
    defect_area: tuple[float, float] = (0.001, 0.02)
    overwrite: bool = False
    progress: bool = True
    preview: bool = False
    lighting: Lighting = field(default_factory=Lighting)

    def validate(self) -> None:
        if self.size < 16:
            raise SynthError(f"--size {self.size} is too small to show a figure; use 16 or more (MAD: 400 or 800).")
        if self.train_rings is not None and self.train_rings < 1:
            raise SynthError(f"train_rings must be at least 1, got {self.train_rings}.")
        if self.train_views < 1 or self.test_views_per_type < 0:
            raise SynthError("need at least 1 training view and a non-negative number of test views per type.")
        low, high = self.defect_area
        if not 0 < low < high < 0.5:
            raise SynthError(
                f"defect_area {self.defect_area} must satisfy 0 < low < high < 0.5 (MAD: about 0.001-0.02)."
            )
        if self.camera_distance is not None and self.camera_distance <= math.sqrt(3.0) * SCENE_BOUNDS[1][0]:
            raise SynthError(
                f"camera_distance {self.camera_distance} puts cameras inside the scene bounds; use 2 or more."
            )
        for name in self.classes:
            if name not in SYNTH_CLASSES:
                raise SynthError(f"unknown synth class '{name}'; choose from {', '.join(SYNTH_CLASSES)}.")

    def class_names(self) -> list[str]:
        if self.classes:
            return list(self.classes)
        count = len(SYNTH_CLASSES) if self.num_classes is None else self.num_classes
        if not 1 <= count <= len(SYNTH_CLASSES):
            raise SynthError(f"--num-classes must be between 1 and {len(SYNTH_CLASSES)}, got {count}.")
        return list(SYNTH_CLASSES[:count])

    def settings(self) -> dict:
        """The settings that decide the output, for the synth.json marker."""
        out = asdict(self)
        for transient in ("classes", "num_classes", "overwrite", "progress", "preview"):
            out.pop(transient)
        return out


# ============================================================================= figures
PLATE = 0.4  # LEGO proportions in stud pitches: a plate is 3.2 mm on an 8 mm pitch
STUD_RADIUS = 0.3
STUD_HEIGHT = 0.2

RED, BLUE, YELLOW = (0.78, 0.08, 0.06), (0.05, 0.3, 0.72), (0.98, 0.78, 0.08)
GREEN, DARK_GREEN, LIME = (0.1, 0.55, 0.22), (0.04, 0.33, 0.15), (0.6, 0.78, 0.12)
WHITE, LIGHT_GREY, DARK_GREY = (0.93, 0.93, 0.9), (0.62, 0.64, 0.64), (0.33, 0.35, 0.37)
BLACK, ORANGE, BROWN, TAN = (0.09, 0.09, 0.1), (0.96, 0.48, 0.05), (0.42, 0.23, 0.1), (0.86, 0.74, 0.52)
AZURE, DARK_BLUE, DARK_YELLOW = (0.32, 0.66, 0.92), (0.06, 0.16, 0.42), (0.9, 0.64, 0.05)


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


def _robot(b: FigureBuilder) -> None:
    for x in (0, 3):
        b.brick(x, 0, 0, 1, 2, 3, DARK_GREY)
        b.brick(x, 0, 3, 1, 2, 3, DARK_GREY)
    b.brick(0, 0, 6, 4, 2, 1, LIGHT_GREY)
    b.brick(0, 0, 7, 4, 2, 3, BLUE)
    b.brick(0, 0, 10, 4, 2, 3, BLUE)
    b.brick(-1, 0, 13, 6, 2, 1, LIGHT_GREY)
    for x in (-1, 4):
        b.brick(x, 0, 10, 1, 2, 3, LIGHT_GREY)
        b.brick(x, 0, 7, 1, 2, 3, LIGHT_GREY)
        b.brick(x, 0.25, 5, 1, 1.5, 2, YELLOW, studs=False)
    b.brick(1, 0, 14, 2, 2, 1, DARK_GREY)
    b.brick(0.5, -0.5, 15, 3, 3, 4, LIGHT_GREY)
    b.rod(1, 1.0, -0.05, 10.5, 0.3, 0.12, RED)
    b.rod(1, 2.0, -0.05, 10.5, 0.3, 0.12, YELLOW)
    b.rod(1, 3.0, -0.05, 10.5, 0.3, 0.12, AZURE)
    b.rod(1, 1.4, -0.55, 17.3, 0.32, 0.12, BLACK)
    b.rod(1, 2.6, -0.55, 17.3, 0.32, 0.12, BLACK)
    b.block(1.2, -0.56, 15.6, 2.8, -0.5, 16.1, DARK_GREY)
    b.rod(2, 2.0, 1.0, 20.0, 0.1, 0.8, DARK_GREY)
    b.rod(2, 2.0, 1.0, 21.3, 0.22, 0.3, RED)


def _tower(b: FigureBuilder) -> None:
    b.brick(-1, -1, 0, 6, 6, 1, GREEN)
    for level in range(5):
        z = 1 + 3 * level
        first, second = (LIGHT_GREY, DARK_GREY) if level % 2 == 0 else (DARK_GREY, LIGHT_GREY)
        if level % 2 == 0:
            b.brick(0, 0, z, 4, 2, 3, first)
            b.brick(0, 2, z, 4, 2, 3, second)
        else:
            b.brick(0, 0, z, 2, 4, 3, first)
            b.brick(2, 0, z, 2, 4, 3, second)
    b.brick(-0.5, -0.5, 16, 5, 5, 1, DARK_GREY)
    for x, y in ((-0.5, -0.5), (3.5, -0.5), (-0.5, 3.5), (3.5, 3.5), (1.5, -0.5), (1.5, 3.5)):
        b.brick(x, y, 17, 1, 1, 3, LIGHT_GREY)
    b.block(1.2, -0.06, 1, 2.8, 0, 6.5, BROWN)
    b.block(1.4, -0.06, 9, 2.6, 0, 12, BLACK)
    b.block(4, 1.4, 9, 4.06, 2.6, 12, BLACK)
    b.rod(2, 2.0, 2.0, 21.5, 0.1, 1.8, BROWN)
    b.block(2.1, 1.96, 22.0, 3.4, 2.04, 24.0, RED)


def _duck(b: FigureBuilder) -> None:
    b.brick(2, 0, 0, 2, 1, 1, ORANGE)
    b.brick(2, 3, 0, 2, 1, 1, ORANGE)
    b.brick(0, 0, 1, 6, 4, 3, YELLOW)
    b.brick(0, 0, 4, 5, 4, 3, YELLOW)
    b.brick(-1, 1, 4, 1, 2, 4, YELLOW, slope=("-x", 1))
    b.block(0.8, -0.3, 3, 4.2, 0, 6, DARK_YELLOW)
    b.block(0.8, 4, 3, 4.2, 4.3, 6, DARK_YELLOW)
    b.brick(4, 1, 7, 2, 2, 3, YELLOW)
    b.brick(4, 1, 10, 3, 2, 3, YELLOW)
    b.brick(7, 1, 10, 1, 2, 2, ORANGE, slope=("+x", 0.5))
    b.rod(1, 5.8, 0.95, 11.8, 0.22, 0.12, BLACK)
    b.rod(1, 5.8, 3.05, 11.8, 0.22, 0.12, BLACK)


def _turtle(b: FigureBuilder) -> None:
    for x, y in ((0, 0), (4, 0), (0, 3), (4, 3)):
        b.brick(x, y, 0, 1, 1, 3, LIME)
    b.brick(0, 0, 3, 5, 4, 1, DARK_GREEN)
    b.brick(0, 0, 4, 3, 4, 3, GREEN)
    b.brick(3, 0, 4, 2, 4, 3, DARK_GREEN)
    b.brick(5, 1, 3, 2, 2, 3, LIME)
    b.brick(-1, 1.5, 3, 1, 1, 2, LIME, slope=("-x", 0.5))
    b.brick(1, 1, 7, 3, 2, 3, GREEN)
    b.brick(0, 1, 7, 1, 2, 3, DARK_GREEN, slope=("-x", 0.5))
    b.brick(4, 1, 7, 1, 2, 3, DARK_GREEN, slope=("+x", 0.5))
    b.brick(1, 0, 7, 3, 1, 3, GREEN, slope=("-y", 0.5))
    b.brick(1, 3, 7, 3, 1, 3, GREEN, slope=("+y", 0.5))
    b.brick(2, 1.5, 10, 1, 1, 1, YELLOW)
    b.rod(1, 6.4, 0.95, 5.0, 0.2, 0.12, BLACK)
    b.rod(1, 6.4, 3.05, 5.0, 0.2, 0.12, BLACK)


def _giraffe(b: FigureBuilder) -> None:
    for x, y in ((0, 0), (3, 0), (0, 1), (3, 1)):
        b.brick(x, y, 0, 1, 1, 1, BROWN)
        b.brick(x, y, 1, 1, 1, 5, YELLOW)
    b.brick(0, 0, 6, 4, 2, 3, YELLOW)
    for x0, z0 in ((0.4, 6.5), (1.8, 7.3), (0.9, 8.1)):
        b.block(x0, -0.05, z0, x0 + 0.8, 0, z0 + 1.5, BROWN)
        b.block(x0 + 0.3, 2, z0, x0 + 1.1, 2.05, z0 + 1.5, BROWN)
    for z in (9, 12, 15):
        b.brick(3, 0, z, 1, 2, 3, YELLOW)
    b.block(2.95, 0.6, 10.5, 3.0, 1.4, 17.5, BROWN)
    b.brick(3, 0, 18, 3, 2, 3, YELLOW)
    b.rod(1, 4.6, -0.05, 20.0, 0.2, 0.12, BLACK)
    b.rod(1, 4.6, 2.05, 20.0, 0.2, 0.12, BLACK)
    b.rod(0, 6.05, 1.0, 19.0, 0.3, 0.1, BROWN)
    for y in (0.5, 1.5):
        b.rod(2, 3.5, y, 22.0, 0.12, 0.4, BROWN)
        b.rod(2, 3.5, y, 22.8, 0.2, 0.24, BROWN)
    b.block(-0.5, 0.85, 7.0, 0, 1.15, 8.5, BROWN)


def _car(b: FigureBuilder) -> None:
    b.brick(0, 0, 1, 8, 4, 1, DARK_GREY)
    b.brick(0, 0, 2, 8, 4, 3, RED)
    b.brick(2, 0, 5, 1, 4, 3, AZURE, slope=("-x", 0.5))
    b.brick(3, 0, 5, 2, 4, 3, RED)
    b.brick(5, 0, 5, 1, 4, 3, AZURE, slope=("+x", 0.5))
    b.brick(3, 0, 8, 2, 4, 1, RED)
    b.block(3.2, -0.05, 5.6, 4.8, 0, 7.6, AZURE)
    b.block(3.2, 4, 5.6, 4.8, 4.05, 7.6, AZURE)
    for x in (1.5, 6.5):
        for y in (-0.25, 4.25):
            b.rod(1, x, y, 1.75, 0.7, 0.5, BLACK)
            b.rod(1, x, y, 1.75, 0.3, 0.58, LIGHT_GREY)
    b.rod(0, 8.03, 0.8, 3.5, 0.3, 0.1, YELLOW)
    b.rod(0, 8.03, 3.2, 3.5, 0.3, 0.1, YELLOW)
    b.rod(0, -0.03, 0.8, 3.5, 0.25, 0.1, ORANGE)
    b.rod(0, -0.03, 3.2, 3.5, 0.25, 0.1, ORANGE)
    b.block(8, 0, 1, 8.3, 4, 2, LIGHT_GREY)


def _house(b: FigureBuilder) -> None:
    b.brick(-1, -1, 0, 8, 7, 1, GREEN)
    for level in range(3):
        z = 1 + 3 * level
        colour = TAN if level % 2 == 0 else WHITE
        b.brick(0, 0, z, 3, 5, 3, colour)
        b.brick(3, 0, z, 3, 5, 3, colour)
    b.block(2.4, -0.06, 1, 3.6, 0, 6.5, BROWN)
    b.rod(1, 3.35, -0.1, 3.8, 0.08, 0.1, YELLOW)
    for x0 in (0.5, 4.5):
        b.block(x0, -0.06, 5, x0 + 1, 0, 7.5, AZURE)
    b.block(6, 1.5, 4.5, 6.06, 3.5, 7.5, AZURE)
    b.block(-0.06, 1.5, 4.5, 0, 3.5, 7.5, AZURE)
    b.brick(-0.3, -0.5, 10, 6.6, 3.0, 6, RED, slope=("-y", 1))
    b.brick(-0.3, 2.5, 10, 6.6, 3.0, 6, RED, slope=("+y", 1))
    b.brick(4, 3, 12, 1, 1, 6, DARK_GREY)


def _elephant(b: FigureBuilder) -> None:
    for x, y in ((0, 0), (4, 0), (0, 3), (4, 3)):
        b.brick(x, y, 0, 2, 2, 3, LIGHT_GREY)
        b.brick(x, y, 3, 2, 2, 3, LIGHT_GREY)
    b.brick(0, 0, 6, 6, 5, 3, LIGHT_GREY)
    b.brick(0, 0, 9, 6, 5, 3, LIGHT_GREY)
    b.brick(1, 1, 12, 4, 3, 1, DARK_GREY)
    b.brick(6, 1, 7, 2, 3, 3, LIGHT_GREY)
    b.brick(6, 1, 10, 2, 3, 3, LIGHT_GREY)
    b.brick(8, 2, 4, 1, 1, 3, LIGHT_GREY)
    b.brick(8, 2, 7, 1, 1, 3, LIGHT_GREY)
    b.brick(8, 2, 3, 1, 1, 1, DARK_GREY)
    b.block(6.2, 0.3, 8, 7.2, 1, 13, DARK_GREY)
    b.block(6.2, 4, 8, 7.2, 4.7, 13, DARK_GREY)
    b.rod(0, 8.5, 1.5, 8.0, 0.15, 1.0, WHITE)
    b.rod(0, 8.5, 3.5, 8.0, 0.15, 1.0, WHITE)
    b.rod(0, 8.03, 1.5, 11.5, 0.2, 0.1, BLACK)
    b.rod(0, 8.03, 3.5, 11.5, 0.2, 0.1, BLACK)
    b.rod(0, -0.4, 2.5, 10.0, 0.1, 0.8, DARK_GREY)


def _rocket(b: FigureBuilder) -> None:
    b.round_brick(0, 0, -2, 0.9, 1, ORANGE, studs=False)
    b.round_brick(0, 0, -4, 0.5, 2, YELLOW, studs=False)
    for level in range(5):
        b.round_brick(0, 0, 3 * level, 1.5, 3, RED if level == 3 else WHITE)
    b.round_brick(0, 0, 15, 0.65, 3, RED)
    b.round_brick(0, 0, 18, 0.45, 2, RED)
    b.rod(2, 0, 0, 20.5, 0.15, 1.0, RED)
    b.brick(1.2, -0.15, 0, 1.8, 0.3, 6, BLUE, slope=("+x", 1), studs=False)
    b.brick(-3.0, -0.15, 0, 1.8, 0.3, 6, BLUE, slope=("-x", 1), studs=False)
    b.brick(-0.15, 1.2, 0, 0.3, 1.8, 6, BLUE, slope=("+y", 1), studs=False)
    b.brick(-0.15, -3.0, 0, 0.3, 1.8, 6, BLUE, slope=("-y", 1), studs=False)
    b.rod(1, 0, -1.45, 9.5, 0.5, 0.2, AZURE)
    b.rod(0, 1.45, 0, 9.5, 0.5, 0.2, AZURE)


def _fish(b: FigureBuilder) -> None:
    layers = ((0, 3, 6, 2), (2, 1, 7, 3), (5, 0, 8, 3), (8, 1, 7, 3), (11, 3, 6, 2))
    for z, x0, x1, h in layers:
        cuts = [x0] + [c for c in (2, 3, 5, 6) if x0 < c < x1] + [x1]
        for a, c in zip(cuts[:-1], cuts[1:]):
            b.brick(a, 0, z, c - a, 2, h, WHITE if a in (2, 5) else ORANGE)
    b.block(-1.8, 0.8, 2, 0, 1.2, 11, ORANGE)
    b.block(-2.2, 0.8, 1, -1.8, 1.2, 12, BLACK)
    b.block(3, 0.85, 13, 5.6, 1.15, 16, ORANGE)
    b.block(3, 0.85, 16, 5.6, 1.15, 16.6, BLACK)
    for y, sign in ((-0.06, -1), (2.06, 1)):
        b.rod(1, 6.3, y, 9.5, 0.38, 0.12, WHITE)
        b.rod(1, 6.35, y + sign * 0.05, 9.5, 0.18, 0.12, BLACK)
    b.block(4.2, -0.3, 4, 5.2, 0, 6, ORANGE)
    b.block(4.2, 2, 4, 5.2, 2.3, 6, ORANGE)


def _dog(b: FigureBuilder) -> None:
    for x, y in ((0, 0), (4, 0), (0, 2), (4, 2)):
        b.brick(x, y, 0, 1, 1, 1, WHITE)
        b.brick(x, y, 1, 1, 1, 5, TAN)
    b.brick(0, 0, 6, 5, 3, 3, TAN)
    b.brick(1, 0, 9, 2, 3, 1, BROWN)
    b.brick(4, 0, 9, 2, 3, 3, TAN)
    b.block(3.95, -0.05, 11.0, 6.05, 3.05, 11.8, RED)
    b.brick(4, 0, 12, 3, 3, 3, TAN)
    b.brick(7, 1, 12, 1, 1, 2, TAN)
    b.rod(0, 8.03, 1.5, 13.5, 0.2, 0.1, BLACK)
    b.rod(0, 7.03, 0.55, 14.2, 0.22, 0.1, BLACK)
    b.rod(0, 7.03, 2.45, 14.2, 0.22, 0.1, BLACK)
    b.block(4.6, -0.3, 10.5, 5.6, 0, 14.5, BROWN)
    b.block(4.6, 3, 10.5, 5.6, 3.3, 14.5, BROWN)
    b.brick(-1, 1, 8, 1, 1, 4, TAN, slope=("-x", 1), studs=False)


def _penguin(b: FigureBuilder) -> None:
    b.brick(0, -1, 0, 1, 2, 1, ORANGE)
    b.brick(2, -1, 0, 1, 2, 1, ORANGE)
    for level in range(4):
        b.brick(0, 0, 1 + 3 * level, 3, 3, 3, BLACK)
    b.brick(0, 0, 13, 3, 3, 3, BLACK)
    b.block(0.4, -0.06, 2, 2.6, 0, 11, WHITE)
    b.brick(1, -1, 13, 1, 1, 2, ORANGE, slope=("-y", 0.5), studs=False)
    for x in (0.6, 2.4):
        b.rod(1, x, -0.05, 15.0, 0.3, 0.12, WHITE)
        b.rod(1, x, -0.1, 15.0, 0.14, 0.12, BLACK)
    b.block(-0.3, 0.5, 4, 0, 2.5, 11, BLACK)
    b.block(3, 0.5, 4, 3.3, 2.5, 11, BLACK)
    b.brick(0.5, 0.5, 16, 2, 2, 1, YELLOW)


_DESIGNS = {
    "01Robot": _robot, "02Tower": _tower, "03Duck": _duck, "04Turtle": _turtle, "05Giraffe": _giraffe,
    "06Car": _car, "07House": _house, "08Elephant": _elephant, "09Rocket": _rocket, "10Fish": _fish,
    "11Dog": _dog, "12Penguin": _penguin,
}  # fmt: skip


@lru_cache(maxsize=None)
def build_figure(class_name: str) -> Figure:
    """The figure of a synth class: a fixed design, the same for every seed (the class identity)."""
    if class_name not in _DESIGNS:
        raise SynthError(f"unknown synth class '{class_name}'; choose from {', '.join(SYNTH_CLASSES)}.")
    builder = FigureBuilder()
    _DESIGNS[class_name](builder)
    return builder.build()


# ============================================================================= cameras
def _class_rng(seed: int, class_name: str, *stream: int) -> np.random.Generator:
    """An independent random stream per (seed, class, purpose...): one view's retries never shift another's."""
    return np.random.default_rng([int(seed), zlib.crc32(class_name.encode()), *stream])


def camera_distance(figure: Figure, config: SynthConfig) -> float:
    """The configured distance, or the one at which the figure's bounding sphere fills ~85 % of the view."""
    if config.camera_distance is not None:
        return float(config.camera_distance)
    radius = float(np.linalg.norm(np.maximum(np.abs(figure.scene.lo), np.abs(figure.scene.hi)), axis=1).max())
    return round(radius / math.sin(0.5 * config.camera_angle_x) / 0.85, 3)


def training_poses(class_name: str, config: SynthConfig, distance: float) -> torch.Tensor:
    """Cameras on rings around the object, looking at the origin, world up +Z. Returns (N, 4, 4) float32.

    Rings sit at evenly spaced elevations in ``train_elevation_range_deg``; each gets a share of the
    views proportional to its circumference, at equal azimuth steps (a seeded phase, staggered by
    half a step from ring to ring). 96 views on 4 rings give MAD's camera every 15 degrees.
    """
    count = config.train_views
    rings = config.train_rings or round(math.sqrt(count / 2.5))
    rings = max(1, min(count, rings))
    low, high = config.train_elevation_range_deg
    elevations = np.radians(np.linspace(low, high, rings)) if rings > 1 else np.radians([0.5 * (low + high)])
    weights = np.cos(elevations) / np.cos(elevations).sum()
    per_ring = np.floor(weights * count).astype(int)
    remainder = np.argsort(-(weights * count - per_ring), kind="stable")[: count - per_ring.sum()]
    per_ring[remainder] += 1
    phase = _class_rng(config.seed, class_name, 0).uniform(0, 2 * math.pi)
    poses = []
    for ring, (elevation, views) in enumerate(zip(elevations, per_ring)):
        step = 2 * math.pi / max(int(views), 1)
        for k in range(int(views)):
            azimuth = phase + (k + 0.5 * (ring % 2)) * step
            poses.append(spherical_pose(azimuth, float(elevation), distance))
    return torch.stack(poses)


def random_test_pose(rng: np.random.Generator, distance: float) -> torch.Tensor:
    """A camera looking at the origin from a direction uniform on the sphere, rolled at random. (4, 4) float32."""
    z = rng.uniform(-1.0, 1.0)
    azimuth = rng.uniform(0.0, 2 * math.pi)
    across = math.sqrt(max(0.0, 1.0 - z * z))
    eye = torch.tensor([across * math.cos(azimuth), across * math.sin(azimuth), z]) * distance
    return roll_camera(look_at(eye, torch.zeros(3)), float(rng.uniform(-math.pi, math.pi)))


def class_intrinsics(config: SynthConfig) -> torch.Tensor:
    """K (3, 3) float32 of every view, as ``load_transforms`` derives it from camera_angle_x."""
    return intrinsics_from_fov(config.camera_angle_x, config.size, config.size)


def render_scene(scene: Scene, c2w: torch.Tensor, config: SynthConfig, stain: Stain | None = None) -> Render:
    """Render at the config's size and lens. c2w: (4, 4); its float32 values are what gets rendered."""
    pose = np.asarray(torch.as_tensor(c2w, dtype=torch.float32), dtype=np.float64)
    K = class_intrinsics(config).numpy().astype(np.float64)
    return render(scene, pose, K, config.size, config.size, config.lighting, stain, config.antialias)


def render_defect_free(class_name: str, c2w: torch.Tensor, config: SynthConfig | None = None) -> np.ndarray:
    """The defect-free view of a class from a pose, exactly as ``generate_class`` draws it.

    c2w: (4, 4), e.g. from ``load_ground_truth_poses``. Returns (H, W, 3) uint8.
    """
    config = config or SynthConfig()
    return render_scene(build_figure(class_name).scene, c2w, config).to_uint8()


def anomaly_mask(defective: np.ndarray, defect_free: np.ndarray) -> np.ndarray:
    """Pixels where two uint8 renders differ by more than MASK_TOLERANCE in any channel.

    defective, defect_free: (H, W, 3) uint8. Returns (H, W) bool.
    """
    difference = np.abs(defective.astype(np.int16) - defect_free.astype(np.int16)).max(-1)
    return difference > MASK_TOLERANCE


# ============================================================================= defects
_STAIN_COLOURS = ((0.24, 0.14, 0.07), (0.07, 0.07, 0.08), (0.62, 0.32, 0.1), (0.86, 0.84, 0.66), (0.42, 0.47, 0.36))


@dataclass
class _Proposal:
    scene: Scene
    stain: Stain | None = None


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


def _world_size(good: Render, flat: int, area: float, config: SynthConfig, c2w: np.ndarray) -> float:
    """World length whose square covers ``area`` of the image at the depth of pixel ``flat``."""
    fx = float(class_intrinsics(config)[0, 0])
    depth = float(np.linalg.norm(good.points.reshape(-1, 3)[flat] - c2w[:3, 3]))
    pixels = math.sqrt(area * config.size * config.size)
    return pixels * depth / fx


def _burr(figure: Figure, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig):
    """Yields scenes with a lump of plastic grown on a face seen by the camera; ``send`` a growth factor."""
    anchors = _anchor_pixels(good, figure, c2w, boxes_only=True)
    if anchors.size == 0:
        return
    flat = int(rng.choice(anchors))
    point = good.points.reshape(-1, 3)[flat]
    solid = int(good.solid.ravel()[flat])
    face = int(good.face.ravel()[flat])
    axis, sign = face // 2, (1.0 if face % 2 else -1.0)
    across = [a for a in (0, 1, 2) if a != axis]
    albedo = figure.scene.albedo[solid]
    area = math.exp(rng.uniform(math.log(2 * config.defect_area[0]), math.log(0.5 * config.defect_area[1])))
    size = _world_size(good, flat, area, config, c2w)
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
        growth = yield _Proposal(figure.scene.concat(combine(solids)) if solids else figure.scene)
        size *= growth


def _stain(figure: Figure, good: Render, rng: np.random.Generator, c2w: np.ndarray, config: SynthConfig):
    """Yields stains on a surface seen by the camera; ``send`` a growth factor."""
    anchors = _anchor_pixels(good, figure, c2w, boxes_only=False)
    if anchors.size == 0:
        return
    flat = int(rng.choice(anchors))
    point = good.points.reshape(-1, 3)[flat]
    albedo = figure.scene.albedo[int(good.solid.ravel()[flat])]
    distances = [float(np.abs(np.asarray(c) - albedo).sum()) for c in _STAIN_COLOURS]
    colour = _STAIN_COLOURS[int(np.argsort(distances)[::-1][int(rng.integers(0, 2))])]
    area = math.exp(rng.uniform(math.log(2 * config.defect_area[0]), math.log(0.5 * config.defect_area[1])))
    radius = 0.6 * _world_size(good, flat, area, config, c2w)
    wobble = tuple(
        (*(rng.normal(size=3) * rng.uniform(2.0, 4.0)), float(rng.uniform(0, 2 * math.pi))) for _ in range(3)
    )
    opacity = float(rng.uniform(0.6, 0.85))
    while True:
        growth = yield _Proposal(figure.scene, Stain(tuple(point), radius, colour, wobble, opacity))
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
        yield _Proposal(scene.subset(keep))


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
    low, high = config.defect_area
    attempts = 0
    for view in range(max_views):
        rng = _class_rng(config.seed, class_name, 1, type_id, index, view)
        c2w = random_test_pose(rng, distance)
        good = render_scene(figure.scene, c2w, config)
        attempts += 1
        if defect_type == GOOD:
            return RenderedTestView(defect_type, index, c2w, good.to_uint8(), None, attempts)
        good_image = good.to_uint8()
        proposals = _PROPOSERS[defect_type](figure, good, rng, c2w.numpy().astype(np.float64), config)
        try:
            proposal = next(proposals)
            for _ in range(max_tries):
                attempts += 1
                image = render_scene(proposal.scene, c2w, config, proposal.stain).to_uint8()
                mask = anomaly_mask(image, good_image)
                share = float(mask.mean())
                if low <= share <= high:
                    return RenderedTestView(defect_type, index, c2w, image, mask, attempts)
                target = math.sqrt(low * high)
                growth = 1.6 if share == 0 else float(np.clip(math.sqrt(target / share), 0.5, 1.6))
                proposal = proposals.send(growth)
        except StopIteration:
            continue
    raise SynthError(
        f"could not place a visible {defect_type} defect of {low:.1%}-{high:.1%} of the image on {class_name} "
        f"(test view {index}) in {max_views} views; widen defect_area or raise --size."
    )


# ============================================================================= writing a class
def _check_target(folder: Path, overwrite: bool) -> None:
    """Refuse to replace a class folder that ``omnipose synth`` did not make, unless told to."""
    if folder.exists() and not (folder / MARKER).is_file() and not overwrite:
        raise SynthError(
            f"{folder} exists and was not made by `omnipose synth` (no {MARKER} in it); it may be a real "
            "dataset. Choose another --out, or pass --overwrite to replace it."
        )


def _write_test_view(stage: Path, view: RenderedTestView) -> str:
    key = f"{view.defect_type}/{view.index}"
    save_image(stage / "test" / view.defect_type / f"{view.index}.png", view.image)
    if view.mask is not None:
        mask_path = stage / "ground_truth" / view.defect_type / f"{view.index}_mask.png"
        save_image(mask_path, view.mask.astype(np.uint8) * 255)
    return key


def _pose_list(c2w: torch.Tensor) -> list[list[float]]:
    """A float32 pose as JSON numbers that read back to the same float32 values."""
    return [[float(v) for v in row] for row in c2w.to(torch.float32).tolist()]


def generate_class(out_root: str | Path, class_name: str, config: SynthConfig | None = None) -> Path:
    """Render one class in the MAD-Sim layout under ``out_root``; returns the class folder.

    The class is built in ``<out_root>/.synth-staging/<class>`` and moved into place when complete,
    so an interrupted run never leaves a half-made class where readers would find it. Its
    ground-truth test poses go to ``<out_root>/ground_truth_poses/<class>.json``.
    """
    config = config or SynthConfig()
    config.validate()
    out_root = Path(out_root)
    folder = out_root / class_name
    _check_target(folder, config.overwrite)
    figure = build_figure(class_name)
    distance = camera_distance(figure, config)
    staging_root = out_root / ".synth-staging"
    stage = staging_root / class_name
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)

    train = training_poses(class_name, config, distance)
    total = len(train) + config.test_views_per_type * len(TEST_TYPES)
    bar = tqdm(total=total, desc=f"synth {class_name}", disable=not config.progress, leave=False)
    frames = []
    for index, c2w in enumerate(train):
        save_image(stage / "train" / GOOD / f"{index}.png", render_scene(figure.scene, c2w, config).to_uint8())
        frames.append({"file_path": f"train/{GOOD}/{index}.png", "transform_matrix": _pose_list(c2w)})
        bar.update()
    atomic_write_json(
        stage / "transforms.json",
        {"camera_angle_x": config.camera_angle_x, "aabb": figure.aabb(), "frames": frames},
    )
    poses, previews = {}, []
    for defect_type in TEST_TYPES:
        (stage / "test" / defect_type).mkdir(parents=True, exist_ok=True)
        for index in range(config.test_views_per_type):
            view = make_test_view(class_name, defect_type, index, config, distance)
            poses[_write_test_view(stage, view)] = _pose_list(view.c2w)
            if config.preview:
                previews.append(view)
            bar.update()
    bar.close()
    atomic_write_json(
        stage / MARKER,
        {
            "generator": "omnipose synth", "format_version": FORMAT_VERSION, "class": class_name,
            "camera_distance": distance, "mask_tolerance": MASK_TOLERANCE, "settings": config.settings(),
        },
    )
    # Swap the finished class in, then publish its poses (outside the class folder: query images are unposed).
    if folder.exists():
        shutil.rmtree(folder)
    stage.rename(folder)
    try:
        staging_root.rmdir()  # only when empty: another run may be staging a class beside this one
    except OSError:
        pass
    atomic_write_json(out_root / GROUND_TRUTH_POSES / f"{class_name}.json", poses)
    if config.preview:
        write_preview(out_root / f"preview_{class_name}.png", folder, previews)
    return folder


def ensure_class(out_root: str | Path, class_name: str, config: SynthConfig) -> set[str]:
    """Make a class unless one made by ``omnipose synth`` with these settings is already there.

    A class made with other settings (say another size or fewer test views) is made again; a
    folder that synth did not make is refused by ``generate_class``. Returns what changed, so that
    callers drop only what they derived from it: {} when the class was kept, {"test"} when only the
    test views may differ (predictions are stale, a trained field is not), {"train", "test"} when
    the training views changed too (generation is deterministic, so unchanged settings give the same
    bytes).
    """
    folder = Path(out_root) / class_name
    if (folder / MARKER).is_file() and read_synth_config(folder).settings() == config.settings():
        return set()
    before = _training_fingerprint(folder)
    generate_class(out_root, class_name, config)
    return {"test"} if before is not None and before == _training_fingerprint(folder) else {"train", "test"}


def _training_fingerprint(folder: Path) -> str | None:
    """SHA-256 of a class's transforms.json and training images, or None when it has none."""
    files = sorted((folder / "train").rglob("*.png")) if (folder / "transforms.json").is_file() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in [folder / "transforms.json", *files]:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def generate_dataset(out_root: str | Path, config: SynthConfig | None = None) -> list[Path]:
    """Render every class the config names (all SYNTH_CLASSES by default); returns the class folders."""
    config = config or SynthConfig()
    config.validate()
    names = config.class_names()
    for name in names:  # refuse before rendering anything
        _check_target(Path(out_root) / name, config.overwrite)
    quiet = not config.progress or len(names) < 2
    return [generate_class(out_root, name, config) for name in tqdm(names, desc="synth classes", disable=quiet)]


def read_synth_config(class_folder: str | Path) -> SynthConfig:
    """The settings a synth class was generated with (from its synth.json), e.g. to re-render views."""
    path = Path(class_folder) / MARKER
    if not path.is_file():
        raise DataError(f"{path} not found: {class_folder} was not made by `omnipose synth`.")
    settings = json.loads(path.read_text())["settings"]
    lighting = Lighting(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.pop("lighting").items()})
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return SynthConfig(**settings, lighting=lighting, progress=False)


def load_ground_truth_poses(root: str | Path, class_name: str) -> dict[str, torch.Tensor]:
    """Ground-truth poses of a synth class's test views: {"Type/stem": c2w (4, 4) float32}.

    For evaluation and benchmarks only; the dataset itself gives query images no poses, as MAD.
    """
    path = Path(root) / GROUND_TRUTH_POSES / f"{class_name}.json"
    if not path.is_file():
        raise DataError(
            f"no ground-truth test poses at {path}. They exist only for datasets made by `omnipose synth` "
            f"(MAD ships none); regenerate with `omnipose synth --out {root} --classes {class_name}`."
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); regenerate the class with `omnipose synth`.") from error
    poses = {}
    for key, matrix in raw.items():
        pose = torch.tensor(matrix, dtype=torch.float32)
        if pose.shape != (4, 4) or not torch.isfinite(pose).all():
            raise DataError(f"pose '{key}' in {path} is not a finite 4x4 matrix; regenerate the class.")
        poses[key] = pose
    return poses


# ============================================================================= preview
def _tile(image: np.ndarray, tile: int, mask: np.ndarray | None = None) -> np.ndarray:
    """image (H, W, 3) uint8 -> (tile, tile, 3), the mask's outline drawn in red just outside it."""
    import cv2

    out = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    if mask is not None:
        small = cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST) > 0
        if not small.any():  # a defect smaller than a tile pixel still gets marked
            rows, cols = np.nonzero(mask)
            small[int(rows.mean() * tile / mask.shape[0]), int(cols.mean() * tile / mask.shape[1])] = True
        grown = dilate(small, 1, shape="square")
        out[grown & ~small] = (255, 0, 0)
    return out


def _read_back(class_folder: Path, per_type: int) -> list[RenderedTestView]:
    """The first test views of each type of a written class, with their masks."""
    from omnipose.core.image import read_image_rgb, read_mask

    views = []
    for defect_type in TEST_TYPES:
        folder = class_folder / "test" / defect_type
        paths = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:per_type] if folder.is_dir() else []
        for image_path in paths:
            image = quantize(read_image_rgb(image_path))
            mask = None
            if defect_type != GOOD:
                mask = read_mask(class_folder / "ground_truth" / defect_type / f"{image_path.stem}_mask.png")
            views.append(RenderedTestView(defect_type, int(image_path.stem), torch.eye(4), image, mask))
    return views


def write_preview(
    path: str | Path, class_folder: str | Path, views: list[RenderedTestView] | None = None, columns: int = 6
) -> Path:
    """A contact sheet: a row of training views, then a row per test type with the masks outlined in red.

    views: the test views in memory; None reads them back from ``class_folder``.
    """
    from PIL import Image, ImageDraw

    from omnipose.core.image import read_image_rgb

    class_folder = Path(class_folder)
    views = _read_back(class_folder, columns) if views is None else views
    train_paths = sorted((class_folder / "train" / GOOD).glob("*.png"), key=lambda p: int(p.stem))
    spread = np.linspace(0, len(train_paths) - 1, min(columns, len(train_paths))).round().astype(int)
    train_images = [quantize(read_image_rgb(train_paths[i])) for i in spread]
    rows = [("train", train_images, [None] * len(train_images))]
    for defect_type in TEST_TYPES:
        chosen = [v for v in views if v.defect_type == defect_type][:columns]
        if chosen:
            label = f"test/{defect_type}" + ("" if defect_type == GOOD else "  (red: outline of the mask)")
            rows.append((label, [v.image for v in chosen], [v.mask for v in chosen]))
    tile, header = 160, 18
    sheet = np.full((len(rows) * (tile + header), columns * tile, 3), 255, np.uint8)
    for r, (_, images, masks) in enumerate(rows):
        top = r * (tile + header) + header
        for c, (image, mask) in enumerate(zip(images, masks)):
            sheet[top : top + tile, c * tile : (c + 1) * tile] = _tile(image, tile, mask)
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for r, (label, _, _) in enumerate(rows):
        draw.text((4, r * (tile + header) + 3), f"{class_folder.name}  {label}", fill=(0, 0, 0))
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


# ============================================================================= command line
def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``omnipose synth``."""
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write (MAD-Sim layout)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--classes", default="", help=f"comma-separated classes, from: {','.join(SYNTH_CLASSES)}")
    which.add_argument("--num-classes", type=int, default=None, help="the first K classes (default: all)")
    parser.add_argument("--size", type=int, default=200, help="image width = height in pixels (MAD: 400 or 800)")
    parser.add_argument("--train-views", type=int, default=40, help="training views per class")
    parser.add_argument(
        "--test-views-per-type", type=int, default=10, help="test views per type (good, Burrs, Missing, Stains)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cameras and defects")
    parser.add_argument("--preview", action="store_true", help="also write <out>/preview_<class>.png contact sheets")
    parser.add_argument("--overwrite", action="store_true", help="replace class folders not made by synth")
    parser.add_argument("--no-antialias", action="store_true", help="one ray per pixel (faster, jagged edges)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    classes = tuple(name.strip() for name in (args.classes or "").split(",") if name.strip())
    return SynthConfig(
        size=args.size, train_views=args.train_views, test_views_per_type=args.test_views_per_type, seed=args.seed,
        classes=classes, num_classes=args.num_classes, antialias=not args.no_antialias, overwrite=args.overwrite,
        progress=not args.quiet, preview=args.preview,
    )


def run_synth(args: argparse.Namespace) -> int:
    """``omnipose synth``: returns 0 on success, 2 on a bad request (message on stderr)."""
    try:
        config = config_from_args(args)
        folders = generate_dataset(args.out, config)
    except OmniposeError as error:
        print(f"omnipose synth: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} class(es) to {args.out}: {', '.join(f.name for f in folders)}")
    print(f"ground-truth test poses (for evaluation only): {Path(args.out) / GROUND_TRUTH_POSES}")
    if config.preview:
        print("previews: " + ", ".join(str(Path(args.out) / f"preview_{f.name}.png") for f in folders))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m omnipose.synth``: the same as ``omnipose synth``."""
    parser = argparse.ArgumentParser(prog="omnipose synth", description=__doc__.split("\n")[0])
    add_synth_arguments(parser)
    return run_synth(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

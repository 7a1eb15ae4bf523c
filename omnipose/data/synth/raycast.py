"""Exact ray casting and shading of scenes built from boxes and cylinders (for ``omnipose synth``).

A ``Scene`` is a list of convex solids in the object (world) frame, stored as flat numpy arrays:

- *boxes*: axis-aligned, optionally cut by one plane ``n . x <= c`` (a LEGO slope brick);
- *cylinders*: along the x, y or z axis (studs, round bricks, wheels, eyes).

Rendering casts one ray per pixel centre, finds the nearest solid analytically, and shades it with
a fixed world-frame lighting rig (``Lighting``, in ``omnipose.data.synth.config``): hemispherical
ambient, Lambert diffuse, Blinn-Phong specular, and hard shadows from the key light (shadow rays).
Pixels where what is seen changes between neighbours (another solid, face, shadow or stain) are
re-rendered with 2x2 supersampling, so edges are anti-aliased like a photograph without paying 4
rays everywhere.

Speed comes from culling: every solid is tested only against the rays whose 2D footprint (pixel
position for camera rays, position across the light for shadow rays) falls inside the solid's
projected bounding rectangle, found by binary search on rays sorted by one coordinate. All
arithmetic is float64 numpy and single-threaded, so a render is a pure, bit-reproducible function
of (scene, pose, intrinsics, size, lighting, stain).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from omnipose.core.device import one_torch_thread
from omnipose.core.errors import OmniposeError
from omnipose.core.geometry import generate_rays, project
from omnipose.data.synth.config import Lighting

BOX, CYLINDER = 0, 1
# Face ids: boxes 0..5 = (-x, +x, -y, +y, -z, +z), 6 = the cutting plane; cylinders 0 = side,
# 1 = cap at the low end of the axis, 2 = cap at the high end.
_CUT_FACE = 6
_NO_HIT = np.inf
_TINY = 1e-12


class SceneError(OmniposeError):
    """A scene or a render request is malformed."""


# ----------------------------------------------------------------------------- scene
@dataclass
class Scene:
    """Convex solids in the object frame, one row per solid.

    kind: (P,) int, BOX or CYLINDER. lo, hi: (P, 3) axis-aligned bounds (the box itself, or the
    cylinder's bounding box). cut: (P, 4) plane (nx, ny, nz, c) keeping n . x <= c, zeros for none.
    axis: (P,) cylinder axis 0/1/2. radius: (P,) cylinder radius. albedo: (P, 3) in [0, 1].
    part: (P,) id of the LEGO part a solid belongs to (a brick and its studs share one).
    stud: (P,) bool, True for studs.
    """

    kind: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cut: np.ndarray
    axis: np.ndarray
    radius: np.ndarray
    albedo: np.ndarray
    part: np.ndarray
    stud: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def empty() -> "Scene":
        return Scene(
            np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0, np.int64),
            np.zeros(0), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, bool),
        )

    def subset(self, keep: np.ndarray) -> "Scene":
        """The solids where ``keep`` (bool (P,) or indices) selects them."""
        return Scene(*(getattr(self, name)[keep] for name in _FIELDS))

    def concat(self, other: "Scene") -> "Scene":
        return Scene(*(np.concatenate([getattr(self, name), getattr(other, name)]) for name in _FIELDS))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of the whole scene: two (3,) arrays."""
        if len(self) == 0:
            raise SceneError("the scene has no solids; add at least one box or cylinder.")
        return self.lo.min(0), self.hi.max(0)

    def transformed(self, scale: float, offset: np.ndarray) -> "Scene":
        """The scene scaled by ``scale`` about the origin, then moved by ``offset`` (3,)."""
        offset = np.asarray(offset, dtype=np.float64)
        cut = self.cut.copy()
        has_cut = np.abs(cut[:, :3]).sum(1) > 0
        # n . (x - offset) / scale <= c  <=>  n . x <= c * scale + n . offset
        cut[has_cut, 3] = cut[has_cut, 3] * scale + cut[has_cut, :3] @ offset
        return Scene(
            self.kind.copy(), self.lo * scale + offset, self.hi * scale + offset, cut, self.axis.copy(),
            self.radius * scale, self.albedo.copy(), self.part.copy(), self.stud.copy(),
        )


_FIELDS = ("kind", "lo", "hi", "cut", "axis", "radius", "albedo", "part", "stud")


def make_box(lo, hi, albedo, part: int = 0, cut=None) -> Scene:
    """One box from corner ``lo`` to ``hi`` (3,), optionally cut by the plane (nx, ny, nz, c)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if not (hi > lo).all():
        raise SceneError(f"box corners lo={lo.tolist()} hi={hi.tolist()} must satisfy lo < hi on every axis.")
    plane = np.zeros(4) if cut is None else np.asarray(cut, np.float64)
    return Scene(
        np.array([BOX]), lo[None], hi[None], plane[None], np.zeros(1, np.int64), np.zeros(1),
        np.asarray(albedo, np.float64)[None], np.array([part]), np.zeros(1, bool),
    )


def make_cylinder(centre, axis: int, radius: float, length: float, albedo, part: int = 0, stud: bool = False) -> Scene:
    """One cylinder centred at ``centre`` (3,) along world axis ``axis`` (0, 1 or 2)."""
    centre = np.asarray(centre, np.float64)
    if axis not in (0, 1, 2) or radius <= 0 or length <= 0:
        raise SceneError(f"cylinder needs axis in 0/1/2 and positive radius/length, got {axis}, {radius}, {length}.")
    half = np.full(3, float(radius))
    half[axis] = 0.5 * length
    return Scene(
        np.array([CYLINDER]), (centre - half)[None], (centre + half)[None], np.zeros((1, 4)), np.array([axis]),
        np.array([float(radius)]), np.asarray(albedo, np.float64)[None], np.array([part]), np.array([stud]),
    )


def combine(scenes: list[Scene]) -> Scene:
    """All solids of several scenes in one."""
    out = Scene.empty()
    for scene in scenes:
        out = out.concat(scene)
    return out


# ----------------------------------------------------------------------------- stains
@dataclass(frozen=True)
class Stain:
    """A discoloured patch: surface points inside a wobbly ball get their albedo blended to ``colour``.

    centre: (3,) on the surface; radius in object units; wobble: (K, 4) rows (wx, wy, wz, phase) of
    sinusoids that make the outline irregular; opacity: blend weight of the stain colour.
    """

    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]
    wobble: tuple[tuple[float, float, float, float], ...] = ()
    opacity: float = 0.8

    def inside(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3). Returns (N,) bool."""
        offset = (points - np.asarray(self.centre)) / self.radius
        level = np.sqrt((offset * offset).sum(1))
        for wx, wy, wz, phase in self.wobble:
            level = level - 0.12 * np.sin(offset @ np.array([wx, wy, wz]) + phase)
        return level < 1.0


# ----------------------------------------------------------------------------- render result
@dataclass
class Render:
    """A rendered view. rgb: (H, W, 3) float64 in [0, 1]; solid: (H, W) index of the solid seen at
    the pixel centre (-1 = background); face: (H, W) face id; points, normals: (H, W, 3) at the
    pixel centre (zeros on background); edge: (H, W) bool, pixels that were supersampled."""

    rgb: np.ndarray
    solid: np.ndarray
    face: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    edge: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))

    def to_uint8(self) -> np.ndarray:
        """(H, W, 3) uint8, rounded as ``omnipose.core.image.save_image`` rounds."""
        return quantize(self.rgb)


def quantize(rgb: np.ndarray) -> np.ndarray:
    """float image in [0, 1] -> uint8 with round-half-up, the rounding ``omnipose.core.image.save_image`` uses."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- culling
class _RayIndex:
    """Rays sorted by one 2D footprint coordinate, to find those inside a rectangle quickly.

    coords: (N, 2). ``inside(x0, x1, y0, y1)`` returns the indices (unsorted) of rays in the rectangle.
    """

    def __init__(self, coords: np.ndarray):
        self.order = np.argsort(coords[:, 0], kind="stable")
        self.sorted_x = coords[self.order, 0]
        self.y = coords[:, 1]

    def inside(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        start = np.searchsorted(self.sorted_x, x0, side="left")
        stop = np.searchsorted(self.sorted_x, x1, side="right")
        candidates = self.order[start:stop]
        y = self.y[candidates]
        return candidates[(y >= y0) & (y <= y1)]


def _corners(scene: Scene) -> np.ndarray:
    """The 8 corners of every solid's bounding box. Returns (P, 8, 3)."""
    pick = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=bool)
    return np.where(pick[None], scene.hi[:, None, :], scene.lo[:, None, :])


def _screen_rectangles(scene: Scene, c2w: np.ndarray, K: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Pixel rectangle (u0, u1, v0, v1) bounding each solid's projection. Returns (P, 4).

    A solid reaching behind the camera gets an unbounded rectangle (it is then tested against every ray).
    """
    corners = _corners(scene).reshape(-1, 3)
    pixels, depth = project(torch.from_numpy(corners), torch.from_numpy(c2w), torch.from_numpy(K))
    pixels = pixels.numpy().reshape(-1, 8, 2)
    depth = depth.numpy().reshape(-1, 8)
    u, v = pixels[..., 0], pixels[..., 1]
    rect = np.stack([u.min(1) - margin, u.max(1) + margin, v.min(1) - margin, v.max(1) + margin], 1)
    behind = (depth <= 1e-6).any(1)
    rect[behind] = [-np.inf, np.inf, -np.inf, np.inf]
    return rect


def _light_basis(direction: np.ndarray) -> np.ndarray:
    """Two unit vectors across a light direction: (2, 3)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(direction, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(direction, first)])


# ----------------------------------------------------------------------------- intersection
def _safe_inverse(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directions with exact zeros nudged (so slabs never see 0 * inf) and their reciprocals."""
    nudged = np.where(np.abs(directions) < _TINY, _TINY, directions)
    return nudged, 1.0 / nudged


def _intersect_solid(scene: Scene, index: int, origins: np.ndarray, directions: np.ndarray, inverse: np.ndarray):
    """Entry/exit distances of rays through one convex solid.

    origins, directions, inverse: (n, 3). Returns t_enter, t_exit: (n,) (t_enter > t_exit = miss)
    and face: (n,) the face id hit on entry.
    """
    if scene.kind[index] == BOX:
        t_a = (scene.lo[index] - origins) * inverse
        t_b = (scene.hi[index] - origins) * inverse
        t_near = np.minimum(t_a, t_b)
        t_far = np.maximum(t_a, t_b)
        axis = t_near.argmax(1)
        rows = np.arange(len(axis))
        t_enter = t_near[rows, axis]
        t_exit = t_far.min(1)
        face = 2 * axis + (directions[rows, axis] < 0)
        plane = scene.cut[index]
        if plane[:3].any():
            denominator = directions @ plane[:3]
            numerator = plane[3] - origins @ plane[:3]
            t_plane = numerator / np.where(np.abs(denominator) < _TINY, _TINY, denominator)
            entering = denominator < 0
            cut_first = entering & (t_plane > t_enter)
            t_enter = np.where(cut_first, t_plane, t_enter)
            face = np.where(cut_first, _CUT_FACE, face)
            t_exit = np.where(denominator > 0, np.minimum(t_exit, t_plane), t_exit)
            parallel_outside = (np.abs(denominator) < _TINY) & (numerator < 0)
            t_enter = np.where(parallel_outside, _NO_HIT, t_enter)
        return t_enter, t_exit, face

    axis = int(scene.axis[index])
    across = [a for a in (0, 1, 2) if a != axis]
    centre = 0.5 * (scene.lo[index] + scene.hi[index])
    radius = scene.radius[index]
    offset = origins[:, across] - centre[across]
    dirs = directions[:, across]
    a = (dirs * dirs).sum(1)
    b = (dirs * offset).sum(1)
    c = (offset * offset).sum(1) - radius * radius
    discriminant = b * b - a * c
    root = np.sqrt(np.maximum(discriminant, 0.0))
    along_axis = a < 1e-18  # ray parallel to the axis: inside the disc or never
    safe_a = np.where(along_axis, 1.0, a)
    t_side_in = np.where(along_axis, np.where(c <= 0, -np.inf, _NO_HIT), (-b - root) / safe_a)
    t_side_out = np.where(along_axis, np.where(c <= 0, np.inf, -np.inf), (-b + root) / safe_a)
    missed = (~along_axis) & (discriminant < 0)
    t_side_in = np.where(missed, _NO_HIT, t_side_in)
    t_cap_a = (scene.lo[index, axis] - origins[:, axis]) * inverse[:, axis]
    t_cap_b = (scene.hi[index, axis] - origins[:, axis]) * inverse[:, axis]
    t_cap_in = np.minimum(t_cap_a, t_cap_b)
    t_cap_out = np.maximum(t_cap_a, t_cap_b)
    side_first = t_side_in >= t_cap_in
    t_enter = np.where(side_first, t_side_in, t_cap_in)
    t_exit = np.minimum(t_side_out, t_cap_out)
    face = np.where(side_first, 0, np.where(directions[:, axis] > 0, 1, 2))
    return t_enter, t_exit, face


def cast_rays(
    scene: Scene, origins: np.ndarray, directions: np.ndarray, footprint: np.ndarray, rectangles: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray.

    origins, directions: (N, 3) float64; footprint: (N, 2) the rays' 2D culling coordinates;
    rectangles: (P, 4) per solid (x0, x1, y0, y1) in the same coordinates, bounding every ray that
    can hit it. Returns t: (N,) (inf = miss), solid: (N,) int (-1 = miss), face: (N,) int.
    """
    directions, inverse = _safe_inverse(directions)
    count = len(origins)
    best_t = np.full(count, _NO_HIT)
    best_solid = np.full(count, -1, dtype=np.int64)
    best_face = np.zeros(count, dtype=np.int64)
    index = _RayIndex(footprint)
    for solid in range(len(scene)):
        rays = index.inside(*rectangles[solid])
        if rays.size == 0:
            continue
        t_enter, t_exit, face = _intersect_solid(scene, solid, origins[rays], directions[rays], inverse[rays])
        closer = (t_enter <= t_exit) & (t_enter > 0) & (t_enter < best_t[rays])
        rays = rays[closer]
        best_t[rays] = t_enter[closer]
        best_solid[rays] = solid
        best_face[rays] = face[closer]
    return best_t, best_solid, best_face


def occluded(scene: Scene, points: np.ndarray, direction: np.ndarray, offset: float) -> np.ndarray:
    """Whether anything blocks the path from each point towards a directional light.

    points: (N, 3) on surfaces (already pushed off them along the normal); direction: (3,) unit,
    towards the light; offset: ignore hits closer than this. Returns (N,) bool.
    """
    blocked = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or len(scene) == 0:
        return blocked
    basis = _light_basis(direction)
    footprint = points @ basis.T
    corners = _corners(scene) @ basis.T  # (P, 8, 2)
    across, up = corners[..., 0], corners[..., 1]
    rectangles = np.stack([across.min(1), across.max(1), up.min(1), up.max(1)], 1)
    rectangles += np.array([-1e-9, 1e-9, -1e-9, 1e-9])
    directions, inverse = _safe_inverse(np.broadcast_to(direction, points.shape).copy())
    index = _RayIndex(footprint)
    # A point hidden from the light by its own solid faces away from it, and was masked out by the
    # caller's n . l > 0 test; so every solid can be tested, including the point's own.
    for solid in range(len(scene)):
        rays = index.inside(*rectangles[solid])
        if rays.size == 0:
            continue
        rays = rays[~blocked[rays]]
        if rays.size == 0:
            continue
        t_enter, t_exit, _ = _intersect_solid(scene, solid, points[rays], directions[rays], inverse[rays])
        blocked[rays[(t_enter <= t_exit) & (t_exit > offset)]] = True
    return blocked


def surface_normals(scene: Scene, solid: np.ndarray, face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals at hit points. solid, face: (N,); points: (N, 3). Returns (N, 3)."""
    normals = np.zeros((len(solid), 3))
    is_box = scene.kind[solid] == BOX
    box_face = is_box & (face < _CUT_FACE)
    axis = face[box_face] // 2
    normals[np.flatnonzero(box_face), axis] = np.where(face[box_face] % 2 == 1, 1.0, -1.0)
    cut = is_box & (face == _CUT_FACE)
    if cut.any():
        plane = scene.cut[solid[cut], :3]
        normals[cut] = plane / np.linalg.norm(plane, axis=1, keepdims=True)
    cylinder = ~is_box
    if cylinder.any():
        rows = np.flatnonzero(cylinder)
        solids = solid[rows]
        axes = scene.axis[solids]
        centre = 0.5 * (scene.lo[solids] + scene.hi[solids])
        radial = points[rows] - centre
        radial[np.arange(len(rows)), axes] = 0.0
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), _TINY)
        caps = np.zeros_like(radial)
        caps[np.arange(len(rows)), axes] = np.where(face[rows] == 2, 1.0, -1.0)
        normals[rows] = np.where((face[rows] == 0)[:, None], radial, caps)
    return normals


# ----------------------------------------------------------------------------- shading
def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def shade(
    scene: Scene, solid: np.ndarray, face: np.ndarray, points: np.ndarray, view_directions: np.ndarray,
    lighting: Lighting, stain: Stain | None, shadow_offset: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Colour of hit points.

    solid, face: (N,); points: (N, 3); view_directions: (N, 3) unit, along the camera rays.
    Returns rgb: (N, 3), normals: (N, 3), in_shadow: (N,) bool, stained: (N,) bool.
    """
    normals = surface_normals(scene, solid, face, points)
    albedo = scene.albedo[solid].copy()
    stained = np.zeros(len(solid), dtype=bool) if stain is None else stain.inside(points)
    if stained.any():
        albedo[stained] = (1 - stain.opacity) * albedo[stained] + stain.opacity * np.asarray(stain.colour)
    to_eye = -view_directions
    light = albedo * (lighting.ambient + lighting.ambient_sky * 0.5 * (1.0 + normals[:, 2:3]))
    specular = np.zeros(len(solid))
    in_shadow = np.zeros(len(solid), dtype=bool)
    rigs = (
        (lighting.key_direction, lighting.key_intensity, True),
        (lighting.fill_direction, lighting.fill_intensity, False),
        (lighting.bottom_direction, lighting.bottom_intensity, False),
    )
    for direction, intensity, casts_shadow in rigs:
        direction = _unit(direction)
        lambert = normals @ direction
        lit = lambert > 0
        if casts_shadow:
            lifted = points + normals * shadow_offset
            blocked = np.zeros(len(solid), dtype=bool)
            blocked[lit] = occluded(scene, lifted[lit], direction, shadow_offset)
            in_shadow = lit & blocked
            lit = lit & ~blocked
            in_shadow |= ~(lambert > 0)
        half = to_eye + direction
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), _TINY)
        gloss = np.maximum((normals * half).sum(1), 0.0) ** lighting.shininess
        light += albedo * (intensity * np.where(lit, lambert, 0.0))[:, None]
        specular += lighting.specular * intensity * np.where(lit, gloss, 0.0)
    rgb = np.clip(light + specular[:, None], 0.0, 1.0)
    return rgb, normals, in_shadow, stained


# ----------------------------------------------------------------------------- render
_SUBPIXEL_OFFSETS = np.array([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]])


def _trace(
    scene: Scene, c2w: np.ndarray, K: np.ndarray, pixels: np.ndarray, rectangles: np.ndarray,
    lighting: Lighting, stain: Stain | None, shadow_offset: float,
):
    """Shade the rays through ``pixels`` (N, 2). Returns rgb (N, 3), solid, face, points, normals, key."""
    origins, directions = generate_rays(torch.from_numpy(c2w), torch.from_numpy(K), torch.from_numpy(pixels))
    origins, directions = origins.numpy().copy(), directions.numpy()
    t, solid, face = cast_rays(scene, origins, directions, pixels, rectangles)
    hit = solid >= 0
    rgb = np.full((len(pixels), 3), lighting.background)
    points = np.zeros((len(pixels), 3))
    normals = np.zeros((len(pixels), 3))
    key = np.zeros(len(pixels), dtype=np.int64)
    if hit.any():
        points[hit] = origins[hit] + t[hit, None] * directions[hit]
        rgb[hit], normals[hit], shadow, stained = shade(
            scene, solid[hit], face[hit], points[hit], directions[hit], lighting, stain, shadow_offset
        )
        # What a pixel "sees", for edge detection: solid, face, shadow and stain flags.
        key[hit] = ((solid[hit] + 1) * 8 + face[hit]) * 4 + shadow * 2 + stained
    return rgb, solid, face, points, normals, key


def render(
    scene: Scene,
    c2w,
    K,
    width: int,
    height: int,
    lighting: Lighting = Lighting(),
    stain: Stain | None = None,
    antialias: bool = True,
) -> Render:
    """Render a scene from an OpenGL camera.

    c2w: (4, 4) camera-to-world (numpy or torch; used in float64); K: (3, 3) intrinsics in pixels.
    antialias: average 2x2 sub-pixel rays wherever a pixel's 4-neighbourhood sees different things.
    """
    c2w = np.asarray(c2w.detach().cpu() if isinstance(c2w, torch.Tensor) else c2w, dtype=np.float64)
    K = np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
    if c2w.shape != (4, 4) or K.shape != (3, 3) or width < 1 or height < 1:
        raise SceneError(
            f"render needs c2w (4, 4), K (3, 3) and a positive size; got {c2w.shape}, {K.shape}, {width}x{height}."
        )
    if len(scene) == 0:
        raise SceneError("the scene has no solids; add at least one box or cylinder.")
    with one_torch_thread():
        return _render(scene, c2w, K, width, height, lighting, stain, antialias)


def _render(
    scene: Scene, c2w: np.ndarray, K: np.ndarray, width: int, height: int, lighting: Lighting,
    stain: Stain | None, antialias: bool,
) -> Render:
    scale = float(np.linalg.norm(scene.hi.max(0) - scene.lo.min(0)))
    shadow_offset = 1e-6 * max(scale, 1e-3)
    rectangles = _screen_rectangles(scene, c2w, K)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pixels = np.stack([u.ravel(), v.ravel()], 1)
    rgb, solid, face, points, normals, key = _trace(scene, c2w, K, pixels, rectangles, lighting, stain, shadow_offset)
    key = key.reshape(height, width)
    edge = np.zeros((height, width), dtype=bool)
    if antialias:
        horizontal = key[:, 1:] != key[:, :-1]
        vertical = key[1:, :] != key[:-1, :]
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        edge[1:, :] |= vertical
        edge[:-1, :] |= vertical
        flat = np.flatnonzero(edge.ravel())
        if flat.size:
            sub_pixels = (pixels[flat][:, None, :] + _SUBPIXEL_OFFSETS[None]).reshape(-1, 2)
            sub_rgb = _trace(scene, c2w, K, sub_pixels, rectangles, lighting, stain, shadow_offset)[0]
            rgb[flat] = sub_rgb.reshape(-1, 4, 3).mean(1)
    return Render(
        rgb.reshape(height, width, 3), solid.reshape(height, width), face.reshape(height, width),
        points.reshape(height, width, 3), normals.reshape(height, width, 3), edge,
    )

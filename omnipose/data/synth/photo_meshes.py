"""Triangle meshes of the synth solids (boxes, cut boxes, cylinders), for the photoreal renderer.

The ray caster (``raycast``) intersects the solids exactly; a path tracer wants triangles. Each
solid becomes a triangle soup with per-vertex normals (flat on planar faces, smooth around a
cylinder) and texture coordinates in object units (so a texture keeps its scale on every face).
A stain is a change of colour on the surface, not a decal (a second surface on top of the first
would flicker): the faces it touches are cut into a fine grid around it, and each small triangle
goes to the stained or the clean material by whether its centre lies in the stain, the test the
ray caster applies at pixel centres. The grid (``STAIN_CELLS`` cells per stain radius) keeps the
two within a fraction of a pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnipose.data.synth.raycast import BOX, Scene, Stain

CYLINDER_SEGMENTS = 96  # the polygon's sagitta is r (1 - cos(pi / 96)) = 0.05 % of the radius: sub-pixel
STAIN_CELLS = 24  # grid cells per stain radius on the faces a stain touches
_STAIN_REACH = 1.4  # the wobble moves a stain's outline out to about 1.36 radii


@dataclass
class TriangleSoup:
    """Triangles with their own vertices: positions, normals (N, 3, 3) and texcoords (N, 3, 2)."""

    positions: np.ndarray
    normals: np.ndarray
    texcoords: np.ndarray

    @staticmethod
    def empty() -> "TriangleSoup":
        return TriangleSoup(np.zeros((0, 3, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3, 2)))

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def take(self, keep: np.ndarray) -> "TriangleSoup":
        return TriangleSoup(self.positions[keep], self.normals[keep], self.texcoords[keep])

    @staticmethod
    def concat(parts: list["TriangleSoup"]) -> "TriangleSoup":
        parts = [p for p in parts if len(p)]
        if not parts:
            return TriangleSoup.empty()
        return TriangleSoup(*(np.concatenate([getattr(p, n) for p in parts]) for n in ("positions", "normals", "texcoords")))


# ----------------------------------------------------------------------------- planar faces
def _clip(polygon: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """The part of a convex polygon (K, d) where ``normal . x <= offset`` (Sutherland-Hodgman)."""
    if len(polygon) == 0:
        return polygon
    side = polygon @ normal - offset
    out = []
    for k in range(len(polygon)):
        a, b, sa, sb = polygon[k], polygon[(k + 1) % len(polygon)], side[k], side[(k + 1) % len(polygon)]
        if sa <= 0:
            out.append(a)
        if (sa < 0 < sb) or (sb < 0 < sa):
            out.append(a + (b - a) * (sa / (sa - sb)))
    return np.array(out) if out else np.zeros((0, polygon.shape[1]))


def _frame(normal: np.ndarray) -> np.ndarray:
    """Two unit vectors (2, 3) spanning the plane of ``normal``, right-handed with it."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    first = np.cross(helper, normal)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(normal, first)])


def _grid_lines(low: float, high: float, centre: float | None, reach: float, step: float) -> np.ndarray:
    """Cut positions along one axis: the ends, plus a fine run around ``centre`` (if any)."""
    lines = [low, high]
    if centre is not None:
        lines.extend(np.arange(max(low, centre - reach), min(high, centre + reach), step))
    return np.unique(np.clip(lines, low, high))


def planar_face(polygon: np.ndarray, normal: np.ndarray, stain: Stain | None = None) -> tuple[TriangleSoup, np.ndarray]:
    """Triangles of a convex planar polygon (K, 3) with outward ``normal`` (3,), counter-clockwise seen
    from outside; cut into a fine grid where ``stain`` reaches it. Returns the soup and (T,) bool,
    True for the triangles inside the stain."""
    normal = normal / np.linalg.norm(normal)
    frame = _frame(normal)
    flat = polygon @ frame.T  # (K, 2)
    origin = float(polygon[0] @ normal)
    centre = None
    if stain is not None:
        reach = _STAIN_REACH * stain.radius
        distance = float(np.asarray(stain.centre) @ normal) - origin
        if abs(distance) < reach:
            centre = np.asarray(stain.centre) @ frame.T
    triangles = []
    if centre is None:
        cells = [flat]
    else:
        step = stain.radius / STAIN_CELLS
        us = _grid_lines(flat[:, 0].min(), flat[:, 0].max(), centre[0], reach, step)
        vs = _grid_lines(flat[:, 1].min(), flat[:, 1].max(), centre[1], reach, step)
        u0, v0 = np.meshgrid(us[:-1], vs[:-1], indexing="ij")
        u1, v1 = np.meshgrid(us[1:], vs[1:], indexing="ij")
        corners = np.stack([np.stack(c, -1) for c in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))], -2).reshape(-1, 4, 2)
        # Each edge keeps the polygon's side (counter-clockwise: its left); cells wholly inside are
        # kept as they are, cells wholly outside one edge dropped, the rest clipped one by one.
        edges = [(flat[k], flat[(k + 1) % len(flat)]) for k in range(len(flat))]
        outward = np.array([[b[1] - a[1], a[0] - b[0]] for a, b in edges])
        limits = np.array([o @ a for o, (a, _) in zip(outward, edges)])
        side = corners @ outward.T - limits  # (C, 4, E)
        inside = (side <= 1e-12).all((1, 2))
        outside = (side >= -1e-12).all(1).any(-1)
        whole = corners[inside]
        triangles.extend([whole[:, [0, 1, 2]], whole[:, [0, 2, 3]]])
        cells = []
        for cell in corners[~inside & ~outside]:
            for normal_2d, limit in zip(outward, limits):
                cell = _clip(cell, normal_2d, float(limit))
            if len(cell) >= 3:
                cells.append(cell)
    for cell in cells:
        triangles.append(np.stack([cell[[0, k, k + 1]] for k in range(1, len(cell) - 1)]))
    flat_triangles = np.concatenate(triangles).reshape(-1, 3, 2)
    positions = flat_triangles @ frame + origin * normal
    soup = TriangleSoup(positions, np.broadcast_to(normal, positions.shape).copy(), flat_triangles.copy())
    return soup, _stained(soup, stain)


def _stained(soup: TriangleSoup, stain: Stain | None) -> np.ndarray:
    if stain is None or len(soup) == 0:
        return np.zeros(len(soup), bool)
    return stain.inside(soup.positions.mean(1))


# ----------------------------------------------------------------------------- solids
_BOX_FACES = (  # (axis, sign) in the raycaster's face order -x, +x, -y, +y, -z, +z
    (0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1),
)  # fmt: skip


def _box_polygons(lo: np.ndarray, hi: np.ndarray, cut: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The faces (polygon (K, 3), outward normal (3,)) of a box, cut by n . x <= c when ``cut`` is set."""
    faces = []
    for axis, sign in _BOX_FACES:
        normal = np.zeros(3)
        normal[axis] = sign
        u, v = (axis + 1) % 3, (axis + 2) % 3
        if sign < 0:
            u, v = v, u  # counter-clockwise seen from outside
        corners = []
        for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
            point = np.empty(3)
            point[axis] = hi[axis] if sign > 0 else lo[axis]
            point[u] = hi[u] if du else lo[u]
            point[v] = hi[v] if dv else lo[v]
            corners.append(point)
        faces.append((np.array(corners), normal))
    if not cut[:3].any():
        return faces
    plane, offset = cut[:3], float(cut[3])
    clipped = [(_clip(polygon, plane, offset), normal) for polygon, normal in faces]
    clipped = [(polygon, normal) for polygon, normal in clipped if len(polygon) >= 3]
    # The cut face: the plane clipped by the box's six half-spaces.
    unit = plane / np.linalg.norm(plane)
    frame = _frame(unit)
    size = 4.0 * float(np.linalg.norm(hi - lo))
    centre = unit * (offset / np.linalg.norm(plane))
    big = np.array([centre + size * (a * frame[0] + b * frame[1]) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    for axis, sign in _BOX_FACES:
        normal = np.zeros(3)
        normal[axis] = sign
        big = _clip(big, normal, float(sign * (hi[axis] if sign > 0 else lo[axis])))
    if len(big) >= 3:
        clipped.append((big, unit))
    return clipped


def _cylinder(scene: Scene, index: int, stain: Stain | None) -> tuple[TriangleSoup, np.ndarray]:
    """A cylinder: a smooth side on a ``CYLINDER_SEGMENTS``-gon and two flat caps."""
    axis = int(scene.axis[index])
    across = [(axis + 1) % 3, (axis + 2) % 3]
    centre = 0.5 * (scene.lo[index] + scene.hi[index])
    radius = float(scene.radius[index])
    low, high = float(scene.lo[index, axis]), float(scene.hi[index, axis])
    angles = np.linspace(0.0, 2 * np.pi, CYLINDER_SEGMENTS + 1)
    heights = np.array([low, high])
    if stain is not None:  # refine the side around the stain, on the polygon's chords (no cracks)
        offset = np.asarray(stain.centre) - centre
        reach = _STAIN_REACH * stain.radius
        if np.hypot(*offset[across]) < radius + reach and low - reach < offset[axis] + centre[axis] < high + reach:
            phi = float(np.arctan2(offset[across[1]], offset[across[0]])) % (2 * np.pi)
            half = np.pi if reach >= radius else float(np.arcsin(reach / radius)) + 0.1
            step = stain.radius / STAIN_CELLS / radius
            fine = (phi + np.arange(-half, half, step)) % (2 * np.pi)
            angles = np.unique(np.concatenate([angles, fine, [2 * np.pi]]))
            heights = _grid_lines(low, high, float(np.asarray(stain.centre)[axis]), reach, stain.radius / STAIN_CELLS)

    def ring(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points on the polygon (chords between segment corners) and the true radial normals."""
        segment = 2 * np.pi / CYLINDER_SEGMENTS
        k = np.minimum(np.floor(theta / segment), CYLINDER_SEGMENTS - 1)
        t = (theta - k * segment) / segment
        corner = lambda a: np.stack([np.cos(a), np.sin(a)], -1)  # noqa: E731
        flat = (1 - t)[:, None] * corner(k * segment) + t[:, None] * corner((k + 1) * segment)
        return flat * radius, corner(theta)

    flat, radial = ring(angles)
    # Quads between consecutive angles and heights, two triangles each, all at once.
    j, h = np.meshgrid(np.arange(len(angles) - 1), np.arange(len(heights) - 1), indexing="ij")
    j, h = j.ravel(), h.ravel()
    corner_j = np.stack([j, j + 1, j + 1, j], 1)  # (Q, 4)
    corner_h = heights[np.stack([h, h, h + 1, h + 1], 1)]
    points = np.zeros(corner_j.shape + (3,))
    normals = np.zeros(corner_j.shape + (3,))
    points[..., across] = centre[across] + flat[corner_j]
    points[..., axis] = corner_h
    normals[..., across] = radial[corner_j]
    uv = np.stack([angles[corner_j] * radius, corner_h], -1)
    pick = np.array([[0, 1, 2], [0, 2, 3]])
    gather = lambda values: values[:, pick].reshape(-1, 3, values.shape[-1])  # noqa: E731
    side = TriangleSoup(gather(points), gather(normals), gather(uv))
    parts, stained = [side], [_stained(side, stain)]
    cap = np.zeros((CYLINDER_SEGMENTS, 3))
    base = ring(np.linspace(0.0, 2 * np.pi, CYLINDER_SEGMENTS, endpoint=False))[0]
    cap[:, across] = centre[across] + base
    for h, sign in ((low, -1.0), (high, 1.0)):
        polygon = cap.copy()
        polygon[:, axis] = h
        normal = np.zeros(3)
        normal[axis] = sign
        if (np.cross(polygon[1] - polygon[0], polygon[2] - polygon[0]) @ normal) < 0:
            polygon = polygon[::-1]
        soup, inside = planar_face(polygon, normal, stain)
        parts.append(soup)
        stained.append(inside)
    return TriangleSoup.concat(parts), np.concatenate(stained)


def solid_mesh(scene: Scene, index: int, stain: Stain | None = None) -> tuple[TriangleSoup, np.ndarray]:
    """Triangles of solid ``index`` of a scene, and which of them lie in ``stain``: (T,) bool."""
    if scene.kind[index] != BOX:
        return _cylinder(scene, index, stain)
    soups, stained = [], []
    for polygon, normal in _box_polygons(scene.lo[index], scene.hi[index], scene.cut[index]):
        soup, inside = planar_face(polygon, normal, stain)
        soups.append(soup)
        stained.append(inside)
    return TriangleSoup.concat(soups), np.concatenate(stained) if stained else np.zeros(0, bool)


def stain_touches(scene: Scene, index: int, stain: Stain | None) -> bool:
    """Whether a stain's reach overlaps a solid's bounding box (only those need the fine grid)."""
    if stain is None:
        return False
    reach = _STAIN_REACH * stain.radius
    centre = np.asarray(stain.centre)
    return bool(((scene.lo[index] - reach <= centre) & (centre <= scene.hi[index] + reach)).all())

"""What onboarding refuses, and why: photos blurred beyond the others, photos in groups that share
no match, photos that did not register, photos registered across the object from their matches, photos of different
things registered at one viewpoint or cameras leaving one side of the object unseen (a folded mapping), cameras that
the final bundle adjustment threw off.

Each check names the photos and what to do; pycolmap is passed in by the caller (``omnipose.data.sfm``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnipose.core.errors import DataError
from omnipose.core.geometry import rotation_error_deg
from omnipose.core.image import dilate, read_image_rgb, resize_image
from omnipose.data.colmap import apply_similarity, camera_similarity, rotation_taking

BLURRED = 0.5
"""Share of its detail a photo keeps under a 1-pixel blur above which it counts as blurred however
blurred the others are (``detail_kept``): sharp photos keep 0.3-0.45, a 1-pixel Gaussian or a
9-pixel motion blur leaves 0.6-0.7."""


def detail_kept(rgb: np.ndarray, region: np.ndarray | None = None, max_size: int | None = None) -> float:
    """How blurred a photo is: the share of its gradient energy that survives a Gaussian blur of one
    pixel (1 for a photo with nothing finer than the blur, lower the sharper it is; independent of how
    much texture it shows). rgb: (H, W, 3) in [0, 1]; region: optional (H, W) bool, where to measure
    (the object); max_size: measured at no more than this many pixels on the longer side (the size
    features are extracted at)."""
    from scipy.ndimage import gaussian_filter

    grey = rgb.mean(-1)
    scale = 1.0 if max_size is None else min(1.0, max_size / max(grey.shape))
    if scale < 1.0:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = resize_image(grey.astype(np.float32), size)
        region = None if region is None else resize_image(region.astype(np.float32), size) > 0.5
    weights = np.ones_like(grey) if region is None else dilate(region, 2).astype(grey.dtype)

    def energy(image: np.ndarray) -> float:
        dy, dx = np.gradient(image)
        return float(((dx * dx + dy * dy) * weights).sum())

    total = energy(grey)
    return energy(gaussian_filter(grey, 1.0)) / total if total > 0 else 1.0


def blurred_photos(kept: dict[str, float], margin: float) -> dict[str, float]:
    """The photos of ``kept`` (name -> ``detail_kept``) blurred beyond the others: above the median by
    ``margin`` and above ``BLURRED``."""
    limit = max(float(np.median(list(kept.values()))) + margin, BLURRED)
    return {name: value for name, value in kept.items() if value > limit}


def read_matches(pycolmap, database: Path) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """The verified matches of every matched pair of photos, {(name, name): inliers}, and the features
    of every photo, {name: keypoints}, from a COLMAP database."""
    db = pycolmap.Database.open(str(database))
    try:
        by_id = {image.image_id: image.name for image in db.read_all_images()}
        pair_ids, counts = db.read_two_view_geometry_num_inliers()
        pairs = {tuple(by_id[i] for i in pycolmap.pair_id_to_image_pair(p)): int(n) for p, n in zip(pair_ids, counts)}
        return pairs, {name: db.num_keypoints_for_image(image_id) for image_id, name in by_id.items()}
    finally:
        db.close()


def unregistered_reasons(pairs: dict[tuple[str, str], int], features: dict[str, int], names: list[str],
                         registered: set[str]) -> dict[str, str]:
    """Why each photo not in ``registered`` failed: its features, and its best geometrically verified
    match with a registered photo and with any photo (``read_matches``)."""
    best: dict[str, tuple[int, str]] = {}
    best_registered: dict[str, int] = {}
    for (first, second), inliers in pairs.items():
        for name, other in ((first, second), (second, first)):
            if inliers > best.get(name, (0, ""))[0]:
                best[name] = (inliers, other)
            if other in registered:
                best_registered[name] = max(best_registered.get(name, 0), inliers)
    reasons = {}
    for name in names:
        if name in registered:
            continue
        found = features.get(name, 0)
        inliers, partner = best.get(name, (0, ""))
        if found < 100:
            reasons[name] = f"{found} features (too little texture on the object)"
        elif inliers == 0:
            reasons[name] = f"{found} features but no verified match with any other photo (no overlap)"
        elif best_registered.get(name, 0) < 30:
            reasons[name] = (f"at most {best_registered.get(name, 0)} verified matches with a registered photo, "
                             f"{inliers} with {partner} (it overlaps only photos that did not register either)")
        else:
            reasons[name] = (f"{best_registered[name]} verified matches with a registered photo, but its pose did "
                             "not fit the model's points (repetitive or mismatched structure)")
    return reasons


def photo_groups(names: list[str], pairs: dict[tuple[str, str], int]) -> list[list[str]]:
    """The photos split into groups linked by verified matches (connected components of the match
    graph), largest first, each in the order of ``names``."""
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for (first, second), inliers in pairs.items():
        if inliers > 0 and first in parent and second in parent:
            parent[root(first)] = root(second)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return sorted(groups.values(), key=len, reverse=True)


def check_one_object(names: list[str], pairs: dict[tuple[str, str], int], min_images: int) -> None:
    """Refuse photos that fall into two or more groups of ``min_images`` or more with no verified match
    between them: no reconstruction can join them (two objects in one folder, or sides of one object
    never photographed in between)."""
    groups = [group for group in photo_groups(names, pairs) if len(group) >= min_images]
    if len(groups) < 2:
        return

    def listed(group: list[str]) -> str:
        return ", ".join(group[:6]) + (f" and {len(group) - 6} more" if len(group) > 6 else "")

    described = "; ".join(f"group {k + 1} ({len(group)} photos): {listed(group)}" for k, group in enumerate(groups))
    raise DataError(
        f"the photos fall into {len(groups)} groups with no verified match between them ({described}): they show "
        "two objects, or sides of one object never photographed in between. Onboard one object per folder, or add "
        "photos that bridge the groups."
    )


def mirrored_views(centres: dict[str, np.ndarray], target: np.ndarray, pair_inliers: dict[tuple[str, str], int],
                   partners: int = 3, max_angle_deg: float = 90.0) -> dict[str, tuple[float, list[str]]]:
    """Photos registered on the wrong side of the object: the photos they match best sit far around it.

    Around an object, a photo shares features with its neighbours; a photo registered mirrored (180 degrees
    off, on repetitive structure) lands across the object from them. centres: camera centre (3,) by name;
    target: the object's centre (3,); pair_inliers: verified matches by (name, name).
    Returns {name: (median angle in degrees to its ``partners`` best-matched photos, their names)} for the
    photos beyond ``max_angle_deg``.
    """
    directions = {name: (c - target) / max(np.linalg.norm(c - target), 1e-12) for name, c in centres.items()}
    matches: dict[str, list[tuple[int, str]]] = {name: [] for name in centres}
    for (first, second), inliers in pair_inliers.items():
        if first in centres and second in centres:
            matches[first].append((inliers, second))
            matches[second].append((inliers, first))
    flagged = {}
    for name, found in matches.items():
        best = [other for _, other in sorted(found, reverse=True)[:partners]]
        if not best:
            continue
        angles = [np.degrees(np.arccos(np.clip(directions[name] @ directions[o], -1.0, 1.0))) for o in best]
        if np.median(angles) > max_angle_deg:
            flagged[name] = (float(np.median(angles)), best)
    return flagged


class PhotosRefusedError(DataError):
    """Onboarding refused some of the photos (``photos`` names them), so that a caller can do what the
    message asks, remove them and run again (``sfm.onboard_leaving_out``), without reading it."""

    def __init__(self, photos: list[str], message: str):
        self.photos = list(photos)
        super().__init__(message)


class UnregisteredPhotosError(PhotosRefusedError):
    """Photos that did not register, with why (``unregistered_reasons``)."""

    def __init__(self, reasons: dict[str, str], given: int):
        listed = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        super().__init__(list(reasons), f"{len(reasons)} of {given} photos did not register ({listed}). Remove "
                         "them, or add photos between them and their neighbours so that each overlaps others.")


class MirroredPhotosError(PhotosRefusedError):
    """Photos registered across the object from the photos they match best."""

    def __init__(self, flagged: dict[str, tuple[float, list[str]]], attempts: int = 1):
        listed = "; ".join(f"{name}: {angle:.0f} deg from {', '.join(others)}" for name, (angle, others) in flagged.items())
        tried = f" in each of {attempts} mappings" if attempts > 1 else ""
        super().__init__(
            list(flagged),
            f"{len(flagged)} photos registered across the object from the photos they match best{tried} ({listed}): "
            "mirrored on repetitive structure. Remove them, or add photos between them and their neighbours."
        )


class UnexplainedPhotosError(PhotosRefusedError):
    """Photos that a field trained on all of them draws far worse than the rest, in a mapping that holds
    together as a whole: their cameras disagree with the others' (most often registered across the object)."""

    def __init__(self, below_db: dict[str, float], gap_db: float):
        listed = "; ".join(f"{name}: {db:.1f} dB under" for name, db in below_db.items())
        super().__init__(
            list(below_db),
            f"A field trained on all the photos draws {len(below_db)} of them more than {gap_db:.0f} dB under the "
            f"median photo ({listed}): their cameras disagree with the others' (registered across the object). "
            "Remove them, or add photos between them and their neighbours."
        )


class FoldedMappingError(DataError):
    """The final bundle adjustment moved cameras by degrees from where the mapping put them, the reprojection
    error holding: the mapping does not hold together (a plain, symmetric figure's sides folded onto each
    other). ``cameras`` names them; another mapping (another seed) may not fold. ``drifted``: where the
    adjustment converged (it did not diverge), (the adjusted reconstruction, its stats as
    ``checked_final_adjustment`` returns them), for a caller that can judge it otherwise (``sfm.onboard``'s
    ``field_check``): the same drift also corrects cameras a mapping left degrees off."""

    def __init__(self, cameras: list[str], message: str, drifted: tuple | None = None):
        self.cameras = list(cameras)
        self.drifted = drifted
        super().__init__(message)


class FoldedViewpointsError(FoldedMappingError):
    """Pairs of photos the mapping put at the same viewpoint although they show different things
    (``folded_viewpoints``): the object's sides folded onto each other."""

    def __init__(self, flagged: dict[tuple[str, str], tuple[float, float]], attempts: int = 1):
        listed = "; ".join(f"{first} and {second}: {degrees:.1f} deg apart, {difference:.2f} unlike"
                           for (first, second), (degrees, difference) in list(flagged.items())[:6])  # fmt: skip
        more = f" and {len(flagged) - 6} more" if len(flagged) > 6 else ""
        tried = f" in each of {attempts} mappings" if attempts > 1 else ""
        super().__init__(
            sorted({name for pair in flagged for name in pair}),
            f"the mapping put {len(flagged)} pairs of photos at the same viewpoint although they show different "
            f"things{tried} ({listed}{more}): the object looks alike from two sides, and photos of one side were "
            "registered where the other side was photographed. Place the object on or beside something that differs "
            "all around it (a printed pattern, a few distinct markers), then photograph it again and onboard the new "
            "photos; or give the poses (transforms.json)."
        )


class OneSidedMappingError(FoldedMappingError):
    """A mapping whose cameras leave a wide arc around the object unseen (``unseen_arc_deg``) although the photos
    were taken all around it: the object's sides folded onto each other."""

    def __init__(self, arc_deg: float, limit_deg: float, attempts: int = 1):
        tried = f" in each of {attempts} mappings" if attempts > 1 else ""
        super().__init__(
            [],
            f"the mapping's cameras leave {arc_deg:.0f} deg around the object's vertical with no photo{tried}, more "
            f"than the {limit_deg:.0f} deg allowed: where the object was photographed all the way round, it looks "
            "alike from two sides and the photos of one side were registered on the other. Place the object on or "
            "beside something that differs all around it (a printed pattern, a few distinct markers), then photograph "
            "it again and onboard the new photos; or give the poses (transforms.json). If the photos cover only part "
            "of the way round, onboard them with --one-sided (OnboardConfig.max_unseen_arc_deg=None)."
        )


def object_centre(reconstruction) -> np.ndarray:
    """Where a pycolmap reconstruction's object is: the median of its points (3,), or the mean of its cameras
    without points."""
    points = np.array([point.xyz for point in reconstruction.points3D.values()])
    if len(points):
        return np.median(points, axis=0)
    return np.mean([image.projection_center() for image in reconstruction.images.values() if image.has_pose], axis=0)


def mirrored_photos(pairs: dict[tuple[str, str], int], reconstruction) -> dict[str, tuple[float, list[str]]]:
    """``mirrored_views`` of a pycolmap reconstruction (pairs: ``read_matches``), around its ``object_centre``."""
    centres = {image.name: image.projection_center() for image in reconstruction.images.values() if image.has_pose}
    return mirrored_views(centres, object_centre(reconstruction), pairs)


SAME_VIEWPOINT_DEG = 1.0
"""Cameras within this angle of each other around the object (and ``SAME_DISTANCE`` in distance) see it from
the same viewpoint, so that their photos must agree once one is warped onto the other (``folded_viewpoints``)."""
SAME_DISTANCE = 0.02
"""Largest difference in distance from the object, as a fraction of it, of cameras at the same viewpoint."""
BAND = (0.01, 0.03)
"""Scales, as fractions of the width, between which ``viewpoint_difference`` compares photos (Gaussian sigmas)."""
DIFFERENCE_ALLOWED = (0.02, 0.02)
"""How unlike (``viewpoint_difference``) photos from the same viewpoint may be: the first value at no distance,
the second more per degree apart. The lego's closest true pairs (0.5 - 2 deg) differ by 0.006 - 0.019, the built-in
robot's front and back folded onto each other by 0.03 - 0.20 (its face and buttons)."""
FOLDED_PAIRS = 2
"""Pairs of photos from the same viewpoint that disagree, from which a mapping counts as folded: one pair may
be a moved object or a passing shadow."""


def viewpoint_difference(first: np.ndarray, second: np.ndarray, homography: np.ndarray) -> float:
    """How unlike two photos are once ``second`` is warped onto ``first``: one minus the correlation of their grey
    values band-passed between ``BAND`` (keypoint-scale parallax, noise and compression do not count; a plain
    background counts for nothing however much of the frame it fills), the warp moved by the shift of up to
    ``BAND[0]`` of the width that aligns them best (a plane through the object leaves the parts off it a few pixels
    apart).
    first, second: (H, W, 3) in [0, 1]; homography: (3, 3) from ``first``'s pixels to ``second``'s.
    0 for the same picture, about 1 for unrelated ones."""
    import cv2

    height, width = first.shape[:2]
    fine, coarse = (scale * width for scale in BAND)

    def band(rgb: np.ndarray) -> np.ndarray:
        grey = rgb.astype(np.float32).mean(-1)
        return cv2.GaussianBlur(grey, (0, 0), fine) - cv2.GaussianBlur(grey, (0, 0), coarse)

    def warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderValue=np.nan)  # fmt: skip

    reference, moving = band(first), band(second)
    warped = warp(moving, homography)
    (dx, dy), _ = cv2.phaseCorrelate(reference.astype(np.float64), np.nan_to_num(warped).astype(np.float64))
    if np.hypot(dx, dy) <= fine:  # warped(x) is reference(x + d): sample the warp at x - d
        warped = warp(moving, homography @ np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]]))
    inside = np.isfinite(warped)
    a, b = reference[inside], warped[inside]
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 1.0 - float((a * b).sum()) / norm if norm > 0 else 0.0


def folded_viewpoints(cam_from_world: dict[str, np.ndarray], K: np.ndarray, target: np.ndarray,
                      photo) -> dict[tuple[str, str], tuple[float, float]]:
    """Pairs of photos that a mapping put at the same viewpoint although they show different things: the sides of
    an object that looks alike from two directions, folded onto each other (each photo of the front registered
    where a photo of the back was taken). Captures on regular stops (a turntable, rings of views) make such
    pairs wherever the fold maps one stop onto another.

    cam_from_world: (3, 4) world-to-camera (OpenCV axes) by name; K: (3, 3) shared intrinsics; target: the
    object's centre (3,); photo: name -> (H, W, 3) in [0, 1], read only for the pairs compared. The second photo
    of a pair is warped onto the first through the plane through ``target`` facing the first camera.
    Returns {(name, name): (degrees apart around the object, ``viewpoint_difference``)} of the pairs closer than
    ``SAME_VIEWPOINT_DEG`` / ``SAME_DISTANCE`` that differ beyond ``DIFFERENCE_ALLOWED``.
    """
    names = sorted(cam_from_world)
    poses = np.stack([np.asarray(cam_from_world[name], dtype=np.float64) for name in names])
    offsets = -np.einsum("nji,nj->ni", poses[:, :, :3], poses[:, :, 3]) - target  # camera centres from the object
    distances = np.maximum(np.linalg.norm(offsets, axis=1), 1e-12)
    directions = offsets / distances[:, None]
    degrees = np.degrees(np.arccos(np.clip(directions @ directions.T, -1.0, 1.0)))
    nearer = np.abs(distances[:, None] - distances[None]) <= SAME_DISTANCE * distances[:, None]
    close = (degrees <= SAME_VIEWPOINT_DEG) & nearer
    loaded: dict[str, np.ndarray] = {}
    flagged = {}
    for i, j in zip(*np.nonzero(np.triu(close, k=1))):
        (R1, t1), (R2, t2) = (poses[i, :, :3], poses[i, :, 3]), (poses[j, :, :3], poses[j, :, 3])
        rotation = R2 @ R1.T
        plane = rotation + np.outer(t2 - rotation @ t1, [0.0, 0.0, 1.0]) / float((R1 @ target + t1)[2])
        for name in (names[i], names[j]):
            if name not in loaded:
                loaded[name] = photo(name)
        difference = viewpoint_difference(loaded[names[i]], loaded[names[j]], K @ plane @ np.linalg.inv(K))
        if difference > DIFFERENCE_ALLOWED[0] + DIFFERENCE_ALLOWED[1] * degrees[i, j]:
            flagged[(names[i], names[j])] = (float(degrees[i, j]), difference)
    return flagged


def folded_photos(reconstruction, images: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """``folded_viewpoints`` of a pycolmap reconstruction of one camera (its distortion, if any, left out: the
    comparison is coarser) around its ``object_centre``, its photos in ``images``."""
    poses = {image.name: image.cam_from_world().matrix() for image in reconstruction.images.values() if image.has_pose}
    if len(poses) < 2:
        return {}
    K = next(iter(reconstruction.cameras.values())).calibration_matrix()
    return folded_viewpoints(poses, K, object_centre(reconstruction), lambda name: read_image_rgb(images / name))


def unseen_arc_deg(cam_from_world: np.ndarray, centre: np.ndarray, max_elevation_deg: float = 75.0) -> float:
    """The widest arc around the object's vertical, in degrees, that no camera looks from.

    cam_from_world: (N, 3, 4) world-to-camera (OpenCV axes); centre: the object's centre (3,). The vertical is the
    direction across every camera's right axis (a photographer holds the camera upright; their mean up axis, as
    ``colmap.object_frame`` takes it, leans towards the object where they see it from one side only); cameras
    within 90 - ``max_elevation_deg`` of it look from no side in particular and are left out (0 where fewer than 3
    remain). A capture all around leaves 15 - 37 degrees (rings of stops, a hemisphere, the lego views, onboarded or
    true); a near-symmetric object whose sides a mapping folded onto each other leaves its far side's arc empty
    (93 - 275 degrees measured, ``docs/RESULTS.md``).
    """
    poses = np.asarray(cam_from_world, dtype=np.float64)
    offsets = -np.einsum("nji,nj->ni", poses[:, :, :3], poses[:, :, 3]) - centre  # camera centres from the object
    rows = poses[:, :2, :3]  # each camera's right (x) and down (y) axes in the world
    up = np.linalg.eigh(np.einsum("ni,nj->ij", rows[:, 0], rows[:, 0]))[1][:, 0]  # the one across every right axis
    up *= -np.sign(up @ rows[:, 1].sum(0)) or 1.0
    upright = offsets @ rotation_taking(up, np.array([0.0, 0.0, 1.0])).T  # the vertical on +z, as object_frame puts it
    side = np.hypot(upright[:, 0], upright[:, 1]) >= np.cos(np.radians(max_elevation_deg)) * np.linalg.norm(upright, axis=1)
    if side.sum() < 3:
        return 0.0
    around = np.sort(np.degrees(np.arctan2(upright[side, 1], upright[side, 0])) % 360.0)
    return float(np.diff(np.concatenate([around, around[:1] + 360.0])).max())


def unseen_arc(reconstruction) -> float:
    """``unseen_arc_deg`` of a pycolmap reconstruction's registered cameras around its ``object_centre``."""
    poses = [image.cam_from_world().matrix() for image in reconstruction.images.values() if image.has_pose]
    return unseen_arc_deg(np.stack(poses), object_centre(reconstruction)) if len(poses) >= 3 else 0.0


def moved_cameras(before: dict[str, np.ndarray], after: dict[str, np.ndarray], max_deg: float = 5.0,
                  max_shift: float = 0.05) -> dict[str, tuple[float, float]]:
    """Cameras that an adjustment moved beyond what refining them can: more than ``max_deg`` degrees of
    rotation, or a centre shift of more than ``max_shift`` of the cameras' median distance from their
    centroid, once the adjustment's change of frame is taken out.

    before, after: camera-to-world (4, 4) by name, in any frames that differ by a similarity (bundle
    adjustment leaves the frame free). The similarity is fitted again without the camera farthest
    beyond the limits until none of those fitted is (half of them at least), so that one camera thrown
    across the object does not tilt the fit for the others.
    Returns {name: (degrees, shift as a fraction)} of the cameras beyond either limit."""
    names = sorted(set(before) & set(after))
    a = np.stack([before[name] for name in names]).astype(np.float64)
    b = np.stack([after[name] for name in names]).astype(np.float64)
    radius = max(float(np.median(np.linalg.norm(a[:, :3, 3] - a[:, :3, 3].mean(0), axis=1))), 1e-12)
    finite = np.isfinite(b).all(axis=(1, 2))
    degrees, shifts = np.full(len(names), np.inf), np.full(len(names), np.inf)
    keep = finite.copy()
    if finite.any():  # a camera thrown far off would dominate the least-squares fit: it starts without them
        centres = b[finite, :3, 3]
        spread = np.linalg.norm(centres - np.median(centres, axis=0), axis=1)
        keep[finite] = spread <= 10 * np.median(spread)
    while keep.sum() >= 3:
        moved = apply_similarity(np.linalg.inv(camera_similarity(a[keep], b[keep])), b[finite])
        turned = rotation_error_deg(torch.from_numpy(moved[:, :3, :3]), torch.from_numpy(a[finite, :3, :3])).numpy()
        degrees[finite] = np.nan_to_num(turned, nan=np.inf)
        shifts[finite] = np.nan_to_num(np.linalg.norm(moved[:, :3, 3] - a[finite, :3, 3], axis=1) / radius, nan=np.inf)
        beyond = keep & ((degrees > max_deg) | (shifts > max_shift))
        if not beyond.any() or keep.sum() <= len(names) // 2:
            break
        keep[np.argmax(np.where(keep, degrees / max_deg + shifts / max_shift, -np.inf))] = False
    flagged = (degrees > max_deg) | (shifts > max_shift)
    return {names[k]: (float(degrees[k]), float(shifts[k])) for k in np.flatnonzero(flagged)}

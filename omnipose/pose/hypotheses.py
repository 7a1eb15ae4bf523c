"""Coarse pose hypotheses of a query: keypoint matches with the retrieval views give PnP poses (or,
where too few keypoints have 3D points, a 2D similarity of the view), and global appearance gives
more that need no keypoint at all."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from omnipose.core.geometry import opengl_to_opencv, roll_camera, rotation_error_deg
from omnipose.core.image import foreground_mask
from omnipose.pose.appearance import (
    ObjectFrame,
    best_matches,
    object_frame,
    thumbnails,
    view_to_query_affine,
)
from omnipose.pose.config import PoseConfig
from omnipose.pose.index import TrainingIndex, keypoint_points3d
from omnipose.pose.matching import Matcher, Matches
from omnipose.pose.retrieval import (
    RotatedFeatures,
    describe_rotations,
    mutual_nn_counts,
)
from omnipose.pose.scene import PoseScene


@dataclass
class Hypothesis:
    """A coarse pose: c2w (4, 4), where it came from, how many matches support it."""

    c2w: torch.Tensor
    source: str
    inliers: int
    view: int
    angle_deg: float


# ============================================================================= 2D and PnP geometry
@dataclass
class Similarity:
    """x_query = scale * R(angle) x_train + shift, R turning content counter-clockwise on screen.

    angle_deg: degrees; scale: unitless; shift: (2,) pixels; inliers: (M,) bool over the matches.
    """

    angle_deg: float
    scale: float
    shift: np.ndarray
    inliers: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """(2, 3) affine taking training-view pixels to query pixels."""
        theta = math.radians(self.angle_deg)
        c, s = math.cos(theta) * self.scale, math.sin(theta) * self.scale
        return np.array([[c, s, self.shift[0]], [-s, c, self.shift[1]]])

    @classmethod
    def of_affine(cls, affine: np.ndarray, inliers: np.ndarray) -> "Similarity":
        """The similarity of a (2, 3) affine [[c, s, du], [-s, c, dv]] (scaled rotation and shift)."""
        scale = math.hypot(affine[0, 0], affine[1, 0])
        # Our matrix is [[c, s], [-s, c]]: A[0, 1] = s * scale, A[0, 0] = c * scale.
        angle = math.degrees(math.atan2(affine[0, 1], affine[0, 0]))
        return cls(angle, scale, affine[:, 2].copy(), inliers)


def fit_similarity(points_train: torch.Tensor, points_query: torch.Tensor, threshold_px: float = 6.0) -> Similarity | None:
    """Robust 2D similarity (rotation, uniform scale, shift) from training-view to query pixels.

    points_train, points_query: (M, 2). Returns None with fewer than 3 matches or no consensus.
    """
    import cv2

    if len(points_train) < 3:
        return None
    A, inliers = cv2.estimateAffinePartial2D(
        points_train.cpu().numpy().astype(np.float64), points_query.cpu().numpy().astype(np.float64),
        method=cv2.RANSAC, ransacReprojThreshold=threshold_px, maxIters=2000, confidence=0.999,
    )
    if A is None or inliers is None:
        return None
    return Similarity.of_affine(A, inliers[:, 0].astype(bool))


def pose_from_similarity(c2w_view: torch.Tensor, K: torch.Tensor, similarity: Similarity, depth: float) -> torch.Tensor:
    """Camera whose image is the training view's image moved by ``similarity``.

    Treats the object as a plane at ``depth`` along the view's axis: the rotation about the
    principal point becomes a roll of the camera, the scale a move along the viewing axis (closer
    for scale > 1), the remaining shift a sideways move. c2w_view: (4, 4); K: (3, 3). Returns (4, 4).
    """
    K64 = K.double().cpu()
    principal = np.array([float(K64[0, 2]), float(K64[1, 2])])
    A = similarity.matrix
    # Write x_q = s R (x_t - c) + c + d: d is the shift left once rotation and scale act about c.
    d = A[:, :2] @ principal + A[:, 2] - principal
    # Content turning counter-clockwise on screen is the camera rolling clockwise (see roll_camera).
    c2w = roll_camera(c2w_view.double(), -math.radians(similarity.angle_deg))
    new_depth = depth / max(similarity.scale, 1e-6)
    forward = -c2w[:3, 2]
    right, up = c2w[:3, 0], c2w[:3, 1]
    # Moving the camera right moves content left: shift +d_u needs -d_u * z / f along camera x;
    # v points down while camera y points up, so +d_v needs +d_v * z / f along camera y.
    move = forward * (depth - new_depth) - right * d[0] * new_depth / float(K64[0, 0]) + up * d[1] * new_depth / float(K64[1, 1])
    c2w = c2w.clone()
    c2w[:3, 3] = c2w[:3, 3] + move
    return c2w.to(c2w_view.dtype)


def solve_pnp(
    points2d: torch.Tensor, points3d: torch.Tensor, K: torch.Tensor, reprojection_px: float = 2.5,
    iterations: int = 1000, min_inliers: int = 6,
) -> tuple[torch.Tensor, np.ndarray] | None:
    """Camera pose from 2D-3D correspondences: RANSAC PnP, then Levenberg-Marquardt on the inliers.

    points2d: (M, 2) (u, v) pixels, pixel centres at +0.5 (the same convention as K);
    points3d: (M, 3) world points; K: (3, 3). Returns (c2w (4, 4) float32 OpenGL, inliers (M,) bool)
    or None when there is no consensus of at least ``min_inliers`` points.
    """
    import cv2

    if len(points2d) < max(min_inliers, 6):
        return None
    object_points = points3d.detach().cpu().numpy().astype(np.float64)
    image_points = points2d.detach().cpu().numpy().astype(np.float64)
    camera = K.detach().cpu().numpy().astype(np.float64)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        object_points, image_points, camera, None, iterationsCount=iterations,
        reprojectionError=float(reprojection_px), confidence=0.9999, flags=cv2.SOLVEPNP_EPNP,
    )
    if not ok or inliers is None or len(inliers) < min_inliers:
        return None
    mask = np.zeros(len(points2d), dtype=bool)
    mask[inliers[:, 0]] = True
    rvec, tvec = cv2.solvePnPRefineLM(object_points[mask], image_points[mask], camera, None, rvec, tvec)
    # Re-score every correspondence at the refined pose: LM can recruit or lose a few.
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera, None)
    error = np.linalg.norm(projected[:, 0] - image_points, axis=1)
    in_front = (object_points @ cv2.Rodrigues(rvec)[0][2] + tvec[2, 0]) > 0
    mask = (error < reprojection_px) & in_front
    if mask.sum() < min_inliers:
        return None
    rotation = cv2.Rodrigues(rvec)[0]
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, tvec[:, 0]
    c2w_cv = torch.from_numpy(np.linalg.inv(w2c)).float()
    return opengl_to_opencv(c2w_cv), mask


def twins(c2w_a: torch.Tensor, c2w_b: torch.Tensor, distance: float, rotation_deg: float, translation: float) -> bool:
    """Whether two poses (4, 4) are within rotation_deg and translation x distance of each other."""
    return (float(rotation_error_deg(c2w_a[:3, :3], c2w_b[:3, :3])) < rotation_deg
            and float((c2w_a[:3, 3] - c2w_b[:3, 3]).norm()) < translation * distance)


def _distinct(hypotheses: list[Hypothesis], distance: float, rotation_deg: float = 1.0, translation: float = 0.01) -> list[Hypothesis]:
    """Drop hypotheses within (rotation_deg, translation x distance) of a better one: refining twins wastes rays."""
    kept: list[Hypothesis] = []
    for h in hypotheses:
        if not any(twins(h.c2w, k.c2w, distance, rotation_deg, translation) for k in kept):
            kept.append(h)
    return kept


# ============================================================================= from the retrieval views
MAX_MAGNIFICATION = 4.0
"""A query is magnified at most this much for keypoints: past it they would be described on interpolation."""


class CoarsePoses:
    """Coarse pose hypotheses of prepared queries against the retrieval views of one scene (training
    views, then renders at their gaps), described in ``index`` by ``matcher``."""

    def __init__(self, scene: PoseScene, matcher: Matcher, index: TrainingIndex, config: PoseConfig):
        self.scene, self.matcher, self.index, self.config = scene, matcher, index, config

    def candidates(self, query: np.ndarray, notes: list[str]) -> tuple[list[Hypothesis], int, list[RotatedFeatures]]:
        """The distinct hypotheses worth aligning, best first: the best keypoint ones (or, when no
        match fits, the view the shortlist liked best, with a note), then the appearance ones (with
        ``appearance_on_demand`` only where no match fits: else ``more_candidates`` gives them later).
        Returns them, how many keypoint hypotheses were found, and the query's described rotations."""
        hypotheses, rotated = self.keypoint_hypotheses(query)
        found = len(hypotheses)
        if not hypotheses:
            hypotheses = [self.best_view(rotated)]
            notes.append("no consistent matches with any training view or gap render")
        hypotheses = hypotheses[: self.config.hypotheses]
        if not found or not self.config.appearance_deferred:
            hypotheses = hypotheses + self.appearance_hypotheses(query)
        return _distinct(hypotheses, self.scene.distance), found, rotated

    def more_candidates(self, query: np.ndarray, known: list[Hypothesis]) -> list[Hypothesis]:
        """The appearance hypotheses that ``candidates`` left out, less those twin to a ``known`` one."""
        return _distinct(known + self.appearance_hypotheses(query), self.scene.distance)[len(known):]

    def rotation_angles(self) -> list[float]:
        if self.matcher.rotation_invariant or self.config.rotations <= 1:
            return [0.0]
        return [360.0 * k / self.config.rotations for k in range(self.config.rotations)]

    def shortlist(self, rotated: list[RotatedFeatures]) -> list[tuple[int, int, float]]:
        """The (view, rotation index, score) pairs worth matching finely, best first, one per view."""
        counts = torch.stack([
            mutual_nn_counts(r.rotated, self.index.bank, self.matcher.shortlist_similarity) for r in rotated
        ])  # (R, V)
        best, which = counts.max(0)
        order = best.argsort(descending=True)[: self.config.shortlist]
        return [(int(v), int(which[v]), float(best[v])) for v in order]

    def correspondences(self, rotated: RotatedFeatures, view: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Matches of a turned query with a retrieval view: query pixels (M, 2) in the query's own
        frame, view pixels (M, 2), world points (M, 3) (NaN where the field gives none), scores (M,)."""
        matches: Matches = self.matcher.match(rotated.rotated, self.index.features[view])
        query_points = rotated.points_in_query(matches.points0)
        if matches.index1 is not None:
            points3d = self.index.points3d[view][matches.index1]
        else:  # detector-free matches fall between keypoints: ask the field for their depth
            points3d = keypoint_points3d(self.scene.render_rays, self.scene.retrieval_c2w[view].to(self.scene.device),
                                         self.scene.render_K, matches.points1, self.config.min_opacity)
        return query_points, matches.points1, points3d, matches.scores

    def keypoint_hypotheses(self, query: np.ndarray) -> tuple[list[Hypothesis], list[RotatedFeatures]]:
        """Coarse poses of a prepared query from keypoint matches, most supported first, and its
        described rotations."""
        scene, K = self.scene, self.scene.K
        rotated = describe_rotations(self.matcher, query, self.rotation_angles(), scene.background,
                                     self.magnification(query))
        hypotheses: list[Hypothesis] = []
        pooled = {}
        for view, r, _ in self.shortlist(rotated):
            query_points, view_points, points3d, _ = self.correspondences(rotated[r], view)
            valid = torch.isfinite(points3d).all(1)
            solved = solve_pnp(query_points[valid], points3d[valid], K, self.config.pnp_reprojection_px, min_inliers=6)
            angle = rotated[r].angle_deg
            if solved is not None:
                c2w, inliers = solved
                hypotheses.append(Hypothesis(c2w, f"pnp {scene.view_name(view)} at {angle:.0f} deg", int(inliers.sum()), view, angle))
                keep = valid.clone()
                keep[valid] = torch.from_numpy(inliers)
                pooled.setdefault(r, []).append((query_points[keep], points3d[keep]))
            similarity = fit_similarity(view_points, query_points)
            if similarity is not None and similarity.inliers.sum() >= 6:
                c2w = pose_from_similarity(scene.retrieval_c2w[view], K, similarity, self.view_depth(view, points3d[valid]))
                # A 2D fit ignores parallax: it counts for less than the same number of PnP inliers.
                hypotheses.append(Hypothesis(c2w, f"similarity {scene.view_name(view)} at {angle:.0f} deg",
                                             int(similarity.inliers.sum()) // 2, view, angle))
        # Inliers of several views of the same rotation, solved together: more points, less noise.
        for r, parts in pooled.items():
            if len(parts) < 2:
                continue
            solved = solve_pnp(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), K,
                               self.config.pnp_reprojection_px, min_inliers=6)
            if solved is not None:
                hypotheses.append(Hypothesis(solved[0], f"pnp {len(parts)} views at {rotated[r].angle_deg:.0f} deg",
                                             int(solved[1].sum()), -1, rotated[r].angle_deg))
        hypotheses.sort(key=lambda h: -h.inliers)
        return _distinct(hypotheses, scene.distance), rotated

    def magnification(self, query: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(the object's centre, the factor) that brings the object of query (H, W, 3) to the retrieval
        views' median size, where it is ``match_scale_from`` times smaller or more (at most
        ``MAX_MAGNIFICATION``); else None."""
        if self.config.match_scale_from is None:
            return None
        frame = object_frame(foreground_mask(query, self.scene.background, self.config.foreground_threshold))
        if frame is None or frame.radius <= 0:
            return None
        factor = float(self.index.frames[:, 2].median()) / frame.radius
        return None if factor < self.config.match_scale_from else (frame.centroid, min(factor, MAX_MAGNIFICATION))

    def best_view(self, rotated: list[RotatedFeatures]) -> Hypothesis:
        """When nothing matched: the retrieval view (training view or gap render) the shortlist liked
        best, rolled by its rotation, with no geometric fit."""
        view, r, _ = self.shortlist(rotated)[0]
        angle = rotated[r].angle_deg
        c2w = roll_camera(self.scene.retrieval_c2w[view], -math.radians(angle))
        return Hypothesis(c2w, f"{self.scene.view_name(view)} at {angle:.0f} deg, no geometric fit", 0, view, angle)

    def appearance_hypotheses(self, query: np.ndarray) -> list[Hypothesis]:
        """Coarse poses from global appearance (``omnipose.pose.appearance``), best first: the view and
        turn whose object-centred thumbnail is closest to the query's, as a similarity of the view."""
        count = self.config.appearance_hypotheses
        frame = object_frame(foreground_mask(query, self.scene.background, self.config.foreground_threshold))
        if count <= 0 or frame is None:
            return []
        angles = np.arange(0.0, 360.0, self.config.appearance_step_deg)
        query_thumbs = thumbnails(query, frame, self.scene.background, angles)
        out = []
        for view, angle, distance in best_matches(query_thumbs, self.index.thumbnails, angles, count):
            cu, cv, radius = self.index.frames[view].tolist()
            affine = view_to_query_affine(ObjectFrame(np.array([cu, cv]), radius), frame, angle)
            similarity = Similarity.of_affine(affine, np.zeros(0, dtype=bool))
            c2w = pose_from_similarity(self.scene.retrieval_c2w[view], self.scene.K, similarity,
                                       self.view_depth(view, torch.zeros(0, 3)))
            out.append(Hypothesis(c2w, f"appearance {self.scene.view_name(view)} at {-angle:.0f} deg ({distance:.4f})",
                                  0, view, angle))
        return out

    def view_depth(self, view: int, points3d: torch.Tensor) -> float:
        """Depth of the object along a view's axis: its matched 3D points, else the object centre."""
        c2w = self.scene.retrieval_c2w[view]
        forward = -c2w[:3, 2]
        if len(points3d):
            return float(((points3d - c2w[:3, 3]) @ forward).median())
        return float((self.scene.centre - c2w[:3, 3]) @ forward)

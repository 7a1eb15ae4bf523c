"""Pose of an unposed query image: coarse pose by retrieval, then alignment and iNeRF refinement.

1. **Retrieval** (``index``, ``retrieval``). The training views are described once per object
   (``TrainingIndex``, cached in memory and on disk beside the checkpoint) together with the 3D
   point under every keypoint, read from the depth the radiance field renders there. A query is
   described at several in-plane rotations (unless the matcher is rotation invariant);
   mutual-nearest-neighbour descriptor counts against every view shortlist (view, rotation) pairs,
   which the fine matcher (LightGlue, ratio test, LoFTR) then matches.
2. **Coarse pose** (``hypotheses``). Each shortlisted pair gives 2D-3D correspondences: PnP with
   RANSAC recovers the full pose, in-plane roll and distance included. A similarity fit of the 2D
   matches (roll the view's camera, move it along its axis) is the fallback where too few keypoints
   have 3D points. Global appearance retrieval (``appearance``: object-centred thumbnails compared
   at every turn) adds hypotheses that need no keypoint at all, for queries the matches miss
   (little texture, far from every training view, small images); by default they are aligned only
   where the keypoint hypotheses, aligned, leave the pose weakly supported or fitting poorly
   (``PoseConfig.appearance_on_demand``).
3. **Refinement.** First direct alignment (``align``) of every hypothesis side by side: one render
   of colour and depth per round, then robust Gauss-Newton on the query's blurred image gradients,
   so a round costs a single forward render and converges from tens of degrees; hypotheses that
   meet a better one or fall far behind stop being rendered. Where the best then fits worse than the
   field fits its own training views, poses a few degrees around the two best are aligned too and
   kept if they fit clearly better (``PoseConfig.restart_deg``): on a plain object, alignment from a
   global-appearance hypothesis can settle in a basin beside the true pose. The best turned half-way
   about the object's vertical is aligned as well (``PoseConfig.half_turn``): a near-symmetric object
   seen along that axis offers no keypoint that tells its two sides apart. Then iNeRF (``refine``)
   on the best: an se(3) twist applied to c2w in the camera frame, optimised with Adam through the
   differentiable renderer, rays drawn around the query's keypoints (PAD's interest regions) and
   over the dilated object, coarse-to-fine box levels, a Cauchy loss so that a defect does not drag
   the pose, stopping when the pose stops moving. The best pose is kept by its photometric error
   on a fixed evaluation ray set (``scoring.PoseScoring``).
4. **Confidence** (``results``). A result whose photometric residual is far above what the field
   achieves on its own training views (less far when few keypoint matches support it) is flagged
   ``low_confidence``, with the reasons in ``notes``: never a silent wrong pose.

``PoseEstimator(model, info, config).estimate(image)`` runs it all; ``omnipose pose`` is the CLI.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.device import one_torch_thread, pick_device
from omnipose.core.image import foreground_mask
from omnipose.pose.align import align_poses, structure_aligned
from omnipose.pose.appearance import colour_gains, thumbnail_object_colour
from omnipose.pose.config import PoseConfig
from omnipose.pose.hypotheses import CoarsePoses, Hypothesis
from omnipose.pose.index import (
    TrainingIndex,
    build_index,
    feature_cache_path,
    index_key,
    model_fingerprint,
    shared_index,
    training_images,
)
from omnipose.pose.matching import Matcher, shared_matcher
from omnipose.pose.pad import estimate_pad_recipe
from omnipose.pose.query import keypoint_mask, object_region, prepare_query
from omnipose.pose.refine import refine_best
from omnipose.pose.restart import (
    choose_side,
    half_turned,
    restart_nearby,
    with_appearance,
    worth_restarting,
)
from omnipose.pose.results import PoseResult, pose_confidence
from omnipose.pose.retrieval import RotatedFeatures
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import PoseScoring

QUERY_COLOUR_TOLERANCE = 0.3
"""``match_query_colour`` leaves a query whose colour gains are all within this of 1."""
DUEL_PIXELS = 8192
"""Pixels of the object a pose and its half turn are compared on (``_other_side``): the few where
they disagree are a share of these."""


class _SceneAttribute:
    """An attribute of the estimator's ``PoseScene``, read through the estimator."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, estimator, owner=None):
        return self if estimator is None else getattr(estimator.scene, self.name)


class PoseEstimator:
    """Pose of unposed query images of one object, against its radiance field.

    model: a RadianceModel (``render_rays(rays_o, rays_d) -> {'rgb', 'depth', 'opacity'}``);
    info: its CheckpointInfo (width, height, K, background, train_c2w, train_image_paths, aabb).
    views: the training images (PosedImages) if at hand, else read from ``info.train_image_paths``.
    cache_path: file for the training-view features (``from_checkpoint`` puts it beside the
    checkpoint); without one, ``config.cache_dir`` holds it under the model's fingerprint (None: no
    disk cache). In memory the index is shared by every estimator of the same model and matcher.

    >>> estimator = PoseEstimator(model, info)
    >>> result = estimator.estimate("query.png")
    >>> result.c2w, result.residual, result.low_confidence
    """

    # The object and its cameras (see PoseScene).
    device = _SceneAttribute()
    width = _SceneAttribute()
    height = _SceneAttribute()
    background = _SceneAttribute()
    K = _SceneAttribute()
    render_K = _SceneAttribute()
    train_c2w = _SceneAttribute()
    gap_c2w = _SceneAttribute()
    retrieval_c2w = _SceneAttribute()
    centre = _SceneAttribute()
    distance = _SceneAttribute()

    def __init__(self, model, info, config: PoseConfig | None = None, views=None, cache_path: str | Path | None = None):
        self.config = config or PoseConfig()
        for part in (self.config, self.config.align, self.config.refine):
            if part is not None:
                part.validate()  # also what was changed after construction
        self.model = model
        self.info = info
        self.scene = PoseScene.of_model(model, info, self.config, views)
        self.matcher: Matcher = shared_matcher(
            self.config.matcher, str(self.device), self.config.max_keypoints, self.config.loftr_weights
        )
        self.fingerprint = model_fingerprint(model)
        if cache_path is None and self.config.cache_dir:
            cache_path = feature_cache_path(self.config.cache_dir, self.matcher.key, self.fingerprint)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        with self._threads():
            self.index = self._training_index(views)
        self.coarse = CoarsePoses(self.scene, self.matcher, self.index, self.config)
        # The object's median colour over the training views, what ``match_query_colour`` brings queries to.
        self.object_colour = (thumbnail_object_colour(self.index.thumbnails, self.background, self.config.foreground_threshold)
                              if self.config.match_query_colour else None)  # fmt: skip

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: PoseConfig | None = None, views=None) -> "PoseEstimator":
        """Load a checkpoint (``omnipose.nerf.load_checkpoint``) and cache the training features
        beside it (``feature_cache_path``)."""
        from omnipose.nerf import load_checkpoint

        config = config or PoseConfig()
        model, info = load_checkpoint(path, device=pick_device(config.device))
        model.eval()
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        return cls(model, info, config, views=views, cache_path=feature_cache_path(folder, config.matcher))

    def _threads(self):
        return one_torch_thread() if self.config.single_thread else nullcontext()

    def _training_index(self, views) -> TrainingIndex:
        """The index of the retrieval views: shared in memory, read from ``cache_path``, else built there."""
        key = index_key(self.scene, self.fingerprint, self.matcher, self.config)

        def build() -> TrainingIndex:
            images = training_images(self.scene, self.info, views, self.config.progress)
            return build_index(self.scene, self.matcher, images, key, self.config)

        return shared_index(key, self.cache_path, self.matcher.device, build)

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> dict:
        return self.scene.render_rays(rays_o, rays_d)

    # ------------------------------------------------------------------ regions and scoring
    def object_region(self, image: np.ndarray, margin_px: int | None = None) -> np.ndarray:
        """(H, W) bool: the object of image (H, W, 3), dilated by margin_px (default 3 % of the image size)."""
        return object_region(image, self.background, self.config.foreground_threshold, margin_px)

    def scoring(self, image: np.ndarray, region: np.ndarray, seed: int = 0) -> PoseScoring:
        """The fixed pixels of image (H, W, 3) in region that pose hypotheses are compared on."""
        return PoseScoring.of_region(image, region, self.config.eval_rays, self.config.eval_trim, seed).to(self.device)

    def residual(self, poses: torch.Tensor, scoring: PoseScoring) -> torch.Tensor:
        """Pose residual (``PoseScoring``) of the field rendered at each pose (P, 4, 4). Returns (P,) on CPU."""
        return scoring.score(self.render_rays, poses.to(self.device), self.render_K, self.config.chunk).cpu()

    # ------------------------------------------------------------------ coarse pose (see CoarsePoses)
    def rotation_angles(self) -> list[float]:
        return self.coarse.rotation_angles()

    def shortlist(self, rotated: list[RotatedFeatures]) -> list[tuple[int, int, float]]:
        return self.coarse.shortlist(rotated)

    def correspondences(self, rotated: RotatedFeatures, view: int):
        return self.coarse.correspondences(rotated, view)

    def coarse_hypotheses(self, query: np.ndarray) -> tuple[list[Hypothesis], list[RotatedFeatures]]:
        """Coarse poses of a prepared query from keypoint matches, most supported first, and its described rotations."""
        return self.coarse.keypoint_hypotheses(query)

    def appearance_hypotheses(self, query: np.ndarray) -> list[Hypothesis]:
        return self.coarse.appearance_hypotheses(query)

    def view_name(self, view: int) -> str:
        return self.scene.view_name(view)

    # ------------------------------------------------------------------ full estimate
    def estimate(self, image) -> PoseResult:
        """Pose of one query: a path or an (H, W[, C]) array/tensor (see ``prepare_query``)."""
        with self._threads():
            return self._estimate(image)

    def _estimate(self, image) -> PoseResult:
        start = time.perf_counter()
        photo, notes = prepare_query(image, self.info, self.config.foreground_threshold)
        query = self._matched_colour(photo, notes)
        candidates, found, rotated = self.coarse.candidates(query, notes)
        timings = {"coarse": time.perf_counter() - start}
        query_t = torch.from_numpy(query).to(self.device)
        region = self.object_region(query)
        interest = self._interest(rotated, candidates[0]) & region
        scoring = self.scoring(query, region)
        rescore = partial(self.residual, scoring=scoring)  # the residuals of more poses, (P, 4, 4) -> (P,)
        poses = torch.stack([h.c2w for h in candidates]).to(self.device)
        steps, lead = 0, None
        with self.scene.frozen():
            mark = time.perf_counter()
            if self.config.align is not None:
                poses, steps, kept = align_poses(self.render_rays, poses, self.render_K, query_t, self.config.align,
                                                 region, interest, self.distance)
                candidates = [candidates[int(i)] for i in kept]
            residual = rescore(poses)
            best = int(residual.argmin())
            poses, residual, candidates, best, rounds = with_appearance(
                self.scene, poses, residual, candidates, best, self.index.baseline_residual, self.config, query_t, region,
                interest, rescore, lambda known: self.coarse.more_candidates(query, known))
            steps += rounds
            if worth_restarting(float(residual[best]), self.index.baseline_residual, self.config):
                poses, residual, candidates, best, rounds = restart_nearby(
                    self.scene, poses, residual, candidates, self.config, query_t, region, interest, rescore)
                steps += rounds
                if self.config.half_turn is not None and not self.config.rank_by_chromaticity:  # that mode duels below
                    count = len(poses)
                    poses, residual, candidates, rounds = half_turned(
                        self.scene, poses, residual, candidates, best, self.config, query_t, region, interest,
                        rescore, self.config.half_turn)
                    steps += rounds
                    if len(poses) > count:
                        best, lead = choose_side(self.scene, poses, residual, best, self.config, photo, region, notes)
            if self.config.rank_by_chromaticity:
                best = self._best_by_chromaticity(poses, scoring, best, notes)
                poses, residual, candidates, best, rounds = self._other_side(poses, residual, candidates, best, query_t,
                                                                             region, interest, scoring, notes)
                steps += rounds
            timings["align"] = time.perf_counter() - mark
            mark = time.perf_counter()
            if self.config.refine is not None:
                # A pose chosen against the colour residuals (by chromaticity, or its side by structure) alone is
                # refined: refining more would rank them by colour again.
                lead = best if self.config.rank_by_chromaticity else lead
                best, refine_steps = refine_best(self.render_rays, poses, residual, self.render_K, query_t,
                                                 self.config.refine, self.config.refine_top, region, interest, scoring,
                                                 self.distance, lead=lead)
                steps += refine_steps
            structure_aligned(self.scene, self.config, poses, residual, best, photo, region, rescore, notes)
            timings["refine"] = time.perf_counter() - mark
        chosen = candidates[best]
        chromaticity = None
        if self.config.rank_by_chromaticity:
            measured = scoring.score(self.render_rays, poses[best:best + 1], self.render_K, self.config.chunk,
                                     by_chromaticity=True)  # fmt: skip
            chromaticity = (float(measured[0]), self.index.baseline_chromaticity)
        confidence, low, why = pose_confidence(float(residual[best]), chosen.inliers, self.index.baseline_residual,
                                               self.config, chromaticity)
        others = [int(i) for i in residual.argsort() if int(i) != best]
        return PoseResult(
            c2w=poses[best].detach().cpu(), residual=float(residual[best]), confidence=confidence, low_confidence=low,
            seconds=time.perf_counter() - start, hypotheses=found, inliers=chosen.inliers,
            source=chosen.source, steps=steps, coarse_c2w=chosen.c2w.cpu(), notes=notes + why, timings=timings,
            alternatives=poses[others].detach().cpu().reshape(-1, 4, 4), alternative_residuals=residual[others].reshape(-1),
        )

    def _other_side(self, poses: torch.Tensor, residual: torch.Tensor, candidates: list[Hypothesis], best: int,
                    query: torch.Tensor, region: np.ndarray, interest: np.ndarray, scoring: PoseScoring,
                    notes: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[Hypothesis], int, int]:
        """``restart.half_turned``, and the index of the one of pose ``best`` and its turn whose chromaticity fits
        where their renders disagree (``PoseScoring.disagreement`` on ``DUEL_PIXELS`` pixels), noted when
        it is the turned one. Returns poses, residuals, hypotheses, that index and the alignment rounds run.

        Lit from another side than the training views, a near-symmetric object's far side can fit
        the colours better than its near side, and neither keypoints nor alignment then offer the
        true pose; over the whole object its chromaticity ties the two."""
        poses, residual, candidates, rounds = half_turned(self.scene, poses, residual, candidates, best, self.config,
                                                          query, region, interest,
                                                          lambda turned: self.residual(turned, scoring))
        pair = poses[[best, len(poses) - 1]]
        duel = PoseScoring.of_region(query.cpu().numpy(), region, DUEL_PIXELS, 0.0).to(self.device)
        fit = duel.disagreement(self.render_rays, pair, self.render_K, chunk=self.config.chunk)
        if float(fit[1]) < float(fit[0]):
            notes.append(f"pose turned half-way about the object's vertical: its chromaticity fits {float(fit[1]):.4f} "
                         f"against {float(fit[0]):.4f} where the two views of the object differ")
            best = len(poses) - 1
        return poses, residual, candidates, best, rounds

    def _best_by_chromaticity(self, poses: torch.Tensor, scoring: PoseScoring, best: int, notes: list[str]) -> int:
        """The pose (index into poses (P, 4, 4)) whose chromaticity residual is lowest, noted where it
        is not ``best``, the pose of lowest colour residual (``PoseConfig.rank_by_chromaticity``)."""
        chroma = scoring.score(self.render_rays, poses, self.render_K, self.config.chunk, by_chromaticity=True)
        chosen = int(chroma.argmin())
        if chosen != best:
            notes.append(f"pose chosen by chromaticity ({float(chroma[chosen]):.4f} against {float(chroma[best]):.4f} at "
                         "the pose of lowest colour residual): the query may be lit otherwise than the training views")
        return chosen

    def _matched_colour(self, query: np.ndarray, notes: list[str]) -> np.ndarray:
        """With ``match_query_colour``, the query with its object brought to the training views' median
        colour (``appearance.colour_gains``) when a gain is off by more than ``QUERY_COLOUR_TOLERANCE``;
        else the query as it is."""
        if self.object_colour is None:
            return query
        on_object = foreground_mask(query, self.background, self.config.foreground_threshold)
        gain = colour_gains(query[on_object], self.object_colour)
        if gain is None or np.abs(gain - 1.0).max() <= QUERY_COLOUR_TOLERANCE:
            return query  # within what one view of the object differs from the median of all
        notes.append(f"pose searched with the object's colours times ({', '.join(f'{g:.2f}' for g in gain)}), "
                     "the training views' median colour")
        out = query.copy()
        out[on_object] = np.clip(query[on_object] * gain, 0.0, 1.0)
        return out

    def _interest(self, rotated: list[RotatedFeatures], lead: Hypothesis) -> np.ndarray:
        """PAD's interest regions (H, W) bool: the keypoints of the query described at the turn
        nearest the leading hypothesis', dilated by ``interest_radius``."""
        nearest = min(rotated, key=lambda r: abs((r.angle_deg - lead.angle_deg + 180) % 360 - 180))
        return keypoint_mask(nearest.features.keypoints, self.height, self.width, self.config.interest_radius)

    def estimate_pad_recipe(self, image) -> PoseResult:
        """PAD / OmniposeAD's pose recipe, the baseline (``omnipose.pose.pad``)."""
        with self._threads():
            return estimate_pad_recipe(self.scene, self.matcher, self.index, self.config, self.info, image)

    def estimate_batch(self, images: Sequence) -> list[PoseResult]:
        """Poses of many queries; the models and training features are loaded once for all."""
        return [self.estimate(image) for image in tqdm(images, desc="pose", disable=not self.config.progress)]

"""PAD / OmniposeAD's pose recipe, the baseline our estimator is measured against: the training view
with the most descriptor matches as the start, then a fixed run of iNeRF steps on rays from
keypoint interest regions."""
from __future__ import annotations

import time

import torch

from omnipose.pose.config import PoseConfig, RefineConfig
from omnipose.pose.index import TrainingIndex
from omnipose.pose.matching import Matcher
from omnipose.pose.query import keypoint_mask, object_region, prepare_query
from omnipose.pose.refine import refine_poses
from omnipose.pose.results import PoseResult, pose_confidence
from omnipose.pose.retrieval import mutual_nn_counts
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import PoseScoring

# PAD's interest regions: keypoints dilated by this many pixels; its object region is dilated as much.
PAD_RADIUS_PX = 6


def pad_refine_config() -> RefineConfig:
    """PAD / OmniposeAD's iNeRF recipe: 300 steps, Adam lr 0.01 decayed as 0.8^(k/100), 3072 rays,
    interest-region sampling, plain L2, full resolution, no early stop."""
    return RefineConfig(
        box_sizes=(1,), rays=3072, subsamples=1, interest_fraction=1.0, loss="l2",
        learning_rate=0.01, lr_decay=0.8, lr_decay_steps=100, fixed_steps=300, keep=(1,),
    )


def estimate_pad_recipe(scene: PoseScene, matcher: Matcher, index: TrainingIndex, config: PoseConfig, info, image) -> PoseResult:
    """The pose of one query by PAD's recipe: the training view with the most mutual-nearest-neighbour
    matches (at 0 degrees only: PAD has no in-plane rotation handling, and retrieves among the
    training views only) as the start, then ``pad_refine_config``'s iNeRF steps."""
    start = time.perf_counter()
    query, notes = prepare_query(image, info, config.foreground_threshold)
    described = matcher.extract(query)[0]
    counts = mutual_nn_counts(described, index.bank, matcher.shortlist_similarity)[: len(scene.train_c2w)]
    view = int(counts.argmax())
    matches = int(counts[view])
    region = object_region(query, scene.background, config.foreground_threshold, PAD_RADIUS_PX)
    interest = keypoint_mask(described.keypoints, scene.height, scene.width, radius=PAD_RADIUS_PX)
    if not interest.any():
        interest = region
    coarse = scene.train_c2w[view]
    scoring = PoseScoring.of_region(query, region, config.eval_rays, config.eval_trim).to(scene.device)
    with scene.frozen():
        refined = refine_poses(scene.render_rays, coarse[None].to(scene.device), scene.render_K,
                               torch.from_numpy(query).to(scene.device), pad_refine_config(), interest, interest,
                               scoring, scene_scale=1.0)
    residual = float(refined.residual[0])
    confidence, low, why = pose_confidence(residual, matches, index.baseline_residual, config)
    return PoseResult(
        c2w=refined.c2w[0].detach().cpu(), residual=residual, confidence=confidence, low_confidence=low,
        seconds=time.perf_counter() - start, hypotheses=1, inliers=matches, source=f"PAD recipe from view {view}",
        steps=refined.steps, coarse_c2w=coarse.clone(), notes=notes + why,
    )

#!/usr/bin/env python
"""Detection end to end: pixel / image AUROC, AUPRO and time per query, with ablations side by side.

Cases (each skipped with a message when its data is missing):

- **built-in**: classes made by ``omnipose synth`` (all 12 by default) at ``--size``: a detector is
  fitted per class on its training views (field trained for ``--train-steps``), then every test
  image (good, Burrs, Missing, Stains; no pose given) is detected.
- **lego**: semi-synthetic anomalies on ``nerf_synthetic/lego`` at 200x200: the field is trained
  on 80 views; each of the 20 held-out views, turned in-plane by a random angle, is a query twice:
  as it is (good) and with a defect planted on the object (a colour stain or an erased patch;
  the mask is the set of pixels the defect changed).

Every query is posed once by each pose method and compared once by each comparison, so the
ablations share everything else:

- ``ours``: estimated pose (retrieval + PnP + alignment + iNeRF; ``Detector.compare_at_pose`` keeps,
  of the estimate and its close runners-up, the pose whose reference explains the query best), calibrated comparison of colour,
  structure and EfficientNet-Lite features against the render and the nearest training views
  re-projected to the pose;
- ``pixel only`` / ``features only``: the same pose and references, one kind of term (each calibrated);
- ``with`` / ``no exposure matching``: the same, with ``compare.match_exposure`` the other way (the references
  brought to the query's exposure and white balance, or not);
- ``highlights discounted`` / ``counted``: the same, with ``compare.highlight_floor`` the other way (0.05
  when the default is off: white light the query has over the reference beyond that lift taken off
  before the colour difference);
- ``ground-truth pose``: our comparison at the true pose (the upper bound of pose estimation);
- ``PAD recipe``: PAD's pose (best retrieved view + 300 fixed iNeRF steps) and PAD's comparison
  (RGB + feature squared differences, sigma 4 at 224, min-max over the class's test set), on the
  first ``--pad-queries`` queries of each class (it costs several times ours). Its row is
  evaluated on those queries only, so compare it with ``ours (PAD subset)``.

With ``--train-poses onboard`` each field is trained on the poses and focal length ``omnipose onboard``
recovers from its training views alone (structure from motion; the ``sfm`` extra), not on the true
ones; the true query poses are carried into that frame by the similarity between the two sets of
training cameras, so the pose errors and the ground-truth-pose row still mean what they say. Run it
beside a run on the true poses with the same steps to see what onboarding costs detection. With
``--refine-poses`` each field also refines its training poses while it trains (``TrainConfig.refine_poses``;
``--refine-focal``: and their focal length); on the lego the onboarded and the refined training cameras are
both scored against the true ones.

Metrics come from ``omnipose.evaluate`` (PAD protocol, maps at their native size, no extra
smoothing: the comparisons smooth their own maps). Seconds per query: ours end to end (pose,
render, comparison), measured per query.

    python scripts/bench_detect.py --quick                      # 2 classes at 100 px, ~10 min
    python scripts/bench_detect.py --out bench/bench_detect.json  # all 12 classes + lego at 200 px
    python scripts/bench_detect.py --train-poses onboard --classes 01Robot,03Duck --out bench/onboarded.json
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_field.py: spinning OpenMP workers stall shared cores

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_common import git_commit  # noqa: E402

from omnipose.cli.onboard import ONBOARD_MATCHERS  # noqa: E402
from omnipose.cli.train import unexplained_check_at  # noqa: E402
from omnipose.compare import Comparator, CompareConfig  # noqa: E402
from omnipose.core.errors import DataError  # noqa: E402
from omnipose.core.files import atomic_write_json  # noqa: E402
from omnipose.core.geometry import pose_errors, roll_camera  # noqa: E402
from omnipose.core.image import (  # noqa: E402
    read_image_rgb,
    read_mask,
    resize_to_width,
    warp_image,  # noqa: E402
)
from omnipose.data import (  # noqa: E402
    PosedImages,
    load_transforms,
    open_mad_class,  # noqa: E402
)
from omnipose.detector import Detector, DetectorConfig, decide, learnt_views  # noqa: E402
from omnipose.evaluation import (  # noqa: E402
    EvaluationConfig,
    decision_metrics,
    evaluate_pad,
    is_defined,  # noqa: E402
)
from omnipose.nerf import default_field_config, split_holdout  # noqa: E402
from omnipose.pose import (
    prepare_query,  # noqa: E402
    rotation_affine,  # noqa: E402
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LEGO = ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"
EVALUATION = EvaluationConfig(protocol="pad", image_size="native", gaussian_sigma=0.0,
                              metrics=("AUROC_sp", "AUROC_px", "AUPRO_px"))  # fmt: skip
METHODS = ("ours", "pixel only", "features only", "no exposure matching", "with exposure matching",
           "highlights counted", "highlights discounted", "ground-truth pose", "ours (PAD subset)", "PAD recipe")
HIGHLIGHT_FLOOR = 0.05  # CompareConfig.highlight_floor of the "highlights discounted" ablation when the default is off


@dataclass
class Query:
    """One test image: (H, W, 3) in [0, 1], its mask (H, W) bool, its true c2w (4, 4) if known."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    anomalous: bool
    c2w: torch.Tensor | None
    alpha: np.ndarray | None = None  # (H, W) the object's opacity, where known (lego), for --backdrop


@dataclass
class MethodMaps:
    maps: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    index: list = field(default_factory=list)  # which queries the method ran on


# ----------------------------------------------------------------------------- cases
def builtin_queries(root: Path, class_name: str, size: int) -> list[Query]:
    from omnipose.data.synth import load_ground_truth_poses

    mad = open_mad_class(root, class_name)
    poses = load_ground_truth_poses(root, class_name)
    queries = []
    for item in mad.test_items:
        image = read_image_rgb(item.image_path, (1.0, 1.0, 1.0), (size, size))
        mask = read_mask(item.mask_path, size=(size, size)) if item.mask_path else np.zeros((size, size), bool)
        queries.append(Query(item.name, image, mask, item.is_anomalous, poses.get(item.name)))
    return queries


def plant_defect(image: np.ndarray, rng: np.random.Generator, kind: str, area: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A defect on the object as an ellipse of ``area`` pixels (default 1-2 % of the object's pixels):
    a "stain" (colour shift), an "erased" patch (background) or a "burr" (a small shaded bump of the
    object's own colour standing out of its outline). Returns the defective image and its mask (the
    pixels the defect changed)."""
    height, width = image.shape[:2]
    on_object = np.abs(image - 1.0).max(-1) > 0.05
    if area is None:
        area = rng.uniform(0.01, 0.02) * on_object.sum()
    ratio, angle = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
    radius = math.sqrt(area / (math.pi * ratio))
    if kind == "burr":  # centred just outside the outline, so that the bump adds to the silhouette
        import cv2

        inside = cv2.erode(on_object.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        rows, cols = np.nonzero(on_object & ~inside)
        pick = rng.integers(len(rows))
        smooth = cv2.GaussianBlur(on_object.astype(np.float32), (0, 0), 3.0)
        grad_r, grad_c = np.gradient(smooth)
        normal = -np.array([grad_r[rows[pick], cols[pick]], grad_c[rows[pick], cols[pick]]])
        normal /= max(np.linalg.norm(normal), 1e-6)
        centre_r, centre_c = rows[pick] + 0.25 * radius * normal[0], cols[pick] + 0.25 * radius * normal[1]
    else:
        rows, cols = np.nonzero(on_object)
        pick = rng.integers(len(rows))
        centre_r, centre_c = rows[pick], cols[pick]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xx - centre_c) * math.cos(angle) + (yy - centre_r) * math.sin(angle)
    v = -(xx - centre_c) * math.sin(angle) + (yy - centre_r) * math.cos(angle)
    region = (u / radius) ** 2 + (v / (radius * ratio)) ** 2 <= 1.0
    out = image.copy()
    if kind == "burr":
        near = on_object & ((yy - centre_r) ** 2 + (xx - centre_c) ** 2 <= (3 * radius) ** 2)
        colour = image[near].mean(0) if near.any() else image[on_object].mean(0)
        light = rng.uniform(0, 2 * math.pi)  # lit from one side: bright on one flank, shadowed on the other
        side = ((xx - centre_c) * math.cos(light) + (yy - centre_r) * math.sin(light)) / radius
        shade = np.clip(1.0 + 0.35 * side, 0.55, 1.45)[..., None]
        out[region] = np.clip(colour * shade[region], 0.0, 1.0)
    else:
        region &= on_object
        if kind == "stain":
            colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
            out[region] = 0.35 * out[region] + 0.65 * colour
        else:
            out[region] = 1.0
    mask = np.abs(out - image).max(-1) > 2.0 / 255.0
    return out, mask


def lego_queries(
    views: PosedImages, held: list[int], seed: int, fine: bool = False, size: int | None = None, alphas: torch.Tensor | None = None
) -> list[Query]:
    """Each held-out view, turned in-plane at random, as it is and with a defect: alternately a stain
    and an erased patch of 1-2 % of the object; with ``fine``, small burrs, stains and erased patches
    of 50-500 pixels at the views' size (plant them at 400 for MAD's scale). ``size``: the width the
    queries are then brought to (masks: the pixels at least a third covered by the defect). ``alphas``
    (N, H, W): the views' opacities, carried to each query (a burr is opaque, an erased patch empty)."""
    rng = np.random.default_rng(seed)
    queries = []
    for n, i in enumerate(held):
        angle = float(rng.uniform(-180, 180))
        affine = rotation_affine(angle, views.width, views.height)
        image = warp_image(views.images[i].numpy(), affine, 1.0)
        alpha = None if alphas is None else warp_image(alphas[i].numpy(), affine, 0.0)
        c2w = roll_camera(views.c2w[i], -math.radians(angle))
        stem = views.paths[i].stem
        if fine:
            kind = ("burr", "stain", "erased", "burr")[n % 4]
            defective, mask = plant_defect(image, rng, kind, area=float(np.exp(rng.uniform(np.log(50), np.log(500)))))
        else:
            kind = "stain" if n % 2 == 0 else "erased"
            defective, mask = plant_defect(image, rng, kind)
        defect_alpha = None
        if alpha is not None:
            defect_alpha = alpha.copy()
            defect_alpha[mask] = {"burr": 1.0, "erased": 0.0}.get(kind, defect_alpha[mask])
        if size is not None and size != views.width:
            image, defective = resize_to_width(image, size), resize_to_width(defective, size)
            mask = resize_to_width(mask.astype(np.float32), size) >= 1 / 3
            if alpha is not None:
                alpha, defect_alpha = resize_to_width(alpha, size), resize_to_width(defect_alpha, size)
        queries.append(Query(f"good/{stem}", image, np.zeros(image.shape[:2], bool), False, c2w, alpha))
        queries.append(Query(f"{kind}/{stem}", defective, mask, True, c2w, defect_alpha))
    return queries


def parse_colour(text: str | None, top: float = 1.0) -> tuple[float, float, float] | None:
    """'0.95' (a grey) or '0.5,0.6,0.8' as an RGB triple in [0, top]; None for None."""
    if text is None:
        return None
    values = [float(v) for v in text.split(",")]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(0.0 <= v <= top for v in values):
        raise SystemExit(f"{text!r}: give one number or three (r,g,b) in [0, {top}]")
    return tuple(values)


def photograph(image: np.ndarray, alpha: np.ndarray, backdrop, rng: np.random.Generator, gain=(1.0, 1.0, 1.0),
               noise: float = 0.01) -> np.ndarray:
    """The object of image (H, W, 3), composited on white with opacity alpha (H, W), photographed in
    front of a plain ``backdrop`` colour: the light on the backdrop falls off downwards and to the sides,
    the session's exposure and white balance multiply everything (``gain``), the sensor adds noise,
    and the file holds 8 bits."""
    height, width = alpha.shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    field = np.asarray(backdrop, np.float32) * (1.0 - 0.08 * y - 0.2 * (x - 0.5) ** 2)[..., None]
    shot = image - (1.0 - alpha[..., None]) * (1.0 - field)
    shot = shot * np.asarray(gain, np.float32) + rng.normal(0.0, noise, shot.shape)
    return np.round(np.clip(shot, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0


def lego_opacity(path: Path, size: int) -> tuple[PosedImages, torch.Tensor]:
    """The lego views of ``path`` at ``size`` on white and their opacities (N, H, W)."""
    white = load_transforms(path, size=size, progress=False)
    black = load_transforms(path, size=size, background=0.0, progress=False)
    return white, (1.0 - (white.images - black.images).mean(-1)).clamp(0.0, 1.0)


def write_backdrop_class(root: Path, views: PosedImages, alphas: torch.Tensor, backdrop, source: Path) -> Path:
    """The views photographed in front of ``backdrop`` (``photograph``) as a MAD class ``lego`` under
    root (training views and transforms.json only); reused when there."""
    from omnipose.core.image import save_image

    folder = root / "lego"
    if (folder / "transforms.json").is_file():
        return root
    rng = np.random.default_rng(1)
    (folder / "train" / "good").mkdir(parents=True, exist_ok=True)
    frames = []
    for n in range(len(views)):
        save_image(folder / "train" / "good" / f"{n}.png", photograph(views.images[n].numpy(), alphas[n].numpy(), backdrop, rng))
        frames.append({"file_path": f"train/good/{n}.png", "transform_matrix": views.c2w[n].tolist()})
    meta = json.loads(source.read_text())
    atomic_write_json(folder / "transforms.json", {"camera_angle_x": meta["camera_angle_x"], "frames": frames})
    return root


# ----------------------------------------------------------------------------- one class
def onboarded_frame(onboarded: Path, truth: Path) -> np.ndarray:
    """The similarity (4, 4) taking the true training cameras (``truth``, a transforms.json) into the frame
    of ``onboarded`` (the transforms.json ``omnipose onboard`` wrote for the same views), matched by file name.
    Fitted again three times on the three quarters of the cameras it places best, so that a few cameras an
    onboarding got grossly wrong do not move the frame of every query's true pose."""
    from omnipose.data import apply_similarity, camera_similarity

    estimated = load_transforms(onboarded, progress=False)
    true = load_transforms(truth, progress=False)
    true_c2w = {path.stem: c2w for path, c2w in zip(true.paths, true.c2w.double().numpy())}
    source = estimated.c2w.double().numpy()
    target = np.stack([true_c2w[path.stem] for path in estimated.paths])
    T = camera_similarity(source, target)
    for _ in range(3):
        error = np.linalg.norm(apply_similarity(T, source)[:, :3, 3] - target[:, :3, 3], axis=1)
        kept = error <= np.quantile(error, 0.75)
        T = camera_similarity(source[kept], target[kept])
    return np.linalg.inv(T)


def training_pose_errors(onboarded: PosedImages, info, lego: Path) -> dict:
    """The onboarded training cameras, and those the field refined from them (``info``, its checkpoint) when
    it did, each aligned to the true cameras by a similarity and scored as ``bench_onboard.py`` scores
    onboarding; the focal length in % of the true one."""
    from bench_onboard import similarity_errors

    true = load_transforms(lego / "transforms_train.json", progress=False)
    by_name = {path.stem: c2w for path, c2w in zip(true.paths, true.c2w.double().numpy())}
    actual = np.stack([by_name[path.stem] for path in onboarded.paths])
    true_focal = float(true.K[0, 0]) / true.width

    def score(c2w: torch.Tensor, K: torch.Tensor, width: int) -> dict:
        focal_pct = 100.0 * (float(K[0, 0]) / width / true_focal - 1.0)
        return {k: round(v, 4) for k, v in {**similarity_errors(c2w.double().numpy(), actual), "focal_pct": focal_pct}.items()}

    errors = {"onboarded": score(onboarded.c2w, onboarded.K, onboarded.width)}
    if info.config.get("refine_poses"):
        errors["refined"] = score(info.train_c2w, info.K, info.width)
    return errors


def onboard_once(photos: Path, folder: Path, threads: int, matcher: str = "sift") -> dict:
    """``omnipose onboard --matcher matcher`` of ``photos`` into ``folder`` unless a finished run is there, leaving
    out the photos it refuses, as its message asks, as ``omnipose onboard --leave-out-refused`` does; returns its report."""
    from omnipose.cli.onboard import LEAVE_OUT_ROUNDS, onboard_field_check, onboard_matcher
    from omnipose.data import OnboardConfig, onboard_leaving_out

    report = folder / "onboard_report.json"
    if not report.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        onboard_leaving_out(photos, folder, OnboardConfig(num_threads=threads), matcher=onboard_matcher(matcher),
                            retries=LEAVE_OUT_ROUNDS, field_check=onboard_field_check(progress=False))  # fmt: skip
    return json.loads(report.read_text())


def in_frame(queries: list[Query], T: np.ndarray) -> list[Query]:
    """The queries with their true poses moved by the similarity T."""
    from omnipose.data import apply_similarity

    def moved(c2w):
        return None if c2w is None else torch.from_numpy(apply_similarity(T, c2w.double().numpy()[None])[0]).float()

    return [replace(query, c2w=moved(query.c2w)) for query in queries]


def dump_query(detector: Detector, query: Query, image: np.ndarray, pose, candidates, truth_reference) -> dict:
    """What the comparison of one query sees, at half precision: the references compared and, under
    "wide", those of a looser runner-up rule (up to 6 poses within 2x the estimate's residual), each
    with its residual over the estimate's, so that other rules can be studied offline."""
    half = lambda t: torch.as_tensor(t).half()  # noqa: E731
    looser = copy.copy(detector)  # shares the model and comparator, has its own config
    looser.config = replace(detector.config, pose_candidates=6, candidate_residual_ratio=2.0)
    wide = looser.reference_candidates(image, pose)
    poses = [torch.as_tensor(pose.c2w).float().cpu(), *pose.alternatives.float().cpu()]
    residuals = [float(pose.residual), *[float(r) for r in pose.alternative_residuals]]
    ratio = lambda c2w: next(r for p, r in zip(poses, residuals) if torch.equal(p, c2w)) / max(float(pose.residual), 1e-6)  # noqa: E731
    return {"name": query.name, "image": half(image), "mask": torch.from_numpy(query.mask), "anomalous": query.anomalous,
            "candidates": [(r.c2w, half(r.image), half(r.alpha), half(r.neighbours), r.unseen) for r in candidates],
            "wide": [(r.c2w, half(r.image), half(r.alpha), half(r.neighbours), ratio(r.c2w), r.unseen) for r in wide],
            "true_c2w": query.c2w,
            "truth": None if truth_reference is None else (half(truth_reference.image), half(truth_reference.alpha),
                                                           half(truth_reference.neighbours), truth_reference.unseen)}  # fmt: skip


def fit_variant(detector: Detector, config: CompareConfig, pairs) -> Comparator:
    comparator = Comparator(config, device=detector.device)
    if config.mode == "calibrated":
        comparator.fit(*pairs, progress=False)
    return comparator


def evaluated(maps, masks, labels, scores, names, class_name: str = "") -> dict:
    """One method's maps and scores on one class under the benchmark's protocol (``EVALUATION``): the
    metrics in percent and the number of queries; no image AUROC below 3 queries of a label."""
    result = evaluate_pad(maps, masks, labels, scores, names=names, config=EVALUATION, class_name=class_name)
    metrics = {k: (100 * float(v) if is_defined(v) else None) for k, v in result.metrics.items()}
    metrics["queries"] = len(labels)
    anomalous = sum(bool(label) for label in labels)
    if min(anomalous, len(labels) - anomalous) < 3:  # ranking 1 good against 1 defective is no AUROC
        metrics["AUROC_sp"] = None
    return metrics


def run_class(name: str, detector: Detector, views: PosedImages, queries: list[Query], args, pad_queries: int) -> dict:
    """Pose and compare every query with every method; evaluate each. Returns the class's record."""
    compare = detector.config.compare
    views = learnt_views(views, detector.info)  # as the detector's calibration has them
    pairs = detector.normal_pairs(views, progress=False)
    exposure_variant = "no exposure matching" if compare.match_exposure else "with exposure matching"
    counted = compare.highlight_floor is None
    highlight_variant = "highlights discounted" if counted else "highlights counted"
    variants = {
        "ours": detector.comparator,
        "pixel only": fit_variant(detector, replace(compare, feature_weight=0.0), pairs),
        "features only": fit_variant(detector, replace(compare, color_weight=0.0, structure_weight=0.0), pairs),
        exposure_variant: fit_variant(detector, replace(compare, match_exposure=not compare.match_exposure), pairs),
        highlight_variant: fit_variant(detector, replace(compare, highlight_floor=HIGHLIGHT_FLOOR if counted else None),
                                       pairs),
        "PAD recipe": Comparator(CompareConfig.pad(), device=detector.device),
    }
    methods = {m: MethodMaps() for m in METHODS}
    records, dumped = [], []
    for q, query in enumerate(queries):
        start = time.perf_counter()
        image = prepare_query(query.image, detector.info)[0]
        pose = detector.estimate_pose(image)
        candidates = detector.reference_candidates(image, pose)
        ours, reference = detector.best_reference(image, candidates)
        image_t = torch.from_numpy(image)
        seconds = time.perf_counter() - start
        score = float(ours.score[0])
        record = {"query": query.name, "seconds": round(seconds, 2), "pose_seconds": round(pose.seconds, 2),
                  "score": score, "low_confidence": pose.low_confidence, "anomalous": query.anomalous,
                  "decided_anomalous": decide(score, detector.decision_threshold(), not pose.low_confidence),
                  "above_threshold": decide(score, detector.decision_threshold(), True)}  # fmt: skip
        outputs = {"ours": ours}
        for method in ("pixel only", "features only", exposure_variant, highlight_variant):
            outputs[method] = reference.compare(variants[method], image_t)
        truth_reference = None
        if query.c2w is not None:
            rotation, translation = pose_errors(torch.as_tensor(pose.c2w).float().cpu(), query.c2w)  # as Prediction.c2w
            record.update(rotation_deg=round(float(rotation), 3), translation=round(float(translation), 5))
            truth_reference = detector.reference_at(query.c2w)
            outputs["ground-truth pose"] = truth_reference.compare(variants["ours"], image_t)
        if q < pad_queries:
            outputs["ours (PAD subset)"] = ours
            pad_pose = detector.pose_estimator.estimate_pad_recipe(query.image)
            pad_reference, pad_alpha = detector.render(pad_pose.c2w)
            outputs["PAD recipe"] = variants["PAD recipe"].compare(image_t, pad_reference, pad_alpha)
            record["pad_seconds"] = round(pad_pose.seconds, 2)
            if query.c2w is not None:
                record["pad_rotation_deg"] = round(float(pose_errors(pad_pose.c2w, query.c2w)[0]), 3)
        for method, result in outputs.items():
            methods[method].maps.append(result.anomaly_map[0].cpu().numpy())
            methods[method].scores.append(float(result.score[0]))
            methods[method].index.append(q)
        records.append(record)
        if args.dump is not None:
            dumped.append(dump_query(detector, query, image, pose, candidates, truth_reference))
        if args.verbose:
            print(f"  {name} {query.name}: score {record['score']:.2f}, {record.get('rotation_deg', float('nan')):.2f} deg, "
                  f"{seconds:.1f} s", flush=True)
    if args.dump is not None:  # everything the comparison sees, to study it offline
        args.dump.mkdir(parents=True, exist_ok=True)
        torch.save({"queries": dumped, "normal_pairs": tuple(None if t is None else torch.as_tensor(t).half() for t in pairs)},
                   args.dump / f"{name}.pt")
    metrics = {}
    for method, collected in methods.items():
        if not collected.index:
            continue
        chosen = [queries[i] for i in collected.index]
        metrics[method] = evaluated(collected.maps, [q.mask for q in chosen], [q.anomalous for q in chosen],
                                    collected.scores, [q.name for q in chosen], name)
    # The decisions a user acts on: false alarms and recall at the threshold set from normal data alone.
    labels = [r["anomalous"] for r in records]
    decided = decision_metrics(labels, [r["decided_anomalous"] for r in records])
    metrics["ours"].update({k: (100 * float(v) if is_defined(v) else None) for k, v in decided.items()})
    by_score = decision_metrics(labels, [r["above_threshold"] for r in records])  # review_uncertain_poses off
    metrics["ours"].update({f"{k}_score_only": (100 * float(v) if is_defined(v) else None) for k, v in by_score.items()})
    metrics["ours"]["low_confidence"] = sum(r["low_confidence"] for r in records)
    seconds = [r["seconds"] for r in records]
    calibration = detector.comparator.calibration
    return {"class": name, "metrics": metrics, "threshold": detector.decision_threshold(),
            "held_out_scores": [] if calibration is None else calibration.held_out_scores,
            "calibration_scores": [] if calibration is None else calibration.normal_scores,
            "false_alarm_target": detector.config.false_alarm_rate, "records": records, "mean_seconds": float(np.mean(seconds)),
            "views_left_out": [Path(path).name for path in detector.info.left_out_paths],
            "pad_mean_seconds": float(np.mean([r["pad_seconds"] for r in records if "pad_seconds" in r] or [np.nan]))}


# ----------------------------------------------------------------------------- report
def mean_row(classes: list[dict], method: str) -> dict:
    rows = [c["metrics"][method] for c in classes if method in c["metrics"]]
    out = {}
    for key in EVALUATION.metrics:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def print_table(title: str, classes: list[dict]) -> None:
    print(f"\n{title}")
    if not classes:  # every class refused (onboarding): nothing was detected
        print("no class detected")
        return
    header = f"{'method':<22} {'img AUROC':>10} {'px AUROC':>9} {'AUPRO':>7}   per class (img / px)"
    print(header)
    print("-" * len(header))
    for method in METHODS:
        if not any(method in c["metrics"] for c in classes):
            continue
        row = mean_row(classes, method)
        cells = [f"{row[k]:.1f}" if row[k] is not None else "-" for k in EVALUATION.metrics]
        per_class = ", ".join(
            f"{c['class']} {_fmt(c['metrics'][method]['AUROC_sp'])}/{_fmt(c['metrics'][method]['AUROC_px'])}"
            for c in classes if method in c["metrics"]
        )
        print(f"{method:<22} {cells[0]:>10} {cells[1]:>9} {cells[2]:>7}   {per_class}")
    records = [r for c in classes for r in c["records"]]
    print(f"decisions (ours; threshold from normal data alone, target {100 * classes[0]['false_alarm_target']:g} % "
          f"false alarms; {sum(r['low_confidence'] for r in records)} of {len(records)} poses low-confidence):")
    for key, rule in (("decided_anomalous", "score or uncertain pose (default)"), ("above_threshold", "score alone")):
        normal = [r[key] for r in records if not r["anomalous"]]
        defective = [r[key] for r in records if r["anomalous"]]
        suffix = "" if key == "decided_anomalous" else "_score_only"
        per_class = ", ".join(f"{c['class']} {_fmt(c['metrics']['ours'].get('FAR_sp' + suffix))}/"
                              f"{_fmt(c['metrics']['ours'].get('Recall_sp' + suffix))}" for c in classes)
        print(f"  {rule:<36} false alarms {100 * np.mean(normal):5.1f} % of {len(normal)} normal, recall "
              f"{100 * np.mean(defective):5.1f} % of {len(defective)} defective   per class FAR/recall: {per_class}")
    seconds = [r["seconds"] for c in classes for r in c["records"]]
    pad = [r["pad_seconds"] for c in classes for r in c["records"] if "pad_seconds" in r]
    rotation = [r["rotation_deg"] for c in classes for r in c["records"] if "rotation_deg" in r]
    print(f"seconds per query (ours, end to end): mean {np.mean(seconds):.1f}, max {np.max(seconds):.1f}"
          + (f"; PAD recipe pose alone: mean {np.mean(pad):.1f}" if pad else ""))
    if rotation:
        rotation = np.array(rotation)
        print(f"pose: median {np.median(rotation):.2f} deg, within 2 deg {100 * np.mean(rotation <= 2):.0f} %, "
              f"within 5 deg {100 * np.mean(rotation <= 5):.0f} %")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.0f}"


# ----------------------------------------------------------------------------- main
def _sfm_summary(report: dict) -> dict:
    return {"registered": report["images_registered"], "given": report["images_given"],
            "reprojection_px": round(report["mean_reprojection_error_px"], 3), "focal_px": report["camera"]["fl_x"]}  # fmt: skip


def onboarded_lego(args, views: PosedImages, held: list[int], queries: list[Query]):
    """The 80 lego training views with the poses ``omnipose onboard`` recovers from them (photos at 400 px, as
    ``bench_onboard.py`` measures it), and the queries' true poses carried into that frame."""
    from PIL import Image

    folder = args.work / "lego_onboarded"
    photos = folder / "photos"
    names = [path.name for i, path in enumerate(views.paths) if i not in held]
    if not (folder / "lego" / "onboard_report.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        photos.mkdir(parents=True)
        for name in names:
            Image.open(args.lego / "train" / name).resize((400, 400), Image.LANCZOS).save(photos / name)
    start = time.perf_counter()
    report = onboard_once(photos, folder / "lego", args.threads)
    summary = {"seconds": round(time.perf_counter() - start, 1), **_sfm_summary(report)}
    train = load_transforms(folder / "lego" / "transforms.json", size=views.width, progress=False)
    T = onboarded_frame(folder / "lego" / "transforms.json", args.lego / "transforms_train.json")
    return train, in_frame(queries, T), summary


def main(argv: list[str] | None = None) -> int:
    from omnipose.data.synth import SYNTH_CLASSES, SynthConfig, ensure_class

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="builtin,lego", help="comma-separated: builtin, lego")
    parser.add_argument("--classes", default=None, help="built-in classes, comma-separated (default: all)")
    parser.add_argument("--size", type=int, default=200, help="built-in image width (lego: --lego-size)")
    parser.add_argument("--train-views", type=int, default=80)
    parser.add_argument("--test-views-per-type", type=int, default=None,
                        help="test views per type (good, Burrs, Missing, Stains; default 8, 4 with --quick): with 8, "
                             "one misranked good/defective pair moves a class's image AUROC by 0.5 points")
    parser.add_argument("--train-steps", type=int, default=2000,
                        help="training steps per class; a step budget trains the same field on a busy machine "
                             "(checkpoints are reused: they live under <work>/ckpts/bench_<size>_<steps>steps)")
    parser.add_argument("--lego", type=Path, default=DEFAULT_LEGO)
    parser.add_argument("--lego-steps", type=int, default=2000)
    parser.add_argument("--lego-size", type=int, default=200, help="lego working width (fields per size are kept apart)")
    parser.add_argument("--lego-defects", choices=("patches", "fine"), default="patches",
                        help="patches: a stain or an erased patch of 1-2 %% of the object; fine: burrs, stains and erased "
                             "patches of 50-500 pixels planted at 400x400 (MAD's scale), then brought to --lego-size")
    parser.add_argument("--pose-size", type=int, default=DetectorConfig.pose_size,
                        help="width poses are searched at when below the working width (default %(default)s)")
    parser.add_argument("--backdrop", default=None,
                        help="a plain backdrop of this colour (grey or r,g,b in [0, 1]) instead of white: built-in "
                             "classes are rendered on it; lego views are photographed in front of it (light fall-off, "
                             "sensor noise, 8 bits). The detector is not told.")
    parser.add_argument("--style", choices=("sim", "photo"), default="sim",
                        help="built-in classes: sim renders, or photo (path traced, MAD-Real conditions; the photo "
                             "extra), e.g. with --backdrop in a light tent of that colour")
    parser.add_argument("--same-lighting", action="store_true",
                        help="photo: the test photos under the training session's lighting (default: another session)")
    parser.add_argument("--query-gain", default=None,
                        help="queries taken in another session: their exposure and white balance multiply every "
                             "pixel by this (grey or r,g,b), with sensor noise")
    parser.add_argument("--pad-queries", type=int, default=2, help="queries per class that also run PAD's recipe")
    parser.add_argument("--pad-classes", type=int, default=3, help="built-in classes (the first N) that run PAD's recipe")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "detect", help="data and checkpoints (reused)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "bench_detect.json")
    parser.add_argument("--quick", action="store_true",
                        help="01Robot and 03Duck (unless --classes) at 100 px, 600 steps, 4 test views per type, no lego")
    parser.add_argument("--max-queries", type=int, default=None,
                        help="at most this many queries per built-in class, the first ones (default: all; for smoke runs)")
    parser.add_argument("--false-alarm-rate", type=float, default=DetectorConfig.false_alarm_rate,
                        help="target false-alarm rate the decision threshold is set at, from normal data alone")
    parser.add_argument("--held-out-views", type=int, default=DetectorConfig.held_out_views,
                        help="training views each new field does not learn from, run as queries to set the decision "
                             "threshold (DetectorConfig.held_out_views; fields kept apart by it, 0 shares those "
                             "trained on every view)")
    parser.add_argument("--reflection", action="store_true",
                        help="fields that colour by the reflected view direction (NGPFieldConfig.reflection; kept apart)")
    parser.add_argument("--distortion", type=float, default=0.0,
                        help="TrainConfig.distortion_weight of every field (0: off; fields are kept apart by it)")
    parser.add_argument("--train-poses", choices=("true", "onboard"), default="true",
                        help="the training poses each field learns from: the true ones, or those `omnipose onboard` "
                             "recovers from the training views alone (needs the sfm extra; fields and onboarded "
                             "classes are kept apart under <work>)")
    parser.add_argument("--onboard-matcher", choices=ONBOARD_MATCHERS, default="sift",
                        help="with --train-poses onboard, the built-in classes' matcher (their plain faces give SIFT "
                             "too few features: xfeat)")
    parser.add_argument("--onboard-size", type=int, default=None,
                        help="with --train-poses onboard, onboard the built-in classes' training views rendered at this "
                             "size (default: --size), as a user onboards full-size photos and trains smaller")
    parser.add_argument("--refine-poses", action="store_true",
                        help="each field refines its training poses as it trains (fields kept apart under <work>)")
    parser.add_argument("--keep-unexplained", action="store_true",
                        help="fields train on every view to the end (TrainConfig.unexplained_check_at None; kept apart)")
    parser.add_argument("--refine-focal", action="store_true",
                        help="with --refine-poses, also refine the training views' focal length (fields kept apart)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of every field (another seed: another training run, kept apart under <work>)")
    parser.add_argument("--verbose", action="store_true", help="a line per query")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--dump", type=Path, default=None,
                        help="save per class the queries, their candidate references and the normal pairs here (<class>.pt)")
    args = parser.parse_args(argv)
    backdrop, gain = parse_colour(args.backdrop), parse_colour(args.query_gain, top=4.0) or (1.0, 1.0, 1.0)
    backdrop_tag = "" if backdrop is None else "_backdrop" + "-".join(f"{c:.2f}" for c in backdrop)
    if args.quick:
        args.classes, args.size, args.train_steps, args.cases = args.classes or "01Robot,03Duck", 100, 600, "builtin"
    args.classes = args.classes or ",".join(SYNTH_CLASSES)
    if args.test_views_per_type is None:
        args.test_views_per_type = 4 if args.quick else 8
    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    report: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "cases": {}}
    load_before = os.getloadavg()[0]
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "load_before": load_before, "commit": git_commit()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)

    onboarded = args.train_poses == "onboard"
    refined = ("_refined" if args.refine_poses else "") + ("_focal" if args.refine_focal else "")
    args.onboard_size = args.onboard_size or args.size
    onboarding = ""  # onboarded classes and their fields kept apart by matcher and size
    if onboarded:
        onboarding = ("_onboarded" + ("" if args.onboard_matcher == "sift" else f"_{args.onboard_matcher}")
                      + ("" if args.onboard_size == args.size else f"_from{args.onboard_size}"))
    suffix = (onboarding + refined + (f"_seed{args.seed}" if args.seed else "")
              + (f"_distortion{args.distortion:g}" if args.distortion else "")
              + (f"_heldout{args.held_out_views}" if args.held_out_views else "") + ("_reflection" if args.reflection else "")
              + ("_keepall" if args.keep_unexplained else ""))
    field = replace(default_field_config(), reflection=True) if args.reflection else None
    check_at = unexplained_check_at(args)
    poses_note = ", fields trained on onboarded poses" if onboarded else ""
    if "builtin" in cases:
        def builtin_root(size: int) -> Path:
            return args.work / f"builtin_{size}{backdrop_tag}{'_photo' if args.style == 'photo' else ''}"

        data = builtin_root(args.size)
        classes, onboard_refused = [], {}
        for n, name in enumerate([c.strip() for c in args.classes.split(",") if c.strip()]):
            wanted = SynthConfig(size=args.size, train_views=args.train_views,
                                 test_views_per_type=args.test_views_per_type, progress=False)
            if args.style == "photo":
                wanted.style, wanted.photo = "photo", replace(wanted.photo, backdrop=backdrop, threads=args.threads,
                                                              test_lighting_differs=not args.same_lighting)  # fmt: skip
            elif backdrop is not None:
                wanted.lighting = replace(wanted.lighting, background=backdrop)
            config = DetectorConfig(image_size=args.size, pose_size=args.pose_size,
                                    dataset=f"bench_{args.size}_{args.train_steps}steps{suffix}{backdrop_tag}"
                                            + ("_photo" if args.style == "photo" else ""),
                                    ckpt_root=str(args.work / "ckpts"), false_alarm_rate=args.false_alarm_rate,
                                    held_out_views=args.held_out_views)
            train_root = data if not onboarded else args.work / f"onboarded_{args.size}{onboarding.removeprefix('_onboarded')}"
            if "train" in ensure_class(data, name, wanted):  # a field trained on the old views would be reused
                shutil.rmtree(Path(config.ckpt_root) / config.dataset / name, ignore_errors=True)
                if onboarded:
                    shutil.rmtree(train_root / name, ignore_errors=True)
            queries = builtin_queries(data, name, args.size)[: args.max_queries]
            if args.query_gain is not None:
                rng = np.random.default_rng(n)
                for query in queries:
                    shot = query.image * np.asarray(gain, np.float32) + rng.normal(0.0, 0.01, query.image.shape)
                    query.image = np.round(np.clip(shot, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0
            extra = {}
            if onboarded:
                start = time.perf_counter()
                photos = data
                if args.onboard_size != args.size:
                    photos = builtin_root(args.onboard_size)
                    ensure_class(photos, name, replace(wanted, size=args.onboard_size))
                try:
                    report_sfm = onboard_once(photos / name / "train" / "good", train_root / name, args.threads,
                                              args.onboard_matcher)  # fmt: skip
                except DataError as refused:  # what a user is told; the other classes still run
                    onboard_refused[name] = str(refused)
                    print(f"{name}: onboarding refused ({refused}); no field trained", flush=True)
                    continue
                extra["onboard"] = {"seconds": round(time.perf_counter() - start, 1), **_sfm_summary(report_sfm)}
                for part in ("test", "ground_truth"):
                    if not (train_root / name / part).exists():
                        (train_root / name / part).symlink_to((data / name / part).resolve())
                queries = in_frame(queries, onboarded_frame(train_root / name / "transforms.json", data / name / "transforms.json"))
            config.train = replace(config.train, steps=args.train_steps, minutes=None, seed=args.seed,
                                   refine_poses=args.refine_poses or args.refine_focal,
                                   refine_focal=args.refine_focal, distortion_weight=args.distortion, field=field,
                                   unexplained_check_at=check_at)  # fmt: skip
            start = time.perf_counter()
            detector = Detector(config).fit(train_root, name, progress=False)
            fit_seconds = time.perf_counter() - start
            views = open_mad_class(train_root, name).load_train_views(size=args.size, progress=False)
            pad_queries = args.pad_queries if n < args.pad_classes else 0
            record = run_class(name, detector, views, queries, args, pad_queries)
            record["fit_seconds"] = round(fit_seconds, 1)
            record.update(extra)
            classes.append(record)
            report["cases"]["builtin"] = {"classes": classes, "mean": {m: mean_row(classes, m) for m in METHODS},
                                          "onboard_refused": onboard_refused}  # fmt: skip
            atomic_write_json(args.out, report)  # so far: an interrupted run keeps the classes it finished
            ours = record["metrics"]["ours"]
            print(f"{name}: image AUROC {_fmt(ours['AUROC_sp'])}, pixel AUROC {_fmt(ours['AUROC_px'])}, "
                  f"AUPRO {_fmt(ours['AUPRO_px'])}, {record['mean_seconds']:.1f} s/query (fit {fit_seconds:.0f} s)"
                  + (f"; onboarded {extra['onboard']}" if extra else ""), flush=True)
        report["cases"]["builtin"] = {"classes": classes, "mean": {m: mean_row(classes, m) for m in METHODS},
                                      "onboard_refused": onboard_refused}  # fmt: skip
        print_table(f"built-in benchmark at {args.size}x{args.size}, mean over {len(classes)} classes (%){poses_note}", classes)
        for name, why in onboard_refused.items():
            print(f"{name}: onboarding refused, left out of the table: {why}")

    if "lego" in cases:
        if not (args.lego / "transforms_train.json").is_file():
            print(f"lego: skipped, no data at {args.lego}")
        else:
            size = args.lego_size
            views = load_transforms(args.lego / "transforms_train.json", size=size, progress=False)
            train, _ = split_holdout(views, 5)
            held = [i for i in range(len(views)) if i % 5 == 0]
            fine = args.lego_defects == "fine"
            # Fine defects are planted at MAD's 400 pixels whatever the working size, so every size sees the same ones.
            planted, alphas = views.subset(held), None
            if fine or backdrop is not None:
                source, alphas = lego_opacity(args.lego / "transforms_train.json", 400 if fine else size)
                planted, alphas = source.subset(held), alphas[held]
            queries = lego_queries(planted, list(range(len(held))), seed=0, fine=fine, size=size, alphas=alphas)
            if backdrop is not None or args.query_gain is not None:
                rng = np.random.default_rng(2)
                for query in queries:
                    query.image = photograph(query.image, query.alpha, backdrop or (1.0, 1.0, 1.0), rng, gain)
            extra = {}
            if onboarded:
                train, queries, extra["onboard"] = onboarded_lego(args, views, held, queries)
            dataset = ("nerf_synthetic" if size == 200 else f"nerf_synthetic_{size}") + backdrop_tag
            config = DetectorConfig(image_size=size, pose_size=args.pose_size, dataset=dataset,
                                    ckpt_root=str(args.work / "ckpts"), false_alarm_rate=args.false_alarm_rate,
                                    held_out_views=args.held_out_views)  # fmt: skip
            config.train = replace(config.train, steps=args.lego_steps, minutes=None, seed=args.seed,
                                   refine_poses=args.refine_poses or args.refine_focal,
                                   refine_focal=args.refine_focal, distortion_weight=args.distortion, field=field,
                                   unexplained_check_at=check_at)  # fmt: skip
            start = time.perf_counter()
            if backdrop is None:
                detector = Detector(config).fit_views(train, f"lego_80_{args.lego_steps}steps{suffix}", progress=False)
            else:  # through the files, as a user's photographs come: the loader finds the backdrop
                kept = [i for i in range(len(views)) if i % 5 != 0]
                source, opacity = lego_opacity(args.lego / "transforms_train.json", 400)
                root = write_backdrop_class(args.work / f"lego{backdrop_tag}", source.subset(kept), opacity[kept], backdrop,
                                            args.lego / "transforms_train.json")  # fmt: skip
                config.dataset = f"{dataset}_{args.lego_steps}steps{suffix}"
                detector = Detector(config).fit(root, "lego", progress=False)
                train = open_mad_class(root, "lego").load_train_views(size=size, progress=False)
            fit_seconds = time.perf_counter() - start
            if onboarded:
                extra["onboard"]["training_poses"] = training_pose_errors(train, detector.info, args.lego)
                print(f"training poses against the true ones: {extra['onboard']['training_poses']}")
            record = run_class("lego", detector, train, queries, args, args.pad_queries)
            record.update(extra, fit_seconds=round(fit_seconds, 1), size=size, pose_size=detector.pose_width,
                          defects=args.lego_defects)  # fmt: skip
            report["cases"]["lego"] = record
            print_table(f"semi-synthetic lego anomalies ({args.lego_defects}) at {size}x{size} (%){poses_note}", [record])
            print(f"fit {fit_seconds:.0f} s (training included when the field was not there yet)")

    report["machine"]["load_after"] = os.getloadavg()[0]
    report["machine"]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"peak memory of this process: {report['machine']['peak_rss_mb']} MB")
    atomic_write_json(args.out, report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

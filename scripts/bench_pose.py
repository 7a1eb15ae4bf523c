#!/usr/bin/env python
"""Pose from nothing: accuracy and time of ``PoseEstimator`` against PAD's recipe.

Cases (each skipped with a message when its data is missing):

- **lego**: a field trained on 80 of the 100 views of ``nerf_synthetic/lego`` at 200x200 (every
  5th view held out; an existing checkpoint under ``--lego-ckpt`` is reused, else one is trained
  for ``--train-minutes``); the 20 held-out views are the queries, given no pose at all.
  ``--lego-roll`` also turns them in-plane by random angles, as MAD's queries are.
- **synth**: a class made by ``omnipose synth`` (generated under ``--synth-root`` if absent),
  its test views (random directions, random in-plane roll; defects included) as queries, scored
  against its ground-truth pose file.

Methods: ``ours`` (retrieval at several in-plane rotations, PnP on the field's depth, direct
alignment, iNeRF) and ``pad`` (PAD / OmniposeAD: the best retrieved training view as the start,
then 300 steps of iNeRF, Adam lr 0.01 decayed as 0.8^(k/100), 3072 rays per step from interest
regions; we retrieve with the same matcher at 0 degrees, as PAD had no rotation handling; PAD
itself matched with LoFTR against every view). ``--compare-matchers`` adds the coarse stage alone
(retrieval + PnP) for every available matcher.

Errors: rotation in degrees, translation relative to the camera's distance to the object centre.
Success: within 2 degrees and 2 % (the targets), and within 5 degrees. Time per query is wall
clock including retrieval; the load average is recorded, as the CPU may be shared.

    python scripts/bench_pose.py --quick --out bench/bench_pose_quick.json
    python scripts/bench_pose.py --lego-ckpt ckpts/nerf_synthetic/lego --out bench/bench_pose.json
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from omnipose.core.device import one_torch_thread, pick_device
from omnipose.core.files import atomic_write_json
from omnipose.core.geometry import pose_errors
from omnipose.core.image import warp_image
from omnipose.data import load_transforms, open_mad_class
from omnipose.nerf import TrainConfig, load_checkpoint, split_holdout, train_model
from omnipose.pose import PoseConfig, PoseEstimator, matcher_availability, prepare_query, rotation_affine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LEGO = ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"


# ----------------------------------------------------------------------------- data and models
def trained_model(ckpt_dir: Path, views, minutes: float, dataset: str, class_name: str, aabb=None):
    """Load ``ckpt_dir/model.pt``, or train one on ``views`` within ``minutes`` first."""
    if not (ckpt_dir / "model.pt").is_file():
        print(f"training a field for {class_name} ({minutes} min) into {ckpt_dir} ...", flush=True)
        config = TrainConfig(minutes=minutes, steps=10**9, dataset=dataset, class_name=class_name, aabb=aabb)
        train_model(views, config, ckpt_dir, resume=True, progress=True)
    model, info = load_checkpoint(ckpt_dir / "model.pt", device=pick_device(None))
    model.eval()
    return model, info


def lego_case(args) -> dict | None:
    if not (args.lego / "transforms_train.json").is_file():
        print(f"lego: skipped, no data at {args.lego}")
        return None
    views = load_transforms(args.lego / "transforms_train.json", size=200, progress=False)
    train, _ = split_holdout(views, 5)
    model, info = trained_model(args.lego_ckpt, train, args.train_minutes, "nerf_synthetic", "lego")
    trained_on = {str(p) for p in info.train_image_paths}
    held = [i for i, p in enumerate(views.paths) if str(p) not in trained_on]
    train_index = [i for i, p in enumerate(views.paths) if str(p) in trained_on]
    rng = np.random.default_rng(0)
    queries = []
    for i in held[: args.queries]:
        image, angle = views.images[i].numpy(), 0.0
        c2w = views.c2w[i]
        if args.lego_roll:
            from omnipose.core.geometry import roll_camera

            angle = float(rng.uniform(-180, 180))
            image = warp_image(image, rotation_affine(angle, 200, 200), info.background)
            c2w = roll_camera(c2w, -math.radians(angle))
        queries.append({"name": f"{views.paths[i].stem}" + (f"@{angle:.0f}" if angle else ""), "image": image, "c2w": c2w})
    return {"name": "lego" + ("-rolled" if args.lego_roll else ""), "model": model, "info": info,
            "views": views.subset(train_index), "queries": queries, "ckpt": args.lego_ckpt}


def synth_case(args) -> dict | None:
    from omnipose.data.synth import SynthConfig, generate_class, load_ground_truth_poses

    folder = args.synth_root / args.synth_class
    if not folder.is_dir():
        print(f"generating synth class {args.synth_class} under {args.synth_root} ...", flush=True)
        generate_class(args.synth_root, args.synth_class, SynthConfig(size=200, test_views_per_type=args.synth_views, progress=True))
    mad = open_mad_class(args.synth_root, args.synth_class)
    views = mad.load_train_views(size=200, progress=False)
    import json

    aabb = json.loads(mad.transforms_path.read_text()).get("aabb")
    ckpt = args.synth_ckpt or (args.synth_root / "ckpts" / args.synth_class)
    model, info = trained_model(ckpt, views, args.train_minutes, "synth", args.synth_class, aabb)
    poses = load_ground_truth_poses(args.synth_root, args.synth_class)
    queries = [
        {"name": item.name, "image": str(item.image_path), "c2w": poses[item.name]}
        for item in mad.test_items if item.name in poses
    ][: args.queries]
    return {"name": f"synth-{args.synth_class}", "model": model, "info": info, "views": views, "queries": queries, "ckpt": ckpt}


# ----------------------------------------------------------------------------- methods
VARIANTS = (("rank_by_chromaticity", "by chromaticity"), ("structure_align", "aligned on structure"))
"""``PoseConfig`` switches a run can add, each as its own row: (field, label)."""


def errors(c2w: torch.Tensor, true: torch.Tensor, centre: torch.Tensor) -> tuple[float, float]:
    rotation, translation = pose_errors(c2w.float().cpu(), true.float().cpu(), target=tuple(centre.tolist()))
    return float(rotation), float(translation)


def run_method(case: dict, estimate, label: str, centre: torch.Tensor, progress: bool) -> list[dict]:
    """Every query of a case through ``estimate`` (image -> PoseResult): errors, time and diagnostics.

    ``PoseEstimator.estimate`` is ours; ``PoseEstimator.estimate_pad_recipe`` is PAD's recipe (best
    retrieved view, then 300 fixed iNeRF steps)."""
    records = []
    for query in case["queries"]:
        result = estimate(query["image"])
        rotation, translation = errors(result.c2w, query["c2w"], centre)
        coarse_rotation, coarse_translation = errors(result.coarse_c2w, query["c2w"], centre)
        records.append({
            "query": query["name"], "rotation_deg": rotation, "translation": translation,
            "coarse_rotation_deg": coarse_rotation, "coarse_translation": coarse_translation,
            "seconds": result.seconds, "residual": result.residual, "confidence": result.confidence,
            "low_confidence": result.low_confidence, "source": result.source, "steps": result.steps,
        })
        if progress:
            print(f"  {label} {query['name']}: {rotation:.2f} deg, {100 * translation:.2f} % "
                  f"(start {coarse_rotation:.2f} deg), {result.seconds:.1f} s, {result.source}", flush=True)
    return records


def run_coarse(case: dict, matcher: str, progress: bool) -> tuple[list[dict], float]:
    """Retrieval + PnP only, for comparing matchers. Returns the records and the set-up seconds."""
    start = time.perf_counter()
    config = PoseConfig(matcher=matcher, align=None, refine=None)
    cache = Path(case["ckpt"]) / f"bench_features_{matcher}.pt"
    estimator = PoseEstimator(case["model"], case["info"], config, views=case["views"], cache_path=cache)
    setup = time.perf_counter() - start
    records = []
    for query in case["queries"]:
        begin = time.perf_counter()
        image, _ = prepare_query(query["image"], estimator.info)
        hypotheses, _ = estimator.coarse_hypotheses(image)
        seconds = time.perf_counter() - begin
        if hypotheses:
            rotation, translation = errors(hypotheses[0].c2w, query["c2w"], estimator.centre)
        else:
            rotation, translation = 180.0, 1.0
        records.append({"query": query["name"], "rotation_deg": rotation, "translation": translation, "seconds": seconds})
    if progress:
        print(f"  coarse {matcher}: median {np.median([r['rotation_deg'] for r in records]):.2f} deg", flush=True)
    return records, setup


# ----------------------------------------------------------------------------- report
def summarise(records: list[dict]) -> dict:
    rotation = np.array([r["rotation_deg"] for r in records])
    translation = np.array([r["translation"] for r in records])
    seconds = np.array([r["seconds"] for r in records])
    return {
        "queries": len(records),
        "median_rotation_deg": float(np.median(rotation)), "median_translation_pct": float(100 * np.median(translation)),
        "success_2deg_2pct": float(np.mean((rotation <= 2) & (translation <= 0.02))),
        "success_2deg": float(np.mean(rotation <= 2)), "success_5deg": float(np.mean(rotation <= 5)),
        "mean_seconds": float(seconds.mean()), "max_seconds": float(seconds.max()),
    }


def print_table(rows: list[dict]) -> None:
    width = max([14] + [len(row["method"]) for row in rows])
    header = f"{'case':<18} {'method':<{width}} {'n':>3} {'rot med':>8} {'trans med':>9} {'2deg+2%':>8} {'2deg':>6} {'5deg':>6} {'s/query':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row["summary"]
        print(f"{row['case']:<18} {row['method']:<{width}} {s['queries']:>3} {s['median_rotation_deg']:>7.2f}° "
              f"{s['median_translation_pct']:>8.2f}% {100 * s['success_2deg_2pct']:>7.0f}% {100 * s['success_2deg']:>5.0f}% "
              f"{100 * s['success_5deg']:>5.0f}% {s['mean_seconds']:>8.1f}")


def run_case(case: dict | None, args, rows: list, details: dict, progress: bool) -> None:
    """Run every method on one case, appending table rows and per-query records."""
    if case is None or not case["queries"]:
        return
    print(f"{case['name']}: {len(case['queries'])} queries", flush=True)
    start = time.perf_counter()
    estimator = PoseEstimator(
        case["model"], case["info"], PoseConfig(matcher=args.matcher), views=case["views"],
        cache_path=Path(case["ckpt"]) / f"pose_features.{args.matcher}.pt",
    )
    setup = time.perf_counter() - start
    ours = run_method(case, estimator.estimate, "ours", estimator.centre, progress)
    rows.append({"case": case["name"], "method": f"ours ({args.matcher})", "summary": summarise(ours)})
    details[f"{case['name']}/ours"] = {"setup_seconds": setup, "records": ours}
    for flag, label in VARIANTS:  # the same field, index and queries: only the PoseConfig switch differs
        if not getattr(args, flag):
            continue
        variant = PoseEstimator(case["model"], case["info"], PoseConfig(matcher=args.matcher, **{flag: True}),
                                views=case["views"], cache_path=Path(case["ckpt"]) / f"pose_features.{args.matcher}.pt")
        records = run_method(case, variant.estimate, f"{flag[:7]} ", variant.centre, progress)
        rows.append({"case": case["name"], "method": f"ours ({args.matcher}), {label}", "summary": summarise(records)})
        details[f"{case['name']}/{flag}"] = {"records": records}
    if not args.no_baseline:
        baseline_case = dict(case, queries=case["queries"][: args.baseline_queries or len(case["queries"])])
        pad = run_method(baseline_case, estimator.estimate_pad_recipe, "pad ", estimator.centre, progress)
        rows.append({"case": case["name"], "method": "PAD recipe", "summary": summarise(pad)})
        details[f"{case['name']}/pad"] = {"records": pad}
    if args.compare_matchers:
        for matcher, reason in matcher_availability().items():
            if reason is not None:
                print(f"  coarse {matcher}: skipped ({reason})")
                continue
            records, matcher_setup = run_coarse(case, matcher, progress)
            rows.append({"case": case["name"], "method": f"coarse {matcher}", "summary": summarise(records)})
            details[f"{case['name']}/coarse-{matcher}"] = {"setup_seconds": matcher_setup, "records": records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lego", type=Path, default=DEFAULT_LEGO, help="nerf_synthetic/lego folder")
    parser.add_argument("--lego-ckpt", type=Path, default=ROOT / "ckpts" / "nerf_synthetic" / "lego_80",
                        help="checkpoint folder of the 80-view lego field (trained here if absent)")
    parser.add_argument("--lego-roll", action="store_true", help="turn the lego queries in-plane by random angles")
    parser.add_argument("--synth-root", type=Path, default=ROOT / "bench" / "synth_pose", help="omnipose synth root")
    parser.add_argument("--synth-class", default="01Robot")
    parser.add_argument("--synth-ckpt", type=Path, default=None, help="default: <synth-root>/ckpts/<class>")
    parser.add_argument("--synth-views", type=int, default=5, help="test views per type when generating")
    parser.add_argument("--cases", default="lego,synth", help="comma-separated: lego, synth")
    parser.add_argument("--train-minutes", type=float, default=10.0, help="training budget when a field is missing")
    parser.add_argument("--matcher", default=PoseConfig.matcher)
    parser.add_argument("--queries", type=int, default=1000, help="at most this many queries per case")
    parser.add_argument("--baseline-queries", type=int, default=None, help="PAD baseline on the first N queries only")
    parser.add_argument("--no-baseline", action="store_true", help="skip PAD's recipe")
    for flag, label in VARIANTS:
        parser.add_argument(f"--{flag.replace('_', '-')}", action="store_true",
                            help=f"also run the estimator with PoseConfig.{flag} ({label}) on the same fields and "
                                 "queries")
    parser.add_argument("--compare-matchers", action="store_true", help="coarse stage alone for every matcher")
    parser.add_argument("--quick", action="store_true", help="5 queries per case, PAD on 2, 3-minute training")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "bench_pose.json", help="JSON results file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.quick:
        args.queries = min(args.queries, 5)
        args.baseline_queries = 2 if args.baseline_queries is None else args.baseline_queries
        args.train_minutes = min(args.train_minutes, 3.0)
    progress = not args.quiet
    load_before = os.getloadavg()[0]
    builders = {"lego": lego_case, "synth": synth_case}
    rows, details = [], {}
    # Everything on one torch thread, as PoseEstimator runs by default: on shared cores torch's
    # thread pool slows these batch sizes down several times (PAD's baseline gets the same).
    with one_torch_thread():
        for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
            run_case(builders[name](args), args, rows, details, progress)
    if not rows:
        print("nothing to benchmark: no case had data", file=sys.stderr)
        return 1
    print()
    print_table(rows)
    result = {
        "rows": rows, "details": details, "matcher": args.matcher, "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": str(pick_device(None)), "load_before": load_before, "load_after": os.getloadavg()[0]},
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out} (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

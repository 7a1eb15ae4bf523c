#!/usr/bin/env python
"""Time ``omnipose synth`` on one class (default: 40 training + 40 test views at 200x200).

Prints a table and writes JSON. The headline is the end-to-end ``generate_class`` time; the
breakdown re-renders the same views one by one to show where the time goes (training views, and
per test type the renders spent on redrawing defects until their masks fit ``defect_area``).
The machine's load average is recorded: on a shared CPU the timings are only comparable at
similar load.

    python scripts/bench_synth.py --class 01Robot --size 200 --out bench/bench_synth.json
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from omnipose.core.files import atomic_write_json
from omnipose.data.synth import (
    SYNTH_CLASSES,
    TEST_TYPES,
    SynthConfig,
    build_figure,
    camera_distance,
    generate_class,
    make_test_view,
    render_scene,
    training_poses,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--class", dest="class_name", default=SYNTH_CLASSES[0], choices=SYNTH_CLASSES)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--train-views", type=int, default=40)
    parser.add_argument("--test-views-per-type", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-breakdown", action="store_true", help="only the end-to-end time")
    parser.add_argument("--out", type=Path, default=Path("bench/bench_synth.json"), help="JSON results file")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = SynthConfig(
        size=args.size, train_views=args.train_views, test_views_per_type=args.test_views_per_type,
        seed=args.seed, progress=False,
    )
    load_before = os.getloadavg()[0]
    build_figure(args.class_name)  # figure construction is cached; keep it out of the render timings
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_class(folder, args.class_name, config)
        total = time.perf_counter() - start
    result = {
        "class": args.class_name, "size": args.size, "train_views": args.train_views,
        "test_views": args.test_views_per_type * len(TEST_TYPES), "seed": args.seed,
        "generate_class_s": round(total, 2), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "loadavg_1min_before": round(load_before, 2),
    }
    rows = [("generate_class (end to end)", total, None, None)]
    if not args.no_breakdown:
        figure = build_figure(args.class_name)
        distance = camera_distance(figure, config)
        start = time.perf_counter()
        for c2w in training_poses(args.class_name, config, distance):
            render_scene(figure.scene, c2w, config)
        train_s = time.perf_counter() - start
        rows.append(("train views", train_s, args.train_views, None))
        result["train_s"] = round(train_s, 2)
        result["per_type"] = {}
        for defect_type in TEST_TYPES:
            start = time.perf_counter()
            views = [
                make_test_view(args.class_name, defect_type, i, config, distance)
                for i in range(args.test_views_per_type)
            ]
            seconds = time.perf_counter() - start
            renders = sum(v.attempts for v in views)
            shares = [float(v.mask.mean()) for v in views if v.mask is not None]
            rows.append((f"test/{defect_type}", seconds, renders, shares))
            result["per_type"][defect_type] = {
                "seconds": round(seconds, 2), "renders": renders,
                "mask_share_min": round(min(shares), 5) if shares else None,
                "mask_share_median": round(float(np.median(shares)), 5) if shares else None,
                "mask_share_max": round(max(shares), 5) if shares else None,
            }
        result["seconds_per_render"] = round(train_s / args.train_views, 4)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)

    print(
        f"omnipose synth benchmark: {args.class_name} at {args.size}x{args.size}, {args.train_views} train + "
        f"{result['test_views']} test views, load average {load_before:.1f} -> {result['loadavg_1min_after']:.1f}"
    )
    print(f"{'stage':<30}{'seconds':>10}{'renders':>10}{'mask share min/median/max':>30}")
    for name, seconds, renders, shares in rows:
        share_text = f"{min(shares):.4f}/{np.median(shares):.4f}/{max(shares):.4f}" if shares else ""
        print(f"{name:<30}{seconds:>10.2f}{'' if renders is None else renders:>10}{share_text:>30}")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

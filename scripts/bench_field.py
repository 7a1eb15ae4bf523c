"""Benchmark the radiance field: held-out PSNR / SSIM against training time, peak memory, render time.

Cases
- lego (nerf_synthetic; 100 views, every 5th held out: 80 train / 20 held out) at each of --sizes;
- a generated class (``omnipose.synth``, 100 views, same split), or any MAD-format class with
  ``--data ROOT --class NAME``.

Each case trains in its own process (so its peak memory is its own) for --minutes of training time
(evaluation pauses the clock), logging curve points: training PSNR every few steps and held-out
PSNR / SSIM every --eval-every steps on 4 held-out views, then all held-out views at the end.

    python scripts/bench_field.py --minutes 10 --sizes 200,400 --out bench/field.json
    python scripts/bench_field.py --quick          # a one-minute smoke run at 100 px

Prints a table, writes JSON (--out) and, beside it, one PNG per case: held-out ground truth | render |
4x absolute error. Timings depend on what else runs on the machine: the JSON records the load average.
"""
from __future__ import annotations

import os

# OpenMP's spinning workers wait milliseconds for a core on a shared machine; passive waiting makes
# every parallel op fast again. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nerf_synthetic" / "lego"


def load_case_views(case: dict):
    """(train, held-out) PosedImages of a case."""
    from omnipose.data import load_transforms, open_mad_class
    from omnipose.nerf import split_holdout

    if case["kind"] == "transforms":
        views = load_transforms(case["transforms"], size=case["size"], progress=False)
    else:
        views = open_mad_class(case["root"], case["class_name"], require_masks=False).load_train_views(size=case["size"], progress=False)
    return split_holdout(views, case["holdout"])


def run_case(case: dict) -> dict:
    """Train and evaluate one case (runs in a child process). Returns its results."""
    import torch

    from omnipose.core.image import save_image
    from omnipose.nerf import HashGridConfig, NGPFieldConfig, TrainConfig, TriPlaneConfig, evaluate_views, train_model

    torch.set_num_threads(case["threads"])
    train, held = load_case_views(case)
    curve: list[dict] = []

    def log(step: int, stats: dict) -> None:
        if step % case["log_every"] == 0 or step == 1:
            curve.append({"step": step, "elapsed": round(stats["elapsed"], 2), "train_psnr": round(stats["psnr"], 3),
                          "rays": stats["rays"], "samples": stats["samples"]})  # fmt: skip

    field_config = None
    if case["encoding"] == "hash":  # Instant-NGP's grid: 16 levels x 2 features, 2^19 entries, 16 -> 2048
        field_config = NGPFieldConfig(grid=HashGridConfig())
    elif case["encoding"] == "fine":  # the CPU default's dense 64^3 and 128^3 levels and a hashed 256^3 one
        field_config = NGPFieldConfig(grid=HashGridConfig(n_levels=3, features_per_level=8, log2_table_size=21,
                                                          base_resolution=64, max_resolution=256))
    elif case["encoding"] == "triplane":
        field_config = NGPFieldConfig(encoding="triplane", triplane=TriPlaneConfig())
    aabb = None
    if case["box"] == "declared" and case["kind"] == "mad":
        from omnipose.core.files import read_json
        from omnipose.data import open_mad_class

        transforms = open_mad_class(case["root"], case["class_name"], require_masks=False).transforms_path
        aabb = read_json(transforms, ValueError, "").get("aabb")
    config = TrainConfig(
        field=field_config, aabb=aabb, steps=case["steps"], minutes=case["minutes"], seed=case["seed"], device=case["device"], eval_every=case["eval_every"],
        eval_views=4, dataset=case["dataset"], class_name=case["class_name"], checkpoint_every_seconds=1e9,
        distortion_weight=case["distortion"],
    )  # fmt: skip
    start = time.time()
    model = train_model(train, config, None, holdout=held, progress=case["progress"], callback=log)
    wall = time.time() - start
    scores = evaluate_views(model, held)
    if case.get("png"):
        rows = []
        with torch.no_grad():
            for i in range(min(3, len(held))):
                render = model.render_image(held.c2w[i], held.K, held.height, held.width)["rgb"].cpu().numpy()
                truth = held.images[i].numpy()
                rows.append(np.concatenate([truth, render, np.clip(4 * np.abs(render - truth), 0, 1)], 1))
        save_image(case["png"], np.concatenate(rows, 0))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if torch.cuda.is_available() and str(case["device"] or "cuda").startswith("cuda"):
        peak_mb = max(peak_mb, torch.cuda.max_memory_allocated() / 2**20)
    field_config = model.settings()["field"]
    return {
        "name": case["name"], "size": case["size"], "train_views": len(train), "held_out_views": len(held),
        "steps": model.metrics["steps"], "train_seconds": round(model.metrics["train_seconds"], 1), "wall_seconds": round(wall, 1),
        "psnr": round(scores["psnr"], 3), "ssim": round(scores["ssim"], 4),
        "render_seconds_per_image": round(scores["seconds_per_image"], 3), "peak_memory_mb": round(peak_mb, 1),
        "per_view_psnr": [round(v["psnr"], 2) for v in scores["per_view"]],
        "held_out_curve": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in point.items()} for point in model.history],
        "train_curve": curve, "field": field_config, "encoding": field_config["encoding"],
        "device": str(next(model.parameters()).device), "threads": case["threads"], "box": case["box"],
        "declared_box": aabb,
    }  # fmt: skip


def run_isolated(case: dict) -> dict:
    """run_case in a fresh process, so that peak memory and warm caches belong to this case."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(run_case, (case,))


def generated_class(root: Path, size: int, quick: bool) -> tuple[Path, str] | None:
    """Make a class with omnipose.synth (None, with a message, when it is not available)."""
    try:
        from omnipose.data.synth import SynthConfig, generate_class
    except ImportError as error:
        print(f"skipping the generated class: omnipose.synth is not available ({error}); use --data ROOT --class NAME.")
        return None
    name = "01Robot"  # one of omnipose.synth.SYNTH_CLASSES
    config = SynthConfig(size=max(size, 200), train_views=40 if quick else 100, test_views_per_type=1, progress=False, seed=0)
    generate_class(root, name, config)
    return root, name


def print_table(results: list[dict]) -> None:
    header = f"{'case':28s} {'size':>5s} {'steps':>6s} {'train s':>8s} {'PSNR':>7s} {'SSIM':>7s} {'render s':>9s} {'peak MB':>8s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['name']:28s} {r['size']:5d} {r['steps']:6d} {r['train_seconds']:8.1f} {r['psnr']:7.2f} {r['ssim']:7.4f} "
              f"{r['render_seconds_per_image']:9.2f} {r['peak_memory_mb']:8.0f}")  # fmt: skip
    for r in results:
        points = ", ".join(f"{p['elapsed']:.0f}s:{p['psnr']:.2f}" for p in r["held_out_curve"])
        print(f"  {r['name']} held-out PSNR over training time: {points}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lego", type=Path, default=LEGO, help="nerf_synthetic/lego folder")
    parser.add_argument("--sizes", default="200,400", help="comma-separated training widths for lego (default 200,400)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per case (default 10)")
    parser.add_argument("--steps", type=int, default=10**9, help="step cap per case (default: none)")
    parser.add_argument("--data", type=Path, default=None, help="a MAD-format root to use instead of a generated class")
    parser.add_argument("--class", dest="class_name", default=None, help="class under --data")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated class")
    parser.add_argument("--no-lego", action="store_true", help="skip lego")
    parser.add_argument("--holdout", type=int, default=5, help="hold out every K-th view (default 5: 80/20 of 100)")
    parser.add_argument("--eval-every", type=int, default=500, help="held-out evaluation period in steps")
    parser.add_argument("--encoding", choices=("default", "fine", "hash", "triplane"), default="default",
                        help="field encoding: the device default (dense grid on CPU), the CPU default with a hashed 256^3 "
                             "level added, Instant-NGP's hash grid, or a tri-plane")
    parser.add_argument("--box", choices=("views", "declared"), default="views",
                        help="scene box of a MAD-format class: from the views' frustums, as training takes it (default), or "
                             "the aabb its transforms.json declares (omnipose synth and onboard write one; lego declares none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--distortion", type=float, default=0.0, help="TrainConfig.distortion_weight (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 minute per case at 100 px")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--out", type=Path, default=Path("bench") / "field.json", help="JSON results (PNGs go beside it)")
    args = parser.parse_args(argv)

    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    minutes = 1.0 if args.quick else args.minutes
    base = {"minutes": minutes, "steps": args.steps, "holdout": args.holdout, "eval_every": 100 if args.quick else args.eval_every,
            "threads": args.threads, "device": args.device, "seed": args.seed, "progress": args.progress, "log_every": 25,
            "encoding": args.encoding, "box": args.box, "distortion": args.distortion}  # fmt: skip
    cases = []
    if not args.no_lego:
        if (args.lego / "transforms_train.json").is_file():
            for size in sizes:
                cases.append({**base, "name": f"lego@{size}", "kind": "transforms", "transforms": str(args.lego / "transforms_train.json"),
                              "size": size, "dataset": "nerf_synthetic", "class_name": "lego"})  # fmt: skip
        else:
            print(f"skipping lego: {args.lego / 'transforms_train.json'} not found (use --lego).")
    staging = tempfile.TemporaryDirectory(prefix="bench_field_")
    mad_size = sizes[0]
    if args.data is not None:
        if not args.class_name:
            parser.error("--data needs --class")
        cases.append({**base, "name": f"{args.class_name}@{mad_size}", "kind": "mad", "root": str(args.data), "size": mad_size,
                      "dataset": args.data.resolve().name, "class_name": args.class_name})  # fmt: skip
    elif not args.no_generated:
        made = generated_class(Path(staging.name), mad_size, args.quick)
        if made is not None:
            root, name = made
            cases.append({**base, "name": f"synth-{name}@{mad_size}", "kind": "mad", "root": str(root), "size": mad_size,
                          "dataset": "synth", "class_name": name})  # fmt: skip
    if not cases:
        print("nothing to benchmark.")
        return 1

    from omnipose.core.files import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    load_before = os.getloadavg()
    for case in cases:
        if args.encoding != "default":
            case["name"] += f"/{args.encoding}"
        case["png"] = str(args.out.with_name(f"{args.out.stem}_{case['name'].replace('@', '_').replace('/', '_')}.png"))
        print(f"== {case['name']}: {minutes:g} min of training ...", flush=True)
        results.append(run_isolated(case))
        print(f"   PSNR {results[-1]['psnr']:.2f} dB, SSIM {results[-1]['ssim']:.4f} after {results[-1]['steps']} steps", flush=True)
    staging.cleanup()
    report = {
        "conditions": {
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "python": sys.version.split()[0],
            "note": "load average > threads means the CPU was shared with other work while timing",
        },
        "cases": results,
    }  # fmt: skip
    atomic_write_json(args.out, report)
    print_table(results)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

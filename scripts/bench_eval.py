#!/usr/bin/env python
"""Time and memory of omnipose's benchmark metrics against scikit-learn and per-spec references.

Generates a realistic class (default 200 anomaly maps at 400x400 = 32M pixels: half the images
carry 1-3 irregular blob defects, maps are smooth noise plus a blurred defect signal and a few
false-positive blobs), then runs each method in its own subprocess on the same inputs, so that
peak memory is measured per method:

- ``omnipose``: ``rank_pixels`` (one pass, one sort) + AUROC/AP/F1max/AUPRO at pixel level and
  AUROC/AP/F1max at image level;
- ``sklearn``: ``roc_auc_score`` / ``average_precision_score`` on the raveled pixels, and
  ``precision_recall_curve`` on image scores;
- ``reference``: the straightforward per-spec loops of the ADer/M2AD evaluator for F1max_px
  (21 thresholds) and AUPRO (200 thresholds, one ``skimage.measure.label`` pass per threshold and
  image). At full size the AUPRO loop would take many minutes, so it runs ``--reference-steps``
  of the 200 thresholds and its time is extrapolated (marked in the table); ``--quick`` runs all
  200 and checks the value.

Memory: "extra peak" is the tracemalloc peak during the metric computation (NumPy registers its
buffers with tracemalloc), i.e. on top of the inputs; "RSS peak" is the subprocess's max RSS.

    python scripts/bench_eval.py --quick                 # ~30 s, small class, full reference
    python scripts/bench_eval.py --out bench.json        # 200 x 400 x 400
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- inputs
def make_class(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, S, S) float32, masks (N, S, S) bool): half the images defective."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    maps = np.empty((count, size, size), np.float32)
    masks = np.zeros((count, size, size), bool)
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    scale = size / 400.0

    def blob() -> np.ndarray:
        # An ellipse whose border is perturbed by smooth noise: irregular, sometimes split in two.
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        ry, rx = rng.uniform(6, 40, 2) * scale + 1.5
        wobble = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 4 * scale + 1)
        wobble /= np.abs(wobble).max() + 1e-6
        return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 + 0.6 * wobble < 1.0

    for i in range(count):
        defective = i >= count // 2
        if defective:
            for _ in range(rng.integers(1, 4)):
                masks[i] |= blob()
        noise = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 2 * scale + 0.5)
        signal = gaussian_filter(masks[i].astype(np.float32), 3 * scale + 0.5) * rng.uniform(0.3, 1.5)
        false_alarm = blob().astype(np.float32) * rng.uniform(0.0, 0.8) if rng.random() < 0.3 else 0.0
        maps[i] = 0.5 + 0.25 * noise / (noise.std() + 1e-6) + signal + false_alarm
    return maps, masks


# ----------------------------------------------------------------------------- methods (run in workers)
def run_omnipose(maps, masks) -> dict:
    from omnipose.evaluation import metrics as M

    timings, values = {}, {}
    start = time.perf_counter()
    ranked = M.rank_pixels(maps, masks, label_regions=True)
    timings["rank_pixels"] = time.perf_counter() - start
    for name in M.PIXEL_METRICS:
        t = time.perf_counter()
        values.update(M.pixel_metrics_ranked(ranked, [name]))
        timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    labels = masks.any(axis=(1, 2))
    scores = maps.reshape(len(maps), -1).max(axis=1)
    values.update(M.image_metrics(labels, scores))
    timings["image metrics"] = time.perf_counter() - t
    return {"values": values, "timings": timings}


def run_sklearn(maps, masks) -> dict:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    timings, values = {}, {}
    for name, function in (("AUROC_px", roc_auc_score), ("AP_px", average_precision_score)):
        t = time.perf_counter()
        values[name] = float(function(masks.ravel(), maps.ravel()))
        timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    labels = masks.any(axis=(1, 2))
    scores = maps.reshape(len(maps), -1).max(axis=1)
    values["AUROC_sp"] = float(roc_auc_score(labels, scores))
    values["AP_sp"] = float(average_precision_score(labels, scores))
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    values["F1max_sp"] = float(np.max(f1[np.isfinite(f1)]))
    timings["image metrics"] = time.perf_counter() - t
    return {"values": values, "timings": timings}


def run_reference(maps, masks, steps: int) -> dict:
    """The evaluator's loops as the spec describes them."""
    from skimage import measure
    from sklearn.metrics import auc

    timings, values = {}, {}
    t = time.perf_counter()
    normalised = (maps - maps.min()) / (maps.max() - maps.min())
    best = 0.0
    for s in np.arange(0.0, 1.0 + 1e-3, 0.05):
        predicted = normalised > np.float32(s)
        intersection = np.logical_and(masks, predicted).sum()
        precision = intersection / (predicted.sum() + 1e-8)
        recall = intersection / (masks.sum() + 1e-8)
        best = max(best, 2 * precision * recall / (precision + recall + 1e-8))
    del normalised, predicted
    values["F1max_px"] = float(best)
    timings["F1max_px"] = time.perf_counter() - t

    t = time.perf_counter()
    low, high = maps.min(), maps.max()
    thresholds = np.arange(low, high, (high - low) / 200)
    run = thresholds if steps >= len(thresholds) else thresholds[np.linspace(0, len(thresholds) - 1, steps).astype(int)]
    negatives = ~masks
    n_negative = negatives.sum()
    pros, fprs = [], []
    binary = np.zeros_like(masks)
    for th in run:
        np.greater(maps, th, out=binary)
        overlaps = []
        for b, m in zip(binary, masks):
            for region in measure.regionprops(measure.label(m)):
                overlaps.append(b[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(negatives, binary).sum() / n_negative)
    elapsed = time.perf_counter() - t
    if len(run) == len(thresholds):
        pros, fprs = np.array(pros), np.array(fprs)
        kept = fprs < 0.3
        f = fprs[kept]
        values["AUPRO_px"] = float(auc((f - f.min()) / (f.max() - f.min()), pros[kept]))
        timings["AUPRO_px"] = elapsed
    else:
        timings["AUPRO_px"] = elapsed * len(thresholds) / len(run)
        timings["AUPRO_px extrapolated from"] = f"{len(run)} of {len(thresholds)} thresholds"
    return {"values": values, "timings": timings}


def worker(method: str, data_dir: Path, steps: int) -> None:
    # Import everything first: neither import time nor the imported modules' objects are counted.
    import skimage.measure  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import omnipose.evaluation.metrics  # noqa: F401

    maps = np.load(data_dir / "maps.npy")
    masks = np.load(data_dir / "masks.npy")
    tracemalloc.start()
    start = time.perf_counter()
    if method == "omnipose":
        result = run_omnipose(maps, masks)
    elif method == "sklearn":
        result = run_sklearn(maps, masks)
    else:
        result = run_reference(maps, masks, steps)
    result["total_s"] = time.perf_counter() - start  # metrics only: inputs are loaded, modules imported
    result["extra_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    result["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def run_method(method: str, data_dir: Path, steps: int) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", method, "--data-dir", str(data_dir), "--reference-steps", str(steps)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"worker {method} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_table(results: dict, pixels: int) -> str:
    """Time per step and memory per method, then every value next to omnipose's."""
    lines = [f"timings on {pixels / 1e6:.1f}M pixels", f"{'method':<10} {'step':<16} {'time s':>9}"]
    for method, result in results.items():
        for name, seconds in result["timings"].items():
            if isinstance(seconds, str):
                continue
            extrapolated = "  (extrapolated)" if f"{name} extrapolated from" in result["timings"] else ""
            lines.append(f"{method:<10} {name:<16} {seconds:>9.3f}{extrapolated}")
        partial = any(k.endswith("extrapolated from") for k in result["timings"])
        lines.append(f"{method:<10} {'TOTAL':<16} {result['total_s']:>9.3f}   extra peak {result['extra_peak_mb']:.0f} MiB, "
                     f"process RSS peak {result['rss_peak_mb']:.0f} MiB" + ("  (as run, before extrapolation)" if partial else ""))
    ours = results.get("omnipose", {}).get("values", {})
    others = [m for m in results if m != "omnipose"]
    lines += ["", f"{'metric':<10} {'omnipose':>10} " + " ".join(f"{m:>10} {'|diff|':>8}" for m in others)]
    for name, value in ours.items():
        cells = []
        for m in others:
            other = results[m]["values"].get(name)
            cells.append(f"{'':>10} {'':>8}" if other is None else f"{other:>10.6f} {abs(other - value):>8.1e}")
        lines.append(f"{name:<10} {value:>10.6f} " + " ".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="24 maps at 160x160 and the full reference AUPRO")
    parser.add_argument("--maps", type=int, default=None, help="number of anomaly maps (default 200; quick 24)")
    parser.add_argument("--size", type=int, default=None, help="map side in pixels (default 400; quick 160)")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="thresholds of the reference AUPRO actually run (default 3; quick 200 = all)")
    parser.add_argument("--methods", default="omnipose,sklearn,reference")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data_dir, args.reference_steps)
        return 0
    count = args.maps or (24 if args.quick else 200)
    size = args.size or (160 if args.quick else 400)
    steps = args.reference_steps or (200 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        t = time.perf_counter()
        maps, masks = make_class(count, size)
        print(f"generated {count} maps of {size}x{size} ({masks.mean() * 100:.2f} % anomalous pixels) "
              f"in {time.perf_counter() - t:.1f} s")
        np.save(Path(tmp) / "maps.npy", maps)
        np.save(Path(tmp) / "masks.npy", masks)
        del maps
        results = {}
        for method in args.methods.split(","):
            results[method] = run_method(method, Path(tmp), steps)
            print(f"  {method}: {results[method]['total_s']:.2f} s", flush=True)
    print(format_table(results, count * size * size))
    if args.out:
        from omnipose.core.files import atomic_write_json

        atomic_write_json(args.out, {"maps": count, "size": size, "reference_steps": steps, "results": results})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A whole benchmark locally and on Ray: same results, wall time, faults, resume, and what it costs.

On built-in classes (``omnipose synth``, two by default) it runs ``run_benchmark``:

1. **local**: this process, one class after the other, torch on ``--threads`` threads;
2. **ray**: a local Ray cluster of the machine's cores, one fit task and one actor per class,
   each with ``--threads`` CPUs (so each class runs on the same number of torch threads as the
   local run: a field trained on another thread count differs in its last bits, and training
   carries that into every map); fields trained again from nothing, so that its wall time
   counts everything. Its maps and scores are compared with the local run's;
3. **ray, worker killed**: the ray run again into a fresh prediction folder (its fields reused):
   the actor of the first class is killed (SIGKILL) while it serves its second batch; every query
   must still have exactly one prediction and the table must equal the undisturbed one;
4. **ray, driver interrupted**: interrupted after ``--interrupt-after`` batches, then rerun; the
   rerun must detect only the queries that were not finished;
5. **local, default threads** (``--default-threads``): the local run with torch's own thread
   count, for the wall time a user gets without choosing.

Also measured: starting and stopping a local Ray cluster, the first task on it (a worker process
starting), the memory of each actor (resident set, read from /proc on this machine), fit seconds
per class and seconds per query.

    python scripts/bench_scaleout.py --out bench/scaleout            # about 20 min on 2 busy cores
    python scripts/bench_scaleout.py --out bench/scaleout --repeats 1  # one pair, about 12 min
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_field.py: spinning OpenMP workers stall shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_common import git_commit  # noqa: E402

from omnipose.core.files import atomic_write_json  # noqa: E402
from omnipose.data.synth import SynthConfig, ensure_class  # noqa: E402
from omnipose.detector import DetectorConfig  # noqa: E402
from omnipose.evaluation import LocalExecutor, make_executor, run_benchmark  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def detector_config(args, ckpt_root: Path) -> DetectorConfig:
    config = DetectorConfig(image_size=args.size, dataset="scaleout", ckpt_root=str(ckpt_root), calibration_views=args.calibration_views)
    config.train = replace(config.train, steps=args.steps, minutes=None)
    return config


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process on this machine."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def compare_folders(a: Path, b: Path) -> dict:
    """Largest absolute difference of maps and of scores between two prediction roots."""
    map_diff, score_diff, count = 0.0, 0.0, 0
    for path in sorted(a.rglob("*.npy")):
        other = b / path.relative_to(a)
        map_diff = max(map_diff, float(np.abs(np.load(path) - np.load(other)).max()))
        score = json.loads(path.with_suffix(".json").read_text())["score"]
        score_diff = max(score_diff, abs(score - json.loads(other.with_suffix(".json").read_text())["score"]))
        count += 1
    return {"queries": count, "max_map_difference": map_diff, "max_score_difference": score_diff}


def query_seconds(out: Path) -> dict[str, float]:
    """Per class, the seconds its queries took inside the detector (from the per-query records):
    a class's detect wall time less this is what serving cost besides detecting (worker start,
    loading the detector, round trips)."""
    totals: dict[str, float] = {}
    for record in (out / "predictions").glob("*/*/*.json"):
        class_name = record.parent.parent.name
        totals[class_name] = totals.get(class_name, 0.0) + json.loads(record.read_text())["seconds"]
    return totals


def metrics(out: Path) -> dict:
    return json.loads((out / "benchmark.json").read_text())["metrics"]


def ray_start_cost() -> dict:
    """Seconds to start a local cluster, to run a first task (a worker process starting) and to stop it."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False, object_store_memory=256 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})  # fmt: skip
    started = time.perf_counter()
    ray.get(ray.remote(lambda: os.getpid()).remote())
    first = time.perf_counter()
    ray.shutdown()
    return {"start_seconds": started - start, "first_task_seconds": first - started, "stop_seconds": time.perf_counter() - first}


def run(name: str, args, out: Path, ckpts: Path, executor, results: dict, fresh: bool = True) -> dict:
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    bench = run_benchmark(args.data, args.classes, out, detector_config(args, ckpts), executor, progress=False)
    wall = time.perf_counter() - start
    seconds = query_seconds(out)
    entry = {"wall_seconds": wall, "load_before": load, "load_after": os.getloadavg()[0], "timings": bench.timings, "query_seconds": seconds,
             "serving_overhead_seconds": {k: t["detect_seconds"] - seconds.get(k, 0.0) for k, t in bench.timings.items()}}
    results[name] = entry
    print(f"{name}: {wall:.1f} s (load {load:.1f} -> {entry['load_after']:.1f}) {bench.timings}", flush=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/scaleout"))
    parser.add_argument("--classes", default="01Robot,03Duck")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-views", type=int, default=30)
    parser.add_argument("--test-views-per-type", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--calibration-views", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local run = CPUs per Ray worker")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--interrupt-after", type=int, default=2, help="batches before the driver is interrupted")
    parser.add_argument("--repeats", type=int, default=2, help="local / ray pairs timed (alternating which goes first)")
    parser.add_argument("--default-threads", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args()
    args.data = args.out / "data"
    classes = [c.strip() for c in args.classes.split(",")]
    for name in classes:
        ensure_class(args.data, name, SynthConfig(size=args.size, train_views=args.train_views,
                                                  test_views_per_type=args.test_views_per_type, seed=1, progress=False))  # fmt: skip
    results: dict = {"start_cost": ray_start_cost()}
    print(f"ray start: {results['start_cost']}", flush=True)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    ray_options = {"batch_size": args.batch_size, "cpus_per_worker": float(args.threads)}
    # Other work on shared cores comes and goes: pairs alternate which run goes first, and the
    # ratio is taken within each pair, each run training its own fields from nothing.
    for pair in range(args.repeats):
        order = ("local", "ray") if pair % 2 == 0 else ("ray", "local")
        for kind in order:
            suffix = f" #{pair + 1}" if args.repeats > 1 else ""
            ckpts = args.out / f"ckpts_{kind}_{pair}"
            shutil.rmtree(ckpts, ignore_errors=True)
            if kind == "local":
                run(f"local{suffix}", args, args.out / f"local_{pair}", ckpts, LocalExecutor(), results)
                continue
            memory: dict[str, list] = {}
            executor = make_executor("ray", on_batch=lambda b: memory.setdefault(b.class_name, []).append(rss_mib(b.pid)),
                                     **ray_options)  # fmt: skip
            entry = run(f"ray{suffix}", args, args.out / f"ray_{pair}", ckpts, executor, results)
            entry["worker_modules"] = sorted(executor.worker_modules)
            entry["actor_rss_mib"] = {k: max(r for r, _ in v) for k, v in memory.items()}
            entry["actor_peak_rss_mib"] = {k: max(p for _, p in v) for k, v in memory.items()}
        local, ray_run = results[f"local{suffix}"], results[f"ray{suffix}"]
        ray_run["same_metrics"] = metrics(args.out / f"ray_{pair}") == metrics(args.out / f"local_{pair}")
        ray_run.update(compare_folders(args.out / f"local_{pair}" / "predictions", args.out / f"ray_{pair}" / "predictions"))
        ray_run["wall_vs_local"] = ray_run["wall_seconds"] / local["wall_seconds"]
    reference = args.out / "local_0"  # the table every other run must reproduce
    ray_ckpts = args.out / "ckpts_ray_0"

    killed: list[int] = []

    def kill_once(batch):
        if not killed:
            os.kill(batch.pid, signal.SIGKILL)
            killed.append(batch.pid)

    fault = run("ray, worker killed", args, args.out / "ray_fault", ray_ckpts,
                make_executor("ray", on_batch=kill_once, **ray_options), results)  # fmt: skip
    files = [p.name for p in (args.out / "ray_fault" / "predictions").rglob("*") if p.is_file()]
    fault.update(killed=len(killed), npy=sum(f.endswith(".npy") for f in files), json=sum(f.endswith(".json") and f[0].isdigit() for f in files),
                 temporaries=sum(f.startswith(".") for f in files), same_metrics=metrics(args.out / "ray_fault") == metrics(reference))  # fmt: skip

    batches = []

    def interrupt(batch):
        batches.append(batch)
        if len(batches) >= args.interrupt_after:
            raise KeyboardInterrupt

    out = args.out / "ray_resume"
    shutil.rmtree(out, ignore_errors=True)
    try:
        run_benchmark(args.data, args.classes, out, detector_config(args, ray_ckpts),
                      make_executor("ray", on_batch=interrupt, **ray_options), progress=False)  # fmt: skip
    except KeyboardInterrupt:
        pass
    finished = len(list(out.rglob("*.npy")))
    redone: list[str] = []
    resume = run("ray, resumed", args, out, ray_ckpts,
                 make_executor("ray", on_batch=lambda b: redone.extend(b.keys), **ray_options), results, fresh=False)  # fmt: skip
    total = sum(t["queries"] for t in results["local" + (" #1" if args.repeats > 1 else "")]["timings"].values())
    resume.update(finished_before=finished, detected_on_rerun=len(redone), queries=total,
                  same_metrics=metrics(out) == metrics(reference))  # fmt: skip
    if args.default_threads:
        torch.set_num_threads(default_threads)
        run(f"local, {default_threads} threads", args, args.out / "local_default", args.out / "ckpts_default", LocalExecutor(), results)
    report(results, args)
    return 0


def report(results: dict, args) -> None:
    commit = git_commit()
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "commit": commit,
               "note": "cores shared with other work while measuring"}  # fmt: skip
    payload = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    atomic_write_json(args.out / "bench_scaleout.json", payload)
    rows = [("run", "wall (s)", "vs local", "load", "fit s/class", "s/query", "notes")]
    first_local = next(k for k in results if k.startswith("local"))
    for name, entry in results.items():
        if name == "start_cost":
            continue
        timings = entry["timings"]
        fits = [t["fit_seconds"] for t in timings.values()]
        per_query = sum(t["detect_seconds"] for t in timings.values()) / max(1, sum(t["queries"] for t in timings.values()))
        notes = []
        if "same_metrics" in entry:
            notes.append(f"table {'==' if entry['same_metrics'] else '!='} local")
        if "max_map_difference" in entry:
            notes.append(f"max |map diff| {entry['max_map_difference']:.2g}, |score diff| {entry['max_score_difference']:.2g}")
        if "killed" in entry:
            notes.append(f"killed {entry['killed']}, {entry['npy']} maps/{entry['json']} records, {entry['temporaries']} temporaries")
        if "detected_on_rerun" in entry:
            notes.append(f"{entry['finished_before']} finished before, {entry['detected_on_rerun']} detected on rerun")
        if "actor_rss_mib" in entry:
            notes.append(f"actor RSS {max(entry['actor_rss_mib'].values()):.0f} MiB (peak {max(entry['actor_peak_rss_mib'].values()):.0f})")
        pair = name.replace("ray", "local") if name.startswith("ray #") or name == "ray" else first_local
        ratio = entry["wall_seconds"] / results[pair]["wall_seconds"]
        rows.append((name, f"{entry['wall_seconds']:.1f}", f"{ratio:.2f}", f"{entry['load_before']:.1f}-{entry['load_after']:.1f}",
                     f"{np.mean(fits):.1f}", f"{per_query:.2f}", "; ".join(notes)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    ratios = [e["wall_vs_local"] for e in results.values() if isinstance(e, dict) and "wall_vs_local" in e]
    print(f"ray / local wall time, per pair: {', '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f} (target <= 1.15)")
    cost = results["start_cost"]
    print(f"local Ray cluster: start {cost['start_seconds']:.1f} s, first task {cost['first_task_seconds']:.1f} s, "
          f"stop {cost['stop_seconds']:.1f} s; JSON: {args.out / 'bench_scaleout.json'}")


if __name__ == "__main__":
    sys.exit(main())

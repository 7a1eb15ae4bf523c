"""Timing of one query/reference comparison (proposed scripts/bench_compare.py; prints a table, writes JSON)."""
import json
import statistics
import sys
import time

import torch

from omnipose.compare import Comparator, CompareConfig
from omnipose.core.image import read_image_rgb

LEGO = "/work/shared/data/nerf_synthetic/lego/train/r_0.png"
size = int(sys.argv[1]) if len(sys.argv) > 1 else 200
query = torch.from_numpy(read_image_rgb(LEGO, size=(size, size)))
reference = query.flip(1).contiguous()
configs = {
    "calibrated lite0": CompareConfig(),
    "calibrated lite2": CompareConfig(features="efficientnet-lite2"),
    "pixel terms only": CompareConfig(feature_weight=0.0),
    "PAD recipe lite0 (224)": CompareConfig.pad(),
}
rows = []
for threads in (1, 2):
    torch.set_num_threads(threads)
    for name, config in configs.items():
        comparator = Comparator(config, device="cpu")
        comparator.compare(query, reference)  # warm-up, loads the weights
        wall, cpu = [], []
        for _ in range(15):
            t, c = time.perf_counter(), time.process_time()
            comparator.compare(query, reference)
            wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
        rows.append({"config": name, "threads": threads, "size": size, "wall_min_s": min(wall),
                     "wall_median_s": statistics.median(wall), "cpu_min_s": min(cpu)})
print(f"{'config':26s} {'thr':>3s} {'wall min':>9s} {'wall med':>9s} {'cpu min':>8s}")
for r in rows:
    print(f"{r['config']:26s} {r['threads']:3d} {r['wall_min_s']:9.3f} {r['wall_median_s']:9.3f} {r['cpu_min_s']:8.3f}")
with open(f"/tmp/omnipose_bench/bench_compare_{size}.json", "w") as f:
    json.dump({"rows": rows, "load_average": open("/proc/loadavg").read().split()[:3]}, f, indent=2)

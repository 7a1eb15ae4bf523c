#!/usr/bin/env python
"""Comparison variants replayed on what ``bench_detect.py --dump`` kept: the same queries, poses and
references, so that only the comparison differs between rows.

For each variant (``CompareConfig`` fields as JSON) the calibration is fitted again on the dumped normal
pairs, and every query is compared with its dumped candidate references the way the detector compares
them (``detector.references.best_reference``: the lowest fit score wins). Prints, per variant, image /
pixel AUROC and AUPRO per class (evaluated as ``bench_detect.py`` does) and their mean, then for each class
the highest normal scores and the lowest defective ones (what decides the image AUROC); writes the lot as
JSON. The dumps hold images at half precision, so a replay of the defaults can differ from its run by a
pair or so.

    python scripts/bench_detect.py --cases lego --lego-defects fine --lego-size 400 --lego-steps 5000 \\
        --pad-queries 0 --dump bench/dump400
    python scripts/bench_replay.py bench/dump400 --variant colour2='{"color_weight": 2}' --out bench/replay.json
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_field.py: spinning OpenMP workers stall shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_common import git_commit  # noqa: E402
from bench_detect import EVALUATION, evaluated  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from omnipose.compare import Comparator, CompareConfig  # noqa: E402
from omnipose.core.files import atomic_write_json  # noqa: E402
from omnipose.detector.references import Reference, best_reference  # noqa: E402

SHOWN = 4  # normal and defective scores listed per class


def parse_variant(text: str) -> tuple[str, dict]:
    """'NAME={"field": value, ...}' -> (NAME, overrides), checked against CompareConfig's fields."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: write NAME='{{\"field\": value}}' (JSON of CompareConfig fields)")
    try:
        values = json.loads(overrides)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--variant {name}: {overrides!r} is not JSON ({error})") from error
    known = {f.name for f in fields(CompareConfig)}
    unknown = sorted(set(values) - known)
    if not isinstance(values, dict) or unknown:
        raise SystemExit(f"--variant {name}: give a JSON object of CompareConfig fields; unknown: {unknown}")
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def dump_files(paths: list[Path]) -> list[Path]:
    """The dump files (``<class>.pt``) named or held by the given folders."""
    files = []
    for path in paths:
        found = sorted(path.glob("*.pt")) if path.is_dir() else [path]
        if not found or not all(f.is_file() for f in found):
            raise SystemExit(f"{path}: no dump there (bench_detect.py --dump DIR writes DIR/<class>.pt)")
        files += found
    return files


def replay_class(dump: dict, config: CompareConfig, truth: bool) -> dict:
    """One class of a dump under one comparison config: metrics and per-query scores."""
    comparator = Comparator(config)
    comparator.fit(*[None if t is None else t.float() for t in dump["normal_pairs"]], progress=False)
    maps, scores, queries = [], [], []
    for query in dump["queries"]:
        if truth:
            if query["truth"] is None:
                continue
            image, alpha, neighbours, unseen = query["truth"]
            candidates = [Reference(query["true_c2w"], image.float(), alpha.float(), neighbours.float(), unseen)]
        else:
            candidates = [Reference(c2w, image.float(), alpha.float(), neighbours.float(), unseen)
                          for c2w, image, alpha, neighbours, unseen in query["candidates"]]  # fmt: skip
        result, _ = best_reference(comparator, query["image"].float().numpy(), candidates)
        maps.append(result.anomaly_map[0].cpu().numpy())
        scores.append(float(result.score[0]))
        queries.append(query)
    labels = [bool(q["anomalous"]) for q in queries]
    names = [q["name"] for q in queries]
    normal = sorted((s, n) for s, n, bad in zip(scores, names, labels) if not bad)
    defective = sorted((s, n) for s, n, bad in zip(scores, names, labels) if bad)
    return {"metrics": evaluated(maps, [q["mask"].numpy() for q in queries], labels, scores, names),
            "scores": dict(zip(names, scores)),
            "highest_normal": [(n, round(s, 2)) for s, n in normal[::-1][:SHOWN]],
            "lowest_defective": [(n, round(s, 2)) for s, n in defective[:SHOWN]]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="+", type=Path, help="bench_detect.py --dump folders or <class>.pt files")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help="NAME='{\"field\": value}': CompareConfig fields over the defaults (repeatable); "
                             "the defaults are always the first row")  # fmt: skip
    parser.add_argument("--truth", action="store_true", help="compare at the true poses' references instead")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("bench") / "bench_replay.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = dump_files(args.dumps)
    variants = [("default", {}), *args.variant]
    rows = {name: {} for name, _ in variants}
    for path in files:
        dump = torch.load(path, weights_only=False)
        for name, overrides in tqdm(variants, desc=path.stem, leave=False):
            rows[name][path.stem] = replay_class(dump, replace(CompareConfig(), **overrides), args.truth)
    metrics = EVALUATION.metrics
    print(f"\n{'variant':<20} " + " ".join(f"{m:>9}" for m in metrics) + "   per class image AUROC")
    for name, classes in rows.items():
        means = [np.mean([c["metrics"][m] for c in classes.values() if c["metrics"][m] is not None] or [np.nan])
                 for m in metrics]  # fmt: skip
        per_class = ", ".join(f"{cls} {c['metrics']['AUROC_sp']:.1f}" for cls, c in classes.items()
                              if c["metrics"]["AUROC_sp"] is not None)  # fmt: skip
        print(f"{name:<20} " + " ".join(f"{v:9.2f}" for v in means) + f"   {per_class}")
    for name, classes in rows.items():
        for cls, c in classes.items():
            print(f"{name} / {cls}: highest normal {c['highest_normal']}; lowest defective {c['lowest_defective']}")
    record = {"variants": dict(variants), "truth": args.truth, "dumps": [str(f) for f in files], "commit": git_commit(),
              "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

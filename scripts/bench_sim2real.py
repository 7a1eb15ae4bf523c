#!/usr/bin/env python
"""The sim-to-real study as a benchmark: sim->sim, real->real and sim->real per class in one table,
with the ablations without photometric matching and without background handling beside it.

The data are the built-in classes twice: exact renders on white (``omnipose synth``, MAD-Sim's
conditions) and photographs (``omnipose synth --style photo``, MAD-Real's: path-traced plastic,
other lighting for training and test, another lens, noise, JPEG, training poses with a
reconstruction's error in an arbitrary frame, or with ``--onboard-poses`` those ``omnipose onboard``
recovers from the photographs). Both are made under ``--work`` unless ``--sim`` /
``--real`` name roots to use as they are (MAD-Sim and MAD-Real themselves, say). The study is
``omnipose.evaluation.sim2real`` (``omnipose sim2real``): fields and queries are resumed, so a rerun
only adds what is missing.

The ablation reruns sim->real without photometric matching (``run_sim2real(match_photographs=False)``:
neither the photographs' colours brought to the renders' for the pose search nor the references to
the photographs' exposure for the comparison), on the same fields. The background ablation
(``--background-ablation``) fits new fields on views whose plain backdrop is kept
(``DetectorConfig.replace_backdrop=False``: the field learns the backdrop as part of the object, and
the queries keep theirs to match) and runs real->real and sim->real on them. It only changes
anything where the photographs stand in front of a plain backdrop (``--backdrop``, a light tent):
a table and a room around the object are never separated.

    python scripts/bench_sim2real.py --classes 01Robot,03Duck --out bench/bench_sim2real.json
    python scripts/bench_sim2real.py --sim /data/MAD-Sim --real /data/MAD-Real --classes all --size 400
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_field.py: spinning OpenMP workers stall shared cores

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_common import git_commit  # noqa: E402

from omnipose.cli.onboard import onboard_matcher  # noqa: E402
from omnipose.core.files import atomic_write_json  # noqa: E402
from omnipose.data.synth import SynthConfig, ensure_class  # noqa: E402
from omnipose.detector import DetectorConfig  # noqa: E402
from omnipose.evaluation import run_sim2real, sim2real_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_roots(args) -> tuple[Path, Path]:
    """The sim and photo roots of ``args.classes`` under ``args.work`` (made or kept by ``ensure_class``)."""
    sim_root = args.sim or args.work / f"sim_{args.size}"
    tag = ("" if args.backdrop is None else f"_tent{args.backdrop:g}") + ("_onboarded" if args.onboard_poses else "")
    real_root = args.real or args.work / f"photo_{args.size}{tag}"
    matcher = onboard_matcher("xfeat") if args.onboard_poses and args.real is None else None
    for name in args.classes.split(","):
        if args.sim is None:
            ensure_class(sim_root, name, SynthConfig(size=args.size, progress=False))
        if args.real is None:
            photo = SynthConfig(size=args.size, style="photo", train_views=50, progress=False)
            backdrop = None if args.backdrop is None else (args.backdrop,) * 3
            photo.photo = replace(photo.photo, backdrop=backdrop, threads=args.threads,
                                  onboard_poses=args.onboard_poses)
            ensure_class(real_root, name, photo, matcher)
    return sim_root, real_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="01Robot,03Duck", help="comma-separated classes, or 'all' with --sim/--real")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2000, help="training steps per field (a step budget: the same field on a busy machine)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "sim2real", help="data, checkpoints and predictions")
    parser.add_argument("--sim", type=Path, default=None, help="a simulated root to use as it is (default: made under --work)")
    parser.add_argument("--real", type=Path, default=None, help="a photographed root to use as it is (default: made under --work)")
    parser.add_argument("--backdrop", type=float, default=None,
                        help="photographs in a light tent of this grey instead of on a table among clutter")
    parser.add_argument("--threads", type=int, default=None, help="render threads for the photographs")
    parser.add_argument("--onboard-poses", action="store_true",
                        help="the photographs' training poses recovered by omnipose onboard (XFeat) from the "
                             "photographs instead of the true ones with 0.5 deg of noise (a root of their own: "
                             "*_onboarded)")
    parser.add_argument("--refine-poses", action="store_true",
                        help="train the photographs' fields with their poses refined (fields of their own: <real>-refined)")
    parser.add_argument("--rank-by-chromaticity", action="store_true",
                        help="choose query poses by chromaticity (PoseConfig.rank_by_chromaticity): the test photographs' light differs")
    parser.add_argument("--match-shading", type=int, default=0, metavar="PX",
                        help="bring references to each photograph's shading in windows of this radius (CompareConfig.match_shading)")
    parser.add_argument("--calibrate-on-photos", type=int, default=0, metavar="N",
                        help="calibrate sim->real on N real training photographs posed as queries (run_sim2real's "
                             "calibration_photos)")
    parser.add_argument("--no-ablation", action="store_true", help="skip sim->real without photometric matching")
    parser.add_argument("--background-ablation", action="store_true",
                        help="also real->real and sim->real on fields that keep the views' plain backdrop (new fields)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "bench_sim2real.json")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    sim_root, real_root = make_roots(args)
    config = DetectorConfig(image_size=args.size, ckpt_root=str(args.work / "ckpts"))
    config.train = replace(config.train, steps=args.steps, minutes=None, refine_poses=args.refine_poses)
    config.pose = replace(config.pose, rank_by_chromaticity=args.rank_by_chromaticity)
    config.compare = replace(config.compare, match_shading=args.match_shading)
    study = args.work / ("study_refined" if args.refine_poses else "study")
    # Other predictions: a folder of their own, so that resuming does not mix them.
    if args.rank_by_chromaticity:
        study = study.with_name(f"{study.name}_chromaticity")
    if args.match_shading:
        study = study.with_name(f"{study.name}_shading{args.match_shading}")
    if args.calibrate_on_photos:
        study = study.with_name(f"{study.name}_calibrated_on{args.calibrate_on_photos}")
    run = run_sim2real(sim_root, real_root, args.classes, study, config, calibration_photos=args.calibrate_on_photos)
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              **run.to_json(), "report": str(run.report)}  # fmt: skip
    print("\n".join(sim2real_table(run.cells)))
    if not args.no_ablation:
        other = run_sim2real(sim_root, real_root, args.classes, study.with_name(f"{study.name}_no_photometric_matching"), config,
                             cells=("sim2real",), match_photographs=False, calibration_photos=args.calibrate_on_photos)
        report["ablation"] = {"match_photographs": False, **other.to_json()}
        print("\nsim -> real without photometric matching (the same fields):")
        print("\n".join(sim2real_table(other.cells)))
    if args.background_ablation:
        kept = run_sim2real(sim_root, real_root, args.classes, study.with_name(f"{study.name}_backdrop_kept"),
                            replace(config, replace_backdrop=False), cells=("real2real", "sim2real"))
        report["background_ablation"] = {"replace_backdrop": False, **kept.to_json()}
        print("\nwithout background handling (fields that keep the plain backdrop):")
        print("\n".join(sim2real_table(kept.cells)))
    for check in run.checks.values():
        print(check.message())
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(f"report: {run.report}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

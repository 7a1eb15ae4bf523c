"""The sim-to-real study: how far the method falls from simulated views to photographs of the same
objects, and whether a field learned from simulated views still finds defects in photographs.

The same classes exist in a simulated root (MAD-Sim, or ``omnipose synth``) and a photographed root
(MAD-Real, or ``omnipose synth --style photo``). Per class, three cells (``CELLS``):

- ``sim2sim``: the field fitted on the simulated views detects the simulated test images;
- ``real2real``: the field fitted on the photographs detects the test photographs (PAD's MAD-Real protocol);
- ``sim2real``: the field fitted on the simulated views detects the test photographs. They are
  scaled to the field's focal length first, taking the camera of the real training views as theirs
  (the photographs of a class are taken with one camera). Before detecting, the sim field poses a
  few real training views and their poses are compared with the real ones up to a change of frame
  (``check_same_object``): a real class that shows another object, or photographs the field
  cannot pose, are said so instead of ending in scores nobody can trust.

Pose accuracy is reported where true poses exist: test poses of ``omnipose synth`` classes (in the
frame of their own training poses for sim2sim and real2real, and in the object's frame, the sim
field's, for sim2real). MAD ships none: those columns are then empty. Layout::

    <out>/<cell>/<class>/...              prediction folders (``predictions.py``); resumable
    <out>/object_check/<class>.json       the check of the real class against the sim field
    <out>/panels/<class>.png              photo | truth | each field's reference and map, side by side
    <out>/sim2real.json, <out>/report.md  the table (one row per class and cell), notes, figures
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from omnipose.core.errors import ConfigError, DataError
from omnipose.core.files import atomic_write_json, atomic_write_text, read_json
from omnipose.core.geometry import pose_errors, rotation_error_deg
from omnipose.core.image import image_width, read_image_rgb, read_mask
from omnipose.data import MADClass, PosedImages, apply_similarity, camera_similarity, open_mad_class
from omnipose.data.synth import GROUND_TRUTH_POSES, load_ground_truth_poses, load_true_poses
from omnipose.detector import Detector, DetectorConfig, calibrate_on_queries, stored_calibration
from omnipose.evaluation.benchmark import BENCHMARK_EVALUATION, resolve_classes
from omnipose.evaluation.figures import save_side_by_side
from omnipose.evaluation.metrics import is_defined
from omnipose.evaluation.predictions import evaluate_prediction_dir, finished_keys, read_anomaly_map
from omnipose.evaluation.results import ClassResult
from omnipose.evaluation.runner import run_class, save_run_config
from omnipose.pose import model_fingerprint, prepare_query

CELLS = ("sim2sim", "real2real", "sim2real")
CELL_TITLES = {"sim2sim": "sim -> sim", "real2real": "real -> real", "sim2real": "sim -> real"}
METRICS = ("AUROC_sp", "AUROC_px", "AUPRO_px")
RERUN = "Delete it and run the study again: the query is detected again."
OBJECT_CROP = 0.1
"""The margin of the crop about the object sim -> real is compared on (``CompareConfig.object_crop``)."""
CHECK_VIEWS = 8
"""Real training views the sim field poses to check that both roots show the same object."""
AGREE_DEG = 10.0
"""A posed view agrees with a change of frame when its rotation is within this of it (degrees)."""


@dataclass
class ObjectCheck:
    """Whether the photographs of a class show the object of its sim field.

    posed: real training views posed by the sim field; agreeing: how many of them one change of
    frame (a similarity) takes onto their recorded poses within ``AGREE_DEG``; rotation_deg: the
    median rotation error of the posed views after that change of frame.
    """

    class_name: str
    posed: int
    agreeing: int
    rotation_deg: float

    @property
    def same_object(self) -> bool:
        return self.agreeing >= max(3, math.ceil(self.posed / 2))

    def to_json(self) -> dict:
        """The check as written to JSON, with its verdict."""
        return {**asdict(self), "same_object": self.same_object}

    def message(self) -> str:
        if self.same_object:
            return (f"{self.class_name}: the sim field poses {self.agreeing} of {self.posed} real training views consistently "
                    f"with their recorded poses (median error {self.rotation_deg:.1f} deg): the same object.")
        return (f"{self.class_name}: the real views do not match the sim class: the sim field poses only {self.agreeing} of "
                f"{self.posed} real training views consistently with their recorded poses (median error "
                f"{self.rotation_deg:.0f} deg). Either the real class shows another object (check the class folders), or "
                "the photographs are too unlike the simulated views for the sim field to pose them. Its sim -> real "
                "scores are not to be trusted.")


@dataclass
class CellResult:
    """One class in one cell: the evaluation, the pose accuracy where true poses exist, the time.

    within_2 / within_5: fraction of scored queries whose rotation is within 2 / 5 degrees of the
    true one (None without true poses); seconds_per_query: the detector's own time per query.
    """

    class_name: str
    cell: str
    result: ClassResult
    queries: int
    low_confidence: int
    seconds_per_query: float
    within_2: float | None = None
    within_5: float | None = None
    median_rotation_deg: float | None = None

    def row(self) -> dict:
        metrics = {name: (float(self.result.metrics[name]) if is_defined(self.result.metrics.get(name)) else None)
                   for name in METRICS}  # fmt: skip
        return {"class": self.class_name, "cell": self.cell, **metrics, "within_2": self.within_2, "within_5": self.within_5,
                "median_rotation_deg": self.median_rotation_deg, "seconds_per_query": self.seconds_per_query,
                "queries": self.queries, "low_confidence": self.low_confidence}


@dataclass
class Sim2RealRun:
    """What ``run_sim2real`` did: one CellResult per class and cell, the object checks, the files."""

    cells: list[CellResult]
    checks: dict[str, ObjectCheck]
    report: Path
    summary: Path
    panels: list[Path] = field(default_factory=list)

    def to_json(self) -> dict:
        """The table's rows and the object checks (JSON-safe)."""
        return {"rows": [cell.row() for cell in self.cells],
                "object_checks": {name: check.to_json() for name, check in self.checks.items()}}


# ----------------------------------------------------------------------------- the object check
def check_same_object(detector: Detector, views: PosedImages, class_name: str, count: int = CHECK_VIEWS,
                      query_focal: float | None = None) -> ObjectCheck:
    """Pose ``count`` of ``views`` (spread over the set) with ``detector`` and find the change of
    frame that takes the most of them onto their recorded poses (a similarity from every triple of
    posed views). The ObjectCheck counts the posed views, those that agree within ``AGREE_DEG``,
    and the median rotation error of all of them. The views' own frame and scale do not matter."""
    if len(views) < 3:
        raise DataError(f"{len(views)} training views are too few to check the object: at least 3 are needed.")
    picks = _spread(count, len(views))
    estimated, recorded = [], []
    for index in picks:
        query, _ = prepare_query(views.paths[index], detector.info, detector.config.pose.foreground_threshold, query_focal)
        estimated.append(detector.estimate_pose(query).c2w.double().cpu().numpy())
        recorded.append(views.c2w[index].double().numpy())
    estimated, recorded = np.stack(estimated), np.stack(recorded)
    best = None
    for triple in itertools.combinations(range(len(picks)), 3):
        try:
            T = camera_similarity(estimated[list(triple)], recorded[list(triple)])
        except ValueError:  # three cameras at one point: no frame from them
            continue
        errors = rotation_error_deg(torch.from_numpy(apply_similarity(T, estimated)[:, :3, :3]),
                                    torch.from_numpy(recorded[:, :3, :3])).numpy()  # fmt: skip
        agreeing = int((errors <= AGREE_DEG).sum())
        if best is None or (agreeing, -np.median(errors)) > (best[0], -best[1]):
            best = (agreeing, float(np.median(errors)))
    agreeing, rotation = best if best is not None else (0, 180.0)
    return ObjectCheck(class_name, len(picks), agreeing, round(rotation, 2))


# ----------------------------------------------------------------------------- the study
def run_sim2real(sim_root: str | Path, real_root: str | Path, classes: str | Sequence[str], out_dir: str | Path,
                 config: DetectorConfig, cells: Sequence[str] = CELLS, match_photographs: bool = True,
                 calibration_photos: int = 0, progress: bool = True) -> Sim2RealRun:
    """Fit, detect and evaluate ``cells`` for ``classes`` ('all': the classes both roots hold; 'A,B'
    or a list) and write the table, the object checks and the panels under ``out_dir``. In sim2real the
    photographs are compared on a crop about the object (``CompareConfig.object_crop``: the config's margin,
    else ``OBJECT_CROP``), their side is judged by structure (``PoseConfig.side_by_structure``) and their pose
    aligned on it last (``PoseConfig.structure_align``), as in real2real, whose test photographs are lit otherwise
    than the training ones.

    config: the detector's settings, the same for every cell; its ``dataset`` is replaced by the
    roots' folder names, so that each root's fields have their own checkpoints under
    ``config.ckpt_root`` (``_configs``). Everything resumes: finished fields, queries and checks are kept.
    match_photographs: in sim2real, bring each photograph's colours to the renders' for the pose search
        (``PoseConfig.match_query_colour``) and the references to the photograph's tones for the
        comparison (``CompareConfig.match_exposure`` with ``exposure_curve``); False for the ablation.
    calibration_photos: in sim2real, calibrate the comparison on this many of the real class's normal
        training photographs, posed as queries (``detector.calibrate_on_queries``), in place of the
        renders; 0 (default): the renders, as the other cells calibrate on their own training views.
    """
    sim_root, real_root, out_dir = Path(sim_root), Path(real_root), Path(out_dir)
    unknown = [cell for cell in cells if cell not in CELLS]
    if unknown or not cells:
        raise ConfigError(f"unknown cell(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CELLS)}.")
    if calibration_photos < 0:
        raise ConfigError(f"calibration_photos is {calibration_photos}: give a number of photographs, or 0 for the renders.")
    names = _class_names(sim_root, real_root, classes)
    sim_config, real_config = _configs(sim_root, real_root, config)
    # real2real: the test photographs are lit otherwise than the training ones (another session).
    real_config = replace(real_config, pose=replace(real_config.pose, structure_align=True))
    # sim2real: the photographs' lens (each root's own queries share its views' lens), light and colours;
    # compared on a crop about the object, which photographs taken from afar show small.
    across = replace(sim_config, query_focal=config.query_focal,
                     pose=replace(sim_config.pose, side_by_structure=True, structure_align=True),
                     compare=replace(sim_config.compare, object_crop=sim_config.compare.object_crop or OBJECT_CROP))
    if match_photographs:
        across = replace(across, pose=replace(across.pose, match_query_colour=True),
                         compare=replace(across.compare, match_exposure=True, exposure_curve=True))
    results, checks, reals = [], {}, {}
    for name in names:
        sim, real = open_mad_class(sim_root, name), open_mad_class(real_root, name)
        reals[name] = real
        for cell in cells:
            if cell == "sim2real":
                checks[name] = _detect_across(sim, real, out_dir, across, calibration_photos, progress)
            else:
                root, cell_config = (sim_root, sim_config) if cell == "sim2sim" else (real_root, real_config)
                run_class(root, name, out_dir / cell, cell_config, skip_finished=True, progress=progress)
            results.append(_evaluate(out_dir, cell, sim if cell == "sim2sim" else real))
    panels = [path for real in reals.values() if (path := _save_panels(out_dir, real, cells)) is not None]
    report = _write_report(out_dir, sim_root, real_root, results, checks, panels)
    run = Sim2RealRun(results, checks, report, out_dir / "sim2real.json", panels)
    atomic_write_json(run.summary, {"sim_root": str(sim_root), "real_root": str(real_root), "cells": list(cells), **run.to_json()})
    return run


def _class_names(sim_root: Path, real_root: Path, classes) -> list[str]:
    for label, root in (("--sim", sim_root), ("--real", real_root)):
        if not root.is_dir():
            raise ConfigError(f"{label} {root} is not a folder: give a MAD-format root (one folder per class).")
    if isinstance(classes, str) and classes.strip() == "all":
        real_names = set(resolve_classes(real_root, "all"))
        names = [name for name in resolve_classes(sim_root, "all") if name in real_names]
        if not names:
            raise ConfigError(f"no class is in both {sim_root} and {real_root}: the study needs the same class folders "
                              "(e.g. 01Gorilla) in the simulated and the photographed root.")
        return names
    names = resolve_classes(sim_root, classes)
    resolve_classes(real_root, names)  # the same classes must be photographed too
    return names


def _configs(sim_root: Path, real_root: Path, config: DetectorConfig) -> tuple[DetectorConfig, DetectorConfig]:
    """The config per root: the fields of each under its own dataset name, its queries through its own
    lens. Training poses are refined (``TrainConfig.refine_poses``) only for the photographs, whose poses
    come from a reconstruction; their fields then have a name of their own, as do fields that kept
    their views' backdrop (``DetectorConfig.replace_backdrop``)."""
    sim_name, real_name = sim_root.resolve().name, real_root.resolve().name
    if sim_name == real_name:
        sim_name, real_name = f"{sim_name}-sim", f"{real_name}-real"
    if not config.replace_backdrop:
        sim_name, real_name = f"{sim_name}-backdrop-kept", f"{real_name}-backdrop-kept"
    refine = config.train.refine_poses
    sim = replace(config, dataset=sim_name, query_focal=None, train=replace(config.train, refine_poses=False))
    return sim, replace(config, dataset=real_name + ("-refined" if refine else ""), query_focal=None)


def real_focal(real: MADClass, views: PosedImages) -> float | None:
    """The focal length, in pixels at the photographs' own width, of the camera that took the real
    training views (the test photographs' camera too): what ``sim2real`` scales them with."""
    if views.K is None or not real.train_images:
        return None
    return float(views.K[0, 0]) * image_width(real.train_images[0]) / views.width


def _detect_across(sim: MADClass, real: MADClass, out_dir: Path, config: DetectorConfig, calibration_photos: int,
                   progress: bool) -> ObjectCheck:
    """The sim2real cell of one class: the sim field checks and detects the real photographs, its
    comparison calibrated on ``calibration_photos`` real training photographs where that is above 0."""
    class_dir = out_dir / "sim2real" / real.name
    check_path = out_dir / "object_check" / f"{real.name}.json"
    keys = [item.name for item in real.test_items]
    check = _read_check(check_path)
    if check is not None and len(finished_keys(class_dir, keys)) == len(keys):
        return check
    views = real.load_train_views(size=config.image_size, progress=False, backdrop=config.replace_backdrop)
    if config.query_focal is None:
        config = replace(config, query_focal=real_focal(real, views))
    detector = Detector(config).fit(sim, progress=progress)
    if check is None:
        check = check_same_object(detector, views, real.name, CHECK_VIEWS, config.query_focal)
        atomic_write_json(check_path, check.to_json())
    if calibration_photos > 0:
        _calibrate_on_photos(detector, views, calibration_photos, class_dir / "calibration.json", progress)
    detector.detect_class(real, out_dir / "sim2real", progress=progress)
    save_run_config(class_dir, config)
    return check


def _calibrate_on_photos(detector: Detector, views: PosedImages, count: int, path: Path, progress: bool) -> None:
    """Calibrate ``detector`` on ``count`` of the photographs ``views`` (spread over the set), or take the
    calibration ``path`` holds from an earlier run of the same field and comparison (written there)."""
    picks = _spread(count, len(views))
    calibration = stored_calibration(path, detector.config.compare, model_fingerprint(detector.model))
    if calibration is not None and len(calibration.normal_scores) == len(picks):
        detector.comparator.calibration = calibration
        return
    calibrate_on_queries(detector, [views.paths[i] for i in picks], progress).save(path)


def _spread(count: int, total: int) -> list[int]:
    """Up to ``count`` distinct indices spread evenly over ``total`` items, first and last included."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int)).tolist()


def _read_check(path: Path) -> ObjectCheck | None:
    if not path.is_file():
        return None
    record = read_json(path, DataError, "Delete it: the next run checks the object again.")
    return ObjectCheck(record["class_name"], record["posed"], record["agreeing"], record["rotation_deg"])


# ----------------------------------------------------------------------------- evaluation
def _evaluate(out_dir: Path, cell: str, queries: MADClass) -> CellResult:
    class_dir = out_dir / cell / queries.name
    result = evaluate_prediction_dir(out_dir / cell, queries.root, queries.name, BENCHMARK_EVALUATION, examples=3)
    records = {item.name: read_json(class_dir / f"{item.name}.json", DataError, RERUN) for item in queries.test_items
               if (class_dir / f"{item.name}.json").is_file()}  # fmt: skip
    scored = {key: record for key, record in records.items() if not record.get("failed")}
    seconds = statistics.fmean(r["seconds"] for r in scored.values()) if scored else float("nan")
    low = sum(not r.get("pose_confident", True) for r in scored.values())
    out = CellResult(queries.name, cell, result, len(queries.test_items), low, round(seconds, 2))
    truth = true_query_poses(queries, in_object_frame=cell == "sim2real")
    pairs = [(torch.tensor(r["c2w"], dtype=torch.float32), truth[key]) for key, r in scored.items() if key in truth]
    if pairs:
        rotation, _ = pose_errors(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
        out.within_2 = round(float((rotation <= 2.0).float().mean()), 4)
        out.within_5 = round(float((rotation <= 5.0).float().mean()), 4)
        out.median_rotation_deg = round(float(rotation.median()), 3)
    return out


def true_query_poses(mad: MADClass, in_object_frame: bool) -> dict[str, torch.Tensor]:
    """The true test poses of a class made by ``omnipose synth`` ({} for others: MAD ships none):
    in the frame of its training poses, or (``in_object_frame``) in the object's own frame, which is
    the frame of the simulated class's poses."""
    folder = mad.root / GROUND_TRUTH_POSES
    if not folder.is_dir():
        return {}
    if in_object_frame:
        try:
            return load_true_poses(mad.root, mad.name)["test"]
        except DataError:  # a sim-style class: its written poses are the object's frame
            pass
    try:
        return load_ground_truth_poses(mad.root, mad.name)
    except DataError:
        return {}


# ----------------------------------------------------------------------------- report
def _save_panels(out_dir: Path, real: MADClass, cells: Sequence[str], count: int = 3) -> Path | None:
    """Up to ``count`` defective photographs, each with its truth and each cell's reference and map on it."""
    across = [cell for cell in ("real2real", "sim2real") if cell in cells]
    items = [item for item in real.test_items if item.is_anomalous and item.mask_path is not None
             and all((out_dir / cell / real.name / f"{item.name}.npy").is_file() for cell in across)]  # fmt: skip
    if not across or not items:
        return None
    rows = []
    for item in items[:: max(1, len(items) // count)][:count]:
        photo = read_image_rgb(item.image_path)
        row = [("photograph", photo), ("ground truth", read_mask(item.mask_path, size=photo.shape[1::-1]))]
        for cell in across:
            folder = out_dir / cell / real.name
            reference = folder / f"{item.name}_reference.png"
            row.append((f"{CELL_TITLES[cell]}: reference", read_image_rgb(reference) if reference.is_file() else None))
            row.append((f"{CELL_TITLES[cell]}: map", read_anomaly_map(folder / f"{item.name}.npy")))
        rows.append((item.name, row))
    return save_side_by_side(out_dir / "panels" / f"{real.name}.png", rows)


def _cell(value, percent: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.1f}"


def sim2real_table(cells: Sequence[CellResult]) -> list[str]:
    """The study's table as markdown lines: one row per class and cell, then each cell's mean."""
    lines = ["| class | cell | image AUROC | pixel AUROC | AUPRO | pose within 2 deg | within 5 deg | s / query | low-confidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [_table_line(row["class"], row) for row in (c.row() for c in cells)]
    for cell in dict.fromkeys(c.cell for c in cells) if len({c.class_name for c in cells}) > 1 else ():
        rows = [c.row() for c in cells if c.cell == cell]
        means = {name: _mean([r[name] for r in rows]) for name in (*METRICS, "within_2", "within_5", "seconds_per_query")}
        totals = {name: sum(r[name] for r in rows) for name in ("low_confidence", "queries")}
        lines.append(_table_line("**mean**", {"cell": cell, **means, **totals}))
    return lines


def _table_line(label: str, row: dict) -> str:
    return (f"| {label} | {CELL_TITLES[row['cell']]} | {_cell(row['AUROC_sp'])} | {_cell(row['AUROC_px'])} | "
            f"{_cell(row['AUPRO_px'])} | {_cell(row['within_2'])} | {_cell(row['within_5'])} | "
            f"{_cell(row['seconds_per_query'], False)} | {row['low_confidence']} of {row['queries']} |")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else None


def _write_report(out_dir: Path, sim_root: Path, real_root: Path, cells: list[CellResult], checks: dict[str, ObjectCheck],
                  panels: list[Path]) -> Path:
    lines = ["# omnipose sim-to-real report", "", f"Simulated root: `{sim_root}`; photographed root: `{real_root}`.", "",
             "Metrics in %, PAD protocol (maps at their native size). Pose columns need true test poses "
             "(classes made by `omnipose synth`); '-' where there are none.", "", *sim2real_table(cells), ""]  # fmt: skip
    if checks:
        lines += ["## Does the sim field see the real object?", ""]
        lines += [f"- {check.message()}" for check in checks.values()]
        lines.append("")
    if panels:
        lines += ["## Panels", ""]
        lines += [f"![{path.stem}]({path.relative_to(out_dir).as_posix()})" for path in panels]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path

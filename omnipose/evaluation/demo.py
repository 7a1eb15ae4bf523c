"""``omnipose demo``: the whole method on built-in data, within minutes on 2 CPU cores.

Makes a small MAD-format benchmark with ``omnipose synth``, fits a detector per class (radiance
field, pose estimator, normal-data calibration), detects every test image, evaluates with the
benchmark metrics and writes a report: ``<out>/report.md`` with the table, ROC/PR curves and
panels (query | reference | ground truth | heat map | predicted mask).

Everything is resumable: rerunning the demo reuses the data, the checkpoints and every finished
prediction. A class whose data was made with other settings (another size, say) is made again,
and what came from the old data is dropped: its predictions, and its checkpoint when the
training views changed.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from omnipose.core.config import Config, non_negative, optional_positive, positive, require
from omnipose.data.synth import SYNTH_CLASSES, SynthConfig, ensure_class
from omnipose.detector import DetectorConfig
from omnipose.evaluation.config import ADER_METRICS, EvaluationConfig
from omnipose.evaluation.report import write_demo_report
from omnipose.evaluation.results import ClassResult
from omnipose.evaluation.runner import run_classes

# Calibrated maps are already smoothed and standardised: evaluate them as they are, at full size.
DEMO_EVALUATION = EvaluationConfig(protocol="pad", image_size="native", gaussian_sigma=0.0, metrics=ADER_METRICS)


@dataclass
class DemoConfig(Config):
    """What the demo makes, trains and detects; the defaults take about ten minutes on 2 CPU cores."""

    classes: tuple[str, ...] = ("01Robot", "03Duck")
    """Built-in classes to make and detect (names from ``SYNTH_CLASSES``)."""
    size: int = 200
    """Image width and height in pixels, of the data and of the detector's working images."""
    train_views: int = 80
    """Normal training views per class (what the radiance field is fitted on)."""
    test_views_per_type: int = 3
    """Test images per type (good, Burrs, Missing, Stains)."""
    steps: int = 1200
    """Training steps per class: about 2 minutes on 2 free cores. A step budget gives the same
    field on a busy machine, only later."""
    minutes: float | None = None
    """Also stop training after this many minutes (None: the steps alone decide)."""
    seed: int = 0
    """Seed of the data generator and of the training."""
    device: str | None = None
    """'cpu', 'cuda', ... (None: CUDA when present)."""

    def check(self) -> None:
        require(self, "classes", len(self.classes) > 0 and all(c in SYNTH_CLASSES for c in self.classes),
                f"give one or more of {', '.join(SYNTH_CLASSES)}")
        positive(self, "size", "train_views", "steps")
        non_negative(self, "test_views_per_type", "seed")
        optional_positive(self, "minutes")

    def synth_config(self) -> SynthConfig:
        """The generator's settings for the demo's data."""
        return SynthConfig(size=self.size, train_views=self.train_views, test_views_per_type=self.test_views_per_type, seed=self.seed)

    def detector_config(self, out_dir: str | Path) -> DetectorConfig:
        """The detector's config: checkpoints under ``<out_dir>/ckpts/demo/<class>/``."""
        config = DetectorConfig(image_size=self.size, dataset="demo", ckpt_root=str(Path(out_dir) / "ckpts"), device=self.device)
        config.train = replace(config.train, steps=self.steps, minutes=self.minutes, seed=self.seed)
        return config


def prepare_demo_data(out_dir: str | Path, demo: DemoConfig) -> Path:
    """Make (or reuse) the demo's data under ``<out_dir>/data``; returns that root.

    What came from data that changed would be silently reused, so it is dropped: the class's
    predictions when its test images changed, its checkpoint when its training views changed.
    """
    out_dir = Path(out_dir)
    data_root = out_dir / "data"
    config = demo.detector_config(out_dir)
    ckpt_root = Path(config.ckpt_root) / config.dataset
    for class_name in demo.classes:
        changed = ensure_class(data_root, class_name, demo.synth_config())
        if "test" in changed:
            shutil.rmtree(out_dir / "predictions" / class_name, ignore_errors=True)
        if "train" in changed:
            shutil.rmtree(ckpt_root / class_name, ignore_errors=True)
    return data_root


def run_pipeline(data_root: Path, class_names: list[str], out_dir: Path, config: DetectorConfig,
                 evaluation: EvaluationConfig = DEMO_EVALUATION, progress: bool = True) -> tuple[list[ClassResult], dict]:
    """Fit, detect and evaluate each class of a MAD-format root, predictions under
    ``<out_dir>/predictions``. Returns (class results, {class: timings})."""
    runs = run_classes(data_root, class_names, Path(out_dir) / "predictions", config, evaluation, examples=3, progress=progress)
    return [run.result for run in runs], {run.class_name: run.timings() for run in runs}


def run_demo_pipeline(out_dir: str | Path, demo: DemoConfig | None = None, progress: bool = True) -> tuple[list[ClassResult], Path]:
    """The whole demo: data, fit, detect, evaluate, ``<out_dir>/report.md``. Returns (class results, report path)."""
    demo = demo or DemoConfig()
    out_dir = Path(out_dir)
    data_root = prepare_demo_data(out_dir, demo)
    results, timings = run_pipeline(data_root, list(demo.classes), out_dir, demo.detector_config(out_dir), progress=progress)
    return results, write_demo_report(out_dir, results, timings, DEMO_EVALUATION)

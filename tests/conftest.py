"""Shared fixtures: the real data in ../shared (skipped cleanly where absent)."""
import os
from pathlib import Path

# Under pytest-xdist each worker gets one core; OpenMP threads that spin while they wait
# would take it from the other worker. Read when torch starts its pool, hence before the import.
_XDIST_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if _XDIST_WORKER:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEGO = SHARED / "data" / "nerf_synthetic" / "lego"

# Two cores: keep torch from oversubscribing them, one thread per xdist worker.
torch.set_num_threads(1 if _XDIST_WORKER else min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def lego_dir() -> Path:
    if not (LEGO / "transforms_train.json").is_file():
        pytest.skip(f"real Blender data not found at {LEGO}")
    return LEGO


@pytest.fixture(scope="session")
def lego_200(lego_dir):
    """The 100 lego training views at 200x200 (PosedImages)."""
    from omnipose.data import load_transforms

    return load_transforms(lego_dir / "transforms_train.json", size=200, progress=False)


@pytest.fixture
def one_thread():
    """One torch thread, as the pose estimator runs: on shared cores torch's pool costs more than it gains."""
    from omnipose.core.device import one_torch_thread

    with one_torch_thread():
        yield


FITTED_CLASS = "01Robot"
FITTED_SIZE = 160


@pytest.fixture(scope="session")
def fitted_class(tmp_path_factory):
    """One small generated class, fitted and detected once per session (about two minutes on 2 cores):
    (detector, MADClass, prediction folder ``<root>/output/<class>``). Tests must not change its data."""
    from dataclasses import replace

    from omnipose.data import open_mad_class
    from omnipose.data.synth import SynthConfig, generate_class
    from omnipose.detector import Detector, DetectorConfig

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    # Defects of 0.5-2 % of the image: what a 600-step field at 160 px can be asked to find (the
    # benchmark, scripts/bench_detect.py, measures the smaller ones too).
    generate_class(data, FITTED_CLASS, SynthConfig(size=FITTED_SIZE, train_views=60, test_views_per_type=3, seed=3,
                                                   progress=False, defect_area=(0.005, 0.02)))
    # Where the original commands look (dataset LEGO-3D), so that they can reuse this fit.
    # Views held out of the field, for the threshold, so that the one end-to-end fit covers that path too.
    config = DetectorConfig(image_size=FITTED_SIZE, dataset="LEGO-3D", ckpt_root=str(root / "ckpts"), calibration_views=12,
                            held_out_views=8)
    config.train = replace(config.train, steps=600, minutes=None)  # a step budget: the same field on a busy machine
    mad = open_mad_class(data, FITTED_CLASS)
    detector = Detector(config).fit(mad, progress=False)
    out = detector.detect_class(mad, root / "output", progress=False)
    return detector, mad, out

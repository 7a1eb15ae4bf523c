"""Shared fixtures: the real data in ../shared (skipped cleanly where absent)."""
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEGO = SHARED / "data" / "nerf_synthetic" / "lego"

# Two cores: keep torch from oversubscribing them when pytest runs.
torch.set_num_threads(min(2, torch.get_num_threads()))


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

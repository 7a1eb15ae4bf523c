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

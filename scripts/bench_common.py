"""What the benchmark scripts share: what they record beside their figures, and onboarding as a user
would run it (run them as ``python scripts/bench_*.py``)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The short hash of the checkout's HEAD, for docs/RESULTS.md rows; None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def onboard_removing_mirrored(photos: Path, out: Path, config, matcher=None, retries: int = 1) -> tuple[dict, list[str]]:
    """``omnipose onboard`` of ``photos`` into ``out`` doing what its mirror check asks a user to do:
    remove the photos it names (from ``photos``) and run again, at most ``retries`` times. Returns the
    report and the photos removed."""
    from omnipose.data import MirroredPhotosError, onboard

    removed: list[str] = []
    for attempt in range(retries + 1):
        try:
            return onboard(photos, out, config, matcher=matcher), removed
        except MirroredPhotosError as error:
            if attempt == retries:
                raise
            print(f"onboard: {error}\nremoving {', '.join(error.photos)} and running again", flush=True)
            removed += error.photos
            for name in error.photos:
                (photos / name).unlink()
    raise AssertionError("unreachable")

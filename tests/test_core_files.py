"""core.files: atomic writes leave finished files as any new file, and nothing else."""
import os

from omnipose.core.files import atomic_write_text


def test_finished_files_honour_the_umask(tmp_path):
    """Atomic writes go through a private temporary file; the finished file must not stay private."""
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary file left

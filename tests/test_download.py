"""`omnipose download`: offline message, archive checks, extraction. No test touches the network."""
import argparse
import dataclasses
import zipfile
from pathlib import Path

import gdown
import numpy as np
import pytest
import requests

from omnipose.cli.download import add_download_arguments, run_download
from omnipose.data import SOURCES, ArchiveError, check_archive, download, extract_archive, list_classes, open_mad_class


def _args(*argv: str) -> argparse.Namespace:
    return add_download_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def _mad_zip(path: Path, wrapper: str = "MAD-Sim/", classes=("01Gorilla", "02Unicorn"), junk: bool = True) -> Path:
    """A small zip in the MAD-Sim layout; stored uncompressed so byte surgery hits member data."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in classes:
            base = f"{wrapper}{name}/"
            archive.writestr(base + "transforms.json", '{"camera_angle_x": 0.69, "frames": []}')
            archive.writestr(base + "train/good/0.png", rng.bytes(3000))
            archive.writestr(base + "test/Burrs/0.png", rng.bytes(3000))
            archive.writestr(base + "ground_truth/Burrs/0_mask.png", rng.bytes(500))
        if junk:
            archive.writestr("__MACOSX/._01Gorilla", b"resource fork")
    return path


def test_offline_prints_the_manual_route_and_fails(tmp_path, monkeypatch, capsys):
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise requests.exceptions.ConnectionError("Failed to resolve 'drive.google.com'")

    monkeypatch.setattr(gdown, "download", offline)
    code = run_download(_args("mad-sim", "--to", str(tmp_path / "MAD")))
    assert code != 0
    err = capsys.readouterr().err
    source = SOURCES["mad-sim"]
    assert source.drive_url() in err
    assert str(tmp_path / "MAD" / "MAD-Sim.zip") in err
    assert "Expected layout" in err and "ground_truth/{Burrs,Missing,Stains}/0_mask.png" in err
    assert "ConnectionError" in err
    assert calls and all(c.get("resume") is True for c in calls)  # resumable downloads
    assert len(calls) == len(source.drive_ids)  # every mirror was tried


def test_mad_real_id_is_published():
    assert SOURCES["mad-real"].drive_ids and SOURCES["mad-real"].approx_bytes > SOURCES["mad-sim"].approx_bytes


def test_check_rejects_truncated_and_corrupt_archives(tmp_path):
    good = _mad_zip(tmp_path / "good.zip")
    assert check_archive(good) == []
    size = good.stat().st_size
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: size // 2])
    with pytest.raises(ArchiveError, match="not a complete zip"):
        check_archive(truncated)
    with pytest.raises(ArchiveError, match="truncated"):
        check_archive(good, approx_bytes=4 * size)
    assert check_archive(good, approx_bytes=size // 2)  # larger than published: a warning, not an error
    corrupt = bytearray(good.read_bytes())
    offset = corrupt.find(b'"camera_angle_x"')
    corrupt[offset + 2] ^= 0xFF
    (tmp_path / "corrupt.zip").write_bytes(bytes(corrupt))
    with pytest.raises(ArchiveError, match="CRC"):
        check_archive(tmp_path / "corrupt.zip")


def test_extraction_lands_in_the_mad_layout_and_keeps_existing_data(tmp_path):
    archive = _mad_zip(tmp_path / "MAD-Sim.zip")
    to = tmp_path / "data"
    (to / "02Unicorn").mkdir(parents=True)
    (to / "02Unicorn" / "mine.txt").write_text("do not touch")
    report = extract_archive(archive, to)
    assert report.added == ["01Gorilla"] and report.kept == ["02Unicorn"]
    assert (to / "01Gorilla" / "train" / "good" / "0.png").is_file()
    assert (to / "01Gorilla" / "ground_truth" / "Burrs" / "0_mask.png").is_file()
    assert sorted(p.name for p in (to / "02Unicorn").iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in to.iterdir()) == ["01Gorilla", "02Unicorn"]  # no wrapper, junk or staging left
    assert list_classes(to) == ["01Gorilla"]  # 02Unicorn stayed the user's folder
    assert len(open_mad_class(to, "01Gorilla").test_items) == 1


def test_a_single_class_archive_is_not_unwrapped(tmp_path):
    archive = _mad_zip(tmp_path / "one.zip", wrapper="", classes=("05Whale",), junk=False)
    report = extract_archive(archive, tmp_path / "to")
    assert report.added == ["05Whale"] and (tmp_path / "to" / "05Whale" / "transforms.json").is_file()


def test_extraction_refuses_paths_that_escape(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../evil.txt", "x")
    with pytest.raises(ArchiveError, match="outside"):
        extract_archive(archive, tmp_path / "to")
    assert not (tmp_path / "evil.txt").exists()


def test_download_flow_checks_then_extracts_and_reuses_a_complete_zip(tmp_path, monkeypatch, capsys):
    made = _mad_zip(tmp_path / "made.zip")
    monkeypatch.setitem(SOURCES, "mad-sim", dataclasses.replace(SOURCES["mad-sim"], approx_bytes=made.stat().st_size))

    def fake_download(url=None, output=None, quiet=False, resume=False, **kwargs):
        assert resume and "drive.google.com" in url
        Path(output).write_bytes(made.read_bytes())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    to = tmp_path / "MAD"
    assert run_download(_args("mad-sim", "--to", str(to), "--quiet")) == 0
    assert list_classes(to) == ["01Gorilla", "02Unicorn"]

    def no_network(*args, **kwargs):
        raise AssertionError("a complete zip is already there: no download expected")

    monkeypatch.setattr(gdown, "download", no_network)
    assert run_download(_args("mad-sim", "--to", str(to))) == 0
    out = capsys.readouterr().out
    assert "using the complete archive" in out and "kept as they were" in out

    # --zip with a damaged file: a clear error, exit code 2, nothing deleted.
    broken = tmp_path / "broken.zip"
    broken.write_bytes(made.read_bytes()[:-200])
    assert run_download(_args("mad-sim", "--to", str(tmp_path / "other"), "--zip", str(broken))) == 2
    assert broken.is_file() and "not a complete zip" in capsys.readouterr().err


def test_module_uses_gdown_at_call_time():
    # The offline test relies on monkeypatching gdown.download; make sure nothing bound it at import.
    assert not hasattr(download, "gdown")


def test_the_old_module_path_serves_the_command_line_names():
    import omnipose.download as old

    assert old.add_download_arguments is add_download_arguments and old.run_download is run_download

"""Fetch MAD-Sim / MAD-Real from Google Drive (gdown), check, and extract (``omnipose download``).

The Drive file ids are those the PAD README publishes (github.com/EricLee0224/PAD): MAD-Sim
"with 20 classes (970MB)" and MAD-Real "with 10 classes (2.19GB)". An earlier MAD-Sim id of that
README (972M) is kept as a fallback mirror.

What ``download_dataset`` does, in order:

1. use ``<to>/<Name>.zip`` (or ``--zip PATH``) if it is already there and passes the checks;
2. otherwise download it with ``gdown`` (``resume=True``: an interrupted download continues from
   its ``.part`` file when the command is run again);
3. check it: its size against the published one, then ``zipfile`` CRCs of every member;
4. extract it into ``<to>`` through a staging folder, dropping a wrapper folder such as
   ``MAD-Sim/``; class folders that already exist in ``<to>`` are left untouched.

Without network access it raises DownloadError whose message is the manual route (URL, where to
put the zip, the expected layout).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from omnipose.core.errors import OmniposeError


class DownloadError(OmniposeError):
    """The dataset could not be fetched (network, Drive quota); the message gives the manual route."""


class ArchiveError(OmniposeError):
    """A dataset archive is truncated, corrupt, or unsafe to extract."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a public dataset lives and what its archive should look like."""

    key: str
    title: str
    drive_ids: tuple[str, ...]  # newest first; later ones are fallbacks
    approx_bytes: int
    classes: int
    example_class: str

    @property
    def zip_name(self) -> str:
        return f"{self.title}.zip"

    def drive_url(self, drive_id: str | None = None) -> str:
        return f"https://drive.google.com/file/d/{drive_id or self.drive_ids[0]}/view?usp=sharing"


SOURCES = {
    "mad-sim": DatasetSource(
        "mad-sim", "MAD-Sim", ("1XlW5v_PCXMH49RSKICkskKjd2A5YDMQq", "1sa7tl84K0lNhJoa8WCH3yiVEhkWP5sLp"),
        970_000_000, 20, "01Gorilla",
    ),
    "mad-real": DatasetSource(
        "mad-real", "MAD-Real", ("146sKbkUUFW7xJTG2LGm_OgXjMX3fDNxN",), 2_190_000_000, 10, "01Gorilla"
    ),
}
SIZE_TOLERANCE = 0.25  # the published sizes are rounded, and a re-upload may shift them a little
_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")


# ----------------------------------------------------------------------------- checks
def check_archive(path: str | Path, approx_bytes: int | None = None, tolerance: float = SIZE_TOLERANCE) -> list[str]:
    """Check a downloaded zip: plausible size, readable directory, and every member's CRC.

    Returns warnings (a larger file than published: possibly a newer release). Raises ArchiveError
    for a missing, too small (truncated, or a Drive error page), or corrupt archive.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"archive not found: {path}.")
    size = path.stat().st_size
    warnings = []
    if approx_bytes:
        if size < (1 - tolerance) * approx_bytes:
            raise ArchiveError(
                f"{path} is {size / 1e6:.1f} MB but the dataset is about {approx_bytes / 1e6:.0f} MB: the download is "
                "truncated or is an error page. Delete it and run the command again (or download it by hand)."
            )
        if size > (1 + tolerance) * approx_bytes:
            warnings.append(
                f"{path.name} is {size / 1e6:.0f} MB, more than the ~{approx_bytes / 1e6:.0f} MB published;"
                " a newer release?"
            )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ArchiveError(
            f"{path} is not a complete zip archive ({error}). Delete it and download it again."
        ) from error
    if bad is not None:
        raise ArchiveError(f"{path} is corrupt: member {bad} fails its CRC check. Delete it and download it again.")
    return warnings


def _member_path(name: str) -> PurePosixPath | None:
    """The relative path of a zip member, None for junk; ArchiveError for paths escaping the target."""
    if any(part in name for part in _JUNK):
        return None
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ArchiveError(f"refusing to extract '{name}': it points outside the target folder.")
    return path if path.parts else None


def _wrapper_depth(paths: list[PurePosixPath], is_dir: list[bool]) -> int:
    """How many leading folders every member shares that are wrappers (like 'MAD-Sim/'), not classes."""
    class_markers = {"train", "test", "ground_truth", "transforms.json"}
    depth = 0
    while True:
        if any(len(p.parts) <= depth + 1 and not d for p, d in zip(paths, is_dir)):
            return depth  # a file sits at this level: nothing to strip
        if len({p.parts[depth] for p in paths if len(p.parts) > depth}) != 1:
            return depth
        children = {p.parts[depth + 1] for p in paths if len(p.parts) > depth + 1}
        if not children or children & class_markers:
            return depth  # the shared folder is itself a class
        depth += 1


# ----------------------------------------------------------------------------- extraction
@dataclass
class ExtractionReport:
    """Top-level entries of an archive that were added to the target, and those kept as they were."""

    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def extract_archive(archive_path: str | Path, to: str | Path) -> ExtractionReport:
    """Extract a dataset zip into ``to`` without touching what is already there.

    A wrapper folder shared by every member (``MAD-Sim/01Gorilla/...``) is dropped so that the class
    folders land directly in ``to``. Members go to a staging folder inside ``to`` first; each top-level
    entry is then moved into place only if ``to`` has no entry of that name (reported as kept).
    """
    archive_path, to = Path(archive_path), Path(to)
    to.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport()
    with zipfile.ZipFile(archive_path) as archive:
        members = [(info, _member_path(info.filename)) for info in archive.infolist()]
        members = [(info, path) for info, path in members if path is not None]
        if not members:
            raise ArchiveError(f"{archive_path} holds no files.")
        depth = _wrapper_depth([p for _, p in members], [i.is_dir() for i, _ in members])
        staging = Path(tempfile.mkdtemp(prefix=".omnipose-extract-", dir=to))
        try:
            for info, path in members:
                relative = PurePosixPath(*path.parts[depth:]) if len(path.parts) > depth else None
                if relative is None:
                    continue
                target = staging.joinpath(*relative.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, length=1 << 20)
            for entry in sorted(staging.iterdir()):
                destination = to / entry.name
                if destination.exists():
                    report.kept.append(entry.name)
                else:
                    os.replace(entry, destination)
                    report.added.append(entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


# ----------------------------------------------------------------------------- download
def manual_route(source: DatasetSource, to: Path, reason: str = "") -> str:
    """Instructions for fetching the archive by hand, with the layout the readers expect."""
    example = source.example_class
    lines = [
        f"Could not download {source.title}" + (f" ({reason})." if reason else "."),
        "Manual route:",
        f"  1. Open {source.drive_url()} in a browser and download the zip"
        f" (about {source.approx_bytes / 1e6:,.0f} MB).",
        *[f"     (older link: {source.drive_url(drive_id)})" for drive_id in source.drive_ids[1:]],
        f"  2. Put it at {to / source.zip_name}  (or anywhere, and pass --zip PATH).",
        f"  3. Run again: omnipose download {source.key} --to {to}   (it checks and extracts the zip; no download).",
        "Expected layout after extraction:",
        f"  {to}/",
        f"    {example}/                      ({source.classes} class folders in all)",
        "      transforms.json                 training poses (Blender/NeRF format)",
        "      train/good/0.png, 1.png, ...",
        "      test/{good,Burrs,Missing,Stains}/0.png, ...",
        "      ground_truth/{Burrs,Missing,Stains}/0_mask.png, ...",
        f"No network at all? `omnipose synth --out {to.parent / 'synth'}` makes a MAD-format benchmark locally.",
    ]
    return "\n".join(lines)


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import requests

        errors.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - gdown depends on requests
        pass
    try:
        import gdown.exceptions

        errors.append(gdown.exceptions.DownloadError)
        errors.append(gdown.exceptions.FileURLRetrievalError)
    except (ImportError, AttributeError):  # pragma: no cover - older gdown
        pass
    return tuple(errors)


def fetch_archive(source: DatasetSource, archive: Path, quiet: bool = False) -> Path:
    """Download the archive with gdown, resuming a partial download; DownloadError with the manual route."""
    try:
        import gdown
    except ImportError as error:
        reason = "gdown is not installed: pip install gdown"
        raise DownloadError(manual_route(source, archive.parent, reason)) from error
    archive.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for drive_id in source.drive_ids:
        try:
            result = gdown.download(
                url=f"https://drive.google.com/uc?id={drive_id}", output=str(archive), quiet=quiet, resume=True
            )
        except _network_errors() as error:
            detail = str(error).splitlines()[0] if str(error) else "no detail"
            failures.append(f"{type(error).__name__}: {detail[:160]}")
            continue
        if result and archive.is_file():
            return archive
        failures.append(f"Drive file {drive_id} could not be retrieved")
    raise DownloadError(manual_route(source, archive.parent, "; ".join(dict.fromkeys(failures))))


def download_dataset(
    key: str, to: str | Path, zip_path: str | Path | None = None, remove_zip: bool = False, quiet: bool = False
) -> ExtractionReport:
    """Fetch (unless already here), check and extract MAD-Sim or MAD-Real into ``to``."""
    if key not in SOURCES:
        raise OmniposeError(f"unknown dataset '{key}'; choose from {', '.join(SOURCES)}.")
    source = SOURCES[key]
    to = Path(to)
    archive = Path(zip_path) if zip_path else to / source.zip_name
    say = (lambda message: None) if quiet else (lambda message: print(message, flush=True))
    ready = False
    if archive.is_file():
        try:
            for warning in check_archive(archive, source.approx_bytes):
                say(f"warning: {warning}")
            ready = True
            say(f"using the complete archive already at {archive}")
        except ArchiveError as error:
            if zip_path:
                raise
            say(f"the archive at {archive} is incomplete ({error}); downloading again")
            archive.unlink()
    elif zip_path:
        raise ArchiveError(f"--zip {archive} does not exist; give the path of the downloaded {source.zip_name}.")
    if not ready:
        say(f"downloading {source.title} (~{source.approx_bytes / 1e6:,.0f} MB) to {archive}")
        fetch_archive(source, archive, quiet=quiet)
        for warning in check_archive(archive, source.approx_bytes):
            say(f"warning: {warning}")
    say(f"extracting {archive.name} into {to}")
    report = extract_archive(archive, to)
    if report.kept:
        say(f"kept as they were (already in {to}): {', '.join(report.kept)}")
    say(f"added: {', '.join(report.added) if report.added else 'nothing new'}")
    if remove_zip and not zip_path:
        archive.unlink()
    return report

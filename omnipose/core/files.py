"""Atomic file writes and versioned caches.

Every file that matters (checkpoints, predictions, reports) is written through the
``atomic_write_*`` helpers, so an interrupted run never leaves a half-written file behind:
the data goes to a temporary file in the same folder first and is then renamed over the target.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Use it for writers that want a file name (``torch.save``, ``np.save``, ``fig.savefig``):
    ``with atomic_path(p) as tmp: torch.save(obj, tmp)``. The temporary file keeps the target's
    suffix so that writers which infer the format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_temporary_file(path: Path) -> Path:
    """A new empty file beside ``path``, created with mode 0666 so that the operating system applies
    the user's umask, as to any new file (mkstemp's private 0600 would follow the file through the
    rename and leave checkpoints and predictions unreadable to the rest of a team).

    Its name carries this host and process (``remove_stale_temporaries`` tells a killed writer's
    leftovers from a live writer's file by them)."""
    while True:
        tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(3)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{6}\.tmp(\.[^.]*)?$")
_OLD_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]*)?$")  # names written before the host and process were in them


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False, max_age_hours: float = 6.0) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in
    ``folder``; returns them.

    A temporary file is stale when the process that made it on this host is gone, or, for one made
    on another host (a shared folder) or by an older version, when nothing wrote to it for
    ``max_age_hours``: a live writer's file is never touched, so concurrent runs stay safe.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for path in folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*"):
        match = _TEMPORARY.match(path.name)
        if match is None and not _OLD_TEMPORARY.match(path.name):
            continue
        try:
            old = now - path.stat().st_mtime > 3600.0 * max_age_hours
            if old or (match is not None and match["host"] == _HOST and not _process_alive(int(match["pid"]))):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer finished or another cleaner was first
            continue
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def save_cache(path: str | os.PathLike, payload: dict[str, Any], version: int, key: str) -> None:
    """torch.save ``payload`` atomically, stamped with the cache ``version`` and what it was made for (``key``)."""
    import torch  # here, so that reading images and JSON does not pay for importing torch

    with atomic_path(path) as tmp:
        torch.save({**payload, "version": version, "key": key}, tmp)


def load_cache(path: str | os.PathLike, version: int, key: str) -> dict[str, Any] | None:
    """The payload ``save_cache`` wrote at ``path`` if it has this version and key, else None
    (missing, stale or unreadable: a damaged cache is rebuilt, never trusted)."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("version") != version or payload.get("key") != key:
        return None
    return payload


def read_json(path: str | os.PathLike, error: type[Exception], fix: str, missing: str | None = None) -> Any:
    """The JSON value in ``path``. A missing file raises ``error`` with ``missing`` (default: the
    path and ``fix``); a file that is not JSON raises it naming the path, the parser's complaint
    and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{path} not found. {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise error(f"{path} is not valid JSON ({failure}). {fix}") from failure


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")

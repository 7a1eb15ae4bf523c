"""Atomic file writes and versioned caches.

Every file that matters (checkpoints, predictions, reports) is written through the
``atomic_write_*`` helpers, so an interrupted run never leaves a half-written file behind:
the data goes to a temporary file in the same folder first and is then renamed over the target.
"""
from __future__ import annotations

import json
import os
import tempfile
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
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); a finished file gets the mode any new file gets
        # under the user's umask, so that checkpoints and predictions stay readable to a team.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

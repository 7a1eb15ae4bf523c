"""``omnipose download``: fetch MAD-Sim / MAD-Real, check the archive and extract it.

Without network access it prints the manual route (URL, where to put the zip, the expected
layout) and exits non-zero.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnipose.cli.app import main as omnipose_main
from omnipose.core.errors import OmniposeError
from omnipose.data import SOURCES, DownloadError, download_dataset


def add_download_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``omnipose download``."""
    parser.add_argument("dataset", choices=sorted(SOURCES), help="which dataset")
    parser.add_argument("--to", required=True, type=Path, help="folder the class folders go into")
    parser.add_argument("--zip", type=Path, default=None, help="use this downloaded zip instead of downloading")
    parser.add_argument("--remove-zip", action="store_true", help="delete the downloaded zip after extraction")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def run_download(args: argparse.Namespace) -> int:
    """``omnipose download``: 0 on success, 1 when the download failed (manual route printed), 2 on bad input."""
    try:
        download_dataset(args.dataset, args.to, zip_path=args.zip, remove_zip=args.remove_zip, quiet=args.quiet)
    except DownloadError as error:
        print(f"omnipose download: {error}", file=sys.stderr)
        return 1
    except OmniposeError as error:
        print(f"omnipose download: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m omnipose.cli.download``: the same as ``omnipose download``."""
    return omnipose_main(["download", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

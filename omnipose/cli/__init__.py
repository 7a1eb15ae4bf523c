"""The ``omnipose`` command: a thin layer over the Python API, one module per command (``app`` lists them)."""
from omnipose._legacy import legacy_getattr
from omnipose.cli.app import build_parser, main, run_guarded

__getattr__ = legacy_getattr("omnipose.cli")

__all__ = ["build_parser", "main", "run_guarded"]

"""The errors omnipose raises on bad input: each message names the problem and the fix."""
from __future__ import annotations


class OmniposeError(Exception):
    """An error on the user's input whose message names the problem and the fix."""


class DataError(OmniposeError):
    """A dataset is missing, incomplete or malformed."""


class CheckpointError(OmniposeError):
    """A checkpoint is missing, corrupt, or of another kind than expected."""


class ConfigError(OmniposeError, ValueError):
    """A configuration value is out of range or of the wrong kind."""

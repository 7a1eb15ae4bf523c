"""What every other part of omnipose builds on: errors, atomic files, configs, geometry, images, devices."""
from omnipose.core.config import Config, field_docs
from omnipose.core.errors import CheckpointError, ConfigError, DataError, OmniposeError

__all__ = ["CheckpointError", "Config", "ConfigError", "DataError", "OmniposeError", "field_docs"]

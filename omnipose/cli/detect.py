"""``omnipose detect`` (to be moved here from omnipose.detector.detector)."""
from omnipose.detector.detector import add_detect_arguments, run_detect  # noqa: F401

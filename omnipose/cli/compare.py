"""``omnipose compare`` (to be moved here from omnipose.compare.comparator)."""
from omnipose.compare.comparator import add_calibrate_arguments, add_compare_arguments, run_calibrate, run_compare  # noqa: F401

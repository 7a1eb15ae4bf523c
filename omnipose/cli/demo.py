"""``omnipose demo`` (to be moved here from omnipose.evaluation.demo)."""
from omnipose.evaluation.demo import add_demo_arguments, run_demo  # noqa: F401

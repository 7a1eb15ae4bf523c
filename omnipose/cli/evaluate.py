"""``omnipose evaluate`` (to be moved here from omnipose.evaluation.evaluate)."""
from omnipose.evaluation.evaluate import add_evaluate_arguments, run_evaluate  # noqa: F401

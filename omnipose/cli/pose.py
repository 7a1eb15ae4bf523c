"""``omnipose pose`` (to be moved here from omnipose.pose.estimator)."""
from omnipose.pose.estimator import add_pose_arguments, run_pose  # noqa: F401

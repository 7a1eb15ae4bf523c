"""``omnipose train`` (to be moved here from omnipose.nerf.train)."""
from omnipose.nerf.train import add_train_arguments, run_train  # noqa: F401

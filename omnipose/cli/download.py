"""``omnipose download`` (to be moved here from omnipose.data.download)."""
from omnipose.data.download import add_download_arguments, run_download  # noqa: F401

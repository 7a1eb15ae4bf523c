"""``omnipose synth`` (to be moved here from omnipose.data.synth.generator)."""
from omnipose.data.synth.generator import add_synth_arguments, run_synth  # noqa: F401

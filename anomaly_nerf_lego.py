"""OmniposeAD's command, kept: ``python anomaly_nerf_lego.py --class_name 01Gorilla``. See omnipose/cli/original.py."""
import sys

from omnipose.cli import run_guarded
from omnipose.cli.original import anomaly_nerf_lego

if __name__ == "__main__":
    sys.exit(run_guarded("anomaly_nerf_lego.py", anomaly_nerf_lego))

"""OmniposeAD's command, kept: ``python auroc_test.py --obj 01Gorilla``. See omnipose/cli/original.py."""
import sys

from omnipose.cli import run_guarded
from omnipose.cli.original import auroc_test

if __name__ == "__main__":
    sys.exit(run_guarded("auroc_test.py", auroc_test))

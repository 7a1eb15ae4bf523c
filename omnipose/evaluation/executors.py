"""Where the fit -> detect part of a benchmark runs: here, one class after the other
(``LocalExecutor``), or spread over a Ray cluster (``RayExecutor``, ``ray_executor.py``).

Both do the same work with the same code and leave the same prediction folders
(``<predictions>/<class>/``, the layout of ``predictions.py``): fit the class's detector once
(its checkpoint, calibration and caches go under the detector's ``ckpt_root``), detect every test
image that has no finished prediction, write ``scores.json`` and ``config.json``. Evaluation and
the report come after, on the driver, the same for both (``benchmark.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from omnipose.detector import DetectorConfig
from omnipose.evaluation.runner import ClassRun, run_class

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Fits and detects the classes of a MAD-format root; evaluation is left to the caller."""

    name: str

    def detect_classes(self, data_root: str | Path, class_names: Sequence[str], predictions: str | Path,
                       config: DetectorConfig, progress: bool = True) -> list[ClassRun]:
        """Fit each class and complete ``<predictions>/<class>/``; one ClassRun per class, in order,
        without an evaluation (``result`` None)."""
        ...


class LocalExecutor:
    """This process, one class after the other: the runner's own loop (``run_class``)."""

    name = "local"

    def detect_classes(self, data_root: str | Path, class_names: Sequence[str], predictions: str | Path,
                       config: DetectorConfig, progress: bool = True) -> list[ClassRun]:
        return [run_class(data_root, name, predictions, config, None, skip_finished=True, progress=progress)
                for name in class_names]  # fmt: skip


def make_executor(name: str = "local", address: str | None = None, on_batch=None, **ray_options) -> Executor:
    """The executor called ``name`` ('local' or 'ray').

    address: for 'ray', the cluster to join ('auto': the one started on this machine with
        ``ray start``; 'HOST:PORT': a remote head); None starts a local cluster for the run.
    on_batch: for 'ray', called on the driver after every batch of queries (``BatchDone``).
    ray_options: other ``RayConfig`` fields (``batch_size``, ``cpus_per_worker``, ...).
    Raises ConfigError for another name, and for 'ray' without Ray installed, one that says how to install it.
    """
    from omnipose.core.errors import ConfigError

    if name == "local":
        if address is not None or on_batch is not None or ray_options:
            raise ConfigError("--address and the Ray options only apply to --executor ray; drop them or add --executor ray.")
        return LocalExecutor()
    if name == "ray":
        from omnipose.evaluation.ray_executor import RayConfig, RayExecutor

        return RayExecutor(RayConfig(address=address, **ray_options), on_batch=on_batch)
    raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}.")

"""``RayExecutor``: the fit -> detect part of a benchmark spread over a Ray cluster.

What runs where:

- one **task per class** fits its detector (trains or loads the field, pose caches, calibration;
  everything lands in the class's checkpoint folder). It asks for a GPU where the cluster has
  one, a CPU share otherwise, and is retried when its worker dies (training resumes from the
  last checkpoint);
- once a class is fitted, one **actor per class** loads its detector once (the finished
  checkpoint is loaded, nothing is trained again) and serves batches of that class's queries;
  each query is written to the output folder atomically (``queries.py``). An actor whose process
  dies is restarted and its unfinished batches are retried; finished queries are skipped, so
  a lost worker costs at most the query it was on;
- the **driver** (this process) hands out the work, shows the progress, and, once a class's
  actor is done, writes ``scores.json`` and ``config.json`` from what is on disk.

The output and checkpoint folders must be on a filesystem every node sees. Ray is an optional
extra; it is imported only when a ``RayExecutor`` is made.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from omnipose.core.config import Config, non_negative, optional_positive, positive, require
from omnipose.core.errors import DataError, OmniposeError
from omnipose.core.files import read_json, remove_stale_temporaries
from omnipose.data import open_mad_class
from omnipose.detector import SUMMARY_FILE, Detector, DetectorConfig
from omnipose.evaluation.queries import detect_items, pending_keys, write_class_files
from omnipose.evaluation.runner import ClassRun, save_run_config

INSTALL_HINT = 'pip install -e ".[ray]"  (or: pip install "ray==2.60.0")'


def import_ray():
    """The ``ray`` module; raises OmniposeError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError as error:
        raise OmniposeError(f"--executor ray needs Ray, which is not installed ({error}). Install the extra with "
                            f"{INSTALL_HINT}, or run with --executor local.") from error
    return ray


@dataclass
class RayConfig(Config):
    """How a benchmark uses a Ray cluster; the defaults suit one machine without a GPU."""

    address: str | None = None
    """Cluster to join: None starts a local one for the run (and stops it after); 'auto' joins the
    one started on this machine with ``ray start``; 'HOST:PORT' joins a remote head."""
    batch_size: int = 4
    """Queries per call to a class's actor: larger batches cost fewer round trips, smaller ones
    spread the progress more finely (a dead worker costs only its current query either way)."""
    cpus_per_worker: float = 1.0
    """CPUs each fit task and each actor asks for; torch uses as many threads (at least 1)."""
    gpus_per_fit: float | None = None
    """GPUs a fit task asks for (None: 1 where the cluster has GPUs, else 0)."""
    gpus_per_worker: float | None = None
    """GPUs a class's actor asks for (None: 0.5 where the cluster has GPUs, so two classes share
    one, else 0)."""
    retries: int = 3
    """Times a fit task is retried, and an actor restarted, after its worker died."""
    local_cpus: int | None = None
    """CPUs of the local cluster when ``address`` is None (None: all of this machine's)."""
    object_store_mb: int = 256
    """Object store of the local cluster, in MiB: only small results travel through it (maps go
    to the shared filesystem)."""

    def check(self) -> None:
        require(self, "address", self.address is None or (isinstance(self.address, str) and bool(self.address)),
                "must be None, 'auto' or 'HOST:PORT'")  # fmt: skip
        positive(self, "batch_size", "cpus_per_worker", "object_store_mb")
        non_negative(self, "retries")
        optional_positive(self, "local_cpus")
        for name in ("gpus_per_fit", "gpus_per_worker"):
            value = getattr(self, name)
            require(self, name, value is None or (isinstance(value, (int, float)) and value >= 0), "must be None or 0 or more")


@dataclass
class BatchDone:
    """What the driver learns when a batch of queries comes back (passed to ``on_batch``).

    pid: the process of the actor that served it (on its node); done/total: the class's queries
    finished so far, of those this run had to detect.
    """

    class_name: str
    keys: list[str]
    pid: int
    done: int
    total: int


# ----------------------------------------------------------------------------- what runs on the workers
def _worker_threads(cpus: float) -> int:
    import torch

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


def fit_class(data_root: str, class_name: str, config: DetectorConfig, cpus: float) -> dict[str, Any]:
    """Fit one class (a Ray task): the checkpoint, caches and calibration go to its checkpoint
    folder, where the class's actor loads them. Returns {'seconds', 'module' (where this worker
    imported omnipose from), 'threshold' (the decision threshold, ``Detector.decision_threshold``)}."""
    import omnipose

    _worker_threads(cpus)
    start = time.perf_counter()
    detector = Detector(config).fit(open_mad_class(data_root, class_name), progress=False)
    return {"seconds": time.perf_counter() - start, "module": omnipose.__file__, "threshold": detector.decision_threshold()}


class ClassWorker:
    """A class's detector, loaded once (a Ray actor): detects the batches of queries it is sent."""

    def __init__(self, data_root: str, class_name: str, predictions: str, config: DetectorConfig, cpus: float):
        _worker_threads(cpus)
        mad = open_mad_class(data_root, class_name)
        self.detector = Detector(config).fit(mad, progress=False)  # the fit task finished it: this loads
        self.class_dir = Path(predictions) / mad.name
        self.items = {item.name: item for item in mad.test_items}

    def detect(self, keys: Sequence[str]) -> dict[str, Any]:
        """Detect the queries ``keys`` not finished yet; returns {'done': [(key, score, seconds)], 'pid'}."""
        return {"done": detect_items(self.detector, self.class_dir, [self.items[key] for key in keys]), "pid": os.getpid()}


# ----------------------------------------------------------------------------- the driver
@dataclass
class _ClassState:
    name: str
    class_dir: Path
    queries: int
    pending: list[str]
    fit_seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    actor: Any = None
    batches_left: int = 0
    done: int = 0
    threshold: float | None = None
    summary: dict = field(default_factory=dict)


@dataclass
class RayExecutor:
    """Fits and detects on a Ray cluster (see the module's docstring). ``on_batch`` is called on
    the driver after every batch (progress beyond the bar, or a test killing a worker)."""

    config: RayConfig = field(default_factory=RayConfig)
    on_batch: Callable[[BatchDone], None] | None = None
    name: str = "ray"
    worker_modules: set[str] = field(default_factory=set)
    """Where the fit workers imported omnipose from (filled by a run)."""

    def __post_init__(self):
        self.ray = import_ray()

    def detect_classes(self, data_root: str | Path, class_names: Sequence[str], predictions: str | Path,
                       config: DetectorConfig, progress: bool = True) -> list[ClassRun]:
        """Fit each class and complete ``<predictions>/<class>/`` on the cluster; one ClassRun per class."""
        # Workers do not share the driver's working directory: they get absolute paths.
        config = replace(config, ckpt_root=str(Path(config.ckpt_root).resolve()))
        started_here = self._connect()
        try:
            return self._run(str(Path(data_root).resolve()), list(class_names), Path(predictions).resolve(), config, progress)
        finally:
            if started_here:
                self.ray.shutdown()

    def _connect(self) -> bool:
        """Join or start the cluster; True when this call started it (and must stop it)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        # Workers import the same omnipose as the driver: its PYTHONPATH goes with the job.
        env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        runtime_env = {"env_vars": env} if env else None
        if self.config.address is None:
            ray.init(address="local", num_cpus=self.config.local_cpus, include_dashboard=False, runtime_env=runtime_env,
                     object_store_memory=self.config.object_store_mb * 2**20)  # fmt: skip
        else:
            ray.init(address=self.config.address, runtime_env=runtime_env)
        return True

    def _resources(self) -> tuple[dict, dict]:
        has_gpu = self.ray.cluster_resources().get("GPU", 0) > 0
        cfg = self.config
        fit_gpus = cfg.gpus_per_fit if cfg.gpus_per_fit is not None else (1 if has_gpu else 0)
        worker_gpus = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (0.5 if has_gpu else 0)
        return {"num_cpus": cfg.cpus_per_worker, "num_gpus": fit_gpus}, {"num_cpus": cfg.cpus_per_worker, "num_gpus": worker_gpus}

    def _run(self, data_root: str, class_names: list[str], predictions: Path, config: DetectorConfig,
             progress: bool) -> list[ClassRun]:
        from tqdm.auto import tqdm

        ray, cfg = self.ray, self.config
        fit_resources, worker_resources = self._resources()
        fit_task = ray.remote(fit_class).options(max_retries=cfg.retries, **fit_resources)
        worker_kind = ray.remote(ClassWorker).options(max_restarts=cfg.retries, max_task_retries=cfg.retries, **worker_resources)
        states, waiting = {}, {}
        for name in class_names:
            mad = open_mad_class(data_root, name)
            class_dir = predictions / mad.name
            state = _ClassState(name, class_dir, len(mad.test_items), pending_keys(class_dir, [i.name for i in mad.test_items]))
            states[name] = state
            if not state.pending and (class_dir / SUMMARY_FILE).is_file():
                state.summary = read_json(class_dir / SUMMARY_FILE, DataError, "Delete it and run the benchmark again.")
            else:  # the fit also gives the decision threshold that summary.json records
                waiting[fit_task.remote(data_root, name, config, cfg.cpus_per_worker)] = (state, None)
        bar = tqdm(total=sum(len(s.pending) for s in states.values()), desc="detecting (ray)", disable=not progress)
        try:
            while waiting:
                [ref], _ = ray.wait(list(waiting), num_returns=1)
                state, keys = waiting.pop(ref)
                value = self._get(ref, state)
                if keys is None:  # a fit finished: its actor takes the class's queries
                    state.fit_seconds, state.started, state.threshold = value["seconds"], time.perf_counter(), value["threshold"]
                    self.worker_modules.add(value["module"])
                    if not state.pending:
                        self._finish(state, data_root, config)
                        continue
                    if progress:
                        bar.write(f"{state.name}: fitted in {state.fit_seconds:.0f} s; detecting {len(state.pending)} queries")
                    state.actor = worker_kind.remote(data_root, state.name, str(predictions), config, cfg.cpus_per_worker)
                    batches = [state.pending[i: i + cfg.batch_size] for i in range(0, len(state.pending), cfg.batch_size)]
                    for batch in batches:
                        waiting[state.actor.detect.remote(batch)] = (state, batch)
                    state.batches_left = len(batches)
                    continue
                state.batches_left -= 1
                state.done += len(keys)
                bar.update(len(keys))
                if self.on_batch is not None:
                    self.on_batch(BatchDone(state.name, list(keys), value["pid"], state.done, len(state.pending)))
                if state.batches_left == 0:
                    self._finish(state, data_root, config)
        finally:
            bar.close()
            for state in states.values():
                if state.actor is not None:
                    ray.kill(state.actor, no_restart=True)
        return [ClassRun(s.name, s.class_dir, s.queries, s.fit_seconds, max(0.0, s.finished - s.started), bool(s.pending),
                         summary=s.summary) for s in states.values()]  # fmt: skip

    def _get(self, ref, state: _ClassState) -> dict:
        """The result of a task or batch; a worker that died more often than ``retries`` allows
        becomes an OmniposeError (the error of a query itself comes through as it was raised)."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as error:
            if isinstance(error.cause, OmniposeError):  # bad input: its own one-line message, not Ray's trace
                raise error.cause from None
            raise
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError) as error:
            raise OmniposeError(f"the Ray worker of class {state.name} died more than {self.config.retries} time(s) "
                                f"({type(error).__name__}); finished queries are kept: rerun to resume, with more "
                                "memory per worker or a larger RayConfig.retries.") from error

    def _finish(self, state: _ClassState, data_root: str, config: DetectorConfig) -> None:
        """A class's queries are all done: stop its actor, then write what the driver alone writes."""
        if state.actor is not None:
            self.ray.kill(state.actor, no_restart=True)
            state.actor = None
        state.finished = time.perf_counter()
        remove_stale_temporaries(state.class_dir, recursive=True)
        mad = open_mad_class(data_root, state.name)
        state.summary = write_class_files(state.class_dir, mad, state.threshold, config.false_alarm_rate)
        if state.pending:
            save_run_config(state.class_dir, config)

"""``omnipose benchmark``: a whole dataset through one executor interface, here or on Ray.

One tiny class (64 px, a 150-step field, cheap pose search) is fitted and detected once here;
the Ray runs reuse its checkpoint and must reproduce its table while a worker is killed
mid-class, or resume after the driver is interrupted. Ray tests skip where Ray is not installed.
"""
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from omnipose.core.device import one_torch_thread
from omnipose.core.errors import ConfigError, OmniposeError
from omnipose.data import open_mad_class
from omnipose.data.synth import SynthConfig, generate_class
from omnipose.detector import DetectorConfig
from omnipose.evaluation import LocalExecutor, make_executor, resolve_classes, run_benchmark

CLASS = "01Robot"
WORKTREE = Path(__file__).resolve().parents[1]


def tiny_config(ckpt_root: Path) -> DetectorConfig:
    config = DetectorConfig(image_size=64, dataset="tiny", ckpt_root=str(ckpt_root), calibration_views=8, pose_candidates=1)
    config.train = replace(config.train, steps=150, minutes=None)
    # What these tests check is the orchestration, not the pose: no iNeRF, no restarts around a pose
    # the few-step field fits poorly (they cost ten times the rest of a query here).
    config.pose = replace(config.pose, refine=None, restart_deg=None, half_turn=None, hypotheses=1, appearance_hypotheses=0)
    return config


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    generate_class(root / "data", CLASS, SynthConfig(size=64, train_views=30, test_views_per_type=1, seed=1, progress=False))
    config = tiny_config(root / "ckpts")
    with one_torch_thread():  # as a Ray worker with one CPU runs: the same threads give the same floats
        run = run_benchmark(root / "data", "all", root / "local", config, LocalExecutor(), progress=False)
    return root, config, run


def _metrics(out: Path) -> dict:
    return json.loads((out / "benchmark.json").read_text())["metrics"]


def _prediction_files(class_dir: Path) -> list[str]:
    return sorted(p.relative_to(class_dir).as_posix() for p in class_dir.rglob("*") if p.is_file())


def _ray_executor(**options):
    pytest.importorskip("ray")
    return make_executor("ray", None, local_cpus=2, batch_size=1, **options)


def test_a_local_benchmark_writes_one_table_and_report(local_run, capsys):
    from omnipose.cli import main

    root, config, run = local_run
    mad = open_mad_class(root / "data", CLASS)
    assert [r.class_name for r in run.results] == [CLASS] and run.timings[CLASS]["queries"] == len(mad.test_items)
    assert run.report.is_file() and f"| {CLASS} |" in run.report.read_text()
    scores = json.loads((root / "local" / "predictions" / CLASS / "scores.json").read_text())
    assert sorted(scores) == sorted(item.name for item in mad.test_items)
    # The command resumes the finished folder: nothing is fitted or detected again.
    before = {p: p.stat().st_mtime_ns for p in (root / "local").rglob("*.npy")}
    assert main(["benchmark", "--data", str(root / "data"), "--classes", CLASS, "--out", str(root / "local"),
                 "--ckpt-root", config.ckpt_root, "--dataset", "tiny", "--size", "64"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "local").rglob("*.npy")} == before
    assert CLASS in capsys.readouterr().out


def test_a_killed_ray_worker_loses_and_duplicates_nothing(local_run, tmp_path):
    """The actor's process is killed while it serves its second batch: Ray restarts it, the batch
    is retried, finished queries are not redone, and the table is the undisturbed run's."""
    root, config, _ = local_run
    killed, finished_then = [], {}

    def kill_once(batch):
        if not killed:
            class_dir = tmp_path / "predictions" / CLASS
            finished_then.update({p: p.stat().st_mtime_ns for p in class_dir.rglob("*.json")})
            os.kill(batch.pid, signal.SIGKILL)
            killed.append(batch.pid)

    executor = _ray_executor(on_batch=kill_once)
    run = run_benchmark(root / "data", "all", tmp_path, config, executor, progress=False)
    assert killed and run.timings[CLASS]["queries"] == 4
    assert all(Path(m).is_relative_to(WORKTREE) for m in executor.worker_modules), executor.worker_modules
    class_dir = tmp_path / "predictions" / CLASS
    keys = [item.name for item in open_mad_class(root / "data", CLASS).test_items]
    expected = sorted([f"{k}{suffix}" for k in keys for suffix in (".json", ".npy", "_reference.png")] + ["config.json", "scores.json", "summary.json"])
    assert _prediction_files(class_dir) == expected  # one complete prediction per query, no temporaries
    assert {p: p.stat().st_mtime_ns for p in finished_then} == finished_then
    assert _metrics(tmp_path) == _metrics(root / "local")
    local_dir = root / "local" / "predictions" / CLASS
    for name in ("scores.json", "summary.json"):  # written by the driver, as detect_class writes them
        assert json.loads((class_dir / name).read_text()) == json.loads((local_dir / name).read_text())


def test_an_interrupted_ray_driver_resumes_without_redoing_finished_queries(local_run, tmp_path):
    root, config, _ = local_run

    def interrupt(batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(root / "data", "all", tmp_path, config, _ray_executor(on_batch=interrupt), progress=False)
    class_dir = tmp_path / "predictions" / CLASS
    finished = {p: p.stat().st_mtime_ns for p in class_dir.rglob("*.npy")}
    assert 1 <= len(finished) < 4
    detected = []
    run = run_benchmark(root / "data", "all", tmp_path, config, _ray_executor(on_batch=lambda b: detected.extend(b.keys)),
                        progress=False)  # fmt: skip
    assert len(detected) == 4 - len(finished)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert run.timings[CLASS]["queries"] == 4 and _metrics(tmp_path) == _metrics(root / "local")


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as it does without the extra
    with pytest.raises(OmniposeError, match=r'pip install -e "\.\[ray\]"'):
        make_executor("ray")


def test_bad_benchmark_requests_are_refused_naming_the_fix(tmp_path):
    generate_class(tmp_path, "03Duck", SynthConfig(size=32, train_views=4, test_views_per_type=1, progress=False))
    assert resolve_classes(tmp_path, "all") == ["03Duck"]
    with pytest.raises(ConfigError, match="not found under .*classes found there: 03Duck"):
        resolve_classes(tmp_path, "03Duck,09Rocket")
    with pytest.raises(ConfigError, match="--executor ray"):
        make_executor("local", "auto")
    with pytest.raises(ConfigError, match="use one of local, ray"):
        make_executor("dask")
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="RayConfig.batch_size"):
        make_executor("ray", batch_size=0)

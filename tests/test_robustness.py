"""Never a silent wrong answer: each bad input a new user tried is refused with a message that names
the problem and the fix (no traceback), every good input in a batch is kept when one is bad, and
what the detector cannot vouch for is said so wherever its scores are.

The probes that need a fitted detector share the session's (``conftest.fitted_class``); they work
on copies of its queries, never on its data.
"""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from omnipose.cli import main
from omnipose.core.errors import CheckpointError, ConfigError, DataError
from omnipose.data import MADClass, QueryItem, load_transforms

SHARED_CLASS_SIZE = 48  # the small class the command-line probes train on


# ----------------------------------------------------------------------------- a tiny class for the command line
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small generated class (48 px) and a copy of its transforms.json to break."""
    from omnipose.data.synth import SynthConfig, generate_class

    root = tmp_path_factory.mktemp("tiny")
    generate_class(root, "01Robot", SynthConfig(size=SHARED_CLASS_SIZE, train_views=8, test_views_per_type=1, seed=1, progress=False))
    return root


def _broken_transforms(tiny: Path, tmp_path: Path, edit) -> Path:
    """A copy of the class's transforms.json beside its images, changed by ``edit(meta)``."""
    meta = json.loads((tiny / "01Robot" / "transforms.json").read_text())
    edit(meta)
    path = tiny / "01Robot" / f"broken_{tmp_path.name}.json"
    path.write_text(json.dumps(meta))
    return path


def _set_pose(index, matrix):
    return lambda meta: meta["frames"][index].__setitem__("transform_matrix", matrix)


def _scale_rotation(meta):
    pose = np.asarray(meta["frames"][2]["transform_matrix"])
    pose[:3, :3] *= 3.0
    meta["frames"][2]["transform_matrix"] = pose.tolist()


@pytest.mark.parametrize("edit, message", [
    (_set_pose(2, [[math.nan] * 4] * 4), "frame 2 .*NaN"),
    (_set_pose(2, [[0, 0, 0, 0]] * 3 + [[0, 0, 0, 1]]), "frame 2 .*not a rotation"),  # singular
    (_scale_rotation, "frame 2 .*not a rotation .*column lengths 3, 3, 3"),
    (_set_pose(2, [[1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "frame 2 .*not a 4x4 matrix"),  # ragged
    (lambda meta: meta.__setitem__("camera_angle_x", 0), "'camera_angle_x' is 0"),
    (lambda meta: meta.__setitem__("frames", {"a": 1}), "no list of 'frames'"),
])
def test_bad_cameras_are_refused_naming_the_frame(tiny, tmp_path, edit, message, capsys):
    path = _broken_transforms(tiny, tmp_path, edit)
    with pytest.raises(DataError, match=message):
        load_transforms(path, progress=False)
    assert main(["train", "--transforms", str(path), "--steps", "2", "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "error:" in error and "Traceback" not in error


def test_a_malformed_transforms_json_of_a_class_is_named(tiny, tmp_path, capsys):
    """train --data and detect read the class's poses through one guarded reader."""
    root = tmp_path / "data"
    shutil.copytree(tiny / "01Robot", root / "01Robot")
    (root / "01Robot" / "transforms.json").write_text('{"frames": [')
    for command in (["train", "--data", str(root), "--class", "01Robot", "--steps", "2", "--out", str(tmp_path / "ck")],
                    ["detect", "--data", str(root), "--class", "01Robot", "--ckpt-root", str(tmp_path / "ck2")]):
        assert main(command + ["--size", "32"]) == 2
        error = capsys.readouterr().err
        assert "transforms.json is not valid JSON" in error and "Traceback" not in error


def test_train_boxes_a_class_as_detect_does_not_in_its_declared_aabb(tiny, tmp_path):
    """`omnipose train` and Detector.fit train the same field: the scene box comes from the views'
    frustums, not from the tight ``aabb`` the class's transforms.json declares (it trains a worse field)."""
    from omnipose.core.files import read_json
    from omnipose.data import open_mad_class
    from omnipose.nerf.bounds import resolve_aabb

    mad = open_mad_class(tiny, "01Robot", require_masks=False)
    declared = read_json(mad.transforms_path, DataError, "")["aabb"]
    assert main(["train", "--data", str(tiny), "--class", "01Robot", "--size", str(SHARED_CLASS_SIZE), "--steps", "2",
                 "--out", str(tmp_path / "ck"), "--quiet"]) == 0  # fmt: skip
    saved = read_json(tmp_path / "ck" / "config.json", DataError, "")
    views = mad.load_train_views(size=SHARED_CLASS_SIZE, progress=False)
    box, source = resolve_aabb(None, views.c2w, views.K, views.width, views.height)
    assert saved["config"]["aabb_source"] == "frustums" and saved["config"]["aabb"] is None
    assert np.allclose(saved["aabb"], box.tolist(), atol=1e-5) and not np.allclose(saved["aabb"], declared, atol=0.05)


@pytest.mark.parametrize("option", [["--steps", "0"], ["--steps", "-5"], ["--minutes", "-1"], ["--size", "0"],
                                    ["--size", "-50"], ["--device", "foo"]])
def test_bad_training_options_are_refused(tiny, tmp_path, option, capsys):
    command = ["train", "--data", str(tiny), "--class", "01Robot", "--out", str(tmp_path / "ck"), "--quiet"]
    assert main(command + (["--steps", "2"] if option[0] != "--steps" else []) + option) == 2
    error = capsys.readouterr().err
    assert "error:" in error and "Traceback" not in error
    assert not (tmp_path / "ck" / "model.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_says_so(tiny, tmp_path, capsys):
    command = ["train", "--data", str(tiny), "--class", "01Robot", "--out", str(tmp_path / "ck"), "--steps", "2", "--device", "cuda"]
    assert main(command) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_a_working_size_above_the_images_is_refused_with_the_size_to_use(tiny, tmp_path, capsys):
    """Upsampled training views add no detail, only time: detect (default --size) names the images' width."""
    command = ["detect", "--data", str(tiny), "--class", "01Robot", "--ckpt-root", str(tmp_path / "ck"), "--out", str(tmp_path / "out")]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert f"--size {SHARED_CLASS_SIZE}" in error and "Traceback" not in error
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("option", [["--size", "-50"], ["--size", "0"], ["--minutes", "-1"], ["--device", "foo"]])
def test_bad_detect_options_are_refused(tiny, tmp_path, option, capsys):
    command = ["detect", "--data", str(tiny), "--class", "01Robot", "--ckpt-root", str(tmp_path / "ck"), "--out", str(tmp_path / "out")]
    assert main(command + option) == 2
    error = capsys.readouterr().err
    assert "error:" in error and "Traceback" not in error


def test_a_negative_evaluation_sigma_is_refused(tiny, tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path), "--data", str(tiny), "--class", "01Robot", "--gaussian-sigma", "-3"]) == 2
    assert "gaussian_sigma" in capsys.readouterr().err


def test_an_internal_error_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    import omnipose.cli.synth as synth

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(synth, "run_synth", broken)
    assert main(["synth", "--out", "x"]) == 3
    error = capsys.readouterr().err
    assert "Traceback" in error and "ZeroDivisionError" in error and "bug in omnipose" in error


# ----------------------------------------------------------------------------- training state on disk
def test_a_killed_writers_temporary_file_is_removed_and_a_live_ones_kept(tiny, tmp_path):
    from omnipose.nerf import TrainConfig, train_model

    out = tmp_path / "ck"
    out.mkdir()
    from omnipose.core.files import _new_temporary_file

    live = _new_temporary_file(out / "model.pt")  # this process: alive
    dead = live.with_name(live.name.replace(f"-{os.getpid()}-", "-999999999-"))
    dead.write_bytes(b"half a checkpoint")
    views = load_transforms(tiny / "01Robot" / "transforms.json", size=32, frame_filter="train/", progress=False)
    train_model(views, TrainConfig(steps=2, minutes=None, dataset="t", class_name="r"), out, progress=False)
    assert not dead.exists() and live.exists()
    assert (out / "model.pt").is_file()


def test_the_model_is_written_before_the_optimiser_state(tiny, tmp_path, monkeypatch):
    """A run killed between the two files must leave a model at least as new as the optimiser state
    claims, so that the rerun resumes from the newest weights."""
    import omnipose.nerf.checkpoint as checkpoint
    from omnipose.nerf import TrainConfig, train_model

    order = []
    original = checkpoint.atomic_path

    def recording(path):
        order.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(checkpoint, "atomic_path", recording)
    views = load_transforms(tiny / "01Robot" / "transforms.json", size=32, frame_filter="train/", progress=False)
    train_model(views, TrainConfig(steps=2, minutes=None, dataset="t", class_name="r"), tmp_path / "ck", progress=False)
    assert order.index("model.pt") < order.index("train_state.pt")


# ----------------------------------------------------------------------------- evaluation
def test_a_map_of_another_size_among_the_rest_is_named():
    from omnipose.evaluation.inputs import describe_resized, map_at

    resized = []
    for name, shape in [("good/0", (64, 64)), ("good/1", (64, 64)), ("Burrs/3", (48, 48))]:
        map_at(np.zeros(shape, np.float32), (64, 64), resized, name)
    assert "Burrs/3 (48x48)" in describe_resized(resized, 3, "the size of their masks")
    resized = []
    for name, shape in [("a", (32, 32)), ("b", (32, 32)), ("c", (40, 40))]:
        map_at(np.zeros(shape, np.float32), (64, 64), resized, name)
    line = describe_resized(resized, 3, "the evaluation size")
    assert "c (40x40)" in line and "a (32x32)" not in line


def test_decision_metrics_count_false_alarms_and_recall():
    from omnipose.evaluation import decision_metrics, is_defined

    labels = np.array([0, 0, 0, 0, 1, 1, 1], bool)
    decisions = np.array([0, 1, 0, 0, 1, 1, 0], bool)
    metrics = decision_metrics(labels, decisions)
    assert metrics["FAR_sp"] == pytest.approx(0.25) and metrics["Recall_sp"] == pytest.approx(2 / 3)
    assert not is_defined(decision_metrics(labels[:4], decisions[:4])["Recall_sp"])


# ----------------------------------------------------------------------------- the fitted detector
def _other_object(size: int) -> np.ndarray:
    """A view of another built-in figure than the fitted one."""
    from omnipose.data.synth import SynthConfig, build_figure, camera_distance, random_test_pose, render_defect_free

    config = SynthConfig(size=size)
    pose = random_test_pose(np.random.default_rng(5), camera_distance(build_figure("12Penguin"), config))
    return render_defect_free("12Penguin", pose, config)


@pytest.fixture
def small_batch(fitted_class, tmp_path):
    """A class of three queries: two good test images of the fitted class around an unreadable one."""
    _, mad, _ = fitted_class
    good = [item for item in mad.test_items if not item.is_anomalous][:2]
    folder = tmp_path / "batch" / mad.name / "test" / "good"
    folder.mkdir(parents=True)
    items = []
    for name, source in (("0", good[0].image_path), ("1", None), ("2", good[1].image_path)):
        path = folder / f"{name}.png"
        if source is None:
            path.write_bytes(b"not an image")
        else:
            shutil.copy(source, path)
        items.append(QueryItem(path, "good", None))
    return MADClass(tmp_path / "batch", mad.name, mad.transforms_path, [], items)


def test_one_unreadable_query_does_not_stop_the_batch(fitted_class, small_batch, tmp_path, recwarn):
    detector, _, _ = fitted_class
    out = detector.detect_class(small_batch, tmp_path / "out", progress=False)
    assert sorted(json.loads((out / "scores.json").read_text())) == ["good/0", "good/2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["queries"] == 3 and summary["scored"] == 2
    assert list(summary["failed"]) == ["good/1"] and "cannot read image" in summary["failed"]["good/1"]
    record = json.loads((out / "good" / "1.json").read_text())
    assert record["failed"] is True and "cannot read image" in record["error"]
    assert not (out / "good" / "1.npy").exists()

    # Fixed, the failed query is done on the rerun; the finished ones are kept as they are.
    kept = (out / "good" / "0.npy").stat().st_mtime_ns
    shutil.copy(small_batch.test_items[0].image_path, small_batch.test_items[1].image_path)
    # A per-query record cut short by a crash is named and done again.
    (out / "good" / "2.json").write_text('{"score": 1.')
    with pytest.warns(UserWarning, match=r"2\.json cannot be read.*done again"):
        detector.detect_class(small_batch, tmp_path / "out", progress=False)
    assert (out / "good" / "0.npy").stat().st_mtime_ns == kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == 3 and summary["failed"] == {}
    assert json.loads((out / "good" / "2.json").read_text())["score"] == pytest.approx(
        json.loads((out / "good" / "0.json").read_text())["score"], abs=10.0)  # a real record again


def test_predict_gives_a_result_or_a_failure_per_query(fitted_class, small_batch):
    detector, _, _ = fitted_class
    paths = [item.image_path for item in small_batch.test_items]
    results = detector.predict(paths, progress=False)
    assert [r.failed for r in results] == [False, True, False]
    assert "cannot read image" in results[1].error and results[1].query == str(paths[1])
    assert all(isinstance(r.anomalous, bool) for r in (results[0], results[2]))


def test_every_prediction_carries_a_decision_at_the_normal_data_threshold(fitted_class):
    detector, mad, out = fitted_class
    calibration = detector.comparator.calibration
    threshold = calibration.score_threshold(detector.config.false_alarm_rate)
    assert detector.decision_threshold() == pytest.approx(threshold)
    for item in mad.test_items:
        record = json.loads((out / item.defect_type / f"{item.image_path.stem}.json").read_text())
        assert record["threshold"] == pytest.approx(threshold)
        assert record["anomalous"] == (record["score"] > threshold or not record["pose_confident"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == pytest.approx(threshold) and summary["false_alarm_rate"] == 0.01

    from omnipose.evaluation import EvaluationConfig, evaluate_prediction_dir

    result = evaluate_prediction_dir(out.parent, mad.root, mad.name, EvaluationConfig(image_size="native", gaussian_sigma=0.0))
    records = [json.loads((out / f"{item.name}.json").read_text()) for item in mad.test_items]
    good = [r["anomalous"] for item, r in zip(mad.test_items, records) if not item.is_anomalous]
    bad = [r["anomalous"] for item, r in zip(mad.test_items, records) if item.is_anomalous]
    assert result.metrics["FAR_sp"] == pytest.approx(np.mean(good))
    assert result.metrics["Recall_sp"] == pytest.approx(np.mean(bad))
    assert "AUROC_sp_confident" in result.metrics


def test_a_query_whose_object_cannot_be_separated_is_flagged_not_scored_as_normal(fitted_class):
    """A good view of the fitted object, photographed in front of clutter instead of a plain backdrop."""
    from omnipose.core.image import read_image_rgb

    detector, mad, _ = fitted_class
    item = next(item for item in mad.test_items if not item.is_anomalous)
    view = read_image_rgb(item.image_path)
    backdrop = np.abs(view - 1.0).max(-1, keepdims=True) < 0.02
    clutter = np.random.default_rng(4).uniform(0.0, 0.7, view.shape).astype(np.float32)
    prediction = detector.predict_one(np.where(backdrop, clutter, view))
    assert not prediction.pose_confident and prediction.anomalous is True
    assert any("not a plain backdrop" in note for note in prediction.notes), prediction.notes
    assert any("decided anomalous for review" in note for note in prediction.notes)


def test_a_query_of_another_object_is_flagged_not_scored_as_normal(fitted_class):
    detector, _, _ = fitted_class
    prediction = detector.predict_one(_other_object(detector.config.image_size))
    assert not prediction.pose_confident
    assert prediction.anomalous is True
    assert any("decided anomalous for review" in note for note in prediction.notes)


def test_the_evaluation_reports_metrics_without_flagged_queries(fitted_class, tmp_path):
    """A folder where one query's pose is not trusted: the note names it and the *_confident
    metrics leave it out."""
    from omnipose.evaluation import evaluate_prediction_dir

    _, mad, out = fitted_class
    copy = tmp_path / mad.name
    shutil.copytree(out, copy)
    before = evaluate_prediction_dir(tmp_path, mad.root, mad.name, "pad")
    flagged = next(item for item in mad.test_items
                   if not item.is_anomalous and json.loads((copy / f"{item.name}.json").read_text())["pose_confident"])
    record_path = copy / f"{flagged.name}.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "pose_confident": False, "anomalous": True}))
    result = evaluate_prediction_dir(tmp_path, mad.root, mad.name, "pad")
    assert result.counts["low_confidence"] == before.counts["low_confidence"] + 1
    assert any(flagged.name in note for note in result.notes)
    records = [json.loads((copy / f"{item.name}.json").read_text()) for item in mad.test_items if not item.is_anomalous]
    assert result.metrics["FAR_sp"] == pytest.approx(np.mean([r["anomalous"] for r in records]))
    assert result.metrics["FAR_sp_confident"] == pytest.approx(np.mean([r["anomalous"] for r in records if r["pose_confident"]]))


def test_a_field_trained_on_exact_poses_leaves_no_view_out(fitted_class):
    """The halfway check for views the field cannot explain (``TrainConfig.unexplained_check_at``) ran on the
    generated class's exact poses and found none: every view not held out for the threshold was learnt."""
    detector, mad, _ = fitted_class
    info = detector.info
    assert info.step > detector.config.train.unexplained_check_at * detector.config.train.steps
    assert info.left_out_paths == [] and "views_left_out" not in info.metrics
    assert len(info.train_image_paths) == len(mad.train_images) - detector.config.held_out_views


def test_a_checkpoint_of_another_size_is_refused(fitted_class):
    from dataclasses import replace

    from omnipose.detector import Detector

    detector, mad, _ = fitted_class
    with pytest.raises(ConfigError, match=rf"trained at {detector.config.image_size}x.*use --size {detector.config.image_size}"):
        Detector(replace(detector.config, image_size=detector.config.image_size - 32)).fit(mad, progress=False)


def test_an_untrained_field_is_refused_with_the_fix(fitted_class, tmp_path):
    from dataclasses import replace

    from omnipose.detector import Detector

    detector, mad, _ = fitted_class
    # At 64 pixels: the refusal renders training views through a field that has pruned nothing yet (so does
    # the unexplained-view check, which a three-step field cannot inform: off).
    config = replace(detector.config, ckpt_root=str(tmp_path / "ck"), calibration_views=4, image_size=64, pose_size=64)
    config.train = replace(config.train, steps=3, unexplained_check_at=None)
    with pytest.raises(CheckpointError, match=r"dB PSNR \(after 3 training steps\).*Train it further"):
        Detector(config).fit(mad, progress=False)


def test_a_field_is_not_reused_for_views_read_with_the_other_backdrop_setting(fitted_class, tmp_path):
    """A field trained on views whose backdrop was replaced must not be calibrated and queried with
    views that keep it (the backdrop ablation): the error names both settings and the fix."""
    from dataclasses import replace

    from omnipose.core.errors import ConfigError
    from omnipose.detector import Detector

    detector, mad, _ = fitted_class
    config = replace(detector.config, ckpt_root=str(tmp_path / "ck"), calibration_views=4, image_size=64, pose_size=64)
    config.train = replace(config.train, steps=3, unexplained_check_at=None)
    with pytest.raises(CheckpointError):  # trained (3 steps), then refused as too weak: the checkpoint stays
        Detector(config).fit(mad, progress=False)
    with pytest.raises(ConfigError, match=r"backdrop was replaced, these views have theirs kept: set replace_backdrop=True"):
        Detector(replace(config, replace_backdrop=False)).fit(mad, progress=False)


def test_pose_json_keeps_every_image(fitted_class, small_batch, tmp_path, capsys):
    detector, _, _ = fitted_class
    paths = [str(item.image_path) for item in small_batch.test_items]
    out = tmp_path / "poses.json"
    code = main(["pose", "--ckpt", str(detector.ckpt_dir), "--image", *paths, "--json", str(out), "--quiet"])
    assert code == 1  # one image failed
    results = json.loads(out.read_text())
    assert list(results) == paths
    assert results[paths[1]]["failed"] is True and "cannot read image" in results[paths[1]]["error"]
    assert np.asarray(results[paths[0]]["c2w"]).shape == (4, 4)
    assert "FAILED" in capsys.readouterr().out

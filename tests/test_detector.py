"""End to end on generated data: fit on normal views, detect unposed queries, find the planted defects.

One small class is made, fitted and detected once per session (about two minutes on 2 cores); the
tests then check what a user relies on: the defects are found where they are, the outputs are
complete and resumable, and bad input gets a clear error.
"""
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FITTED_CLASS as CLASS
from conftest import FITTED_SIZE as SIZE

from omnipose.core.errors import OmniposeError
from omnipose.core.image import read_mask
from omnipose.data import PosedImages
from omnipose.detector import Detector, DetectorConfig
from omnipose.evaluation import auroc, pixel_auroc


@pytest.fixture
def fitted(fitted_class):
    return fitted_class


def test_defects_are_found_where_they_are(fitted):
    """No pose given: the maps rank defect pixels above normal ones, defect images score above
    good ones, and the hottest pixel sits on the defect for most defect images."""
    _, mad, out = fitted
    scores = json.loads((out / "scores.json").read_text())
    maps, masks = [], []
    for item in mad.test_items:
        anomaly_map = np.load(out / item.defect_type / f"{item.image_path.stem}.npy")
        assert anomaly_map.shape == (SIZE, SIZE) and np.isfinite(anomaly_map).all()
        maps.append(anomaly_map)
        masks.append(read_mask(item.mask_path, size=(SIZE, SIZE)) if item.is_anomalous else np.zeros((SIZE, SIZE), bool))
    assert pixel_auroc(maps, masks) >= 0.9
    labels = np.array([item.is_anomalous for item in mad.test_items])
    assert auroc(labels, np.array([scores[item.name] for item in mad.test_items])) >= 0.75
    hits = []
    for anomaly_map, mask, anomalous in zip(maps, masks, labels):
        if anomalous:
            row, col = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
            rows, cols = np.nonzero(mask)
            hits.append(np.min(np.hypot(rows - row, cols - col)) <= 4)
    assert np.mean(hits) >= 0.5


def test_outputs_are_complete_and_resumable(fitted):
    detector, mad, out = fitted
    for item in mad.test_items:
        info = json.loads((out / item.defect_type / f"{item.image_path.stem}.json").read_text())
        c2w = np.asarray(info["c2w"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-4)
        assert (out / item.defect_type / f"{item.image_path.stem}_reference.png").is_file()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    detector.detect_class(mad, out.parent, progress=False)  # a rerun skips finished queries
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before


def test_a_close_runner_up_pose_that_explains_the_query_wins(fitted, monkeypatch):
    """The true pose, second by a hair on the pose residual, beats a wrong estimate once both
    references are compared with the query; a runner-up far behind on the residual is not tried.
    The prediction still reports the search's pose as the query's, and the runner-up as the reference's;
    a runner-up on the object's other side is not compared."""
    import math

    from omnipose.core.geometry import pose_errors, roll_camera
    from omnipose.data.synth import load_ground_truth_poses
    from omnipose.pose import PoseResult, prepare_query

    detector, mad, _ = fitted
    item = next(i for i in mad.test_items if not i.is_anomalous)
    true = load_ground_truth_poses(mad.folder.parent, mad.name)[item.name]
    wrong = roll_camera(true, math.radians(15.0))
    query = prepare_query(item.image_path, detector.info)[0]

    def pose(runner_up: torch.Tensor, its_residual: float) -> PoseResult:
        return PoseResult(c2w=wrong, residual=0.05, confidence=1.0, low_confidence=False, seconds=0.0, hypotheses=2,
                          inliers=0, source="test", steps=0, coarse_c2w=wrong, alternatives=runner_up[None],
                          alternative_residuals=torch.tensor([its_residual]))

    assert len(detector.pose_candidates(pose(true, 0.051))) == 2
    _, chosen = detector.compare_at_pose(query, pose(true, 0.051))
    assert float(pose_errors(chosen.c2w, true)[0]) < 0.1
    monkeypatch.setattr(detector, "estimate_pose", lambda image: pose(true, 0.051))
    prediction = detector.predict_one(item.image_path)
    assert float(pose_errors(torch.as_tensor(prediction.c2w), wrong)[0]) < 1e-3
    assert float(pose_errors(torch.as_tensor(prediction.reference_c2w), true)[0]) < 0.1
    assert any("runner-up" in note for note in prediction.notes) and prediction.summary()["reference_c2w"]
    # 4x the estimate's residual is no contender, and a near twin of the estimate is not tried.
    assert len(detector.pose_candidates(pose(true, 0.2))) == 1
    assert len(detector.pose_candidates(pose(roll_camera(wrong, math.radians(0.5)), 0.05))) == 1
    # Nor is the object's other side: the pose search weighs it over the whole object (PoseConfig.half_turn).
    assert len(detector.pose_candidates(pose(roll_camera(wrong, math.radians(120.0)), 0.051))) == 1
    _, chosen = detector.compare_at_pose(query, pose(true, 0.2))
    assert float(pose_errors(chosen.c2w, wrong)[0]) < 0.1
    # A pose chosen by chromaticity is not taken back by the comparison (light favours the same side).
    by_chromaticity = replace(detector.config, pose=replace(detector.config.pose, rank_by_chromaticity=True))
    assert len(Detector(by_chromaticity).pose_candidates(pose(true, 0.051))) == 1


def test_a_reference_knows_what_no_training_view_saw_and_a_training_view_saw_all_it_shows(fitted):
    """Within the training cameras' range almost every rendered surface point is seen by some
    training view (by the field's own depth); the unseen pixels follow a registration's warp;
    calibration's references (a training view's own pose, ``exclude``) look for none."""
    import math

    from omnipose.compare import NormalViews
    from omnipose.core.geometry import spherical_pose
    from omnipose.data.synth import load_ground_truth_poses
    from omnipose.detector.references import registered_reference

    detector, mad, _ = fitted
    item = next(i for i in mad.test_items if not i.is_anomalous)
    true = load_ground_truth_poses(mad.folder.parent, mad.name)[item.name]
    reference = detector.reference_at(true)
    on_object = reference.alpha[0] > 0.5
    assert reference.unseen.shape == (1, SIZE, SIZE) and reference.unseen.dtype == torch.bool
    assert not bool(reference.unseen[0][~on_object].any())
    assert float(reference.unseen[0][on_object].float().mean()) < 0.02
    # Had every training camera looked from below, the figure's top, seen from above, is unseen.
    views = detector.normal_views
    below = views.c2w[:, 2, 3] < -0.2 * views.c2w[:, :3, 3].norm(dim=-1)
    assert 3 <= int(below.sum()) < len(views)

    def detector_with(compare, normal_views):
        other = Detector(replace(detector.config, compare=compare))
        other.model, other.info, other.normal_views = detector.model, detector.info, normal_views
        return other

    from_below = detector_with(detector.config.compare, NormalViews(views.images[below], views.depths[below],
                                                                    views.c2w[below], views.K))  # fmt: skip
    above = spherical_pose(math.radians(30.0), math.radians(60.0), float(true[:3, 3].norm()))
    seen_all, seen_below = detector.reference_at(above), from_below.reference_at(above)
    solid = seen_all.alpha[0] > 0.5
    assert float(seen_all.unseen[0][solid].float().mean()) < 0.02
    assert float(seen_below.unseen[0][solid].float().mean()) > 0.2
    # Registered onto a query drawn 3 pixels to the right, the unseen pixels move with the render.
    moved = np.roll(seen_below.image.numpy(), 3, axis=1)
    warped = registered_reference(moved, seen_below, "translation", detector.info.background)
    expected = torch.roll(seen_below.unseen, 3, dims=2)
    overlap = (warped.unseen & expected).sum() / (warped.unseen | expected).sum()
    assert float(overlap) > 0.8
    assert detector.reference_at(true, exclude=0).unseen is None
    assert detector_with(replace(detector.config.compare, skip_unseen=False), views).reference_at(true).unseen is None


def test_a_detector_loaded_from_its_checkpoint_compares_as_the_fitted_one(fitted, tmp_path):
    """Detector.load reads the field, the calibration and the re-projection views from the folder."""
    import shutil

    from omnipose.data.synth import load_ground_truth_poses
    from omnipose.pose import prepare_query

    detector, mad, _ = fitted
    folder = tmp_path / "ckpt"
    shutil.copytree(detector.ckpt_dir, folder)
    loaded = Detector.load(folder, detector.config)
    item = next(i for i in mad.test_items if i.is_anomalous)
    true = load_ground_truth_poses(mad.folder.parent, mad.name)[item.name]
    query = torch.from_numpy(prepare_query(item.image_path, detector.info)[0])
    fitted_reference, loaded_reference = detector.reference_at(true), loaded.reference_at(true)
    assert loaded_reference.neighbours.shape == (detector.config.compare.neighbour_views, SIZE, SIZE, 3)
    torch.testing.assert_close(loaded_reference.neighbours, fitted_reference.neighbours, atol=1e-6, rtol=0)
    expected = float(fitted_reference.compare(detector.comparator, query).score[0])
    assert float(loaded_reference.compare(loaded.comparator, query).score[0]) == pytest.approx(expected, rel=1e-5)
    (folder / "normal_views.pt").unlink()
    with pytest.raises(OmniposeError, match="normal_views.pt is missing"):
        Detector.load(folder, detector.config)


def test_normal_views_the_field_never_learnt_raise_the_threshold_to_where_new_normal_views_score(fitted):
    """``held_out_views`` training views are kept out of the field, run as queries, and scale the decision
    threshold by how much higher they score than the views the field learnt; a second fit on the same
    checkpoint keeps the same split and the same scores."""
    from omnipose.compare.scoring import threshold_for_fpr

    detector, mad, _ = fitted
    calibration = detector.comparator.calibration
    trained = set(detector.info.train_image_paths)
    held_out = [path for path in mad.train_images if str(path) not in trained]
    assert len(held_out) == detector.config.held_out_views == len(calibration.held_out_scores)
    assert len(trained) == len(mad.train_images) - len(held_out)
    rate, seen = detector.config.false_alarm_rate, np.median(calibration.normal_scores)
    learnt = threshold_for_fpr(calibration.normal_scores, rate)
    ratio = max(1.0, np.median(calibration.held_out_scores) / seen)  # never lowered: a small field learns no view by heart
    assert detector.decision_threshold() == pytest.approx(learnt * ratio)
    assert replace(calibration, held_out_scores=[2.5 * seen] * 3).score_threshold(rate) == pytest.approx(2.5 * learnt)
    assert replace(calibration, held_out_scores=[0.5 * seen] * 3).score_threshold(rate) == pytest.approx(learnt)
    again = Detector(detector.config).fit(mad, progress=False)
    assert again.comparator.calibration.held_out_scores == calibration.held_out_scores


def test_the_views_kept_from_the_field_are_spread_evenly_and_follow_a_trained_fields_own_split():
    from omnipose.detector import split_held_out

    views = PosedImages(torch.zeros(10, 2, 2, 3), torch.eye(4).repeat(10, 1, 1), torch.eye(3), [Path(f"{i}.png") for i in range(10)])
    kept, held_out = split_held_out(views, None, 2)
    assert [p.name for p in held_out.paths] == ["2.png", "7.png"] and len(kept) == 8
    assert split_held_out(views, None, 3)[1] is None  # under four training views per view kept out: none kept out
    assert split_held_out(views, None, 0)[1] is None
    info = SimpleNamespace(train_image_paths=[str(p) for p in views.paths if p.name != "4.png"], left_out_paths=[])
    kept, held_out = split_held_out(views, info, 2)
    assert [p.name for p in held_out.paths] == ["4.png"] and len(kept) == 9
    info = SimpleNamespace(train_image_paths=[str(p) for p in views.paths], left_out_paths=[])  # trained on every view
    assert split_held_out(views, info, 2)[1] is None


def test_views_the_training_left_out_as_unexplained_are_neither_held_out_nor_learnt():
    """A view the field's training left out (a wrong pose) is not a normal view held out for the threshold; it stays
    with the views an interrupted training resumes on, and ``learnt_views`` drops it with the held-out ones."""
    from omnipose.detector import learnt_views, split_held_out

    views = PosedImages(torch.zeros(10, 2, 2, 3), torch.eye(4).repeat(10, 1, 1), torch.eye(3), [Path(f"{i}.png") for i in range(10)])
    info = SimpleNamespace(train_image_paths=[str(p) for p in views.paths if p.name not in ("4.png", "6.png")],
                           left_out_paths=["6.png"])  # fmt: skip
    kept, held_out = split_held_out(views, info, 2)
    assert [p.name for p in held_out.paths] == ["4.png"] and "6.png" in [p.name for p in kept.paths]
    assert [p.name for p in learnt_views(kept, info).paths] == [f"{i}.png" for i in (0, 1, 2, 3, 5, 7, 8, 9)]


def test_a_calibration_of_another_comparison_is_fitted_again_not_refused(fitted, tmp_path):
    """Refitting a class with a comparison whose residuals differ (an ablation on the same field)
    fits the calibration again instead of failing on the one in the folder."""
    import shutil

    detector, mad, _ = fitted
    shutil.copytree(detector.ckpt_dir, tmp_path / detector.config.dataset / mad.name)
    flipped = not detector.config.compare.match_exposure
    config = replace(detector.config, ckpt_root=str(tmp_path),
                     compare=replace(detector.config.compare, match_exposure=flipped))
    refitted = Detector(config).fit(mad, progress=False)
    assert refitted.comparator.calibration.signature["match_exposure"] is flipped
    saved = json.loads((tmp_path / detector.config.dataset / mad.name / "calibration.json").read_text())
    assert saved["signature"]["match_exposure"] is flipped


def test_a_pose_searched_at_half_the_width_is_as_good_and_the_map_comes_at_full_width(fitted, tmp_path):
    """pose_size below the working width: retrieval, alignment and iNeRF run on the query and the
    training views brought to that width (intrinsics scaled), the reference is rendered and compared at
    the full width, and the pose still lands where the truth is. Its index is cached beside, not over,
    the full-width one."""
    import shutil

    from omnipose.core.geometry import pose_errors
    from omnipose.data.synth import load_ground_truth_poses

    detector, mad, _ = fitted
    folder = tmp_path / "ckpt"
    shutil.copytree(detector.ckpt_dir, folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("pose_features.*")}
    half = Detector.load(folder, replace(detector.config, pose_size=SIZE // 2))
    assert half.pose_width == SIZE // 2 and half.pose_estimator.width == SIZE // 2
    torch.testing.assert_close(half.pose_estimator.K[:2], detector.info.K[:2] / 2)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("pose_features.*") if p.name in before} == before
    assert any(p.name.endswith(f".{SIZE // 2}px.pt") for p in folder.glob("pose_features.*"))
    truth = load_ground_truth_poses(mad.folder.parent, mad.name)
    errors = []
    for item in [i for i in mad.test_items if not i.is_anomalous][:2]:
        prediction = half.predict_one(item.image_path)
        assert prediction.anomaly_map.shape == (SIZE, SIZE) and prediction.reference.shape == (SIZE, SIZE, 3)
        errors.append(float(pose_errors(torch.as_tensor(prediction.c2w), truth[item.name])[0]))
    assert max(errors) < 2.0, errors


def test_a_query_photographed_on_a_coloured_backdrop_is_posed_and_its_stain_found(fitted):
    """The field learnt the object on white; the query comes as a photo on a blue backdrop, its light
    falling off, in another session (exposure and white balance off by a few per cent), with sensor
    noise. The backdrop is replaced unannounced (a note says so), the pose lands on the truth, and a
    stain planted on the object outscores the clean query, its map peaking on it."""
    from omnipose.core.geometry import pose_errors
    from omnipose.data.synth import load_ground_truth_poses, read_synth_config, render_defect_free

    detector, mad, _ = fitted
    config = read_synth_config(mad.folder)
    truth = load_ground_truth_poses(mad.folder.parent, mad.name)
    item = [i for i in mad.test_items if not i.is_anomalous][1]
    blue = (0.45, 0.55, 0.8)
    white = render_defect_free(CLASS, truth[item.name], config).astype(np.float32) / 255
    on_blue = render_defect_free(CLASS, truth[item.name], replace(config, lighting=replace(config.lighting, background=blue)))
    alpha = 1.0 - (white[..., 0] - on_blue[..., 0].astype(np.float32) / 255) / (1.0 - blue[0])  # both renders mix alike
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    backdrop = np.asarray(blue, np.float32) * (1.0 - 0.08 * y - 0.2 * (x - 0.5) ** 2)[..., None]
    rng = np.random.default_rng(0)

    def photograph(image):
        shot = (image - (1.0 - alpha[..., None]) * (1.0 - backdrop)) * np.float32([0.96, 0.98, 1.03])
        return np.clip(shot + rng.normal(0.0, 0.01, shot.shape), 0.0, 1.0).astype(np.float32)

    clean = detector.predict_one(photograph(white))
    assert any("plain backdrop" in note for note in clean.notes), clean.notes
    assert float(pose_errors(torch.as_tensor(clean.c2w), truth[item.name])[0]) < 2.0
    stained, stain = white.copy(), np.zeros((SIZE, SIZE), bool)
    rows, cols = np.nonzero(alpha > 0.99)
    centre = len(rows) // 2
    stain[(np.hypot(y * SIZE - rows[centre], x * SIZE - cols[centre]) < 6) & (alpha > 0.99)] = True
    stained[stain] = 0.4 * stained[stain] + 0.6 * np.float32([0.1, 0.7, 0.2])
    found = detector.predict_one(photograph(stained))
    assert found.score > clean.score
    row, col = np.unravel_index(np.argmax(found.anomaly_map), found.anomaly_map.shape)
    assert np.min(np.hypot(*(np.nonzero(stain) - np.array([[row], [col]])))) <= 4


def test_a_query_through_a_longer_lens_is_brought_to_the_model_focal_length(fitted):
    """A query shot with a 1.3x longer lens (the object larger in the frame): given its focal length,
    it is scaled to the model's and posed where the truth is, distance included; without it the pose
    search takes the larger object for a nearer camera. Its map and reference lie over it."""
    import copy
    import math

    from omnipose.core.geometry import pose_errors
    from omnipose.data.synth import load_ground_truth_poses, read_synth_config, render_defect_free
    from omnipose.pose import prepare_query

    detector, mad, _ = fitted
    config = read_synth_config(mad.folder)
    truth = load_ground_truth_poses(mad.folder.parent, mad.name)
    item = [i for i in mad.test_items if not i.is_anomalous][2]
    longer = replace(config, camera_angle_x=2 * math.atan(math.tan(config.camera_angle_x / 2) / 1.3))
    image = render_defect_free(CLASS, truth[item.name], longer).astype(np.float32) / 255
    focal = SIZE / 2 / math.tan(longer.camera_angle_x / 2)
    query, notes = prepare_query(image, detector.info, focal=focal)
    assert any("scaled by 0.769" in note for note in notes), notes
    rotation, translation = pose_errors(torch.as_tensor(detector.estimate_pose(query).c2w), truth[item.name])
    assert float(rotation) < 2.0 and float(translation) < 0.03
    unscaled = detector.estimate_pose(prepare_query(image, detector.info)[0])
    assert float(pose_errors(torch.as_tensor(unscaled.c2w), truth[item.name])[1]) > 0.1

    # The map and the reference come back in the query's own frame, over a stain planted in it.
    on_object = np.abs(image - 1.0).max(-1) > 0.3
    rows, cols = np.nonzero(on_object)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    stain = (np.hypot(y - rows[len(rows) // 3], x - cols[len(rows) // 3]) < 7) & on_object
    stained = image.copy()
    stained[stain] = 0.4 * stained[stain] + 0.6 * np.float32([0.1, 0.7, 0.2])
    through_lens = copy.copy(detector)  # the fitted detector, told the queries' focal length
    through_lens.config = replace(detector.config, query_focal=focal)
    found = through_lens.predict_one(stained)
    assert any("back to the query's own frame" in note for note in found.notes), found.notes
    row, col = np.unravel_index(np.argmax(found.anomaly_map), found.anomaly_map.shape)
    assert np.min(np.hypot(*(np.nonzero(stain) - np.array([[row], [col]])))) <= 4
    rendered = np.abs(found.reference - 1.0).max(-1) > 0.3
    assert (rendered & on_object).sum() / (rendered | on_object).sum() > 0.8


def test_the_lens_of_a_photo_is_read_from_its_exif_against_the_training_photos(tmp_path):
    """Without --focal, the 35 mm focal lengths in the EXIF of the query and of the first training photo
    give the scale; a photo without EXIF is left at its size."""
    from PIL import Image

    from omnipose.pose import prepare_query

    def photo(name, millimetres):
        image = np.full((64, 64, 3), 255, np.uint8)
        image[22:42, 22:42] = (200, 40, 30)
        exif = Image.Exif()
        if millimetres:
            exif.get_ifd(0x8769)[41989] = millimetres
        Image.fromarray(image).save(tmp_path / name, exif=exif, quality=95)
        return tmp_path / name

    info = {"width": 64, "height": 64, "background": (1.0, 1.0, 1.0), "K": [[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]],
            "train_image_paths": [str(photo("train.jpg", 50))]}  # fmt: skip
    query, notes = prepare_query(photo("query.jpg", 100), info)
    assert any("scaled by 0.500" in note for note in notes), notes
    red = np.abs(query - (200 / 255, 40 / 255, 30 / 255)).max(-1) < 0.05
    rows, cols = np.nonzero(red)
    assert 8 <= rows.max() - rows.min() + 1 <= 11 and 8 <= cols.max() - cols.min() + 1 <= 11  # 20 px halved
    assert not any("scaled" in note for note in prepare_query(photo("plain.jpg", None), info)[1])


def test_bad_queries_get_clear_errors(fitted, tmp_path):
    detector, _, _ = fitted
    with pytest.raises(OmniposeError, match="not found"):
        detector.predict_one(tmp_path / "missing.png")
    with pytest.raises(OmniposeError):
        detector.predict_one(np.ones((SIZE, SIZE, 3), np.float32))  # an empty (all background) image
    with pytest.raises(OmniposeError):
        detector.predict_one(np.zeros((SIZE, SIZE * 2, 3), np.float32))  # another aspect ratio


def test_unfitted_detector_says_what_to_do():
    with pytest.raises(OmniposeError, match="fit"):
        Detector().predict_one(np.zeros((8, 8, 3), np.float32))


def test_a_bad_detector_config_value_is_refused_naming_the_field():
    from omnipose.core.errors import ConfigError

    bad = {"image_size": 0, "calibration_views": -1, "pose_candidates": 0, "candidate_residual_ratio": 0.9,
           "candidate_separation_deg": -1.0, "register_reference": "rigid", "dataset": "", "ckpt_root": "", "device": 0}
    for name, value in bad.items():
        with pytest.raises(ConfigError, match=f"DetectorConfig.{name} = "):
            replace(DetectorConfig(), **{name: value})
    with pytest.raises(ConfigError, match="candidate_residual_ratio"):
        DetectorConfig(candidate_residual_ratio=float("nan"))


def test_detector_config_round_trips_with_its_nested_configs():
    from omnipose.compare import CompareConfig
    from omnipose.core.errors import ConfigError

    config = DetectorConfig(image_size=96, register_reference=None, compare=CompareConfig(neighbour_views=0, sigma=2.0))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["compare"]["neighbour_views"] == 0 and data["register_reference"] is None
    assert DetectorConfig.from_dict(data) == config
    with pytest.raises(ConfigError, match="CompareConfig.sigma"):
        DetectorConfig.from_dict({**data, "compare": {**data["compare"], "sigma": -1.0}})


def test_original_commands_reuse_the_fit_and_write_the_table(fitted, capsys):
    from omnipose.cli.original import anomaly_nerf_lego, auroc_test

    _, mad, out = fitted
    ckpts = out.parent.parent / "ckpts"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    model_time = (ckpts / "LEGO-3D" / CLASS / "model.pt").stat().st_mtime_ns
    assert anomaly_nerf_lego(["--class_name", CLASS, "--data_dir", str(mad.root), "--output_dir", str(out.parent),
                              "--ckpt_dir", str(ckpts), "--size", str(SIZE)]) == 0
    # The finished field is used as it is and finished queries are skipped.
    assert (ckpts / "LEGO-3D" / CLASS / "model.pt").stat().st_mtime_ns == model_time
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before
    saved = json.loads((out / "config.json").read_text())  # the runner records how the folder was made
    assert saved["detector"]["dataset"] == "LEGO-3D" and saved["detector"]["image_size"] == SIZE
    assert saved["evaluation"] is None
    assert auroc_test(["--obj", CLASS, "--dataset_path", str(mad.root), "--output_path", str(out.parent),
                       "--ckpt_dir", str(ckpts), "--size", str(SIZE)]) == 0
    printed = capsys.readouterr().out
    assert CLASS in printed and "AUROC" in printed
    assert list((out.parent / CLASS / "roc_curve_result").rglob("*.png"))


def test_original_command_without_data_says_how_to_get_it(tmp_path):
    from omnipose.cli.original import anomaly_nerf_lego

    with pytest.raises(OmniposeError, match="omnipose download mad-sim"):
        anomaly_nerf_lego(["--class_name", "01Gorilla", "--data_dir", str(tmp_path / "MAD-Sim")])


def test_demo_pipeline_writes_a_report_whose_table_and_figures_match_the_run(fitted, tmp_path):
    from omnipose.core.config import to_dict
    from omnipose.evaluation import DEMO_EVALUATION, run_pipeline, write_demo_report

    detector, mad, out = fitted
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "predictions").symlink_to(out.parent)  # the fixture's predictions: the rerun resumes, detecting nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    results, timings = run_pipeline(mad.root, [CLASS], demo, detector.config, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before
    assert timings[CLASS]["queries"] == len(mad.test_items)
    saved = json.loads((out / "config.json").read_text())  # written atomically beside the predictions
    assert saved == json.loads(json.dumps({"detector": to_dict(detector.config), "evaluation": DEMO_EVALUATION.resolved().to_dict()}))
    report = write_demo_report(demo, results, timings, DEMO_EVALUATION)
    text = report.read_text()
    metrics = json.loads((demo / "report" / "metrics.json").read_text())
    assert CLASS in text and "| s / query |" in text
    scores = json.loads((out / "scores.json").read_text())
    labels = np.array([item.is_anomalous for item in mad.test_items])
    expected = auroc(labels, np.array([scores[item.name] for item in mad.test_items]))
    reported = metrics["classes"][CLASS]["metrics"]["AUROC_sp"]
    assert reported == pytest.approx(expected, abs=1e-9)
    assert f"{100 * reported:.2f}" in text  # the table in the report is that evaluation's (2 decimals)
    figures = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert any("roc" in f for f in figures) and any("panel" in f for f in figures)
    assert all((demo / f).is_file() and (demo / f).stat().st_size > 1000 for f in figures)

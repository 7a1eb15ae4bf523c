"""Training: checkpoints, interruption and resume, reproducibility, bad input, the command line."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from omnipose.cli.train import add_train_arguments, run_train
from omnipose.core.errors import CheckpointError, DataError
from omnipose.data import PosedImages, load_transforms
from omnipose.nerf import (
    HashGridConfig,
    NGPFieldConfig,
    RenderConfig,
    TrainConfig,
    load_checkpoint,
    psnr,
    split_holdout,
    train_model,
)


@pytest.fixture(scope="module")
def lego_small(lego_dir):
    """11 lego views (r_1, r_10..r_19) at 32x32."""
    return load_transforms(lego_dir / "transforms_train.json", size=32, frame_filter="r_1", progress=False)


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        field=NGPFieldConfig(grid=HashGridConfig(4, 2, 12, 8, 32), hidden_dim=32, color_hidden_dim=32, encoding_backend="torch"),
        render=RenderConfig(occupancy_resolution=16, steps_per_diagonal=96),
        steps=6, target_samples=4096, initial_rays=256, max_rays=1024, occupancy_every=4, occupancy_warmup=8,
        eval_every=0, checkpoint_every_steps=1000, checkpoint_every_seconds=1e9, dataset="nerf_synthetic", class_name="lego",
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path, lego_small):
    model = train_model(lego_small, tiny_config(), tmp_path / "ckpt", progress=False)
    for name in ("model.pt", "config.json", "train_state.pt"):
        assert (tmp_path / "ckpt" / name).is_file()
    summary = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (summary["dataset"], summary["class_name"], summary["step"], summary["n_train_views"]) == ("nerf_synthetic", "lego", 6, 11)
    loaded, info = load_checkpoint(tmp_path / "ckpt", device="cpu", field_type="ngp", dataset="nerf_synthetic", class_name="lego")
    assert (info.width, info.height, info.step) == (32, 32, 6)
    torch.testing.assert_close(info.K, lego_small.K)
    torch.testing.assert_close(info.train_c2w, lego_small.c2w)
    assert info.train_image_paths == [str(p) for p in lego_small.paths]
    assert_same_weights(weights(model), weights(loaded))
    image = loaded.render_image(info.train_c2w[0], info.K, info.height, info.width)
    torch.testing.assert_close(image["rgb"], model.render_image(lego_small.c2w[0], lego_small.K, 32, 32)["rgb"])
    with pytest.raises(CheckpointError, match="class 'lego', not '01Gorilla'"):
        load_checkpoint(tmp_path / "ckpt", class_name="01Gorilla")


def test_bad_checkpoints(tmp_path, lego_small):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing" / "model.pt")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)
    corrupt = tmp_path / "corrupt" / "model.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither an omnipose checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    # Resuming into a folder that holds another object's checkpoint.
    train_model(lego_small, tiny_config(steps=1), tmp_path / "ckpt", progress=False)
    with pytest.raises(CheckpointError, match="--no-resume"):
        train_model(lego_small, tiny_config(steps=2, class_name="ship"), tmp_path / "ckpt", progress=False)


# ----------------------------------------------------------------------------- resume and reproducibility
def test_interrupted_training_resumes_exactly(tmp_path, lego_small):
    reference = weights(train_model(lego_small, tiny_config(steps=7), None, progress=False))

    def interrupt(step, stats):
        if step == 4:
            raise KeyboardInterrupt  # what Ctrl-C raises

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_model(lego_small, tiny_config(steps=7), out, progress=False, callback=interrupt)
    _, info = load_checkpoint(out)
    assert info.step == 4
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 4 and state["optimizer"]["state"], "the optimiser state is saved with the checkpoint"
    saved_moment = state["optimizer"]["state"][0]["exp_avg"].clone()

    seen = []

    def record(step, stats):
        seen.append(step)

    resumed = train_model(lego_small, tiny_config(steps=7), out, progress=False, callback=record)
    assert seen == [5, 6, 7]
    # Same weights as the run that was never interrupted: model, optimiser moments, random stream
    # and ray-count state all came back.
    assert_same_weights(weights(resumed), reference)
    assert not torch.equal(saved_moment, torch.load(out / "train_state.pt", weights_only=False)["optimizer"]["state"][0]["exp_avg"])


def test_crash_loses_only_steps_since_last_checkpoint(tmp_path, lego_small):
    def crash(step, stats):
        if step == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        train_model(lego_small, tiny_config(steps=9, checkpoint_every_steps=2), tmp_path / "run", progress=False, callback=crash)
    _, info = load_checkpoint(tmp_path / "run")
    assert info.step == 4


def test_same_seed_same_weights(lego_small):
    a = weights(train_model(lego_small, tiny_config(seed=3), None, progress=False))
    b = weights(train_model(lego_small, tiny_config(seed=3), None, progress=False))
    c = weights(train_model(lego_small, tiny_config(seed=4), None, progress=False))
    assert_same_weights(a, b)
    assert not torch.equal(a["field.encoding.table"], c["field.encoding.table"])


def test_training_learns_the_object(lego_small):
    train, held = split_holdout(lego_small, 4)
    assert len(held) == 3 and len(train) == 8
    model = train_model(train, tiny_config(steps=120, lr=0.05), None, holdout=held, progress=False)
    white = psnr(torch.ones_like(held.images), held.images)
    assert model.metrics["psnr"] > white + 3.0, (model.metrics, white)
    assert 0 < model.metrics["ssim"] <= 1


def test_the_distortion_loss_enters_training_and_psnr_stays_the_colours(lego_small):
    """With ``distortion_weight`` the same seed trains other weights (the loss reaches the field; what it
    does to real fields is measured in docs/RESULTS.md), and the PSNR logged is the colour loss's alone."""
    train, _ = split_holdout(lego_small, 4)
    logged: dict[float, list] = {}
    models = {}
    for weight in (0.0, 1.0):
        logged[weight] = []
        models[weight] = train_model(train, tiny_config(steps=3, distortion_weight=weight), None, progress=False,
                                     callback=lambda step, stats, w=weight: logged[w].append(stats))  # fmt: skip
    assert not torch.equal(models[0.0].field.grid_parameters()[0], models[1.0].field.grid_parameters()[0])
    # The first step renders the same rays through the same initial field: the same colours, the same PSNR.
    assert logged[1.0][0]["psnr"] == pytest.approx(logged[0.0][0]["psnr"], abs=1e-6)


# ----------------------------------------------------------------------------- bad data
def test_views_without_poses_or_of_mixed_sizes(tmp_path, lego_small):
    broken = PosedImages(lego_small.images, torch.zeros(3, 4, 4), lego_small.K, lego_small.paths)
    with pytest.raises(DataError, match="no poses"):
        train_model(broken, tiny_config(), None, progress=False)
    held = load_transforms(lego_small.paths[0].parent.parent / "transforms_train.json", size=16, frame_filter="r_2", progress=False)
    with pytest.raises(DataError, match="16x16"):
        train_model(lego_small, tiny_config(), None, holdout=held, progress=False)
    # A transforms.json whose frames have no poses, and one mixing image sizes.
    (tmp_path / "a.png").write_bytes((lego_small.paths[0]).read_bytes())
    from PIL import Image

    Image.new("RGB", (20, 10), "white").save(tmp_path / "b.png")
    (tmp_path / "no_poses.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": [{"file_path": "a.png"}]}))
    with pytest.raises(DataError, match="transform_matrix"):
        load_transforms(tmp_path / "no_poses.json", progress=False)
    eye = torch.eye(4).tolist()
    frames = [{"file_path": "a.png", "transform_matrix": eye}, {"file_path": "b.png", "transform_matrix": eye}]
    (tmp_path / "mixed.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    with pytest.raises(DataError, match="mixed image sizes"):
        load_transforms(tmp_path / "mixed.json", progress=False)


# ----------------------------------------------------------------------------- command line
def test_command_line(tmp_path, lego_dir):
    meta = json.loads((lego_dir / "transforms_train.json").read_text())
    meta["frames"] = [dict(f, file_path=str(lego_dir / f["file_path"][2:])) for f in meta["frames"][:6]]
    meta["aabb"] = [[-1.2, -1.4, -0.6], [1.2, 1.4, 1.4]]
    transforms = tmp_path / "lego" / "transforms.json"
    transforms.parent.mkdir()
    transforms.write_text(json.dumps(meta))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--transforms", str(transforms), "--size", "24", "--steps", "3", "--holdout", "3",
                              "--out", str(tmp_path / "out"), "--no-resume", "--quiet", "--refine-poses"])  # fmt: skip
    assert run_train(args) == 0
    _, info = load_checkpoint(tmp_path / "out", class_name="lego")
    assert info.step == 3 and info.train_c2w.shape == (4, 4, 4) and "psnr" in info.metrics
    assert info.config["refine_poses"] and not info.config["refine_focal"]
    # The views' own box, as Detector.fit takes it, not the declared one (a tight start trains worse).
    assert info.config["aabb_source"] == "frustums" and not torch.allclose(info.aabb, torch.tensor(meta["aabb"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "24"])  # neither --data nor --transforms


# ----------------------------------------------------------------------------- configs and old files
@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("minutes", -1.0), ("target_samples", 0), ("min_rays", 0), ("lr", float("nan")), ("network_lr", 0.0),
     ("lr_milestones", (0.5, 1.5)), ("occupancy_every", 0), ("occupancy_fraction", 0.0), ("eval_every", -1),
     ("checkpoint_every_seconds", 0.0), ("seed", 1.5), ("class_name", ""), ("render", {"chunk": 8}),
     ("refine_focal", True), ("distortion_weight", -0.1), ("unexplained_check_at", 1.0), ("unexplained_gap_db", 0.0)],
)  # fmt: skip
def test_train_config_refuses_nonsense(field, value):
    """refine_focal=True alone: the focal length is refined only with the poses."""
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_saved_configs_drop_settings_they_no_longer_have(tmp_path, lego_small):
    """A checkpoint written by an older omnipose (tuples pickled as tuples, settings since removed)
    still loads, and its training config reads back."""
    train_model(lego_small, tiny_config(steps=1), tmp_path / "ckpt", progress=False)
    payload = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=False)
    settings = payload["settings"]
    settings["field"]["triplane"]["resolutions"] = tuple(settings["field"]["triplane"]["resolutions"])
    settings["field"]["retired_knob"] = 3
    settings["field"]["grid"]["retired_grid_knob"] = True
    settings["render"]["retired_render_knob"] = 0.5
    torch.save(payload, tmp_path / "ckpt" / "model.pt")
    model, info = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert model.field.config == tiny_config().field
    assert model.config == tiny_config().render
    assert "aabb_source" in info.config
    config = TrainConfig.from_dict(info.config)
    assert config == tiny_config(steps=1).resolved("cpu")
    assert config.field == tiny_config().field and config.render == tiny_config().render


GOLDEN = Path("/work/golden/ckpts_clean/synth/01Robot")


@pytest.mark.skipif(not (GOLDEN / "model.pt").is_file(), reason="no checkpoint written before the refactor here")
def test_checkpoint_written_before_the_refactor_loads(tmp_path):
    """A checkpoint of omnipose before the nerf modules were split (copied; the original is never written)."""
    import shutil

    for name in ("model.pt", "config.json"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    model, info = load_checkpoint(tmp_path, device="cpu", field_type="ngp", class_name="01Robot")
    payload = torch.load(tmp_path / "model.pt", weights_only=False)
    assert_same_weights(weights(model), payload["model"])
    assert model.settings()["render"] == payload["settings"]["render"]
    assert model.settings()["field"]["grid"] == payload["settings"]["field"]["grid"]
    config = TrainConfig.from_dict(info.config)
    assert (config.steps, config.class_name, config.field.grid.n_levels) == (info.step, "01Robot", 2)
    with torch.no_grad():
        K = info.K.clone()
        K[:2] *= 32 / info.width
        image = model.render_image(info.train_c2w[0], K, 32, 32)
    assert image["rgb"].shape == (32, 32, 3) and float(image["opacity"].max()) > 0.5


def test_old_module_paths_still_serve_their_names():
    import importlib

    import omnipose  # noqa: F401  (installs the old paths)

    old_names = {
        "omnipose.encoding": ("PositionalEncoding", "HashGridConfig", "grid_levels", "interpolate_rows", "TriPlaneEncoding",
                              "TcnnHashGridEncoding", "make_grid_encoding", "tcnn_available", "scatter_rows", "HASH_PRIMES"),
        "omnipose.field": ("NGPField", "NGPFieldConfig", "truncated_exp", "mlp", "NeRFMLP", "NeRFMLPConfig", "load_nerf_mlp",
                           "nerf_config_from_state_dict"),
        "omnipose.render": ("RadianceModel", "VanillaNeRFModel", "RenderConfig", "OccupancyGrid", "composite", "ray_aabb_intersect",
                            "estimate_aabb", "resolve_aabb", "resample_grid", "random_uniform", "sample_pdf", "nerf_raw_to_outputs",
                            "DEFAULT_AABB"),
        "omnipose.train": ("TrainConfig", "CheckpointInfo", "train_model", "load_checkpoint", "save_checkpoint", "evaluate_views",
                           "psnr", "ssim", "RayBatcher", "split_holdout", "default_field_config", "add_train_arguments", "run_train",
                           "load_training_data", "CHECKPOINT_FORMAT", "MODEL_FILE"),
    }  # fmt: skip
    for module_name, names in old_names.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert getattr(module, name) is not None, f"{module_name}.{name}"
    # The command-line part of 0.1's omnipose.train lives in omnipose.cli.train now.
    old_train = importlib.import_module("omnipose.train")
    assert old_train.run_train is run_train and old_train.add_train_arguments is add_train_arguments


# ----------------------------------------------------------------------------- pose refinement
def test_pose_corrections_cast_the_rays_of_the_corrected_cameras(lego_small):
    from omnipose.core.geometry import image_rays
    from omnipose.nerf.pose_refinement import PoseCorrections

    c2w = lego_small.c2w[:3]
    corrections = PoseCorrections.for_cameras(c2w, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 2.0]]))
    assert corrections.pivot.tolist() == [0.0, 0.0, 0.5]
    with torch.no_grad():
        corrections.twists.copy_(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)) * 0.05)
    corrected = corrections.poses(c2w)
    for view in range(3):
        origins, directions = image_rays(c2w[view], lego_small.K, 32, 32)
        index = torch.full((origins.shape[0],), view)
        moved_o, moved_d = corrections.rays(origins.reshape(-1, 3), directions.reshape(-1, 3), index)
        expected_o, expected_d = image_rays(corrected[view], lego_small.K, 32, 32)
        torch.testing.assert_close(moved_o, expected_o.reshape(-1, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(moved_d, expected_d.reshape(-1, 3), atol=1e-5, rtol=0)
    # What every view shares moves the whole scene, not one camera against the others: it goes.
    differences = corrections.twists[1:] - corrections.twists[:1]
    corrections.remove_drift()
    torch.testing.assert_close(corrections.twists.mean(0), torch.zeros(6), atol=1e-7, rtol=0)
    torch.testing.assert_close(corrections.twists[1:] - corrections.twists[:1], differences, atol=1e-6, rtol=0)


def test_a_refined_focal_length_casts_the_rays_of_the_camera_with_that_focal_length(lego_small):
    from omnipose.core.geometry import image_rays
    from omnipose.nerf.pose_refinement import PoseCorrections

    c2w = lego_small.c2w[:3]
    corrections = PoseCorrections.for_cameras(c2w, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 2.0]]), focal=True)
    with torch.no_grad():
        corrections.twists.copy_(torch.randn(3, 6, generator=torch.Generator().manual_seed(1)) * 0.05)
        corrections.log_focal.fill_(math.log(1.03))
    K = corrections.intrinsics(lego_small.K)
    assert corrections.focal_scale() == pytest.approx(1.03)
    torch.testing.assert_close(K[:2, :2], lego_small.K[:2, :2] * 1.03)
    torch.testing.assert_close(K[:2, 2], lego_small.K[:2, 2])  # the principal point stays
    corrected = corrections.poses(c2w)
    for view in range(3):
        origins, directions = image_rays(c2w[view], lego_small.K, 32, 32)
        index = torch.full((origins.shape[0],), view)
        moved_o, moved_d = corrections.rays(origins.reshape(-1, 3), directions.reshape(-1, 3), index)
        expected_o, expected_d = image_rays(corrected[view], K, 32, 32)
        torch.testing.assert_close(moved_o, expected_o.reshape(-1, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(moved_d, expected_d.reshape(-1, 3), atol=1e-5, rtol=0)


def _whole_and_resumed(views, config, folder):
    """The checkpoints of a whole run and of one interrupted at step 4 and resumed, which must end with
    the same weights: (whole, resumed) CheckpointInfo."""
    reference = train_model(views, config, folder / "whole", progress=False)

    def interrupt(step, stats):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(views, config, folder / "run", progress=False, callback=interrupt)
    resumed = train_model(views, config, folder / "run", progress=False)
    assert_same_weights(weights(resumed), weights(reference))
    return load_checkpoint(folder / "whole")[1], load_checkpoint(folder / "run")[1]


def test_training_with_pose_refinement_resumes_exactly_and_saves_the_refined_poses(tmp_path, lego_small, one_thread):
    """In one thread, as the focal-length test below: with two, the resumed run's hash table came out a few bits
    off the whole run's on some machines and not on others; the cause is not known."""
    from omnipose.core.geometry import rotation_error_deg

    config = tiny_config(steps=7, refine_poses=True, pose_lr=1e-2)
    whole, resumed = _whole_and_resumed(lego_small, config, tmp_path)
    moved = rotation_error_deg(whole.train_c2w[:, :3, :3], lego_small.c2w[:, :3, :3])
    assert 0.01 < moved.max() < 5.0  # the poses were refined, and the refined ones saved
    torch.testing.assert_close(resumed.train_c2w, whole.train_c2w, atol=0, rtol=0)
    torch.testing.assert_close(whole.K, lego_small.K, atol=0, rtol=0)  # the focal length only with refine_focal


def test_a_refined_focal_length_is_saved_and_resumes_exactly(tmp_path, lego_small, one_thread):
    """In one thread: with two, a resumed run that refines the focal length ended, now and then, with
    weights a few bits off the whole run's (as with the poses alone, above); the cause is not known."""
    config = tiny_config(steps=7, refine_poses=True, refine_focal=True, pose_lr=1e-2)
    whole, resumed = _whole_and_resumed(lego_small, config, tmp_path)
    ratio = float(whole.K[0, 0] / lego_small.K[0, 0])
    assert ratio != 1.0 and abs(ratio - 1.0) < 0.1 and float(whole.K[1, 1] / lego_small.K[1, 1]) == pytest.approx(ratio)
    torch.testing.assert_close(resumed.K, whole.K, atol=0, rtol=0)
    torch.testing.assert_close(resumed.train_c2w, whole.train_c2w, atol=0, rtol=0)



def test_views_whose_poses_disagree_with_the_others_are_left_out_named_and_stay_out_on_resume(tmp_path, lego_dir):
    """Two of 16 lego views given poses turned 90 and 150 degrees about the object (as a reconstruction gets a few
    photos wrong) are the two, and the only two, the field cannot explain halfway: left out of the rest of training
    and of the checkpoint's views, named, and still out when an interrupted run resumes. (The tiny field at 40 px
    leaves them about 6 dB below the median view, the others within 1.5: hence the 4 dB here, against 8 for real
    fields, ``TrainConfig.unexplained_gap_db``.)"""
    from omnipose.core.geometry import turn_about

    views = load_transforms(lego_dir / "transforms_train.json", size=40, progress=False).subset(list(range(0, 96, 6)))
    wrong = views.c2w.clone()
    for index, degrees in ((3, 90.0), (11, 150.0)):
        angle = math.radians(degrees)
        turn = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
        wrong[index] = turn_about(wrong[index][None], turn, torch.zeros(3))[0]
    turned = PosedImages(views.images, wrong, views.K, views.paths, views.background)
    config = tiny_config(steps=300, lr=0.05, unexplained_gap_db=4.0)

    def interrupt(step, stats):
        if step == 200:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(turned, config, tmp_path / "run", progress=False, callback=interrupt)
    expected = {views.paths[3].name, views.paths[11].name}
    assert {Path(p).name for p in load_checkpoint(tmp_path / "run")[1].left_out_paths} == expected
    model = train_model(turned, config, tmp_path / "run", progress=False)
    assert {Path(p).name for p in model.metrics["views_left_out"]} == expected, model.metrics
    info = load_checkpoint(tmp_path / "run")[1]
    assert {Path(p).name for p in info.left_out_paths} == expected
    assert len(info.train_image_paths) == 14 and not expected & {Path(p).name for p in info.train_image_paths}
    torch.testing.assert_close(info.train_c2w, wrong[[i for i in range(16) if i not in (3, 11)]], atol=0, rtol=0)


def test_a_check_that_leaves_no_view_out_changes_nothing_in_training(lego_small):
    """The halfway render of every view draws on no random stream: where it finds every view explained, the run
    ends with the weights of a run without the check."""
    checked = train_model(lego_small, tiny_config(steps=12, unexplained_check_at=0.5), None, progress=False)
    assert "views_left_out" not in checked.metrics
    assert_same_weights(weights(checked), weights(train_model(lego_small, tiny_config(steps=12, unexplained_check_at=None),
                                                              None, progress=False)))


def test_views_left_out_draw_no_rays_and_a_quarter_of_them_is_a_warning_not_a_leave_out(lego_small, monkeypatch, capsys):
    """``leave_out_unexplained``: the views it names are never drawn from again; where more than a quarter of the
    views fall below the median by the gap, the poses disagree as a whole (a reconstruction folded), so it leaves none
    out and says so."""
    from omnipose.nerf import train as training

    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    batcher = training.RayBatcher(lego_small, device)
    psnrs = np.full(len(lego_small), 30.0)
    psnrs[[2, 7]] = 15.0
    monkeypatch.setattr(training, "object_psnrs", lambda *args: psnrs)
    assert training.leave_out_unexplained(torch.nn.Identity(), lego_small, lego_small.c2w, lego_small.K, batcher, 8.0) == [2, 7]
    assert lego_small.paths[2].name in capsys.readouterr().out
    drawn = torch.cat([batcher.sample(4096, generator)[3] for _ in range(8)])
    assert set(drawn.unique().tolist()) == set(range(len(lego_small))) - {2, 7}

    psnrs[[0, 4, 9]] = 15.0  # 5 of 11 views
    batcher = training.RayBatcher(lego_small, device)
    assert training.leave_out_unexplained(torch.nn.Identity(), lego_small, lego_small.c2w, lego_small.K, batcher, 8.0) == []
    assert "far worse than the others" in capsys.readouterr().out and batcher.kept_views is None


def test_a_field_check_fails_where_a_third_of_the_lego_cameras_are_folded_and_names_the_few_turned_among_true_ones(
        lego_dir, tmp_path):
    """``FieldCheck`` on 30 real lego views. Where every third camera is turned half a circle about the vertical
    (a folded reconstruction: the photos of one side posed on the other), a short field cannot draw them back: the
    check fails (200 steps at 48 px here; the default, 1000 steps at 100 px, is calibrated in ``docs/RESULTS.md``).
    Where two cameras alone are turned (a mapping that holds together but for photos registered across the
    object), it holds as a whole and names those two alone as unexplained, more than
    ``TrainConfig.unexplained_gap_db`` under the median view (8.4 and 11.9 dB when measured). 400 steps there: at
    200 they are already the two worst views, but only 4 and 8 dB under a median the field has not reached yet."""
    import os

    from omnipose.nerf import FieldCheck, FieldCheckConfig

    meta = json.loads((lego_dir / "transforms_train.json").read_text())

    def class_folder(name: str, turned: list[int]) -> Path:
        folder = tmp_path / name / "lego"
        (folder / "train" / "good").mkdir(parents=True)
        frames = []
        for k, frame in enumerate(meta["frames"][:30]):
            photo = Path(frame["file_path"]).name + ".png"
            os.symlink(lego_dir / "train" / photo, folder / "train" / "good" / photo)
            c2w = np.array(frame["transform_matrix"])
            if k in turned:
                c2w = np.diag([-1.0, -1.0, 1.0, 1.0]) @ c2w  # half a turn about the world's vertical (z)
            frames.append({"file_path": f"train/good/{photo}", "transform_matrix": c2w.tolist()})
        (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": meta["camera_angle_x"], "frames": frames}))
        return folder

    folded = FieldCheck(FieldCheckConfig(steps=200, width=48, min_psnr_db=16.5, device="cpu"),
                        progress=False)(class_folder("folded", list(range(0, 30, 3))))  # fmt: skip
    assert not folded["held"], folded
    few = [7, 20]
    verdict = FieldCheck(FieldCheckConfig(steps=400, width=48, min_psnr_db=16.5, device="cpu"),
                         progress=False)(class_folder("few", few))  # fmt: skip
    assert verdict["held"] and sorted(verdict["unexplained"]) == sorted(Path(meta["frames"][k]["file_path"]).name + ".png" for k in few), verdict
    assert min(verdict["unexplained"].values()) > verdict["unexplained_gap_db"] == 8.0, verdict
    assert verdict["median_object_psnr_db"] - folded["median_object_psnr_db"] > 2.5, (verdict, folded)

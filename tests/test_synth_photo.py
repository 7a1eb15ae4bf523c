"""The photo style of the built-in benchmark (``omnipose synth --style photo``): MAD-Real conditions
from Mitsuba 3. Tests that render skip without the ``photo`` extra (``pip install -e ".[photo]"``)."""
import argparse
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from omnipose.cli.synth import PHOTO_TRAIN_VIEWS, add_synth_arguments, config_from_args
from omnipose.core.errors import ConfigError, DataError
from omnipose.core.geometry import rotation_error_deg, spherical_pose
from omnipose.core.image import dilate
from omnipose.data import apply_similarity, camera_similarity, load_transforms, open_mad_class
from omnipose.data.synth import (
    PhotoConfig,
    PhotoLighting,
    PhotoStyle,
    SynthConfig,
    SynthError,
    build_figure,
    ensure_class,
    generate_class,
    load_ground_truth_poses,
    load_true_poses,
    photo_test_pose,
    read_synth_config,
    render_scene,
)
from omnipose.data.synth.defects import fit_defect
from omnipose.data.synth.photo_meshes import solid_mesh
from omnipose.data.synth.photo_scene import load, mitsuba_module
from omnipose.data.synth.raycast import Stain

CLASS = "04Turtle"
TINY = dict(style="photo", size=64, train_views=8, test_views_per_type=2, seed=2, progress=False)
FAST = dict(samples_per_pixel=4, threads=1)


def _config(**photo) -> SynthConfig:
    return SynthConfig(**TINY, photo=PhotoConfig(**{**FAST, **photo}))


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


@pytest.fixture(scope="module")
def photo_class(tmp_path_factory):
    pytest.importorskip("mitsuba")
    root = tmp_path_factory.mktemp("photo")
    generate_class(root, CLASS, _config())
    return root


# ----------------------------------------------------------------------------- layout
def test_a_photo_class_is_read_by_the_mad_readers(photo_class):
    mad = open_mad_class(photo_class, CLASS)
    assert len(mad.train_images) == 8 and all(p.suffix == ".png" for p in mad.train_images)
    assert sorted({item.defect_type for item in mad.test_items}) == ["Burrs", "Missing", "Stains", "good"]
    for item in mad.test_items:
        assert _png(item.image_path).shape == (64, 64, 3)
        if item.is_anomalous:
            mask = np.asarray(Image.open(item.mask_path)) > 0
            assert 0.001 <= mask.mean() <= 0.02  # defect_area
    views = load_transforms(mad.transforms_path, progress=False)
    assert len(views.images) == 8
    meta = json.loads(mad.transforms_path.read_text())
    assert meta["camera_angle_x"] == pytest.approx(PhotoConfig().camera_angle_x)
    assert meta["camera_angle_x"] < SynthConfig().camera_angle_x  # a longer lens than the sim views
    assert read_synth_config(photo_class / CLASS) == _config()
    assert ensure_class(photo_class, CLASS, _config()) == set()  # same settings: kept as it is


def test_training_poses_are_written_as_a_reconstruction_leaves_them(photo_class):
    meta = json.loads((photo_class / CLASS / "transforms.json").read_text())
    written = np.array([frame["transform_matrix"] for frame in meta["frames"]], np.float64)
    truth = load_true_poses(photo_class, CLASS)
    true = np.stack([truth["train"][frame["file_path"]].numpy() for frame in meta["frames"]]).astype(np.float64)
    frame = truth["similarity"]
    assert not np.allclose(frame, np.eye(4), atol=0.05)  # an arbitrary frame and scale
    assert abs(np.cbrt(np.linalg.det(frame[:3, :3])) - 1.0) > 1e-3 or np.abs(frame[:3, 3]).max() > 1e-3
    # Removing the similarity leaves about half a degree of error per view.
    aligned = apply_similarity(camera_similarity(written, true), written)
    errors = rotation_error_deg(torch.tensor(aligned[:, :3, :3]), torch.tensor(true[:, :3, :3])).numpy()
    assert 0.15 < errors.mean() < 1.0 and errors.max() < 2.5
    # The published test poses are the true ones carried into the written frame.
    published = load_ground_truth_poses(photo_class, CLASS)
    assert set(published) == set(truth["test"])
    for key, pose in truth["test"].items():
        expected = apply_similarity(frame, pose.numpy()[None].astype(np.float64))[0]
        np.testing.assert_allclose(published[key].numpy(), expected, atol=1e-4)


def test_without_reconstruction_poses_the_true_poses_are_written(tmp_path):
    pytest.importorskip("mitsuba")
    config = SynthConfig(**{**TINY, "train_views": 3, "test_views_per_type": 0},
                         photo=PhotoConfig(**FAST, reconstruction_poses=False))  # fmt: skip
    generate_class(tmp_path, CLASS, config)
    meta = json.loads((tmp_path / CLASS / "transforms.json").read_text())
    truth = load_true_poses(tmp_path, CLASS)
    for frame in meta["frames"]:
        np.testing.assert_allclose(frame["transform_matrix"], truth["train"][frame["file_path"]].numpy(), atol=1e-6)


def test_onboarded_training_poses_are_what_onboard_recovers_and_the_test_poses_follow(tmp_path, monkeypatch):
    """With ``onboard_poses`` the class holds what ``onboard`` made of its training photos: its poses, frame and
    focal length, without the photos it left out; the published test poses are carried into its frame by the
    similarity between the true and the onboarded cameras. Structure from motion is replaced here by poses in
    a known frame, with 1 photo left out (real onboardings of these photos: scripts/bench_onboard.py --photo)."""
    pytest.importorskip("mitsuba")
    from omnipose.data.synth import photo

    known = np.diag([2.0, 2.0, 2.0, 1.0]) @ np.array([[0, -1, 0, 0.5], [1, 0, 0, -1.0], [0, 0, 1, 2.0], [0, 0, 0, 1]])
    seen, turn = {}, {"deg": 0.0}

    def fake_onboard(images, out, config, matcher=None):
        names = sorted(p.name for p in images.iterdir())
        seen.update(names=names, matcher=matcher)
        true = PhotoStyle(CLASS, config_used).train_poses().numpy().astype(np.float64)
        # Each camera turned about its own axis by turn["deg"]: a wrong reconstruction when large.
        true[:, :3, :3] = true[:, :3, :3] @ spherical_pose(0.0, 0.0, 1.0).numpy()[:3, :3].T @ \
            spherical_pose(np.radians(turn["deg"]), 0.0, 1.0).numpy()[:3, :3]
        frames = [{"file_path": f"train/good/{name}",
                   "transform_matrix": apply_similarity(known, true[[int(name[:-4])]])[0].tolist()}
                  for name in names if name != "1.png"]  # fmt: skip
        out.mkdir(parents=True)
        (out / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.55, "frames": frames}))
        report = {"images_registered": len(frames), "mean_reprojection_error_px": 0.4, "matching": "fake"}
        return report, ["1.png"]

    monkeypatch.setattr(photo, "onboard_leaving_out", fake_onboard)
    config_used = SynthConfig(**{**TINY, "train_views": 4, "test_views_per_type": 1},
                              photo=PhotoConfig(**FAST, onboard_poses=True))  # fmt: skip
    generate_class(tmp_path, CLASS, config_used, matcher="the matcher")
    assert seen == {"names": ["0.png", "1.png", "2.png", "3.png"], "matcher": "the matcher"}
    meta = json.loads((tmp_path / CLASS / "transforms.json").read_text())
    kept = ["train/good/0.png", "train/good/2.png", "train/good/3.png"]
    assert [frame["file_path"] for frame in meta["frames"]] == kept
    assert sorted(p.name for p in (tmp_path / CLASS / "train" / "good").iterdir()) == ["0.png", "2.png", "3.png"]
    assert meta["camera_angle_x"] == 0.55
    truth = load_true_poses(tmp_path, CLASS)
    np.testing.assert_allclose(truth["similarity"], known, atol=1e-5)
    assert sorted(truth["train"]) == kept
    for key, pose in load_ground_truth_poses(tmp_path, CLASS).items():
        expected = apply_similarity(known, truth["test"][key].numpy()[None].astype(np.float64))[0]
        np.testing.assert_allclose(pose.numpy(), expected, atol=1e-4)
    marker = json.loads((tmp_path / CLASS / "synth.json").read_text())["onboarded_training_poses"]
    assert marker["left_out"] == ["1.png"] and marker["rotation_error_deg"]["max"] < 1e-3
    # A reconstruction many degrees off the truth (plain faces matched across the figure) is refused.
    turn["deg"] = 30.0
    with pytest.raises(DataError, match=r"30.0 deg off their true poses in median .*\(without --onboard-poses\)"):
        generate_class(tmp_path / "wrong", CLASS, config_used)
    assert not (tmp_path / "wrong" / CLASS).exists()


# ----------------------------------------------------------------------------- what photographs bring
def test_train_and_test_photos_are_taken_under_different_lighting(photo_class):
    folder = photo_class / CLASS
    train = np.stack([_png(p) for p in sorted((folder / "train" / "good").glob("*.png"))])
    test = np.stack([_png(p) for p in sorted((folder / "test").glob("*/*.png"))])
    warmth = lambda images: images[..., 0].mean() / images[..., 2].mean()  # noqa: E731
    assert warmth(test) > 1.1 * warmth(train)  # tungsten against daylight, same white balance
    assert abs(test.mean() - train.mean()) > 0.02  # another intensity
    same = _config(test_lighting_differs=False)
    assert same.photo.lighting(test=True) == same.photo.lighting(test=False)


def test_the_background_is_not_a_plain_colour(photo_class):
    """The old assumption (everything off the object is one known colour) does not hold: at most 60 % of
    the background lies within 0.06 of any one colour, where a plain backdrop puts nearly all of it (the
    light-tent test below)."""
    truth = load_true_poses(photo_class, CLASS)
    figure = build_figure(CLASS)
    geometry = SynthConfig(size=64, camera_angle_x=PhotoConfig().camera_angle_x, antialias=False)
    for name in ("train/good/0.png", "train/good/5.png"):
        image = _png(photo_class / CLASS / name)
        background = render_scene(figure.scene, truth["train"][name], geometry).solid < 0
        assert 0.3 < background.mean() < 0.95  # the figure is in view, not filling it
        pixels = image[background]
        for colour in (np.median(pixels, 0), np.ones(3), pixels.mean(0)):
            assert (np.abs(pixels - colour).max(-1) < 0.06).mean() < 0.6


def test_in_a_light_tent_the_backdrop_is_plain_and_loads_as_white(tmp_path):
    """``backdrop``: the figure photographed in front of one colour, lighting, noise and JPEG included.
    Off the figure every pixel is that colour; the loader finds it and replaces it by white, with no
    warning, and the figure's own pixels keep their colours."""
    import warnings

    pytest.importorskip("mitsuba")
    generate_class(tmp_path, CLASS, _config(backdrop=(0.55, 0.65, 0.85)))
    truth = load_true_poses(tmp_path, CLASS)
    geometry = SynthConfig(size=64, camera_angle_x=PhotoConfig().camera_angle_x, antialias=False)
    mad = open_mad_class(tmp_path, CLASS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        views = mad.load_train_views(progress=False)
    for index in (0, 5):
        name = f"train/good/{index}.png"
        image = _png(tmp_path / CLASS / name)
        solid = render_scene(build_figure(CLASS).scene, truth["train"][name], geometry).solid >= 0
        away = ~dilate(solid, 2)
        np.testing.assert_allclose(np.median(image[away], 0), (0.55, 0.65, 0.85), atol=0.02)
        loaded = views.images[index].numpy()
        assert (np.abs(loaded[away] - 1.0).max(-1) < 0.02).mean() > 0.98
        inner = ~dilate(~solid, 2)
        assert np.abs(loaded[inner] - image[inner]).max(-1).mean() < 0.01


def test_a_photo_is_the_same_every_time_and_changes_with_the_seed():
    pytest.importorskip("mitsuba")
    style = PhotoStyle(CLASS, _config())
    pose = style.train_poses()[3]
    first = style.render_train(3, pose)
    assert np.array_equal(first, PhotoStyle(CLASS, _config()).render_train(3, pose))
    other = PhotoStyle(CLASS, SynthConfig(**{**TINY, "seed": 3}, photo=PhotoConfig(**FAST)))
    assert not np.array_equal(first, other.render_train(3, pose))


def test_a_scene_keeps_its_lights_in_order_from_load_to_load():
    """Which light a path samples follows the scene's order of shapes: Mitsuba's default loading put two
    light panels in either order now and then, and the same photo came out with other noise."""
    pytest.importorskip("mitsuba")
    mi = mitsuba_module()

    def scene():
        light = {"type": "area", "radiance": {"type": "rgb", "value": [1.0, 1.0, 1.0]}}
        parts = {f"part_{i}": {"type": "sphere", "center": [float(i), 0.0, 0.0], "radius": 0.1} for i in range(3)}
        return {"type": "scene", "table": {"type": "rectangle"}, **parts,
                "key": {"type": "rectangle", "to_world": mi.ScalarTransform4f().translate([0, 0, 2]), "emitter": light},
                "fill": {"type": "rectangle", "to_world": mi.ScalarTransform4f().translate([0, 2, 2]), "emitter": light}}  # fmt: skip

    orders = {tuple(shape.id() for shape in load(mi, scene()).shapes()) for _ in range(60)}
    assert orders == {("table", "part_0", "part_1", "part_2", "key", "fill")}

@pytest.mark.parametrize("defect_type", ["Burrs", "Missing", "Stains"])
def test_a_mask_is_the_pixels_the_defect_changes(defect_type):
    """Rendered with and without the defect (same seed, before noise, 256 samples so that Monte
    Carlo noise stays under the threshold): what changes lies in the mask or next to it, apart from
    a burr's shadow, and a stain changes nearly all of its mask."""
    pytest.importorskip("mitsuba")
    style = PhotoStyle(CLASS, _config(samples_per_pixel=256))
    rng = np.random.default_rng([5, 1])
    c2w = photo_test_pose(rng, style.distance, style.photo)
    good = render_scene(style.figure.scene, c2w, style.geometry)

    def mask_of(proposal):
        return style.defect_mask(defect_type, proposal, good, c2w)

    proposal, mask, _ = fit_defect(style.figure, defect_type, good, rng, c2w.numpy().astype(np.float64),
                                   style.geometry, mask_of)  # fmt: skip
    assert proposal is not None and 0.001 <= mask.mean() <= 0.02
    before = style.render_linear(c2w, None, test=True, seed=7)
    after = style.render_linear(c2w, proposal, test=True, seed=7)
    changed = np.abs(after - before).max(-1) > 0.1
    near = dilate(mask, 1, shape="square")
    assert changed[mask].any()
    assert (changed & ~near).sum() <= max(3, 0.25 * mask.sum())
    if defect_type != "Burrs":  # a burr may shade the figure beside it; nothing else changes it
        assert not (changed & ~near & (good.solid >= 0)).any()
    if defect_type == "Stains":
        assert (np.abs(after - before).max(-1) > 0.05)[mask].mean() > 0.7


# ----------------------------------------------------------------------------- pieces
def _volume(positions: np.ndarray) -> float:
    """Signed volume of a closed triangle soup (positive when its faces point outwards)."""
    return float(np.einsum("ij,ij->i", positions[:, 0], np.cross(positions[:, 1], positions[:, 2])).sum() / 6)


def test_solid_meshes_are_closed_and_a_stain_only_splits_them():
    scene = build_figure("03Duck").scene
    for index in range(len(scene)):
        soup, stained = solid_mesh(scene, index)
        extent = scene.hi[index] - scene.lo[index]
        if scene.kind[index] == 1:
            expected = np.pi * scene.radius[index] ** 2 * extent[scene.axis[index]]
            assert _volume(soup.positions) == pytest.approx(expected, rel=3e-3)
        elif not scene.cut[index, :3].any():
            assert _volume(soup.positions) == pytest.approx(np.prod(extent), rel=1e-9)
        else:
            assert 0 < _volume(soup.positions) < np.prod(extent)  # a slope: part of its box
        assert not stained.any()
    box = next(i for i in range(len(scene)) if scene.kind[i] == 0 and not scene.cut[i, :3].any())
    stud = next(i for i in range(len(scene)) if scene.stud[i])
    for index in (box, stud):
        soup, _ = solid_mesh(scene, index)
        extent = scene.hi[index] - scene.lo[index]
        corner = scene.hi[index] - 0.1 * extent  # on no face: the stain reaches the top and a side
        corner[2] = scene.hi[index, 2]
        split, inside = solid_mesh(scene, index, Stain(tuple(corner), 0.3 * float(extent.min()), (0.1, 0.1, 0.1)))
        assert _volume(split.positions) == pytest.approx(_volume(soup.positions), rel=1e-6)
        assert inside.any() and not inside.all() and len(split) > 5 * len(soup)


def test_photo_settings_are_checked():
    with pytest.raises(ConfigError, match="fill"):
        PhotoConfig(fill=0.0)
    with pytest.raises(ConfigError, match="key_elevation_deg"):
        PhotoLighting(key_elevation_deg=0.0)
    with pytest.raises(ConfigError, match="style"):
        SynthConfig(style="painting")
    with pytest.raises(ConfigError, match="jpeg_quality"):
        PhotoConfig(jpeg_quality=0)
    config = SynthConfig(style="photo", photo=PhotoConfig(clutter=3, jpeg_quality=None, test_lighting=PhotoLighting()))
    assert SynthConfig.from_dict(config.to_dict()) == config
    assert "photo" in config.settings() and "photo" not in SynthConfig().settings()


def test_without_mitsuba_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mitsuba", None)  # import mitsuba now raises ImportError
    with pytest.raises(SynthError, match=r'pip install -e "\.\[photo\]"'):
        generate_class(tmp_path, CLASS, _config())
    assert not (tmp_path / CLASS).exists()


def test_the_command_line_chooses_the_style():
    parser = add_synth_arguments(argparse.ArgumentParser())
    photo = config_from_args(parser.parse_args(["--out", "x", "--style", "photo", "--spp", "8", "--threads", "1"]))
    assert photo.style == "photo" and photo.train_views == PHOTO_TRAIN_VIEWS
    assert photo.photo.samples_per_pixel == 8 and photo.photo.threads == 1 and not photo.photo.onboard_poses
    onboarded = config_from_args(parser.parse_args(["--out", "x", "--style", "photo", "--onboard-poses"]))
    assert onboarded.photo.onboard_poses and parser.parse_args(["--out", "x"]).matcher == "xfeat"
    sim = config_from_args(parser.parse_args(["--out", "x"]))
    assert sim.style == "sim" and sim.train_views == 40 and sim.photo == PhotoConfig()
    tent = config_from_args(parser.parse_args(["--out", "x", "--style", "photo", "--backdrop", "0.8"]))
    assert tent.photo.backdrop == (0.8, 0.8, 0.8) and tent.lighting.background == 1.0
    blue = config_from_args(parser.parse_args(["--out", "x", "--backdrop", "0.5,0.6,0.8"]))
    assert blue.lighting.background == (0.5, 0.6, 0.8) and blue.photo.backdrop is None
    with pytest.raises(ConfigError, match="backdrop"):
        config_from_args(parser.parse_args(["--out", "x", "--backdrop", "0.5,0.6"]))

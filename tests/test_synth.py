"""The built-in MAD-format benchmark: layout, determinism, exact masks, consistent poses."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from omnipose.cli.synth import add_synth_arguments, run_synth
from omnipose.core.errors import ConfigError, DataError
from omnipose.core.geometry import intrinsics_from_fov, project, spherical_pose
from omnipose.core.image import save_image
from omnipose.data import DEFECT_TYPES, GOOD, list_classes, load_transforms, open_mad_class
from omnipose.data.synth import (
    MASK_MIN_REGION,
    MASK_TOLERANCE,
    SCENE_BOUNDS,
    SYNTH_CLASSES,
    Lighting,
    SynthConfig,
    SynthError,
    anomaly_mask,
    build_figure,
    camera_distance,
    combine,
    ensure_class,
    generate_class,
    generate_dataset,
    load_ground_truth_poses,
    make_box,
    make_cylinder,
    random_test_pose,
    read_synth_config,
    render,
    render_defect_free,
    render_scene,
    without_specks,
    write_preview,
)
from omnipose.data.synth.defects import make_test_view

CLASS = "04Turtle"
TINY = dict(size=64, train_views=6, test_views_per_type=2, progress=False)


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_class(root, CLASS, SynthConfig(seed=3, **TINY))
    return root


# ----------------------------------------------------------------------------- layout
def test_output_is_read_by_the_mad_readers(dataset):
    assert list_classes(dataset) == [CLASS]  # ground_truth_poses/ is not a class
    mad = open_mad_class(dataset, CLASS)
    assert len(mad.train_images) == 6
    assert sorted({item.defect_type for item in mad.test_items}) == sorted((GOOD,) + DEFECT_TYPES)
    assert len(mad.test_items) == 2 * 4
    views = load_transforms(dataset / CLASS / "transforms.json", progress=False)
    assert views.images.shape == (6, 64, 64, 3)
    meta = json.loads((dataset / CLASS / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == [f"train/good/{n}.png" for n in range(6)]
    low, high = np.array(meta["aabb"])
    assert (low < high).all() and (low >= np.array(SCENE_BOUNDS[0])).all() and (high <= np.array(SCENE_BOUNDS[1])).all()
    for item in mad.test_items:
        with Image.open(item.image_path) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
        if item.mask_path is not None:
            with Image.open(item.mask_path) as mask:
                assert mask.mode == "L"
                assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    assert not (dataset / CLASS / "ground_truth" / GOOD).exists()


def test_background_is_white_and_object_is_seen(dataset):
    image = _png(dataset / CLASS / "train" / "good" / "0.png")
    assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()
    covered = (image < 250).any(-1).mean()
    assert 0.05 < covered < 0.8


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset, tmp_path):
    generate_class(tmp_path / "again", CLASS, SynthConfig(seed=3, **TINY))
    generate_class(tmp_path / "other", CLASS, SynthConfig(seed=4, **TINY))
    first = _tree_bytes(dataset)
    assert _tree_bytes(tmp_path / "again") == first
    other = _tree_bytes(tmp_path / "other")
    assert other.keys() == first.keys()
    differing = [name for name in first if name.startswith(f"{CLASS}/test/") and first[name] != other[name]]
    assert len(differing) == 8
    assert first[f"ground_truth_poses/{CLASS}.json"] != other[f"ground_truth_poses/{CLASS}.json"]


# ----------------------------------------------------------------------------- masks and poses
def test_masks_are_non_empty_exactly_for_defect_images_and_small(dataset):
    mad = open_mad_class(dataset, CLASS)
    for item in mad.test_items:
        if item.defect_type == GOOD:
            assert item.mask_path is None
            continue
        share = (_png(item.mask_path) > 0).mean()
        assert 0.001 <= share <= 0.025, (item.name, share)


def test_masks_equal_the_pixels_that_differ_from_the_defect_free_render(dataset):
    config = read_synth_config(dataset / CLASS)
    poses = load_ground_truth_poses(dataset, CLASS)
    mad = open_mad_class(dataset, CLASS)
    for item in mad.test_items:
        image = _png(item.image_path)
        reference = render_defect_free(CLASS, poses[item.name], config)
        if item.defect_type == GOOD:
            assert np.array_equal(image, reference), item.name  # the GT pose reproduces the good view
        else:
            mask = _png(item.mask_path) > 0
            assert np.array_equal(mask, anomaly_mask(image, reference)), item.name
            assert mask.any()


def _region_sizes(mask: np.ndarray) -> np.ndarray:
    regions, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return np.bincount(regions.ravel(), minlength=count + 1)[1:]


def test_specks_leave_a_mask_but_its_largest_region_and_groups_of_three_stay():
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True  # the defect
    mask[15, 15] = True  # touches it diagonally: part of it (8-connected)
    mask[25:27, 5] = mask[25, 6] = True  # three pixels: a region of its own
    specks = np.zeros_like(mask)
    specks[30, 30] = specks[20, 30:32] = True
    assert np.array_equal(without_specks(mask | specks), mask)
    alone = np.zeros((9, 9), bool)
    alone[4, 4] = True  # a defect that small is still the defect
    assert np.array_equal(without_specks(alone), alone)


def test_a_burr_flush_with_the_face_it_grows_on_leaves_no_specks_in_its_mask():
    # 08Elephant's first burr at 400 px shares the plane of its face: the two renders differ in single
    # pixels along that plane, 7-22 px from the burr, which the mask must not count as defect regions.
    config = SynthConfig(size=400, progress=False)
    figure = build_figure("08Elephant")
    view = make_test_view("08Elephant", "Burrs", 0, config, camera_distance(figure, config))
    good = render_scene(figure.scene, view.c2w, config).to_uint8()
    changed = np.abs(view.image.astype(np.int16) - good.astype(np.int16)).max(-1) > MASK_TOLERANCE
    raw = _region_sizes(changed)
    assert (raw < MASK_MIN_REGION).sum() >= 10, f"the generator no longer draws this case ({raw}): pick another view"
    assert (_region_sizes(view.mask) >= MASK_MIN_REGION).all()
    assert view.mask.sum() == raw[raw >= MASK_MIN_REGION].sum() and not (view.mask & ~changed).any()


def test_training_poses_reproduce_the_training_images_and_look_at_the_object(dataset):
    config = read_synth_config(dataset / CLASS)
    views = load_transforms(dataset / CLASS / "transforms.json", progress=False)
    for index in (0, 3):
        image = _png(dataset / CLASS / "train" / "good" / f"{index}.png")
        assert np.array_equal(image, render_defect_free(CLASS, views.c2w[index], config))
    for c2w in views.c2w:
        centre, depth = project(torch.zeros(1, 3), c2w, views.K)
        assert torch.allclose(centre[0], torch.tensor([32.0, 32.0]), atol=0.5)
        assert depth[0] > math.sqrt(3.0)  # outside the scene bounds
    heights = views.c2w[:, 2, 3]
    assert heights.min() < 0 < heights.max()  # rings below and above the object, as test views come from anywhere


def test_ground_truth_pose_file_covers_every_test_image(dataset, tmp_path):
    poses = load_ground_truth_poses(dataset, CLASS)
    names = {item.name for item in open_mad_class(dataset, CLASS).test_items}
    assert set(poses) == names
    for pose in poses.values():
        assert pose.dtype == torch.float32 and pose.shape == (4, 4)
        assert torch.allclose(pose[:3, :3] @ pose[:3, :3].T, torch.eye(3), atol=1e-5)
    with pytest.raises(DataError, match="ground-truth test poses"):
        load_ground_truth_poses(tmp_path, CLASS)


def test_test_views_cover_the_sphere_with_random_roll():
    rng = np.random.default_rng(0)
    poses = torch.stack([random_test_pose(rng, 4.0) for _ in range(200)])
    heights = poses[:, 2, 3] / 4.0
    assert heights.min() < -0.8 and heights.max() > 0.8  # from below and above, not only training rings
    # Roll: the camera's x axis leaves the horizontal plane (a look_at camera's x axis stays in it).
    assert poses[:, 2, 0].abs().max() > 0.8
    assert torch.allclose(poses[:, :3, 3].norm(dim=1), torch.full((200,), 4.0), atol=1e-4)


# ----------------------------------------------------------------------------- safety, classes, CLI
def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / CLASS
    foreign.mkdir()
    (foreign / "precious.txt").write_text("real data")
    with pytest.raises(SynthError, match="--overwrite"):
        generate_class(tmp_path, CLASS, SynthConfig(**TINY))
    assert (foreign / "precious.txt").is_file()
    generate_class(tmp_path, CLASS, SynthConfig(overwrite=True, **TINY))
    assert not (foreign / "precious.txt").exists() and (foreign / "synth.json").is_file()
    generate_class(tmp_path, CLASS, SynthConfig(**TINY))  # its own output may be regenerated
    assert not (tmp_path / ".synth-staging").exists()


def test_ensure_class_keeps_a_matching_class_and_says_what_a_remake_changed(tmp_path):
    assert ensure_class(tmp_path, CLASS, SynthConfig(**TINY)) == {"train", "test"}
    marker = tmp_path / CLASS / "synth.json"
    made = marker.stat().st_mtime_ns
    assert ensure_class(tmp_path, CLASS, SynthConfig(**TINY)) == set()  # same settings: kept as it is
    assert marker.stat().st_mtime_ns == made
    # Fewer test views: the training views come out byte for byte the same, so a field stays valid.
    assert ensure_class(tmp_path, CLASS, SynthConfig(**{**TINY, "test_views_per_type": 1})) == {"test"}
    assert len(open_mad_class(tmp_path, CLASS).test_items) == 4  # one per type now
    assert ensure_class(tmp_path, CLASS, SynthConfig(**{**TINY, "test_views_per_type": 1, "train_views": 5})) == {"train", "test"}
    foreign = tmp_path / "05Giraffe"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("real data")
    with pytest.raises(SynthError, match="--overwrite"):
        ensure_class(tmp_path, "05Giraffe", SynthConfig(**TINY))
    assert (foreign / "precious.txt").is_file()


def test_ensure_class_takes_the_specks_out_of_masks_written_before_the_rule(tmp_path):
    ensure_class(tmp_path, CLASS, SynthConfig(**TINY))
    folder, marker_path = tmp_path / CLASS, tmp_path / CLASS / "synth.json"
    mask_path = sorted((folder / "ground_truth").rglob("*_mask.png"))[0]
    made = _png(mask_path) > 0
    assert not made[:3, :3].any()  # a corner shows the backdrop
    old = made.copy()
    old[0, 0] = True  # a speck, as masks were written before
    save_image(mask_path, old.astype(np.uint8) * 255)
    marker = json.loads(marker_path.read_text())
    assert marker["mask_min_region"] == MASK_MIN_REGION
    del marker["mask_min_region"]
    marker_path.write_text(json.dumps(marker))
    others = {name: data for name, data in _tree_bytes(folder).items() if name != "synth.json" and "_mask" not in name}
    assert ensure_class(tmp_path, CLASS, SynthConfig(**TINY)) == set()  # nothing a field or a prediction used
    assert np.array_equal(_png(mask_path) > 0, made)
    assert json.loads(marker_path.read_text())["mask_min_region"] == MASK_MIN_REGION
    assert {name: data for name, data in _tree_bytes(folder).items() if name in others} == others
    # Masks written with a larger minimum than today's cannot be brought back: the class is made again.
    marker_path.write_text(json.dumps({**marker, "mask_min_region": MASK_MIN_REGION + 5}))
    assert ensure_class(tmp_path, CLASS, SynthConfig(**TINY)) == {"test"}
    assert json.loads(marker_path.read_text())["mask_min_region"] == MASK_MIN_REGION


def test_classes_are_distinct_and_fit_the_scene_bounds():
    assert len(SYNTH_CLASSES) >= 10 and len(set(SYNTH_CLASSES)) == len(SYNTH_CLASSES)
    signatures = set()
    for name in SYNTH_CLASSES:
        scene = build_figure(name).scene
        low, high = scene.bounds()
        assert np.allclose((high - low).max(), 1.8) and np.allclose(low + high, 0.0, atol=1e-9)
        assert scene.stud.sum() >= 4  # LEGO-like: studs on exposed tops
        signatures.add((len(scene), tuple(np.round(scene.albedo.mean(0), 3))))
    assert len(signatures) == len(SYNTH_CLASSES)


def test_cli_writes_a_preview_and_rejects_unknown_classes(tmp_path, capsys):
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--out", str(tmp_path), "--classes", "09Rocket", "--size", "48", "--train-views", "3",
         "--test-views-per-type", "1", "--preview", "--quiet"]
    )  # fmt: skip
    assert run_synth(args) == 0
    preview = _png(tmp_path / "preview_09Rocket.png")
    assert preview.ndim == 3 and (np.all(preview == [255, 0, 0], axis=-1)).any()  # mask outlines in red
    again = _png(write_preview(tmp_path / "again.png", tmp_path / "09Rocket"))  # read back from disk
    assert again.shape == preview.shape and (np.all(again == [255, 0, 0], axis=-1)).any()
    assert run_synth(parser.parse_args(["--out", str(tmp_path), "--classes", "99Nope"])) == 2
    assert "unknown synth class" in capsys.readouterr().err


def test_generate_dataset_makes_the_first_k_classes(tmp_path):
    config = SynthConfig(num_classes=2, size=32, train_views=2, test_views_per_type=0, progress=False)
    folders = generate_dataset(tmp_path, config)
    assert [f.name for f in folders] == list(SYNTH_CLASSES[:2])
    assert list_classes(tmp_path) == list(SYNTH_CLASSES[:2])


# ----------------------------------------------------------------------------- the ray caster
def _camera(size=41, distance=4.0, elevation=math.pi / 2 - 1e-3):
    c2w = spherical_pose(0.0, elevation, distance).double().numpy()
    return c2w, intrinsics_from_fov(0.5, size, size).double().numpy()


def test_ray_caster_hits_boxes_and_cylinders_where_geometry_says():
    c2w, K = _camera()
    box = make_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [0.8, 0.2, 0.2])
    hit = render(box, c2w, K, 41, 41)
    centre = hit.points[20, 20]
    assert np.allclose(centre[2], 0.5, atol=1e-9) and np.allclose(hit.normals[20, 20], [0, 0, 1], atol=1e-9)
    cylinder = make_cylinder([0, 0, 0], 2, 0.3, 1.0, [0.2, 0.2, 0.8])
    seen = render(cylinder, c2w, K, 41, 41).solid >= 0
    # The disc of radius 0.3 at height 0.5 seen from 4 m straight above: its image radius in pixels.
    radius_px = 0.3 / 3.5 * K[0, 0]
    v, u = np.mgrid[0:41, 0:41] + 0.5
    inside = (u - 20.5) ** 2 + (v - 20.5) ** 2 < (radius_px - 0.6) ** 2
    outside = (u - 20.5) ** 2 + (v - 20.5) ** 2 > (radius_px + 0.6) ** 2
    assert seen[inside].all() and not seen[outside].any()


def test_key_light_casts_shadows_and_a_slope_cut_removes_material():
    c2w, K = _camera(size=64, elevation=1.2)
    floor = make_box([-1, -1, -0.1], [1, 1, 0.0], [0.8, 0.8, 0.8])
    lighting = Lighting(key_direction=(0.0, 0.0, 1.0), fill_intensity=0.0, bottom_intensity=0.0, specular=0.0)
    alone = render(floor, c2w, K, 64, 64, lighting, antialias=False).rgb
    blocker = make_box([-0.2, -0.2, 0.5], [0.2, 0.2, 0.6], [0.8, 0.8, 0.8])
    shaded = render(combine([floor, blocker]), c2w, K, 64, 64, lighting, antialias=False)
    on_floor = (shaded.solid == 0) & (alone[..., 0] > shaded.rgb[..., 0] + 0.3)
    assert on_floor.sum() > 10  # the blocker's shadow darkens the floor
    wedge = make_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], cut=[1.0, 0.0, 1.0, 0.0])
    full = make_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert (render(wedge, c2w, K, 64, 64).solid >= 0).sum() < (render(full, c2w, K, 64, 64).solid >= 0).sum()


def test_render_scene_uses_the_float32_pose_exactly():
    config = SynthConfig(size=32, progress=False)
    scene = build_figure(CLASS).scene
    pose = spherical_pose(0.3, 0.4, 3.5)
    a = render_scene(scene, pose, config).to_uint8()
    b = render_scene(scene, pose.double(), config).to_uint8()
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "field, value",
    [
        ("size", 8), ("size", 64.5), ("train_views", 0), ("test_views_per_type", -1), ("seed", -1),
        ("classes", ("99Nope",)), ("num_classes", 0), ("num_classes", 13), ("camera_angle_x", 0.0),
        ("camera_angle_x", float("nan")), ("camera_distance", 1.5), ("train_elevation_range_deg", (30.0, -30.0)),
        ("train_elevation_range_deg", (-90.0, 10.0)), ("train_rings", 0), ("defect_area", (0.02, 0.001)),
        ("defect_area", (0.0, 0.02)), ("defect_area", (0.1, 0.6)), ("antialias", "yes"), ("lighting", None),
    ],
)  # fmt: skip
def test_synth_config_refuses_nonsense_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"SynthConfig.{field} ="):
        SynthConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [("key_direction", (0.0, 0.0, 0.0)), ("fill_direction", (1.0, float("inf"), 0.0)), ("bottom_direction", (1.0, 0.0)),
     ("key_intensity", -0.1), ("ambient", float("nan")), ("shininess", 0.0), ("background", 1.5)],
)  # fmt: skip
def test_lighting_refuses_nonsense_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"Lighting.{field} ="):
        Lighting(**{field: value})


def test_unknown_classes_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown synth class '99Nope'; choose from 01Robot"):
        SynthConfig(classes=("01Robot", "99Nope"))


def test_configs_round_trip_through_a_dict():
    config = SynthConfig(size=48, classes=("01Robot",), camera_distance=4.0, lighting=Lighting(key_intensity=0.5))
    assert SynthConfig.from_dict(config.to_dict()) == config
    assert Lighting.from_dict(Lighting().to_dict()) == Lighting()


def test_settings_in_the_marker_are_the_config_without_what_does_not_change_the_output(dataset):
    marker = json.loads((dataset / CLASS / "synth.json").read_text())
    config = SynthConfig(seed=3, **TINY)
    assert marker["settings"] == config.settings()
    # A sim class's marker leaves out the photo style's settings, so that classes made before it keep theirs.
    dropped = {"classes", "num_classes", "overwrite", "progress", "preview", "style", "photo"}
    assert set(config.to_dict()) - set(marker["settings"]) == dropped
    assert marker["settings"]["lighting"] == Lighting().to_dict()
    assert read_synth_config(dataset / CLASS) == SynthConfig(seed=3, **{**TINY, "progress": False})


def test_a_marker_with_settings_this_version_does_not_know_still_reads(dataset, tmp_path):
    folder = tmp_path / CLASS
    folder.mkdir()
    marker = json.loads((dataset / CLASS / "synth.json").read_text())
    marker["settings"]["retired_knob"] = 3
    marker["settings"]["lighting"]["retired_light"] = [0, 0, 1]
    (folder / "synth.json").write_text(json.dumps(marker))
    assert read_synth_config(folder) == read_synth_config(dataset / CLASS)
    (folder / "synth.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_synth_config(folder)


def test_the_old_module_path_serves_the_command_line_names():
    import omnipose.synth as old

    assert old.add_synth_arguments is add_synth_arguments and old.run_synth is run_synth


def test_legs_stack_their_segments_from_the_ground_leg_by_leg():
    from omnipose.data.synth import FigureBuilder

    legs, bricks = FigureBuilder(), FigureBuilder()
    legs.legs(((0, 0), (3, 1)), (1, 2), ((1, (1.0, 0.0, 0.0)), (4, (0.0, 1.0, 0.0))))
    for x, y in ((0, 0), (3, 1)):
        bricks.brick(x, y, 0, 1, 2, 1, (1.0, 0.0, 0.0))
        bricks.brick(x, y, 1, 1, 2, 4, (0.0, 1.0, 0.0))
    built, expected = legs.build().scene, bricks.build().scene
    assert all(np.array_equal(getattr(built, name), getattr(expected, name)) for name in ("lo", "hi", "albedo", "part"))

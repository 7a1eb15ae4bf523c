"""COLMAP models, nerfstudio transforms and ``omnipose onboard``: conventions on synthetic cameras with known
poses (exact round trips), bad input refused with nothing written, and a small real run on the lego views."""
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from omnipose.core.errors import DataError
from omnipose.core.geometry import make_intrinsics, project, rotation_error_deg, spherical_pose
from omnipose.core.image import save_image
from omnipose.data import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    OnboardConfig,
    c2w_to_colmap,
    camera_similarity,
    colmap_to_c2w,
    load_colmap,
    load_transforms,
    object_frame,
    onboard,
    read_colmap_model,
    transforms_from_model,
    write_colmap_model,
)
from omnipose.data.colmap import apply_similarity, qvec_to_rotmat, rotmat_to_qvec

CAP = {"max_unseen_arc_deg": None}
"""The lego views these tests onboard lie on one cap of the hemisphere, not all around the object."""


def _cameras(count=12, radius=4.0):
    """OpenGL c2w (N, 4, 4) float64 around a target off the origin, at several heights."""
    poses = [spherical_pose(np.radians(360.0 * i / count), np.radians(15.0 + 20.0 * (i % 3)), radius,
                            target=(0.3, -0.2, 0.1)) for i in range(count)]  # fmt: skip
    c2w = np.stack([p.double().numpy() for p in poses])
    # float32 poses are orthonormal to 1e-7 only; make them exact so round trips can be checked to 1e-12.
    u, _, vt = np.linalg.svd(c2w[:, :3, :3])
    c2w[:, :3, :3] = u @ vt
    return c2w


def _model(c2w, camera_model="SIMPLE_PINHOLE", params=(300.0, 64.0, 48.0), size=(128, 96), points=None):
    cameras = {1: ColmapCamera(1, camera_model, size[0], size[1], np.array(params, dtype=np.float64))}
    images = {}
    for index, pose in enumerate(c2w):
        qvec, tvec = c2w_to_colmap(pose)
        xys = np.array([[10.5, 20.25], [3.0, 4.0]])
        images[index + 1] = ColmapImage(index + 1, qvec, tvec, 1, f"view_{index:02d}.png", xys, np.array([0, -1]))
    xyz = np.zeros((0, 3)) if points is None else points
    tracks = [np.array([[1, 0], [2, 0]]) for _ in range(len(xyz))]
    return ColmapModel(cameras, images, xyz, np.full((len(xyz), 3), 128, np.uint8), np.full(len(xyz), 0.5),
                       np.arange(len(xyz), dtype=np.int64), tracks)  # fmt: skip


def test_quaternions_round_trip_at_every_angle_including_half_turns():
    rng = np.random.default_rng(0)
    rotations = [qvec_to_rotmat(q) for q in rng.normal(size=(50, 4))]
    rotations += [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, -1.0, 1.0]), np.eye(3)]
    for R in rotations:
        assert np.allclose(qvec_to_rotmat(rotmat_to_qvec(R)), R, atol=1e-12)


def test_colmap_pose_projects_a_point_where_our_camera_does():
    # COLMAP: x_cam = R X + t in OpenCV axes, pixel = K x_cam / z; ours: OpenGL c2w through core.geometry.project.
    c2w = _cameras()
    K = np.array([[300.0, 0, 64.0], [0, 310.0, 48.0], [0, 0, 1]])
    points = np.random.default_rng(1).uniform(-0.5, 0.5, size=(20, 3))
    for pose in c2w:
        qvec, tvec = c2w_to_colmap(pose)
        camera = points @ qvec_to_rotmat(qvec).T + tvec
        pixels = camera[:, :2] / camera[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
        ours, depth = project(torch.from_numpy(points), torch.from_numpy(pose), torch.from_numpy(K))
        assert np.allclose(ours.numpy(), pixels, atol=1e-9) and np.allclose(depth.numpy(), camera[:, 2], atol=1e-12)
        assert np.allclose(colmap_to_c2w(qvec, tvec), pose, atol=1e-12)


def test_binary_model_round_trips_exactly(tmp_path):
    c2w = _cameras()
    model = _model(c2w, "PINHOLE", (300.0, 310.0, 64.5, 47.5), points=np.random.default_rng(2).normal(size=(7, 3)))
    write_colmap_model(model, tmp_path)
    back = read_colmap_model(tmp_path)
    assert back.cameras[1].model == "PINHOLE" and np.array_equal(back.cameras[1].params, model.cameras[1].params)
    for image_id, image in model.images.items():
        read = back.images[image_id]
        assert read.name == image.name and np.array_equal(read.qvec, image.qvec) and np.array_equal(read.tvec, image.tvec)
        assert np.array_equal(read.xys, image.xys) and np.array_equal(read.point3D_ids, image.point3D_ids)
    assert np.array_equal(back.xyz, model.xyz) and [t.tolist() for t in back.tracks] == [t.tolist() for t in model.tracks]
    recovered = np.stack([colmap_to_c2w(back.images[i + 1].qvec, back.images[i + 1].tvec) for i in range(len(c2w))])
    assert np.allclose(recovered, c2w, atol=1e-12)


def test_truncated_or_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cameras.bin"):
        read_colmap_model(tmp_path)
    write_colmap_model(_model(_cameras(3)), tmp_path)
    (tmp_path / "images.bin").write_bytes((tmp_path / "images.bin").read_bytes()[:50])
    with pytest.raises(DataError, match="truncated"):
        read_colmap_model(tmp_path)


def test_object_frame_centres_scales_and_puts_the_cameras_up_on_z():
    c2w = _cameras()
    rng = np.random.default_rng(3)
    points = rng.uniform(-0.5, 0.5, size=(2000, 3)) + [0.3, -0.2, 0.1]
    # Tilt and scale the whole scene as COLMAP's arbitrary frame would.
    tilt = np.eye(4)
    tilt[:3, :3] = 2.5 * qvec_to_rotmat([0.9, 0.3, -0.2, 0.1])
    tilt[:3, 3] = [5.0, -1.0, 2.0]
    tilted = apply_similarity(tilt, c2w)
    tilted_points = points @ tilt[:3, :3].T + tilt[:3, 3]
    T = object_frame(tilted, tilted_points)
    new_points = tilted_points @ T[:3, :3].T + T[:3, 3]
    centre = 0.5 * (np.percentile(tilted_points, 2, 0) + np.percentile(tilted_points, 98, 0))
    assert np.allclose(T[:3, :3] @ centre + T[:3, 3], 0, atol=1e-9)
    assert np.allclose(centre, tilt[:3, :3] @ [0.3, -0.2, 0.1] + tilt[:3, 3], atol=0.1)
    assert np.percentile(np.linalg.norm(new_points, axis=1), 98) == pytest.approx(1.0)
    new = apply_similarity(T, tilted)
    up = new[:, :3, 1].mean(0)
    assert up[2] / np.linalg.norm(up) == pytest.approx(1.0)
    # The cameras keep their shape: relative rotations unchanged, rotations orthonormal.
    assert np.allclose(new[:, :3, :3] @ new[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(new[0, :3, :3].T @ new[5, :3, :3], c2w[0, :3, :3].T @ c2w[5, :3, :3], atol=1e-12)


def test_camera_similarity_recovers_a_known_frame_change_and_carries_poses_back():
    c2w = _cameras()
    T = np.eye(4)
    T[:3, :3] = 0.37 * qvec_to_rotmat([0.2, -0.7, 0.4, 0.5] / np.linalg.norm([0.2, -0.7, 0.4, 0.5]))
    T[:3, 3] = [-3.0, 0.5, 8.0]
    moved = apply_similarity(T, c2w)
    found = camera_similarity(c2w, moved)
    assert np.allclose(found, T, atol=1e-10)
    # The inverse carries poses known in the target frame into the source frame, rotations included.
    back = apply_similarity(np.linalg.inv(found), moved)
    assert np.allclose(back, c2w, atol=1e-10)
    with pytest.raises(ValueError, match="3 or more"):
        camera_similarity(c2w[:2], moved[:2])


def _write_images(folder, names, size=(128, 96)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        rng = np.random.default_rng(zlib.crc32(name.encode()))  # a different picture per name
        save_image(folder / name, rng.uniform(size=(size[1], size[0], 3)))


@pytest.mark.parametrize("camera_model, params", [
    ("SIMPLE_PINHOLE", (300.0, 64.0, 48.0)),  # one centred pinhole: camera_angle_x
    ("PINHOLE", (300.0, 310.0, 60.5, 50.0)),  # anything else: nerfstudio's per-frame fl_x, fl_y, cx, cy, w, h
])  # fmt: skip
def test_transforms_json_round_trip_reads_back_the_same_cameras(tmp_path, camera_model, params):
    c2w = _cameras()
    model = _model(c2w, camera_model, params)
    T = object_frame(c2w, np.zeros((0, 3)))
    meta = transforms_from_model(model, T)
    assert ("camera_angle_x" in meta) == (camera_model == "SIMPLE_PINHOLE")
    assert ("fl_x" in meta["frames"][0]) == (camera_model == "PINHOLE")
    _write_images(tmp_path, [image.name for image in model.images.values()])
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    views = load_transforms(tmp_path / "transforms.json", progress=False)
    expected = apply_similarity(T, c2w)
    assert torch.allclose(views.c2w.double(), torch.from_numpy(expected), atol=1e-6)
    fx, fy, cx, cy = model.cameras[1].pinhole()
    assert torch.allclose(views.K, make_intrinsics(fx, fy, cx, cy), rtol=1e-6)
    # Back to COLMAP through the recorded applied_transform gives the original poses.
    applied = np.vstack([np.array(meta["applied_transform"]), [0, 0, 0, 1]])
    original = apply_similarity(np.linalg.inv(applied), views.c2w.double().numpy())
    assert np.allclose(original, c2w, atol=1e-5)


def test_nerfstudio_frames_with_two_cameras_or_distortion_are_flagged(tmp_path):
    model = _model(_cameras(4), "PINHOLE", (300.0, 310.0, 60.5, 50.0))
    meta = transforms_from_model(model)
    _write_images(tmp_path, [image.name for image in model.images.values()])
    meta["frames"][1]["fl_x"] = 400.0
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="one camera"):
        load_transforms(tmp_path / "transforms.json", progress=False)
    meta["frames"][1]["fl_x"] = 300.0
    meta["k1"] = 0.05
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="distortion"):
        load_transforms(tmp_path / "transforms.json", progress=False)
    with pytest.raises(DataError, match="distortion"):
        transforms_from_model(_model(_cameras(4), "SIMPLE_RADIAL", (300.0, 64.0, 48.0, 0.01)))


def test_a_colmap_project_loads_as_posed_views(tmp_path):
    c2w = _cameras()
    model = _model(c2w, points=np.random.default_rng(5).uniform(-0.5, 0.5, size=(50, 3)))
    write_colmap_model(model, tmp_path / "sparse" / "0")
    _write_images(tmp_path / "images", [image.name for image in model.images.values()])
    views = load_colmap(tmp_path / "sparse" / "0", progress=False)
    assert len(views) == len(c2w) and views.width == 128
    assert torch.allclose(views.K, make_intrinsics(300.0, 300.0, 64.0, 48.0))
    # The object frame: the points' box is centred.
    T = object_frame(c2w, model.xyz)
    assert torch.allclose(views.c2w.double(), torch.from_numpy(apply_similarity(T, c2w)), atol=1e-5)


def test_retrieval_pairs_each_photo_with_its_most_similar_ones(tmp_path):
    from omnipose.data.sfm_matching import retrieval_pairs

    # Two families of pictures: a pattern and its slight variations, and noise; neighbours stay in the family.
    rng = np.random.default_rng(6)
    base = rng.uniform(size=(64, 64, 3))
    for index in range(4):
        save_image(tmp_path / f"pattern_{index}.png", np.clip(base + 0.05 * rng.normal(size=base.shape), 0, 1))
        save_image(tmp_path / f"noise_{index}.png", rng.uniform(size=(64, 64, 3)))
    pairs = retrieval_pairs(tmp_path, neighbours=3)
    assert all(a < b for a, b in pairs) and len(set(pairs)) == len(pairs)
    assert {pair for pair in pairs if pair[0].startswith("pattern")} == {
        (f"pattern_{i}.png", f"pattern_{j}.png") for i in range(4) for j in range(i + 1, 4)}


def test_coarse_pairs_join_each_lego_view_with_views_nearby(lego_dir, tmp_path):
    """``coarse_pairs`` on SIFT features of 16 real lego views, two groups of 8 from opposite sides of the
    object: each view is paired with its 3 coarse best, all within its own group and near it."""
    pycolmap = pytest.importorskip("pycolmap")
    from omnipose.data.sfm_matching import coarse_pairs

    cameras = _lego_cameras(lego_dir)
    order = _by_direction(cameras)
    names = order[:8] + order[-8:]
    _lego_photos(lego_dir, tmp_path / "photos", names, size=200)
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 1
    options.sift.first_octave = -1
    pycolmap.extract_features(tmp_path / "db.db", tmp_path / "photos", extraction_options=options)

    pairs = coarse_pairs(pycolmap, tmp_path / "db.db", neighbours=3)
    assert all(a < b for a, b in pairs) and {n for pair in pairs for n in pair} == {f"{n}.png" for n in names}
    group = {f"{n}.png": k < 8 for k, n in enumerate(names)}
    assert all(group[a] == group[b] for a, b in pairs), pairs
    direction = {f"{n}.png": cameras[n][:3, 3] / np.linalg.norm(cameras[n][:3, 3]) for n in names}
    angles = [np.degrees(np.arccos(np.clip(direction[a] @ direction[b], -1, 1))) for a, b in pairs]
    assert max(angles) < 60, sorted(angles)


def test_a_photo_registered_across_the_object_from_its_matches_is_flagged():
    from omnipose.data.sfm_checks import MirroredPhotosError, mirrored_views

    c2w = _cameras(12)
    names = [f"v{i}" for i in range(12)]
    centres = {name: pose[:3, 3] for name, pose in zip(names, c2w)}
    # Neighbours around the ring match best.
    pairs = {(names[i], names[(i + k) % 12]): 300 - 100 * k for i in range(12) for k in (1, 2)}
    target = np.array([0.3, -0.2, 0.1])
    assert mirrored_views(centres, target, pairs) == {}
    centres["v3"] = 2 * target - centres["v3"]  # mirrored through the object
    flagged = mirrored_views(centres, target, pairs)
    assert list(flagged) == ["v3"] and flagged["v3"][0] > 120 and set(flagged["v3"][1]) <= {"v1", "v2", "v4", "v5"}
    # The refusal names the photos for a person in its message and for a program in ``photos``.
    error = MirroredPhotosError(flagged)
    assert isinstance(error, DataError) and error.photos == ["v3"] and str(error).startswith("1 photos") and "v3:" in str(error)


def test_photos_of_two_sides_put_at_one_viewpoint_are_flagged_as_a_folded_mapping():
    """The built-in robot looks alike from behind and in front but for its face and buttons. Registered where the
    other side was photographed (a fold), its photos disagree at one viewpoint and each pair is named; photos truly
    from one viewpoint, 0.5 deg apart and one of them darker and noisier, are not."""
    from omnipose.data.sfm_checks import FoldedViewpointsError, folded_viewpoints
    from omnipose.data.synth import SynthConfig, render_defect_free
    from omnipose.data.synth.designs import build_figure
    from omnipose.data.synth.views import camera_distance, class_intrinsics

    config = SynthConfig(size=160)
    distance = camera_distance(build_figure("01Robot"), config)

    def pose(azimuth, elevation):
        return spherical_pose(np.radians(azimuth), np.radians(elevation), distance)

    def world_to_camera(c2w):
        qvec, tvec = c2w_to_colmap(c2w.double().numpy())
        return np.hstack([qvec_to_rotmat(qvec), tvec[:, None]])

    shots = {"back": pose(85, 26), "back_again": pose(85.4, 26.3), "front": pose(265, 26), "left": pose(40, -18),
             "right": pose(220, -18)}  # fmt: skip
    photos = {name: render_defect_free("01Robot", c2w, config) / 255.0 for name, c2w in shots.items()}
    noise = np.random.default_rng(0).normal(0.0, 0.01, photos["back_again"].shape)
    photos["back_again"] = np.clip(photos["back_again"] * 0.8 + noise, 0.0, 1.0)
    K = class_intrinsics(config).double().numpy()

    as_taken = {name: world_to_camera(shots[name]) for name in ("back", "back_again", "left")}
    assert folded_viewpoints(as_taken, K, np.zeros(3), photos.__getitem__) == {}
    folded = {**as_taken, "front": world_to_camera(pose(85.2, 26.1)), "right": world_to_camera(pose(40.3, -18.2))}
    flagged = folded_viewpoints(folded, K, np.zeros(3), photos.__getitem__)
    assert set(flagged) == {("back", "front"), ("back_again", "front"), ("left", "right")}
    assert all(degrees < 0.5 and difference > 0.1 for degrees, difference in flagged.values())
    error = FoldedViewpointsError(flagged, attempts=3)
    assert isinstance(error, DataError) and error.cameras == ["back", "back_again", "front", "left", "right"]
    assert "3 pairs of photos at the same viewpoint" in str(error) and "in each of 3 mappings (back and front" in str(error)


def test_cameras_all_around_leave_a_narrow_arc_unseen_and_a_fold_leaves_half_the_object():
    """``unseen_arc_deg``: rings of cameras all around leave one stop's arc unseen, in any world frame (the vertical
    is the cameras' up); the same cameras folded by a half turn onto one side, as a mapping folds a near-symmetric
    object, leave half the circle; cameras looking down from overhead count for no side."""
    from omnipose.data.sfm_checks import unseen_arc_deg

    def world_to_camera(c2w):
        return np.stack([np.concatenate([qvec_to_rotmat(q), t[:, None]], axis=1) for q, t in map(c2w_to_colmap, c2w)])

    centre = np.array([0.3, -0.2, 0.1])
    azimuths = np.radians(np.arange(24) * 15.0 + 3.0)
    rings = np.stack([spherical_pose(a, np.radians(10.0 + 25.0 * (i % 3)), 4.0, target=tuple(centre)).double().numpy()
                      for i, a in enumerate(azimuths)])  # fmt: skip
    turn = np.eye(4)
    turn[:3, :3] = qvec_to_rotmat(np.array([0.8, 0.2, -0.5, 0.26]) / np.linalg.norm([0.8, 0.2, -0.5, 0.26]))
    for frame in (np.eye(4), turn):  # the world turned: the arc does not change
        moved = apply_similarity(frame, rings)
        assert unseen_arc_deg(world_to_camera(moved), frame[:3, :3] @ centre + frame[:3, 3]) == pytest.approx(15.0)
    folded = np.stack([spherical_pose(a % np.pi, np.radians(10.0 + 25.0 * (i % 3)), 4.0, target=tuple(centre)).double().numpy()
                       for i, a in enumerate(azimuths)])  # fmt: skip
    assert unseen_arc_deg(world_to_camera(folded), centre) == pytest.approx(195.0)
    overhead = np.stack([spherical_pose(a, np.radians(80.0), 4.0, target=tuple(centre)).double().numpy() for a in azimuths[:3]])
    assert unseen_arc_deg(world_to_camera(np.concatenate([folded, overhead])), centre) == pytest.approx(195.0)
    assert unseen_arc_deg(world_to_camera(overhead), centre) == 0.0  # nothing to judge


def test_a_mad_class_without_transforms_json_uses_its_colmap_model(tmp_path):
    from omnipose.data import open_mad_class

    c2w = _cameras(6)
    model = _model(c2w)
    write_colmap_model(model, tmp_path / "thing" / "sparse" / "0")
    _write_images(tmp_path / "thing" / "train" / "good", [image.name for image in model.images.values()])
    views = open_mad_class(tmp_path, "thing", require_masks=False).load_train_views(progress=False)
    assert len(views) == 6 and torch.allclose(views.K, make_intrinsics(300.0, 300.0, 64.0, 48.0))


# ----------------------------------------------------------------------------- onboard: bad input
def test_too_few_or_duplicate_photos_are_refused_and_nothing_is_written(tmp_path):
    photos = tmp_path / "photos"
    _write_images(photos, ["a.png", "b.png"])
    out = tmp_path / "root" / "thing"
    with pytest.raises(DataError, match="2 photo"):
        onboard(photos, out)
    _write_images(photos, ["c.png"])
    (photos / "d.png").write_bytes((photos / "b.png").read_bytes())
    with pytest.raises(DataError, match="d.png is a duplicate of b.png"):
        onboard(photos, out)
    assert not out.exists() and list((tmp_path / "root").iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        onboard(photos, out)


def test_photos_that_do_not_overlap_are_named(tmp_path):
    pytest.importorskip("pycolmap")
    photos = tmp_path / "photos"
    _write_images(photos, [f"noise_{i}.png" for i in range(4)])  # random noise: nothing matches
    out = tmp_path / "root" / "thing"
    with pytest.raises(DataError, match="noise_0.png"):
        onboard(photos, out, OnboardConfig(num_threads=2))
    assert list((tmp_path / "root").iterdir()) == []


def test_onboard_leaving_out_runs_again_without_the_photos_it_refused(tmp_path, monkeypatch):
    """``onboard_leaving_out`` does what the refusal of single photos asks, from a folder of links: the photos
    given stay as they are; a refusal after the last retry reaches the caller."""
    from omnipose.data import UnregisteredPhotosError, onboard_leaving_out, sfm

    photos = tmp_path / "photos"
    _write_images(photos, ["a.png", "b.png", "c.png", "d.png"])
    seen = []

    def refuse_b(images, out, config=None, masks=None, matcher=None, field_check=None):
        names = sorted(p.name for p in Path(images).iterdir())
        seen.append(names)
        if "b.png" in names:
            raise UnregisteredPhotosError({"b.png": "12 features (too little texture on the object)"}, len(names))
        assert all((Path(images) / n).read_bytes() == (photos / n).read_bytes() for n in names)
        return {"images_registered": len(names)}

    monkeypatch.setattr(sfm, "onboard", refuse_b)
    with pytest.warns(UserWarning, match=r"1 of 4 photos did not register \(b.png: 12 features.*Running again"):
        report, left_out = onboard_leaving_out(photos, tmp_path / "root" / "thing")
    assert left_out == ["b.png"] and report == {"images_registered": 3}
    assert seen == [["a.png", "b.png", "c.png", "d.png"], ["a.png", "c.png", "d.png"]]
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert [p.name for p in (tmp_path / "root").iterdir()] == []  # its folder of links is gone
    with pytest.raises(UnregisteredPhotosError, match="b.png") as refused:
        onboard_leaving_out(photos, tmp_path / "root" / "thing", retries=0)
    assert refused.value.photos == ["b.png"]


def _lego_photos(lego_dir, folder, names, size=200):
    """The lego training views ``names`` (r_0, ...) as photos of ``size`` pixels, on white, in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.open(lego_dir / "train" / f"{name}.png").resize((size, size), Image.LANCZOS).save(folder / f"{name}.png")


def _lego_cameras(lego_dir) -> dict[str, np.ndarray]:
    """The true c2w (4, 4) of the lego training views by name (r_0, ...)."""
    frames = json.loads((lego_dir / "transforms_train.json").read_text())["frames"]
    return {frame["file_path"].split("/")[-1]: np.array(frame["transform_matrix"]) for frame in frames}


def _by_direction(cameras: dict[str, np.ndarray], to: str = "r_0") -> list[str]:
    """The view names, nearest in direction from the object to ``to`` first."""
    directions = {name: c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]) for name, c2w in cameras.items()}
    return sorted(directions, key=lambda name: -directions[name] @ directions[to])


def test_sharp_lego_views_are_not_blurred_and_a_blurred_one_is_found(lego_200):
    """``detail_kept`` on the 100 real lego views: none is blurred beyond the others; one of them
    blurred by a pixel, or by a 7-pixel motion blur, is, and only it."""
    from scipy.ndimage import gaussian_filter, uniform_filter1d

    from omnipose.data.sfm_checks import blurred_photos, detail_kept

    images = lego_200.images.numpy()
    kept = {f"r_{k}": detail_kept(image) for k, image in enumerate(images)}
    assert blurred_photos(kept, 0.2) == {} and max(kept.values()) < 0.5
    focus = np.stack([gaussian_filter(images[7][..., c], 1.0) for c in range(3)], -1)
    motion = uniform_filter1d(images[9], 7, axis=1)
    flagged = blurred_photos({**kept, "r_7": detail_kept(focus), "r_9": detail_kept(motion)}, 0.2)
    assert set(flagged) == {"r_7", "r_9"} and min(flagged.values()) > 0.6


def test_blurred_photos_are_named_and_nothing_is_written(tmp_path, lego_dir):
    from PIL import Image, ImageFilter

    names = [f"r_{k}" for k in range(8)]
    _lego_photos(lego_dir, tmp_path / "photos", names)
    for name in ("r_2", "r_5"):
        path = tmp_path / "photos" / f"{name}.png"
        Image.open(path).filter(ImageFilter.GaussianBlur(1.5)).save(path)
    out = tmp_path / "root" / "lego"
    with pytest.raises(DataError, match=r"2 photo\(s\) blurred beyond the others: r_2.png \(0\.\d\d\), r_5.png"):
        onboard(tmp_path / "photos", out)
    assert list((tmp_path / "root").iterdir()) == []


def test_photos_in_groups_that_share_no_match_are_refused_as_two_objects():
    from omnipose.data.sfm_checks import check_one_object, photo_groups

    names = ["a", "b", "c", "d", "e", "f", "g"]
    pairs = {("a", "b"): 80, ("b", "c"): 40, ("d", "e"): 120, ("e", "f"): 60, ("c", "d"): 0}
    assert photo_groups(names, pairs) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    with pytest.raises(DataError, match=r"2 groups .*group 1 \(3 photos\): a, b, c; group 2 \(3 photos\): d, e, f"):
        check_one_object(names, pairs, 3)
    check_one_object(names, {**pairs, ("c", "d"): 20}, 3)  # one verified pair joins them
    check_one_object(names, pairs, 4)  # groups under min_images are left to the per-photo reasons


def test_photos_of_two_sides_never_bridged_are_named_in_their_groups(tmp_path, lego_dir):
    """Ten lego views around r_0 and the ten most opposite ones: no verified match joins the two
    sets, and onboard says so, listing each group, before mapping."""
    pytest.importorskip("pycolmap")
    order = _by_direction(_lego_cameras(lego_dir))
    near, far = order[:10], order[-10:]
    _lego_photos(lego_dir, tmp_path / "photos", near + far)
    with pytest.raises(DataError, match=r"2 groups with no verified match between them \(group 1 \(10 photos\)"):
        onboard(tmp_path / "photos", tmp_path / "root" / "lego", OnboardConfig(num_threads=2))
    assert list((tmp_path / "root").iterdir()) == []


def test_a_mapping_with_mirrored_photos_or_folded_cameras_is_redone_with_the_next_seed(tmp_path, lego_dir, monkeypatch):
    """When the mirror check flags photos, the fold check finds photos of different things at one viewpoint, or the
    final adjustment finds the mapping folded, onboard maps again with the next seed and keeps the first mapping
    that passes; when every attempt is refused it says why and writes nothing. (The checks themselves:
    test_a_photo_registered_across_the_object_from_its_matches_is_flagged,
    test_photos_of_two_sides_put_at_one_viewpoint_are_flagged_as_a_folded_mapping,
    test_a_final_adjustment_that_throws_a_camera_off_is_done_again_or_refused.)"""
    pytest.importorskip("pycolmap")
    from omnipose.data import FoldedMappingError, FoldedViewpointsError, MirroredPhotosError, sfm

    _lego_photos(lego_dir, tmp_path / "photos", _by_direction(_lego_cameras(lego_dir))[:12], size=300)
    real_check, seen = sfm.mirrored_photos, []

    def flag_first(pairs, reconstruction):
        seen.append(sorted(image.name for image in reconstruction.images.values() if image.has_pose))
        found = real_check(pairs, reconstruction)
        return found if len(seen) > 1 else {"r_0.png": (170.0, ["r_1.png"])}

    monkeypatch.setattr(sfm, "mirrored_photos", flag_first)
    report = onboard(tmp_path / "photos", tmp_path / "root" / "once", OnboardConfig(**CAP, num_threads=2))
    assert report["mapping_attempts"] == 2 and report["images_registered"] == 12 and len(seen) == 2
    assert seen[1] == sorted(p.name for p in (tmp_path / "photos").iterdir())

    monkeypatch.setattr(sfm, "mirrored_photos", lambda pairs, reconstruction: {"r_0.png": (170.0, ["r_1.png"])})
    with pytest.raises(MirroredPhotosError, match=r"in each of 3 mappings \(r_0.png: 170 deg from r_1.png\)"):
        onboard(tmp_path / "photos", tmp_path / "root" / "never", OnboardConfig(**CAP, num_threads=2))
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["once"]

    # A mapping whose final adjustment moves cameras by degrees (folded) is mapped again the same way.
    real_adjustment, adjusted = sfm.checked_final_adjustment, []

    def fold_first(pycolmap, reconstruction, images, config):
        adjusted.append(len(reconstruction.images))
        if len(adjusted) == 1:
            raise FoldedMappingError(["r_3.png"], "the reconstruction does not hold together (r_3.png: 4.0 deg)")
        return real_adjustment(pycolmap, reconstruction, images, config)

    monkeypatch.setattr(sfm, "mirrored_photos", real_check)
    monkeypatch.setattr(sfm, "checked_final_adjustment", fold_first)
    with pytest.warns(UserWarning, match=r"final adjustment of mapping 1 moved cameras by degrees \(r_3.png\)"):
        report = onboard(tmp_path / "photos", tmp_path / "root" / "folded once", OnboardConfig(**CAP, num_threads=2))
    assert report["mapping_attempts"] == 2 and report["images_registered"] == 12 and adjusted == [12, 12]

    def always_folded(*args):
        raise FoldedMappingError(["r_3.png"], "the reconstruction does not hold together")

    monkeypatch.setattr(sfm, "checked_final_adjustment", always_folded)
    with pytest.warns(UserWarning), pytest.raises(FoldedMappingError, match="does not hold together"):
        onboard(tmp_path / "photos", tmp_path / "root" / "never", OnboardConfig(**CAP, num_threads=2, mapping_attempts=2))
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["folded once", "once"]

    # A mapping that puts photos of different things at one viewpoint (folded) likewise; the real check passes
    # the second mapping of these views.
    monkeypatch.setattr(sfm, "checked_final_adjustment", real_adjustment)
    real_fold_check, checked = sfm.folded_photos, []

    def two_sides_first(reconstruction, images):
        checked.append(images)
        found = real_fold_check(reconstruction, images)
        return found if len(checked) > 1 else {("r_0.png", "r_5.png"): (0.3, 0.2), ("r_1.png", "r_6.png"): (0.2, 0.1)}

    monkeypatch.setattr(sfm, "folded_photos", two_sides_first)
    with pytest.warns(UserWarning, match=r"mapping 1 put 2 pairs of photos .* \(r_0.png and r_5.png, r_1.png and r_6"):
        report = onboard(tmp_path / "photos", tmp_path / "root" / "two sides once", OnboardConfig(**CAP, num_threads=2))
    assert report["mapping_attempts"] == 2 and report["images_registered"] == 12 and len(checked) == 2
    monkeypatch.setattr(sfm, "folded_photos", lambda reconstruction, images: {("r_0.png", "r_5.png"): (0.3, 0.2),
                                                                              ("r_1.png", "r_6.png"): (0.2, 0.1)})
    with pytest.warns(UserWarning), pytest.raises(FoldedViewpointsError, match=r"in each of 2 mappings \(r_0.png and"):
        onboard(tmp_path / "photos", tmp_path / "root" / "never", OnboardConfig(**CAP, num_threads=2, mapping_attempts=2))
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["folded once", "once", "two sides once"]


def test_photos_from_part_of_the_way_round_are_refused_as_folded_unless_said_to_be_one_sided(tmp_path, lego_dir):
    """The 12 lego views nearest r_0 (one cap of the hemisphere) leave most of the circle around the object unseen,
    as a folded mapping does: refused by default, naming the arc and --one-sided, nothing written; with
    ``max_unseen_arc_deg=None`` (``--one-sided``) they are onboarded (the tests above)."""
    pytest.importorskip("pycolmap")
    from omnipose.data import OneSidedMappingError

    _lego_photos(lego_dir, tmp_path / "photos", _by_direction(_lego_cameras(lego_dir))[:12], size=300)
    with pytest.raises(OneSidedMappingError, match=r"leave (1[0-9][0-9]|2[0-9][0-9]|3[0-5][0-9]) deg around .*--one-sided"):
        onboard(tmp_path / "photos", tmp_path / "root" / "lego", OnboardConfig(num_threads=2, mapping_attempts=1))
    assert list((tmp_path / "root").iterdir()) == []


def test_a_mapping_whose_adjustment_moved_cameras_is_written_where_the_field_check_holds_and_refused_where_not(
        tmp_path, lego_dir, monkeypatch):
    """Where every mapping's final adjustment moved cameras by degrees (without diverging), onboard given a
    ``field_check`` asks it about the mapping that moved the fewest, as the class folder it would write: kept
    and written where the check holds (its verdict in the report), refused with the check's figure and nothing
    written where it does not, and the photos it names as unexplained refused by name where it holds as a
    whole. Without a check such mappings are refused
    (test_a_mapping_with_mirrored_photos_or_folded_cameras_is_redone_with_the_next_seed)."""
    pytest.importorskip("pycolmap")
    from omnipose.data import FoldedMappingError, UnexplainedPhotosError, sfm

    _lego_photos(lego_dir, tmp_path / "photos", _by_direction(_lego_cameras(lego_dir))[:12], size=300)
    real_adjustment, attempts = sfm.checked_final_adjustment, []

    def drifted(pycolmap, reconstruction, images, config):  # the real adjustment, said to have moved cameras
        adjusted, stats = real_adjustment(pycolmap, reconstruction, images, config)
        attempts.append(adjusted)
        moved = ["r_3.png", "r_7.png"][: 3 - len(attempts)]  # two in the first mapping, one in the second
        raise FoldedMappingError(moved, f"the reconstruction does not hold together ({len(attempts)})",
                                 (adjusted, {**stats, "final_adjustment": f"adjusted, moved {moved}",
                                             "moved_cameras": {name: [5.0, 0.01] for name in moved}}))

    monkeypatch.setattr(sfm, "checked_final_adjustment", drifted)
    asked = []

    def check(held, unexplained=None):
        def field_check(folder):
            views = load_transforms(folder / "transforms.json", progress=False)
            asked.append((folder.is_relative_to(tmp_path / "root") and not folder.is_relative_to(tmp_path / "root" / "kept"),
                          len(views), (folder / "onboard_report.json").is_file()))  # fmt: skip
            return {"held": held, "median_object_psnr_db": 25.0 if held else 14.0, "min_psnr_db": 21.0, "steps": 1000,
                    "unexplained": unexplained or {}, "unexplained_gap_db": 8.0}
        return field_check

    config = OnboardConfig(**CAP, num_threads=2, mapping_attempts=2)
    with pytest.warns(UserWarning, match=r"moved cameras by degrees \(r_3.png\); kept, as a field .* 25.0 dB"):
        report = onboard(tmp_path / "photos", tmp_path / "root" / "kept", config, field_check=check(True))
    assert len(attempts) == 2 and asked == [(True, 12, True)]  # staged beside --out, the 12 photos posed
    assert report["field_check"]["held"] and report["final_adjustment"] == "adjusted, moved ['r_3.png']"
    assert report["mapping_kept"] == 2 and report["moved_cameras"] == {"r_3.png": [5.0, 0.01]}
    assert report["images_registered"] == 12 and (tmp_path / "root" / "kept" / "transforms.json").is_file()
    assert json.loads((tmp_path / "root" / "kept" / "onboard_report.json").read_text())["field_check"]["held"]

    attempts.clear()
    with pytest.warns(UserWarning), pytest.raises(FoldedMappingError,
                                                  match=r"does not hold together \(2\).*draws them at 14.0 dB.*under the 21.0"):
        onboard(tmp_path / "photos", tmp_path / "root" / "refused", config, field_check=check(False))
    assert len(attempts) == 2 and len(asked) == 2
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["kept"]

    # Held as a whole, but a photo the field draws far under the others is refused by name, for leaving out.
    attempts.clear()
    with pytest.warns(UserWarning), pytest.raises(UnexplainedPhotosError, match=r"draws 1 of them more than 8 dB .*r_3.png: 12.4 dB under") as refusal:
        onboard(tmp_path / "photos", tmp_path / "root" / "half", config, field_check=check(True, {"r_3.png": 12.4}))
    assert refusal.value.photos == ["r_3.png"] and sorted(p.name for p in (tmp_path / "root").iterdir()) == ["kept"]


def _relative_rotation_errors(reconstruction, c2w: np.ndarray) -> np.ndarray:
    """Degrees between each pair of cameras' relative rotations in the reconstruction and in c2w (no
    alignment of frames needed)."""
    actual = np.stack([qvec_to_rotmat(c2w_to_colmap(pose)[0]) for pose in c2w])  # world-to-camera
    estimated = np.stack([reconstruction.image(k + 1).cam_from_world().rotation.matrix() for k in range(len(c2w))])
    a, b = np.triu_indices(len(c2w), k=1)
    relative = lambda R: torch.from_numpy(R[a] @ R[b].transpose(0, 2, 1))  # noqa: E731
    return rotation_error_deg(relative(estimated), relative(actual)).numpy()


def _reconstruction_with_outliers(pycolmap, seed: int):
    """12 cameras seeing 300 points, keypoints 0.2 px off and 8 % of them 2-4 px off (keypoints on outlines
    and highlights), cameras turned by 0.3 deg: what the final bundle adjustment starts from."""
    rng = np.random.default_rng(seed)
    c2w = _cameras()
    reconstruction = pycolmap.Reconstruction()
    reconstruction.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_PINHOLE", width=400, height=400,
                                                               params=[500.0, 200.0, 200.0], camera_id=1))
    points = np.array([0.3, -0.2, 0.1]) + rng.uniform(-1, 1, (300, 3))
    K = make_intrinsics(500.0, 500.0, 200.0, 200.0).double()
    for k, pose in enumerate(c2w):
        pixels, _ = project(torch.from_numpy(points), torch.from_numpy(pose), K)
        keypoints = pixels.numpy() + rng.normal(0, 0.2, (len(points), 2))
        wrong = rng.random(len(points)) < 0.08
        keypoints[wrong] += rng.choice([-1, 1], (wrong.sum(), 2)) * rng.uniform(2, 4, (wrong.sum(), 2))
        qvec, tvec = c2w_to_colmap(pose)
        turn = pycolmap.Rotation3d(rng.normal(0, np.radians(0.3), 3))
        start = pycolmap.Rigid3d(turn * pycolmap.Rotation3d(qvec_to_rotmat(qvec)), tvec)
        image = pycolmap.Image(name=f"{k}.png", keypoints=keypoints, camera_id=1, image_id=k + 1)
        reconstruction.add_image_with_trivial_frame(image, start)
    for j, point in enumerate(points):
        track = pycolmap.Track()
        for k in range(len(c2w)):
            track.add_element(k + 1, j)
        reconstruction.add_point3D(point + rng.normal(0, 0.01, 3), track)
    return reconstruction, c2w


def test_the_final_bundle_adjustment_is_not_pulled_by_keypoints_pixels_off():
    """Least squares lets the few keypoints 2-4 px off pull every camera (0.08-0.11 deg median error
    between pairs when measured); the Cauchy loss (``final_ba_loss_px``) leaves them aside (0.02-0.03)."""
    pycolmap = pytest.importorskip("pycolmap")
    from omnipose.data.sfm_adjustment import final_bundle_adjustment

    for seed in range(2):
        errors = {}
        for loss in (0.0, OnboardConfig().final_ba_loss_px):
            reconstruction, c2w = _reconstruction_with_outliers(pycolmap, seed)
            final_bundle_adjustment(pycolmap, reconstruction, OnboardConfig(final_ba_loss_px=loss, num_threads=1),
                                    fixed_focal=True)
            errors[loss] = np.median(_relative_rotation_errors(reconstruction, c2w))
        assert errors[OnboardConfig().final_ba_loss_px] < 0.05 and errors[0.0] > 0.06, errors


def test_cameras_thrown_off_by_an_adjustment_are_named_whatever_its_change_of_frame():
    """``moved_cameras`` takes out the similarity a bundle adjustment is free to apply and names only the cameras
    moved beyond it: turned half a circle, sent 1e150 away (what a diverged adjustment left), or not finite."""
    from omnipose.data.sfm_checks import moved_cameras

    rng = np.random.default_rng(0)
    before = dict(zip((f"v{i}" for i in range(12)), _cameras(12)))
    T = np.eye(4)
    T[:3, :3] = 2.5 * qvec_to_rotmat(rotmat_to_qvec(spherical_pose(1.0, 0.4, 1.0).double().numpy()[:3, :3]))
    T[:3, 3] = [5.0, -3.0, 1.0]
    after = dict(zip(before, apply_similarity(T, np.stack(list(before.values())))))
    for pose in after.values():  # what a converged adjustment moves: a tenth of a degree, 0.2 % of the distance
        pose[:3, :3] = qvec_to_rotmat(rotmat_to_qvec(pose[:3, :3]) + rng.normal(0, 1e-3, 4)) @ np.eye(3)
        pose[:3, 3] += rng.normal(0, 0.01, 3)
    assert moved_cameras(before, after) == {}
    after["v3"][:3, :3] = after["v3"][:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    after["v5"][:3, 3] = 1e150
    after["v8"][0, 0] = np.nan
    flagged = moved_cameras(before, after)
    assert sorted(flagged) == ["v3", "v5", "v8"] and flagged["v3"][0] == pytest.approx(180, abs=1), flagged
    assert flagged["v5"][1] > 1e100 and flagged["v5"][0] < 1


def test_a_final_adjustment_that_throws_a_camera_off_is_done_again_or_refused(monkeypatch):
    """When the final adjustment throws a camera off (once in 7 onboardings of the lego views), onboard does it
    again without the keypoint refinement, says so in the report and warns; when that fails too, the mapping does
    not hold together (a plain figure's sides folded onto each other) and onboarding stops, naming the cameras."""
    pycolmap = pytest.importorskip("pycolmap")
    from omnipose.data import sfm_adjustment as sfm

    real_adjustment, calls = sfm.final_bundle_adjustment, []

    def throw_off(pycolmap, reconstruction, config, fixed_focal, bad=(1,)):
        real_adjustment(pycolmap, reconstruction, config, fixed_focal)
        calls.append(len(calls) + 1)
        if calls[-1] in bad:  # camera 3.png turned half a circle, as in the failed bench
            frame = reconstruction.frame(reconstruction.image(4).frame_id)
            pose = frame.rig_from_world
            frame.rig_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([0.0, np.pi, 0.0])) * pose.rotation,
                                                    pose.translation)  # fmt: skip

    monkeypatch.setattr(sfm, "final_bundle_adjustment", throw_off)
    monkeypatch.setattr(sfm, "refine_reconstruction", lambda *args: {"observations": 3600, "median_shift_px": 0.1})
    config = OnboardConfig(num_threads=1, focal=500.0)
    reconstruction, c2w = _reconstruction_with_outliers(pycolmap, 0)
    with pytest.warns(UserWarning, match=r"adjustment of refined keypoints was refused .*3.png \(179.\d deg, \d+ %\)"):
        adjusted, stats = sfm.checked_final_adjustment(pycolmap, reconstruction, Path("unused"), config)
    assert calls == [1, 2] and stats["final_adjustment"].startswith("adjusted, after the adjustment of refined")
    assert stats["keypoint_refinement"] == {} and np.median(_relative_rotation_errors(adjusted, c2w)) < 0.05

    monkeypatch.setattr(sfm, "final_bundle_adjustment", lambda *args: throw_off(*args, bad=(3, 4)))
    reconstruction, c2w = _reconstruction_with_outliers(pycolmap, 0)
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"does not hold together.*3.png \(179.\d deg"):
        sfm.checked_final_adjustment(pycolmap, reconstruction, Path("unused"), config)
    assert calls == [1, 2, 3, 4]

    # Cameras drifting by degrees, the reprojection error holding (a folded mapping): refused at once.
    def drift(pycolmap, reconstruction, config, fixed_focal):
        real_adjustment(pycolmap, reconstruction, config, fixed_focal)
        calls.append(len(calls) + 1)
        for image_id in (2, 5, 9):
            frame = reconstruction.frame(reconstruction.image(image_id).frame_id)
            pose = frame.rig_from_world
            frame.rig_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(np.radians([0.0, 4.0, 0.0])) * pose.rotation,
                                                    pose.translation)  # fmt: skip

    monkeypatch.setattr(sfm, "final_bundle_adjustment", drift)
    reconstruction, c2w = _reconstruction_with_outliers(pycolmap, 0)
    folded = r"does not hold together.*refined keypoints.*thrown off: 1.png \(4.\d deg, \d %\), 4.png .*8.png"
    with pytest.raises(sfm.FoldedMappingError, match=folded) as refused:
        sfm.checked_final_adjustment(pycolmap, reconstruction, Path("unused"), config)
    assert calls == [1, 2, 3, 4, 5] and refused.value.cameras == ["1.png", "4.png", "8.png"]
    # The drifted adjustment comes with the refusal, for onboard's field check to judge.
    adjusted, stats = refused.value.drifted
    assert sorted(stats["moved_cameras"]) == ["1.png", "4.png", "8.png"] and "moved 1.png 4." in stats["final_adjustment"]
    assert sorted(sfm.moved_cameras(sfm.camera_poses(reconstruction), sfm.camera_poses(adjusted))) == ["1.png", "4.png", "8.png"]


def test_the_keypoint_floor_of_the_onboarding_bench_finds_the_noise_and_the_true_cameras(tmp_path):
    """``bench_onboard.py --keypoint-floor`` on a reconstruction whose keypoints are 0.2 px of noise around
    the true projections (and 8 % of them 2-4 px off): it measures that noise, and the same tracks with
    keypoints that are noise alone bring the cameras and focal length back to the truth."""
    pycolmap = pytest.importorskip("pycolmap")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from bench_onboard import keypoint_floor

    reconstruction, c2w = _reconstruction_with_outliers(pycolmap, 0)
    reconstruction.write(str(tmp_path))
    truth = {f"{k}.png": pose for k, pose in enumerate(c2w)} | {"_focal": 500.0}
    floor = keypoint_floor(tmp_path, truth, OnboardConfig(num_threads=1))
    assert floor["noise_px"] == pytest.approx(0.2, rel=0.15)
    assert floor["median_rotation_deg"] < 0.03 and abs(floor["focal_pct"]) < 0.1, floor


def _textured_plane_views(rng, count=6, size=96, focal=120.0):
    """Exact renders of a textured plane (z = 0) seen from ``count`` cameras 40-70 degrees up, and the
    cameras in COLMAP's convention: (images (V, 1, H, W), rotations (V, 3, 3), translations (V, 3), texture)."""
    directions = rng.normal(size=(12, 2))
    directions *= (2 * np.pi / rng.uniform(0.08, 0.3, 12))[:, None] / np.linalg.norm(directions, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, 12)

    def texture(xy):
        return 0.5 + 0.4 * np.sin(xy @ directions.T + phases).mean(-1)

    images, rotations, translations = [], [], []
    v, u = np.mgrid[0:size, 0:size] + 0.5
    rays = np.stack([(u - size / 2) / focal, (v - size / 2) / focal, np.ones_like(u)], -1)
    for k in range(count):
        c2w = spherical_pose(np.radians(360.0 * k / count), np.radians(40.0 + 30.0 * k / count), 4.0).double().numpy()
        qvec, tvec = c2w_to_colmap(c2w)
        rotation = qvec_to_rotmat(qvec)
        centre = -rotation.T @ tvec
        world = rays @ rotation  # each ray's direction in the world: R^T d
        hit = centre + (-centre[2] / world[..., 2])[..., None] * world
        images.append(texture(hit[..., :2]))
        rotations.append(rotation)
        translations.append(tvec)
    return (torch.tensor(np.stack(images)[:, None], dtype=torch.float32), torch.tensor(np.stack(rotations)),
            torch.tensor(np.stack(translations)), texture)  # fmt: skip


def test_keypoints_refined_photometrically_agree_on_one_point_of_the_surface():
    """Keypoints placed up to a pixel off the true projections of points on a textured plane, in six views:
    after ``refine_keypoints`` each track's keypoints, cast back onto the plane, meet in one point (0.04 px
    apart when measured, from 0.85 px), though the plane's tilt was not given."""
    from omnipose.data.keypoint_refinement import refine_keypoints

    rng = np.random.default_rng(0)
    size, focal = 96, 120.0
    images, rotations, translations, _ = _textured_plane_views(rng, size=size, focal=focal)
    points = np.c_[rng.uniform(-0.4, 0.4, (30, 2)), np.zeros(30)]
    views = torch.arange(6).repeat_interleave(30)
    tracks = torch.arange(30).repeat(6)
    camera = (rotations[views] @ torch.tensor(points)[tracks][..., None])[..., 0] + translations[views]
    truth = focal * camera[:, :2] / camera[:, 2:] + size / 2
    detected = truth + torch.tensor(rng.uniform(-1, 1, truth.shape))

    def spread_px(keypoints):
        """RMS distance in pixels of each track's keypoints, cast onto the plane, from the track's mean."""
        rays = torch.cat([(keypoints - size / 2) / focal, torch.ones(len(keypoints), 1, dtype=keypoints.dtype)], 1)
        world = (rotations[views].transpose(1, 2) @ rays[..., None])[..., 0]
        centres = -(rotations[views].transpose(1, 2) @ translations[views][..., None])[..., 0]
        depth = -centres[:, 2] / world[:, 2]
        hit = centres + depth[:, None] * world
        mean = torch.zeros(30, 3, dtype=hit.dtype).index_add_(0, tracks, hit) / 6
        return float(((hit - mean[tracks]).norm(dim=1) / (depth * world.norm(dim=1) / focal)).pow(2).mean().sqrt())

    refined = refine_keypoints(images, focal, (size / 2, size / 2), rotations, translations,
                               torch.tensor(points) + torch.tensor(rng.normal(0, 0.01, (30, 3))), views, tracks, detected)  # fmt: skip
    before, after = spread_px(detected), spread_px(refined)
    assert before > 0.5 and after < 0.15, (before, after)


def test_the_refinement_samples_each_view_as_grid_sample_does_on_it_alone_even_off_its_edge():
    """The refinement reads all views from one mosaic; values and gradients must be those of each view
    sampled alone with border padding, also for positions beyond the photo's edge (no bleeding from
    the neighbouring tile)."""
    import torch.nn.functional as F

    from omnipose.data.keypoint_refinement import _ViewSampler

    generator = torch.Generator().manual_seed(0)
    views, height, width = 7, 24, 32
    images = torch.rand(views, 1, height, width, generator=generator)
    observation_view = torch.randint(0, views, (50,), generator=generator)
    low, high = torch.tensor([-6.0, -6.0]), torch.tensor([width + 6.0, height + 6.0])
    pixels = (low + (high - low) * torch.rand(50, 9, 2, generator=generator)).requires_grad_()
    weights = torch.rand(50, 9, generator=generator)

    (_ViewSampler(images, observation_view)(pixels) * weights).sum().backward()
    mosaic_gradient, pixels.grad = pixels.grad.clone(), None
    grid = torch.stack([pixels[..., 0] / width * 2 - 1, pixels[..., 1] / height * 2 - 1], -1)
    alone = F.grid_sample(images[observation_view], grid[:, None], mode="bilinear", padding_mode="border",
                          align_corners=False)[:, 0, 0]  # fmt: skip
    (alone * weights).sum().backward()

    assert torch.allclose(_ViewSampler(images, observation_view)(pixels.detach()), alone.detach(), atol=1e-5)
    assert (pixels < 0).any() and (pixels[..., 1] > height).any()
    assert torch.allclose(mosaic_gradient, pixels.grad, atol=1e-4)


def test_the_onboard_command_refines_keypoints_unless_told_not_to():
    from omnipose.cli.app import build_parser
    from omnipose.cli.onboard import config_from_args

    base = ["onboard", "--images", "photos", "--out", "root/thing", "--keep-blurred", "--threads", "2"]
    config = config_from_args(build_parser().parse_args(base))
    assert config.refine_keypoints and config.blur_margin is None and config.num_threads == 2
    assert not config_from_args(build_parser().parse_args([*base, "--no-keypoint-refinement"])).refine_keypoints
    assert config.max_unseen_arc_deg == 75.0 and config_from_args(build_parser().parse_args([*base, "--one-sided"])).max_unseen_arc_deg is None
    # A mapping whose final adjustment moved cameras is judged by a short field unless --no-field-check.
    from omnipose.cli.onboard import onboard_field_check
    from omnipose.nerf import FieldCheck

    assert not build_parser().parse_args(base).no_field_check and build_parser().parse_args([*base, "--no-field-check"]).no_field_check
    assert isinstance(onboard_field_check(), FieldCheck) and onboard_field_check(False) is None


def test_onboard_keeps_its_torch_work_to_the_threads_it_is_given(tmp_path, monkeypatch):
    """Learned matches, the keypoint refinement and the field check run in torch: with num_threads set they run on
    that many threads (beside another job, more threads than free cores slowed the refinement tenfold), and torch's
    count is restored after; -1 leaves torch as it is."""
    from omnipose.data import sfm

    seen = []
    monkeypatch.setattr(sfm, "_onboard", lambda *args: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        sfm.onboard(tmp_path / "photos", tmp_path / "out", OnboardConfig(num_threads=1))
        sfm.onboard(tmp_path / "photos", tmp_path / "out", OnboardConfig(num_threads=-1))
        assert seen == [1, 3] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_onboard_command_leaves_out_the_photos_it_refuses_only_when_asked(tmp_path, monkeypatch, capsys):
    """Without --leave-out-refused a refusal of single photos stops the command with one line naming them; with
    it the command runs again without them, says so and counts them among the photos given."""
    from omnipose.cli import onboard as command
    from omnipose.cli.app import main
    from omnipose.data import UnregisteredPhotosError, sfm

    photos = tmp_path / "photos"
    _write_images(photos, ["a.png", "b.png", "c.png", "d.png"])

    def refuse_b(images, out, config=None, masks=None, matcher=None, field_check=None):
        names = sorted(p.name for p in Path(images).iterdir())
        if "b.png" in names:
            raise UnregisteredPhotosError({"b.png": "12 features (too little texture on the object)"}, len(names))
        return {"images_registered": len(names), "images_given": len(names), "mean_reprojection_error_px": 0.4,
                "camera": {"model": "SIMPLE_PINHOLE", "fl_x": 500.0}, "timings": {"total_s": 1.0}}

    monkeypatch.setattr(sfm, "onboard", refuse_b)
    monkeypatch.setattr(command, "onboard", refuse_b)
    args = ["onboard", "--images", str(photos), "--out", str(tmp_path / "root" / "thing"), "--no-field-check"]
    assert main(args) == 2
    assert "b.png: 12 features" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="b.png: 12 features.*Running again without them"):
        assert main([*args, "--leave-out-refused"]) == 0
    printed = capsys.readouterr().out
    assert "left out 1 photo(s) it could not place (named above): b.png" in printed
    assert "registered 3/4 photos" in printed
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]


def test_a_command_shows_the_packages_warnings_as_one_line_and_others_as_python_does():
    """What onboard warns (photos left out, a mapping done again) reads like the command's errors, without the file
    and line of the package's code; another library's warning keeps them; Python's format is back afterwards."""
    import warnings

    from omnipose.cli.app import run_guarded
    from omnipose.data import sfm

    shown = {}

    def command():
        shown["ours"] = warnings.formatwarning("onboard: 5 of 30 photos did not register", UserWarning, sfm.__file__, 9)
        shown["theirs"] = warnings.formatwarning("old call", DeprecationWarning, "/usr/lib/python3/x.py", 5)
        shown["theirs_user"] = warnings.formatwarning("a mask", UserWarning, "/usr/lib/python3/y.py", 7)

    python_format = warnings.formatwarning
    assert run_guarded("omnipose onboard", command) == 0
    assert shown["ours"] == "omnipose onboard: warning: onboard: 5 of 30 photos did not register\n"
    assert "x.py:5: DeprecationWarning: old call" in shown["theirs"]
    assert "y.py:7: UserWarning: a mask" in shown["theirs_user"]
    assert warnings.formatwarning is python_format


# ----------------------------------------------------------------------------- onboard: a real run
def _rotation_errors(views, true_c2w: dict[str, np.ndarray]) -> np.ndarray:
    """Each onboarded camera's rotation error in degrees, after the rotation between the two frames
    (the chordal mean)."""
    estimated = views.c2w.double().numpy()
    actual = np.stack([true_c2w[path.stem] for path in views.paths])
    u, _, vt = np.linalg.svd(sum(a[:3, :3] @ e[:3, :3].T for a, e in zip(actual, estimated)))
    align = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    cosines = [(np.trace((align @ e[:3, :3]).T @ a[:3, :3]) - 1) / 2 for a, e in zip(actual, estimated)]
    return np.degrees(np.arccos(np.clip(cosines, -1, 1)))


def test_onboard_small_lego_run_recovers_the_true_poses(tmp_path, lego_dir, capfd):
    pytest.importorskip("pycolmap")
    photos = tmp_path / "photos"
    truth = json.loads((lego_dir / "transforms_train.json").read_text())
    true_c2w = _lego_cameras(lego_dir)
    # The 30 views nearest r_0 in direction, a cap of the hemisphere, less five at its rim that see the object
    # from sides the others hardly do (given, onboard names them as unregistered, with their partners).
    names = [name for name in _by_direction(true_c2w)[:30] if name not in ("r_4", "r_15", "r_26", "r_42", "r_74")]
    _lego_photos(lego_dir, photos, names)
    start = time.perf_counter()
    report = onboard(photos, tmp_path / "root" / "lego", OnboardConfig(**CAP, num_threads=2))
    elapsed = time.perf_counter() - start
    assert report["images_registered"] == len(names) and report["mean_reprojection_error_px"] < 1.0
    # Every observation went through the photometric refinement, which moved them by a fraction of a pixel.
    refinement = report["keypoint_refinement"]
    assert refinement["observations"] > 1000 and 0 < refinement["median_shift_px"] < OnboardConfig.keypoint_max_shift
    assert report["final_adjustment"] == "keypoints refined, then adjusted"
    assert elapsed < 60
    # COLMAP's INFO log (thousands of lines) stays off unless asked for with verbose.
    assert "Processed file" not in capfd.readouterr().err
    folder = tmp_path / "root" / "lego"
    assert (folder / "onboard_cameras.png").is_file() and len(list((folder / "train" / "good").iterdir())) == len(names)
    views = load_transforms(folder / "transforms.json", progress=False)
    errors = _rotation_errors(views, true_c2w)
    assert np.median(errors) < 0.5 and errors.max() < 2.0, errors
    true_focal = 100.0 / np.tan(0.5 * truth["camera_angle_x"])
    # 25 views over a 56-degree cap at 200 px pin the focal length down loosely (6 % short when measured).
    assert float(views.K[0, 0]) == pytest.approx(true_focal, rel=0.1)


def test_onboard_with_a_learned_matcher_recovers_the_true_poses(tmp_path, lego_dir):
    """The 16 lego views nearest r_0 at 300 px, matched by XFeat + LighterGlue instead of SIFT (their
    keypoints and matches written to COLMAP's database, verified there): all register, each within 2
    degrees (0.56 median, 1.0 worst when measured: XFeat's keypoints are coarser than SIFT's, about
    1.3 px of reprojection error against 0.4)."""
    pytest.importorskip("pycolmap")
    from omnipose.pose import make_matcher

    true_c2w = _lego_cameras(lego_dir)
    _lego_photos(lego_dir, tmp_path / "photos", _by_direction(true_c2w)[:16], size=300)
    matcher = make_matcher("xfeat", device="cpu", max_keypoints=1024)
    report = onboard(tmp_path / "photos", tmp_path / "root" / "lego", OnboardConfig(**CAP, num_threads=2, init_min_inliers=50),
                     matcher=matcher)
    assert report["images_registered"] == 16 and "XFeatMatcher on 120 pairs" in report["matching"]
    errors = _rotation_errors(load_transforms(tmp_path / "root" / "lego" / "transforms.json", progress=False), true_c2w)
    assert np.median(errors) < 1.0 and errors.max() < 2.0, errors

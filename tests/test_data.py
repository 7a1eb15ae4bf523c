"""Readers on the real Blender lego data and on small MAD-layout trees with planted faults."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from omnipose.core.errors import DataError
from omnipose.core.image import read_image_rgb, read_mask
from omnipose.data import MAD_CLASSES, list_classes, load_transforms, natural_key, open_mad_class


def test_lego_transforms_read_as_blender_ships_them(lego_dir):
    views = load_transforms(lego_dir / "transforms_train.json", size=100, progress=False)
    meta = json.loads((lego_dir / "transforms_train.json").read_text())
    assert len(views) == len(meta["frames"]) == 100
    assert views.images.shape == (100, 100, 100, 3) and views.images.dtype == torch.float32
    assert views.c2w.shape == (100, 4, 4) and views.c2w.dtype == torch.float32
    assert torch.allclose(views.c2w[3], torch.tensor(meta["frames"][3]["transform_matrix"], dtype=torch.float32))
    # file_path has no extension in nerf_synthetic: resolved to the PNG.
    assert views.paths[0].name == "r_0.png"
    focal = 0.5 * 100 / math.tan(0.5 * meta["camera_angle_x"])
    assert views.K[0, 0].item() == pytest.approx(focal) and views.K[0, 2].item() == 50.0
    # RGBA composited on white: the transparent corner is white, the object is not.
    assert torch.allclose(views.images[0, 0, 0], torch.ones(3))
    assert views.images[0].min() < 0.5
    black = load_transforms(lego_dir / "transforms_train.json", size=100, background=0.0, progress=False)
    assert torch.allclose(black.images[0, 0, 0], torch.zeros(3))


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_mad_class(root, name="01Gorilla", size=16, frame_prefix="./", with_ext=True):
    folder = root / name
    rng = np.random.default_rng(0)
    frames = []
    for n in (0, 1, 2, 10):
        _write_png(folder / "train" / "good" / f"{n}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        path = f"{frame_prefix}train/good/{n}" + (".png" if with_ext else "")
        pose = np.eye(4)
        pose[:3, 3] = [0, 0, 4 + n]
        frames.append({"file_path": path, "transform_matrix": pose.tolist()})
    (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.6, "frames": frames}))
    for kind in ("good", "Burrs", "Stains"):
        for n in (0, 3):
            _write_png(folder / "test" / kind / f"{n}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            if kind != "good":
                mask = np.zeros((size, size), np.uint8)
                mask[2:5, 3:6] = 255
                _write_png(folder / "ground_truth" / kind / f"{n}_mask.png", mask)
    return folder


@pytest.mark.parametrize("frame_prefix,with_ext", [("./", True), ("", False)])
def test_mad_layout(tmp_path, frame_prefix, with_ext):
    _make_mad_class(tmp_path, frame_prefix=frame_prefix, with_ext=with_ext)
    mad = open_mad_class(tmp_path, "01Gorilla")
    assert [p.name for p in mad.train_images] == ["0.png", "1.png", "2.png", "10.png"]  # numeric order
    assert [item.name for item in mad.test_items] == ["Burrs/0", "Burrs/3", "Stains/0", "Stains/3", "good/0", "good/3"]
    assert [item.is_anomalous for item in mad.test_items] == [True] * 4 + [False] * 2
    views = mad.load_train_views(progress=False)
    assert len(views) == 4 and views.c2w[3, 2, 3].item() == 14.0
    mask = read_mask(mad.test_items[0].mask_path)
    assert mask.dtype == bool and mask.sum() == 9
    assert read_mask(mad.test_items[0].mask_path, size=(8, 8)).shape == (8, 8)
    assert list_classes(tmp_path) == ["01Gorilla"]


def test_explicit_intrinsics_and_downscale(tmp_path):
    folder = _make_mad_class(tmp_path)
    meta = json.loads((folder / "transforms.json").read_text())
    del meta["camera_angle_x"]
    meta.update(fl_x=20.0, fl_y=22.0, cx=7.0, cy=9.0, w=16, h=16)
    (folder / "transforms.json").write_text(json.dumps(meta))
    views = load_transforms(folder / "transforms.json", size=8, progress=False)
    assert views.images.shape[1:3] == (8, 8)
    assert torch.allclose(views.K, torch.tensor([[10.0, 0, 3.5], [0, 11.0, 4.5], [0, 0, 1]]))


def test_missing_root_and_class_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="omnipose synth"):
        open_mad_class(tmp_path / "nowhere", "01Gorilla")
    _make_mad_class(tmp_path)
    with pytest.raises(DataError, match="classes found there: 01Gorilla"):
        open_mad_class(tmp_path, "02Unicorn")


def test_missing_transforms_and_missing_frame(tmp_path):
    folder = _make_mad_class(tmp_path)
    (folder / "train" / "good" / "10.png").unlink()
    with pytest.raises(DataError, match="10.png, which does not exist"):
        open_mad_class(tmp_path, "01Gorilla").load_train_views(progress=False)
    (folder / "transforms.json").unlink()
    with pytest.raises(DataError, match="no transforms.json"):
        open_mad_class(tmp_path, "01Gorilla").load_train_views(progress=False)


def test_mixed_sizes_and_unreadable_image(tmp_path):
    folder = _make_mad_class(tmp_path)
    _write_png(folder / "train" / "good" / "2.png", np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(DataError, match="mixed image sizes"):
        open_mad_class(tmp_path, "01Gorilla").load_train_views(progress=False)
    (folder / "train" / "good" / "2.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="corrupt"):
        open_mad_class(tmp_path, "01Gorilla").load_train_views(progress=False)


def test_defect_image_without_mask(tmp_path):
    folder = _make_mad_class(tmp_path)
    (folder / "ground_truth" / "Stains" / "3_mask.png").unlink()
    with pytest.raises(DataError, match="3_mask.png"):
        open_mad_class(tmp_path, "01Gorilla")
    assert len(open_mad_class(tmp_path, "01Gorilla", require_masks=False).test_items) == 6


def test_grayscale_and_rgba_images(tmp_path):
    gray = np.full((4, 4), 128, np.uint8)
    _write_png(tmp_path / "g.png", gray)
    assert read_image_rgb(tmp_path / "g.png").shape == (4, 4, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255
    _write_png(tmp_path / "a.png", rgba)
    rgb = read_image_rgb(tmp_path / "a.png")
    assert np.allclose(rgb[0, 0], [1, 0, 0]) and np.allclose(rgb[3, 0], [1, 1, 1])


def test_mad_class_names_and_natural_sort():
    assert len(MAD_CLASSES) == 20 and MAD_CLASSES[0] == "01Gorilla" and MAD_CLASSES[-1] == "20Puppy"
    assert sorted(["10.png", "2.png", "1.png"], key=natural_key) == ["1.png", "2.png", "10.png"]

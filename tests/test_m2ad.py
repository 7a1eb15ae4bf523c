"""The M2AD layout reader on a tiny fake tree: split, views, illuminations, masks, groups."""
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from omnipose.core.errors import DataError
from omnipose.core.image import read_mask
from omnipose.data import (
    M2adLayoutWarning,
    group_object_instances,
    group_view_instances,
    list_m2ad_classes,
    mask_path_for,
    open_m2ad_class,
    parse_view_illumination,
    split_normal_specimens,
)

VIEWS = ("001", "002")
ILLUMINATIONS = ("01", "02", "03")


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_m2ad_tree(root, class_name="Bird", normal=5, masked_views=("001",), size=8):
    """<root>/<class>/{Good,NG}/<specimen>/V<view>_L<illum>.png and GT masks for one NG specimen.

    The NG specimen's mask exists only for ``masked_views`` (the defect is invisible elsewhere).
    """
    folder = root / class_name
    image = np.full((size, size, 3), 128, np.uint8)
    specimens = [("Good", f"{i:03d}") for i in range(normal)] + [("NG", "damage_1_001")]
    for kind, specimen in specimens:
        for view in VIEWS:
            for illumination in ILLUMINATIONS:
                write_png(folder / kind / specimen / f"V{view}_L{illumination}.png", image)
    for view in masked_views:
        mask = np.zeros((size, size), np.uint8)
        mask[2:4, 2:5] = 255
        write_png(folder / "GT" / "damage_1_001" / f"V{view}_mask.png", mask)
    return folder


def test_view_and_illumination_come_from_name_slices():
    assert parse_view_illumination("V001_L07.png") == ("001", "07")
    assert parse_view_illumination("x123yz45_rest.jpg") == ("123", "45")
    for bad in ("V01_L1.png", "Vabc_L01.png", "V001_Lxx.png", "a.png"):
        with pytest.raises(DataError, match="M2AD pattern"):
            parse_view_illumination(bad)


def test_mask_path_strips_the_illumination_part(tmp_path):
    # name[:-8] drops '_L07.png', so every illumination of a view shares V001_mask.png.
    assert mask_path_for(tmp_path, "damage_1_001", "V001_L07.png") == tmp_path / "GT" / "damage_1_001" / "V001_mask.png"


def test_split_matches_the_benchmarks_seeded_shuffle():
    names = [f"{i:03d}" for i in range(5)]
    train, test = split_normal_specimens(list(reversed(names)))  # input order does not matter: sorted first
    expected = sorted(names)
    state = random.getstate()
    random.seed(42)
    random.shuffle(expected)  # the benchmark's own call sequence
    random.setstate(state)
    assert train == expected[:3] and test == expected[3:]
    assert train == ["003", "001", "002"] and test == ["004", "000"]  # pinned: a changed split changes every number


def test_open_class_splits_specimens_and_reads_names(tmp_path):
    make_m2ad_tree(tmp_path)
    split = open_m2ad_class(tmp_path, "Bird")
    assert list_m2ad_classes(tmp_path) == ["Bird"]
    assert {image.specimen for image in split.train} == {"003", "001", "002"}
    assert {image.specimen_key for image in split.test} == {"Good/004", "Good/000", "NG/damage_1_001"}
    assert len(split.train) == 3 * 6 and len(split.test) == 3 * 6
    ng = [image for image in split.test if image.anomalous_specimen]
    assert {(image.view, image.illumination) for image in ng} == {(v, i) for v in VIEWS for i in ILLUMINATIONS}
    # View 001 has a mask, view 002 has none (defect not visible there): no mask path.
    assert all(image.mask_path is not None for image in ng if image.view == "001")
    assert all(image.mask_path is None for image in ng if image.view == "002")
    assert all(image.mask_path is None for image in split.test if not image.anomalous_specimen)
    assert ng[0].key == "NG/damage_1_001/V001_L01"


def test_groups_for_the_synergy_protocol(tmp_path):
    make_m2ad_tree(tmp_path)
    images = open_m2ad_class(tmp_path, "Bird").test
    views = group_view_instances(images)
    assert len(views) == 3 * 2
    for (specimen_key, view), indices in views.items():
        assert sorted(images[i].illumination for i in indices) == list(ILLUMINATIONS)
        assert all(images[i].specimen_key == specimen_key and images[i].view == view for i in indices)
    objects = group_object_instances(images)
    assert list(objects) == ["Good/000", "Good/004", "NG/damage_1_001"]
    assert all(len(indices) == 6 for indices in objects.values())


def test_clear_errors_for_bad_trees(tmp_path):
    make_m2ad_tree(tmp_path)
    with pytest.raises(DataError, match="classes found there: Bird"):
        open_m2ad_class(tmp_path, "Car")
    (tmp_path / "Bird" / "Good" / "009").mkdir()
    with pytest.raises(DataError, match="009 holds no images"):
        open_m2ad_class(tmp_path, "Bird")
    (tmp_path / "Bird" / "Good" / "009").rmdir()
    write_png(tmp_path / "Bird" / "Good" / "000" / "thumbnail.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="thumbnail.png"):
        open_m2ad_class(tmp_path, "Bird")
    with pytest.raises(DataError, match="does not exist"):
        open_m2ad_class(tmp_path / "nowhere", "Bird")


def test_anomalous_specimen_without_gt_folder_warns(tmp_path):
    make_m2ad_tree(tmp_path, masked_views=())
    with pytest.warns(M2adLayoutWarning, match="no GT/<specimen>/ folder"):
        split = open_m2ad_class(tmp_path, "Bird")
    assert all(image.mask_path is None for image in split.test)


def test_read_binary_mask_accepts_0_1_and_0_255_and_names_bad_files(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 2:4] = 1
    write_png(tmp_path / "a_mask.png", mask)
    write_png(tmp_path / "b_mask.png", mask * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "a_mask.png", strict=True), mask > 0)
    np.testing.assert_array_equal(read_mask(tmp_path / "b_mask.png", strict=True), mask > 0)
    soft = mask * 255
    soft[0, 0] = 128  # an antialiased edge
    write_png(tmp_path / "soft_mask.png", soft)
    with pytest.raises(DataError, match="soft_mask.png is not binary"):
        read_mask(tmp_path / "soft_mask.png", strict=True)
    with pytest.raises(DataError, match="mask not found"):
        read_mask(tmp_path / "missing_mask.png", strict=True)


def test_read_binary_mask_resizes_with_nearest_neighbour(tmp_path):
    mask = (np.random.default_rng(0).random((20, 30)) > 0.7).astype(np.uint8) * 255
    write_png(tmp_path / "m_mask.png", mask)
    resized = read_mask(tmp_path / "m_mask.png", size=(11, 7), strict=True)
    expected = np.asarray(Image.fromarray(mask).resize((11, 7), Image.NEAREST)) > 0
    assert resized.shape == (7, 11)
    np.testing.assert_array_equal(resized, expected)


def test_open_class_does_not_touch_the_global_random_state(tmp_path):
    make_m2ad_tree(tmp_path)
    random.seed(123)
    before = random.random()
    random.seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_m2ad_class(tmp_path, "Bird")
    assert random.random() == before


def test_m2ad_reads_the_image_suffixes_of_the_other_readers():
    from omnipose.data import IMAGE_SUFFIXES, m2ad

    assert m2ad.IMAGE_SUFFIXES is IMAGE_SUFFIXES

"""Plain backdrops of any colour: found in the border, replaced by the background colour, on real views."""
import json
import warnings

import numpy as np
import pytest

from omnipose.core.backdrop import find_backdrop, replace_backdrop
from omnipose.core.image import composite_on_background, read_image_rgba, resize_image, save_image

BLUE = (0.5, 0.6, 0.8)


def photograph(rgba: np.ndarray, colour, rng, noise: float = 0.01, gain=(1.0, 1.0, 1.0)) -> np.ndarray:
    """rgba (H, W, 4) in front of a backdrop of ``colour`` whose light falls off downwards and to the
    sides, times a session's exposure and white balance (``gain``), with sensor noise, in 8 bits."""
    height, width = rgba.shape[:2]
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    field = np.asarray(colour, np.float32) * (1.0 - 0.08 * y - 0.2 * (x - 0.5) ** 2)[..., None]
    alpha = rgba[..., 3:]
    shot = (alpha * rgba[..., :3] + (1.0 - alpha) * field) * np.asarray(gain, np.float32)
    shot = shot + rng.normal(0.0, noise, shot.shape)
    return np.round(np.clip(shot, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def lego_view(lego_dir):
    """A real lego view (RGBA) at 200x200."""
    from omnipose.core.image import resize_image

    return resize_image(read_image_rgba(lego_dir / "train" / "r_3.png"), (200, 200))


@pytest.mark.parametrize(
    "colour, off",  # off: the share of object pixels that may end more than 0.1 from the truth
    [((0.953, 0.953, 0.953), 0.005), (BLUE, 0.03), ((0.2, 0.6, 0.25), 0.04), ((0.15, 0.15, 0.15), 0.15)],
)
def test_a_plain_backdrop_of_any_colour_becomes_the_background(lego_view, colour, off):
    """Light fall-off, noise and 8 bits included: the backdrop turns white and the object keeps its
    colours, close to the same view composited on white from its alpha channel. On the dark grey the
    lego's black parts cannot be told from the backdrop: that is what its larger share is for."""
    image = photograph(lego_view, colour, np.random.default_rng(0))
    out, backdrop = replace_backdrop(image, 1.0)
    truth = composite_on_background(lego_view, 1.0)
    alpha = lego_view[..., 3]
    assert backdrop is not None and backdrop.share > 0.95
    assert abs(backdrop.noise - 0.01) < 0.003  # the sensor's noise, not the fall-off: the field follows that
    error = np.abs(out - truth).max(-1)
    assert error[alpha == 0].mean() < 0.002 and np.mean(error[alpha == 0] > 0.05) < 0.005
    assert np.mean(error[alpha > 0] > 0.1) < off


def test_a_render_on_the_background_already_is_left_exactly_as_it_is(lego_view):
    image = composite_on_background(lego_view, 1.0)
    out, backdrop = replace_backdrop(image, 1.0)
    assert backdrop is not None and backdrop.is_background(1.0)
    np.testing.assert_array_equal(out, image)


def test_a_cluttered_border_is_not_a_backdrop_and_the_image_is_left_alone():
    rng = np.random.default_rng(1)
    clutter = rng.uniform(0.0, 1.0, (120, 120, 3)).astype(np.float32)
    assert find_backdrop(clutter) is None
    out, backdrop = replace_backdrop(clutter, 1.0)
    assert backdrop is None and out is not None
    np.testing.assert_array_equal(out, clutter)


def test_backdrop_seen_through_a_gap_in_the_object_becomes_background_too():
    """A red ring on a grey backdrop: the grey in its middle is backdrop seen through the ring."""
    yy, xx = np.mgrid[0:100, 0:100]
    radius = np.hypot(yy - 50, xx - 50)
    image = np.full((100, 100, 3), 0.6, np.float32)
    image[(radius > 12) & (radius < 30)] = (0.8, 0.2, 0.1)
    out, backdrop = replace_backdrop(image, 1.0)
    assert backdrop is not None and backdrop.colour == pytest.approx((0.6, 0.6, 0.6), abs=1e-4)
    np.testing.assert_allclose(out[50, 50], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[5, 5], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[50, 30], (0.8, 0.2, 0.1), atol=1e-6)


def test_small_enclosed_patches_are_highlights_on_light_paper_and_gaps_on_a_coloured_backdrop(lego_dir, lego_view):
    """The lego's studs and axle holes let the backdrop show through in gaps of a few pixels. On a blue
    backdrop they stay backdrop (and turn white); a patch of light paper's own colour in the middle of
    a face could be a highlight on the plastic, and stays object."""
    from scipy.ndimage import binary_fill_holes

    for name in ("r_10", "r_50"):
        view = resize_image(read_image_rgba(lego_dir / "train" / f"{name}.png"), (200, 200))
        gaps = binary_fill_holes(view[..., 3] > 0.5) & (view[..., 3] == 0)
        assert gaps.sum() > 100  # the view has see-through gaps to test on
        out, _ = replace_backdrop(photograph(view, BLUE, np.random.default_rng(0)), 1.0)
        assert np.abs(out - 1.0).max(-1)[gaps].max() < 0.05, name

    face = composite_on_background(lego_view, 1.0).copy()
    yy, xx = np.mgrid[0:200, 0:200]
    spot = np.hypot(yy - 100, xx - 100) <= 2.0  # 13 pixels inside the body, far from the outline
    assert lego_view[..., 3][np.hypot(yy - 100, xx - 100) <= 6.0].min() == 1.0
    for colour, highlight in (((0.953,) * 3, True), (BLUE, False)):
        rgba = np.concatenate([face, lego_view[..., 3:]], -1)
        rgba[spot, :3], rgba[spot, 3] = 0.96 * np.asarray(colour), 1.0  # the backdrop's light there (photograph)
        image = photograph(rgba, colour, np.random.default_rng(1), noise=0.003)
        backdrop = find_backdrop(image)
        opacity = backdrop.opacity(image)
        assert (opacity[spot].min() == 1.0) if highlight else (opacity[spot].max() < 0.02), colour  # its rim matted, barely


def _write_views(folder, rgbas, images, c2w):
    (folder / "train").mkdir(parents=True)
    frames = []
    for n, image in enumerate(images):
        save_image(folder / "train" / f"{n}.png", image)
        frames.append({"file_path": f"train/{n}", "transform_matrix": c2w[n].tolist()})
    (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))


def test_views_photographed_on_a_backdrop_load_as_on_white_and_clutter_is_warned_of(lego_dir, tmp_path):
    """Through the loader, as a user's files come: opaque photos on a blue backdrop load close to the
    views composited on white; opaque photos in a cluttered room load as they are, with a warning
    that says how to fix the capture."""
    from omnipose.core.image import resize_image
    from omnipose.data import load_transforms

    views = load_transforms(lego_dir / "transforms_train.json", size=100, progress=False).subset([0, 1, 2])
    rgbas = [resize_image(read_image_rgba(p), (100, 100)) for p in views.paths]
    rng = np.random.default_rng(2)
    _write_views(tmp_path / "blue", rgbas, [photograph(r, BLUE, rng) for r in rgbas], views.c2w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain backdrop is no reason for a warning
        loaded = load_transforms(tmp_path / "blue" / "transforms.json", progress=False)
    truth = np.stack([composite_on_background(r, 1.0) for r in rgbas])
    error = np.abs(loaded.images.numpy() - truth).max(-1)
    assert error.mean() < 0.01 and np.mean(error > 0.1) < 0.01
    room = [composite_on_background(r, 0.0) + rng.uniform(0, 0.6, (100, 100, 3)).astype(np.float32) * (1 - r[..., 3:])
            for r in rgbas]  # fmt: skip
    _write_views(tmp_path / "room", rgbas, [np.clip(r, 0, 1) for r in room], views.c2w)
    with pytest.warns(UserWarning, match="3 of the 3 views .* no plain backdrop"):
        load_transforms(tmp_path / "room" / "transforms.json", progress=False)


def test_a_query_says_whether_its_backdrop_was_replaced_or_could_not_be(lego_view):
    from omnipose.pose import prepare_query

    info = {"width": 200, "height": 200, "background": (1.0, 1.0, 1.0)}
    rng = np.random.default_rng(3)
    query, notes = prepare_query(photograph(lego_view, BLUE, rng), info)
    assert any("plain backdrop (0.4" in note for note in notes), notes  # the fall-off darkens the centre a little
    assert float(np.abs(query[:5, :5] - 1.0).max()) == 0.0
    room = composite_on_background(lego_view, 0.0) + rng.uniform(0, 0.6, (200, 200, 3)).astype(np.float32) * (1 - lego_view[..., 3:])
    assert any("not a plain backdrop" in note for note in prepare_query(np.clip(room, 0, 1), info)[1])
    assert prepare_query(composite_on_background(lego_view, 1.0), info)[1] == []  # a render on white: nothing to say


def test_a_field_that_keeps_its_views_backdrop_has_its_queries_keep_theirs(lego_dir, lego_view, tmp_path):
    """The ablation without background handling (``replace_backdrop=False``): the views load with
    their backdrop, the checkpoint says so (older ones, which do not, replaced it), and a query is then
    read the same way instead of having its backdrop swapped for a background the field never saw."""
    from omnipose.core.image import resize_image
    from omnipose.data import load_transforms
    from omnipose.nerf.checkpoint import CheckpointInfo
    from omnipose.pose import prepare_query

    views = load_transforms(lego_dir / "transforms_train.json", size=100, progress=False).subset([0, 1])
    rgbas = [resize_image(read_image_rgba(p), (100, 100)) for p in views.paths]
    rng = np.random.default_rng(4)
    photos = [photograph(r, BLUE, rng) for r in rgbas]
    _write_views(tmp_path / "blue", rgbas, photos, views.c2w)
    kept = load_transforms(tmp_path / "blue" / "transforms.json", progress=False, backdrop=False)
    assert kept.backdrop is False and kept.subset([1]).backdrop is False and kept.resized(50).backdrop is False
    stored = np.stack([read_image_rgba(tmp_path / "blue" / "train" / f"{n}.png")[..., :3] for n in range(2)])
    assert np.abs(kept.images.numpy() - stored).max() == 0.0  # as photographed, backdrop and all
    assert load_transforms(tmp_path / "blue" / "transforms.json", progress=False).backdrop is True

    info = CheckpointInfo(dataset="d", class_name="c", field_type="ngp", width=200, height=200, K=None,
                          background=(1.0, 1.0, 1.0), train_c2w=views.c2w, train_image_paths=[], aabb=views.c2w[0, :2, :3],
                          config={}, step=1, backdrop=False)  # fmt: skip
    state = info.to_state()
    assert CheckpointInfo.from_state(state).backdrop is False
    assert CheckpointInfo.from_state({k: v for k, v in state.items() if k != "backdrop"}).backdrop is True
    query = photograph(lego_view, BLUE, rng)
    as_kept, notes = prepare_query(query, info)
    assert np.abs(as_kept - query).max() < 1e-6 and not any("backdrop" in note for note in notes), notes
    replaced, notes = prepare_query(query, {"width": 200, "height": 200, "background": (1.0, 1.0, 1.0)})
    assert float(np.abs(replaced[:5, :5] - 1.0).max()) == 0.0 and any("plain backdrop" in note for note in notes)

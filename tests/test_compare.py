"""Anomaly maps on real lego views: planted defects, calibration on normal pairs, scores, errors."""

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnipose.cli.compare import add_calibrate_arguments, add_compare_arguments, run_calibrate, run_compare
from omnipose.compare import Calibration, Comparator, CompareConfig, CompareError, ContrastStatistics
from omnipose.compare.calibration import combine_terms, own_spread_map
from omnipose.compare.scoring import image_score, in_mask_spread, normalize_by_own_spread, threshold_for_fpr
from omnipose.compare.statistics import fit_contrast_statistics, location_scale
from omnipose.compare.terms import SHARPNESS_WIDTHS, object_mask, reference_contrast, sharpness_matched
from omnipose.core.errors import ConfigError
from omnipose.core.image import gaussian_blur, narrow_blur, save_image
from omnipose.data import load_transforms
from omnipose.evaluation.protocols import fuse_maps

SIZE = 200
PAINT = torch.tensor([0.1, 0.6, 0.9])  # a blue-green no lego brick has


@pytest.fixture(scope="module")
def views(lego_dir, tmp_path_factory) -> torch.Tensor:
    """Ten real lego views at 200x200, (10, H, W, 3), read through a transforms file of those frames only."""
    meta = json.loads((lego_dir / "transforms_train.json").read_text())
    meta["frames"] = [dict(frame, file_path=str(lego_dir / frame["file_path"])) for frame in meta["frames"][:10]]
    path = tmp_path_factory.mktemp("lego10") / "transforms.json"
    path.write_text(json.dumps(meta))
    return load_transforms(path, size=SIZE, progress=False).images


def perturb(image: torch.Tensor, seed: int) -> torch.Tensor:
    """A stand-in for a render of a normal view: sub-pixel shift, slight blur, sensor noise. (H, W, 3) -> (H, W, 3)."""
    from kornia.filters import gaussian_blur2d

    generator = torch.Generator().manual_seed(seed)
    x = image.permute(2, 0, 1)[None]
    shift = (torch.rand(2, generator=generator) - 0.5) * 0.8 * 2 / SIZE  # up to 0.4 px each way
    theta = torch.tensor([[[1.0, 0.0, float(shift[0])], [0.0, 1.0, float(shift[1])]]])
    x = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), padding_mode="border", align_corners=False)
    x = gaussian_blur2d(x, (5, 5), (0.6, 0.6)) + 0.01 * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)[0].permute(1, 2, 0)


def plant_square(image: torch.Tensor, colour, half: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint a square at the object's centroid. Returns (defective image, defect mask (H, W) bool)."""
    on_object = image.amin(-1) < 0.95
    rows, cols = on_object.nonzero(as_tuple=True)
    row, col = int(rows.float().mean()), int(cols.float().mean())
    assert on_object[row, col], "the centroid of this view should lie on the object"
    mask = torch.zeros(image.shape[:2], dtype=torch.bool)
    mask[row - half : row + half, col - half : col + half] = True
    defective = image.clone()
    defective[mask] = torch.as_tensor(colour, dtype=image.dtype)
    return defective, mask


@pytest.fixture(scope="module")
def comparator(views) -> Comparator:
    """A comparator calibrated on six normal pairs (real view, perturbed copy standing in for the render)."""
    torch.manual_seed(0)
    comparator = Comparator(CompareConfig(), device="cpu")
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    comparator.fit(views[:6], normals, progress=False)
    return comparator


def raw_comparator(comparator: Comparator) -> Comparator:
    """Same config and feature network, no calibration."""
    return Comparator(comparator.config, device="cpu", extractor=comparator.extractor)


def signed_map(comparator: Comparator, result) -> torch.Tensor:
    """The calibrated map of ``result`` before its values below normal are raised to 0 (``above_normal``)."""
    config, calibration = comparator.config, comparator.calibration
    standardised = combine_terms(result.terms, config.weights, calibration)
    return own_spread_map(config, calibration, result.terms, standardised, result.mask)


# ----------------------------------------------------------------------------- behaviour on real data
def test_identical_images_give_a_zero_raw_map(comparator, views):
    result = raw_comparator(comparator).compare(views[7], views[7])
    assert result.anomaly_map.shape == (1, SIZE, SIZE)
    assert float(result.anomaly_map.abs().max()) < 1e-4
    assert set(result.terms) == {"color", "structure", "feature"}
    assert all(float(term.abs().max()) < 1e-4 for term in result.terms.values())
    # With shade_color the reference brought to the query's shading is smoothed a little where its
    # windows straddle an edge: the colour term is then about a CIE Lab unit at most, under a faint
    # stain's 17-24.
    shaded = Comparator(replace(comparator.config, shade_color=0.08), device="cpu",
                        extractor=comparator.extractor).compare(views[7], views[7]).terms
    assert float(shaded["color"].max()) < 2 and float(shaded["structure"].abs().max()) < 1e-4


@pytest.mark.parametrize("calibrated", [False, True])
def test_painted_defect_is_located(comparator, views, calibrated):
    normal = views[7]
    defective, defect = plant_square(normal, PAINT)
    chosen = comparator if calibrated else raw_comparator(comparator)
    result = chosen.compare(perturb(defective, 70), normal)
    anomaly_map = result.anomaly_map[0]
    assert defect.flatten()[anomaly_map.argmax()], "the map's maximum should lie inside the defect"
    rest = ~defect & result.mask[0]
    inside, outside = float(anomaly_map[defect].mean()), float(anomaly_map[rest].mean())
    assert inside > outside + 10.0 * float(anomaly_map[rest].std())
    if calibrated:
        assert float(result.score[0]) > 3.0 * comparator.calibration.score_threshold(0.0)


def test_erased_region_is_located(comparator, views):
    """A missing part: the query shows background where the reference shows the object."""
    normal = views[8]
    defective, defect = plant_square(normal, (1.0, 1.0, 1.0), half=10)
    result = comparator.compare(perturb(defective, 80), normal)
    anomaly_map = result.anomaly_map[0]
    assert defect.flatten()[anomaly_map.argmax()]
    assert result.mask[0][defect].all(), "the mask keeps what only the reference shows"
    assert float(anomaly_map[defect].mean()) > 10.0 * max(float(anomaly_map[~defect & result.mask[0]].median()), 1.0)


def test_a_query_in_another_exposure_is_matched_and_its_defect_still_stands_out(comparator, views):
    """A photo taken darker and bluer than the training session (every pixel of the object times a gain
    per channel): the gains come back from the median ratio in spite of a painted defect; with the
    references matched, the clean photo is explained far better than without (the score before the
    map is measured against its own spread), and the defect still holds the map's maximum."""
    from omnipose.compare.terms import exposure_gains

    normal = views[7]
    gain = torch.tensor([0.85, 0.92, 1.08])
    on_object = normal.amin(-1) < 0.95

    def photographed(image, seed):  # the backdrop stays white, as after its replacement
        shot = image.clone()
        shot[on_object] = (image[on_object] * gain).clamp(0, 1)
        return perturb(shot, seed)

    defective, defect = plant_square(normal, PAINT)
    query = photographed(defective, 71)
    found = exposure_gains(query.permute(2, 0, 1)[None], normal.permute(2, 0, 1)[None], on_object[None])
    torch.testing.assert_close(found[0], gain, atol=0.03, rtol=0)
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    matched = Comparator(replace(comparator.config, match_exposure=True), device="cpu", extractor=comparator.extractor)
    matched.fit(views[:6], normals, progress=False)
    assert not comparator.config.match_exposure  # the default
    clean = photographed(normal, 72)
    assert float(matched.compare(clean, normal).fit_score[0]) < 0.5 * float(comparator.compare(clean, normal).fit_score[0])
    assert defect.flatten()[matched.compare(query, normal).anomaly_map[0].argmax()]


def test_a_photo_of_another_tone_curve_is_matched_by_curves_where_gains_fall_short_and_its_defect_stands_out(
        comparator, views):
    """A photo whose camera lifts dark tones more than light ones (each channel of the object through
    its own power curve, as another camera's tone curve and a light tent's scattered light do): one
    gain per channel leaves much of the difference, the curves (``exposure_curve``) take the
    reference to within a fraction of it in spite of a painted defect, and the defect still holds the
    map's maximum."""
    from omnipose.compare.terms import exposure_curves, exposure_gains, tone_mapped

    normal = views[7]
    power = torch.tensor([0.55, 0.6, 0.7])
    on_object = normal.amin(-1) < 0.95

    def photographed(image, seed):
        shot = image.clone()
        shot[on_object] = image[on_object].clamp_min(0) ** power
        return perturb(shot, seed)

    defective, defect = plant_square(normal, PAINT)
    query = photographed(defective, 73).permute(2, 0, 1)[None]
    reference = normal.permute(2, 0, 1)[None]
    gained = (reference * exposure_gains(query, reference, on_object[None])[..., None, None]).clamp(0, 1)
    curved = tone_mapped(reference, exposure_curves(query, reference, on_object[None]))
    clean = on_object & ~defect

    def error(image):
        return float((image - query).abs().mean(1)[0][clean].mean())

    assert error(curved) < 0.4 * error(gained) and error(gained) < error(reference)
    matched = Comparator(replace(comparator.config, match_exposure=True, exposure_curve=True), device="cpu",
                         extractor=comparator.extractor)
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    matched.fit(views[:6], normals, progress=False)
    assert defect.flatten()[matched.compare(query[0].permute(1, 2, 0), normal).anomaly_map[0].argmax()]


def test_a_query_lit_from_another_side_is_matched_and_its_defect_still_stands_out(comparator, views):
    """A photo lit from the right (the object 0.7 to 1.3 times as bright across the image): the
    reference brought to its shading draws the clean photo's object closely, what the light adds to
    the colour residual falls to a fraction, and a painted defect still holds the map's maximum."""
    from omnipose.compare.terms import raw_residuals, shading_matched

    normal = views[7]
    ramp = torch.linspace(0.7, 1.3, normal.shape[1])[None, :].expand(normal.shape[:2])
    on_object = normal.amin(-1) < 0.95

    def photographed(image, seed=None):
        shot = image.clone()
        shot[on_object] = (image[on_object] * ramp[on_object][:, None]).clamp(0, 1)
        return shot if seed is None else perturb(shot, seed)

    def channels_first(image):
        return image.permute(2, 0, 1)[None]

    lit = photographed(normal)
    drawn = shading_matched(channels_first(normal), channels_first(lit), 16)[0].permute(1, 2, 0)
    assert float((drawn - lit).abs()[on_object].mean()) < 0.5 * float((normal - lit).abs()[on_object].mean())
    # Without the highlight floor, which takes the lighter half's lift off before any matching.
    colour_only = replace(comparator.config, structure_weight=0.0, feature_weight=0.0, highlight_floor=None)

    def colour_residual(photo, radius):
        terms, _ = raw_residuals(replace(colour_only, match_shading=radius), None, channels_first(photo),
                                 channels_first(normal), None)
        return float(terms["color"][0][on_object].mean())

    # What the light adds to the residual of the same photo taken under the training light.
    unlit = colour_residual(perturb(normal, 82), 0)
    clean = photographed(normal, 82)
    assert colour_residual(clean, 16) - unlit < (colour_residual(clean, 0) - unlit) / 4
    defective, defect = plant_square(normal, PAINT)
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    matched = Comparator(replace(comparator.config, match_shading=16), device="cpu", extractor=comparator.extractor)
    matched.fit(views[:6], normals, progress=False)
    assert comparator.config.match_shading == 0  # the default
    assert defect.flatten()[matched.compare(photographed(defective, 81), normal).anomaly_map[0].argmax()]


def highlight_and_stain(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """normal (H, W, 3) with a 16-pixel stain of ``PAINT`` and, at least 30 px away, white light added over a
    broad patch of the object (up to 0.3 in each channel, falling off over about 30 px). Returns the query,
    the stain (H, W) bool, the highlight (where the light added is over 0.3 of its peak, off the stain) and
    where no channel reached white under it."""
    defective, stain = plant_square(normal, PAINT)
    on_object = normal.amin(-1) < 0.95
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    row, col = (int(v) for v in patch_away_from(normal, stain).nonzero()[0])
    glow = torch.exp(-((rows - row - 8) ** 2 + (cols - col - 8) ** 2) / (2 * 12.0**2))
    lit = defective + 0.3 * glow[..., None]
    query = defective.clone()
    query[on_object] = lit[on_object].clamp(0, 1)
    return query, stain, (glow > 0.3) & on_object & ~stain, (lit < 1).all(-1)


def test_shade_color_forgives_a_highlight_no_training_view_caught_more_than_a_stain(views):
    """A real lego view with white light added over a broad patch of the object (a highlight at its
    mirror angle: up to 0.3 brighter in each channel, falling off over about 30 px) and, elsewhere, a
    16-pixel stain painted. With ``shade_color`` (0.08; off by default) the colour term, measured
    against the reference brought to the query's lightness, keeps under half of the highlight's
    residual and most of the stain's (0.40 and 0.84 when measured); the structure term is computed as
    before."""
    from omnipose.compare.terms import raw_residuals

    normal = views[3]
    query, stain, highlight, _ = highlight_and_stain(normal)

    def terms(config):
        found, _ = raw_residuals(config, None, query.permute(2, 0, 1)[None], normal.permute(2, 0, 1)[None], None)
        return found

    assert CompareConfig().shade_color == 0.0  # the default
    colour_only = CompareConfig(structure_weight=0.0, feature_weight=0.0, shade_color=0.08)
    shaded, plain = terms(colour_only)["color"][0], terms(replace(colour_only, shade_color=0.0))["color"][0]
    assert float(plain[highlight].mean()) > 5  # CIE Lab units: a visible difference
    assert float(shaded[highlight].mean()) < 0.5 * float(plain[highlight].mean())
    assert float(shaded[stain].mean()) > 0.75 * float(plain[stain].mean())
    structure = CompareConfig(color_weight=0.0, feature_weight=0.0, shade_color=0.08)
    torch.testing.assert_close(terms(structure)["structure"], terms(replace(structure, shade_color=0.0))["structure"])


def test_highlight_floor_takes_off_the_white_light_a_highlight_adds_but_not_a_stain_nor_a_soft_render(views):
    """A real lego view with white light added over a broad patch of the object (a highlight at its
    mirror angle: up to 0.3 brighter in each channel, falling off over about 30 px) and, elsewhere, a
    16-pixel stain of a colour the lego has nowhere. With ``highlight_floor`` 0.05 (off by default)
    the colour term keeps about half of the highlight's residual or less where no channel reached
    white (0.39 and 0.52 measured without and with a 1-pixel shift: what the floor leaves; where a
    channel did, the light added is no longer the same in every channel, and less is taken off) and
    nearly all of the stain's (which darkens some channels and lightens others); a view lighter
    everywhere by less than the floor, a soft render's noise, keeps its residual; and a part erased to
    the white backdrop, a lift too, keeps all of its residual."""
    from omnipose.compare.terms import color_residual, raw_residuals

    normal = views[3]
    query, stain, highlight, unclipped = highlight_and_stain(normal)
    highlight = highlight & unclipped
    assert int(highlight.sum()) > 50
    on_object = normal.amin(-1) < 0.95
    as_batch = lambda image: image.permute(2, 0, 1)[None]  # noqa: E731

    assert CompareConfig().highlight_floor == 0.05  # the default
    for shift in (0, 1):
        plain = color_residual(as_batch(query), as_batch(normal), shift)[0]
        forgiving = color_residual(as_batch(query), as_batch(normal), shift, highlight_floor=0.05)[0]
        assert float(plain[highlight].mean()) > 5  # CIE Lab units: a visible difference
        assert float(forgiving[highlight].mean()) < 0.6 * float(plain[highlight].mean())
        assert float(forgiving[stain].mean()) > 0.95 * float(plain[stain].mean())
    lighter = (normal + 0.04 * on_object[..., None]).clamp(0, 1)
    torch.testing.assert_close(color_residual(as_batch(lighter), as_batch(normal), highlight_floor=0.05),
                               color_residual(as_batch(lighter), as_batch(normal)))
    erased, hole = plant_square(normal, (1.0, 1.0, 1.0), half=10)
    colour_only = CompareConfig(structure_weight=0.0, feature_weight=0.0)

    def colour(config):
        found, _ = raw_residuals(config, None, as_batch(erased), as_batch(normal), None)
        return found["color"][0]

    counted = colour(replace(colour_only, highlight_floor=None))
    assert float(counted[hole].mean()) > 10
    torch.testing.assert_close(colour(colour_only)[hole], counted[hole])
    with pytest.raises(ConfigError, match="highlight_floor"):
        CompareConfig(highlight_floor=1.5).validate()


def test_the_highlight_lift_converted_on_the_lit_pixels_alone_equals_the_whole_image_converted(views):
    """The colour term converts to Lab again only the pixels it takes a lift off: the same ΔE as taking
    the lift off the whole query and converting all of it, at every shift, with pixels kept from it."""
    from kornia.color import rgb_to_lab

    from omnipose.compare.terms import color_residual, highlight_lift

    reference = views[3].permute(2, 0, 1)[None]
    rng = torch.Generator().manual_seed(0)
    query = (reference + 0.15 * torch.rand(reference.shape, generator=rng) - 0.05).clamp(0, 1)
    keep = torch.rand(reference.shape[-2:], generator=rng)[None] > 0.7
    for shift in (0, 1, 2):
        padded = F.pad(reference, (shift,) * 4, mode="replicate")
        smallest = None
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                moved = padded[..., dy : dy + SIZE, dx : dx + SIZE]
                seen = rgb_to_lab((query - highlight_lift(query, moved, 0.05, keep)).clamp(0, 1))
                squared = ((seen - rgb_to_lab(moved)) ** 2).sum(1)
                smallest = squared if smallest is None else torch.minimum(smallest, squared)
        torch.testing.assert_close(color_residual(query, reference, shift, 0.05, keep), smallest.sqrt(),
                                   atol=1e-3, rtol=1e-4)


def test_the_colour_term_forgives_an_edge_drawn_two_pixels_off_but_not_a_defect(views):
    """A real lego view as the query, its reference drawn 2 pixels to the right (how far a field's
    edge at 400 px can sit from the photograph's): with a ``color_shift`` of 2 pixels the colour
    residual along the edges vanishes; a painted 16-pixel square keeps most of its difference inside,
    beyond the shift from its border (the nearest colour within 2 px is still the object's)."""
    from omnipose.compare.terms import color_residual

    query = views[3].permute(2, 0, 1)[None]
    reference = torch.cat([query[..., :2], query[..., :-2]], dim=-1)  # moved 2 px right
    plain, forgiving = color_residual(query, reference), color_residual(query, reference, 2)
    assert float(plain.amax()) > 30 and float(forgiving.amax()) < 1e-3
    defective, defect = plant_square(views[3], PAINT)
    inner = F.max_pool2d((~defect).float()[None, None], 5, stride=1, padding=2)[0, 0] == 0  # 2 px inside
    painted = color_residual(defective.permute(2, 0, 1)[None], query)[0]
    kept = color_residual(defective.permute(2, 0, 1)[None], query, 2)[0][inner]
    assert float(kept.min()) > 30 and float(kept.mean()) > 0.8 * float(painted[inner].mean())


def softened(image: torch.Tensor, width: float, seed: int) -> torch.Tensor:
    """(H, W, 3) -> the same blurred by ``width`` px with a little noise: a render softer than its photograph."""
    generator = torch.Generator().manual_seed(seed)
    soft = narrow_blur(image.permute(2, 0, 1), width)
    return (soft + 0.01 * torch.randn(soft.shape, generator=generator)).clamp(0, 1).permute(1, 2, 0)


def test_a_query_is_blurred_to_a_softer_render_and_its_defect_still_stands_out(views):
    """Real lego views whose renders are softer than the photographs, as a field's are (calibration pairs
    0.5 px, the novel view 1 px): the query brought to the render's sharpness scores lower when normal,
    and a painted 8-pixel square scores far above it; without the matching the normal view's lost
    detail scores higher."""
    normal = views[7]
    query = normal.permute(2, 0, 1)[None]
    target = narrow_blur(query, 0.75)
    everywhere = torch.ones(1, SIZE, SIZE, dtype=torch.bool)
    assert float(((sharpness_matched(query, target, everywhere) - target) ** 2).max()) < 1e-10
    assert sharpness_matched(query, query, everywhere).equal(query)
    renders = torch.stack([softened(view, 0.5, seed) for seed, view in enumerate(views[:6])])
    render = softened(normal, 1.0, 7)
    defective, _ = plant_square(normal, PAINT, half=4)
    scores = {}
    for from_width in (SIZE, None, SIZE + 1):  # matched from this width up: the views' own, never, wider ones only
        comparator = Comparator(CompareConfig(match_sharpness_from=from_width), device="cpu")
        comparator.fit(views[:6], renders, progress=False)
        scores[from_width] = [float(comparator.compare(image, render).score[0]) for image in (normal, defective)]
    (normal_matched, defect_matched), (normal_unmatched, _) = scores[SIZE], scores[None]
    assert normal_matched < 0.7 * normal_unmatched
    assert defect_matched > 5 * normal_matched
    assert scores[SIZE + 1] == scores[None]


def test_narrow_blur_has_the_variance_asked_down_to_a_fraction_of_a_pixel():
    impulse = torch.zeros(1, 21, 21)
    impulse[0, 10, 10] = 1.0
    offsets = torch.arange(-10, 11, dtype=torch.float32)
    widths = [w for w in SHARPNESS_WIDTHS if w > 0]
    variances = []
    for width in widths:
        kernel = narrow_blur(impulse, width)[0]
        assert abs(float(kernel.sum()) - 1) < 1e-5
        variances.append(float((kernel.sum(0) * offsets**2).sum()))
    # Exact below 0.6 px; a sampled Gaussian beyond, within 2 % of its width.
    assert all(abs(v**0.5 - w) < (1e-4 if w <= 0.6 else 0.02 * w) for v, w in zip(variances, widths))
    assert narrow_blur(impulse, 0.0) is impulse


def patch_away_from(image: torch.Tensor, defect: torch.Tensor) -> torch.Tensor:
    """A 16x16 patch of the object in image (H, W, 3) at least 30 pixels from ``defect`` (H, W) bool."""
    on_object = image.amin(-1) < 0.95
    rows, cols = torch.nonzero(on_object, as_tuple=True)
    patch = torch.zeros_like(defect)
    for row, col in zip(rows.tolist(), cols.tolist()):
        window = (slice(row - 8, row + 8), slice(col - 8, col + 8))
        if row >= 8 and col >= 8 and on_object[window].all() and not defect[row - 38 : row + 38, col - 38 : col + 38].any():
            patch[window] = True
            break
    assert patch.any()
    return patch


def test_a_neighbour_that_shows_the_object_right_forgives_a_render_error_but_not_a_defect(comparator, views):
    """Per pixel the smallest residual over the references: a patch the render gets wrong but a
    re-projected photograph shows right stops scoring; the defect, in no reference, stays."""
    normal = views[7]
    defective, defect = plant_square(normal, PAINT)
    error = patch_away_from(normal, defect)
    render = perturb(normal, 11)
    render[error] = torch.tensor([0.9, 0.2, 0.2])  # the field renders this patch red
    neighbour = perturb(normal, 12)  # a training photograph re-projected there
    query = perturb(defective, 13)
    alone = comparator.compare(query, render).anomaly_map[0]
    helped = comparator.compare(query, render, neighbours=neighbour[None, None]).anomaly_map[0]
    assert float(alone[error].mean()) > 5.0  # without the neighbour the render error looks like a defect
    assert float(helped[error].mean()) < 0.2 * float(alone[error].mean())
    assert defect.flatten()[helped.argmax()] and float(helped[defect].mean()) > 0.7 * float(alone[defect].mean())
    with pytest.raises(CompareError, match="neighbours of shape"):
        comparator.compare(query, render, neighbours=neighbour[None])


def test_what_the_render_made_up_where_no_training_view_looked_does_not_score_but_a_defect_does(comparator, views):
    """Pixels whose rendered surface no training view sees (``unseen``) count no residual: the
    field's guess there differs from the object, and no defect can be told from that guess."""
    normal = views[7]
    defective, defect = plant_square(normal, PAINT)
    guessed = patch_away_from(normal, defect)
    render = perturb(normal, 21)
    render[guessed] = torch.tensor([0.35, 0.3, 0.25])  # the field's made-up underside
    query = perturb(defective, 22)
    plain = comparator.compare(query, render).anomaly_map[0]
    skipped = comparator.compare(query, render, unseen=guessed[None]).anomaly_map[0]
    assert float(plain[guessed].mean()) > 5.0
    assert float(skipped[guessed].mean()) < 0.2 * float(plain[guessed].mean())
    assert defect.flatten()[skipped.argmax()] and float(skipped[defect].mean()) > 0.8 * float(plain[defect].mean())
    with pytest.raises(CompareError, match="unseen of shape"):
        comparator.compare(query, render, unseen=guessed[None, None])


def test_calibration_standardises_held_out_normal_pairs(comparator, views):
    held_out = views[6:]
    renders = torch.stack([perturb(view, 100 + i) for i, view in enumerate(held_out)])
    # Before each map is measured against its own spread, normal maps are standardised: 0 and unit scale.
    standardising = Comparator(replace(comparator.config, own_spread=False), device="cpu", extractor=comparator.extractor)
    standardising.fit(views[:6], torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])]), progress=False)
    result = standardising.compare(held_out, renders)
    values = signed_map(standardising, result)[result.mask].double()
    median = float(values.median())
    scale = 1.4826 * float((values - median).abs().median())
    assert abs(median) < 0.25, f"normal maps should centre on 0 normal deviations, got median {median:.3f}"
    assert 0.7 < scale < 1.4, f"normal maps should have unit robust scale, got {scale:.3f}"
    # Measured against its own spread, a normal map as spread as the calibration's counts about half:
    # the map as a whole, or each term before their mean (whose median is then near 0, not at it).
    whole = Comparator(replace(comparator.config, own_spread_per_term=False), device="cpu", extractor=comparator.extractor)
    whole.fit(views[:6], torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])]), progress=False)
    for chosen, centred in ((whole, 1e-6), (comparator, 0.1)):
        result = chosen.compare(held_out, renders)
        signed = signed_map(chosen, result)
        for anomaly_map, mask in zip(signed, result.mask):
            low, median, high = torch.quantile(anomaly_map[mask], torch.tensor([0.25, 0.5, 0.75]))
            assert abs(float(median)) < centred and 0.3 < float(high - low) < 0.8
        # The map says how far above normal: what lies below is 0, as off the object.
        torch.testing.assert_close(result.anomaly_map, signed.clamp_min(0.0), rtol=0, atol=0)
        assert float(signed.min()) < -0.3 and float(result.anomaly_map.min()) == 0.0
        assert float((result.anomaly_map[result.mask] == 0).float().mean()) > 0.3
        # So M2AD-Synergy's geometric-mean fusion, which refuses negative values, takes the maps.
        fused = fuse_maps(result.anomaly_map.numpy(), "mul")
        np.testing.assert_allclose(fused, np.prod(result.anomaly_map.double().numpy(), 0) ** (1 / len(held_out)), atol=1e-5)
    assert 0.5 < comparator.calibration.normal_spread < 3.0 and standardising.calibration.normal_spread == 0.0
    defective, _ = plant_square(views[9], PAINT)
    defect_score = float(comparator.compare(perturb(defective, 90), views[9]).score[0])
    assert defect_score > 3.0 * float(result.score.max())
    calibration = comparator.calibration
    assert calibration.num_pairs == 6 and len(calibration.normal_scores) == 6
    quantiles = [calibration.normal_pixel_quantiles[k] for k in ("0.5", "0.9", "0.99", "0.999")]
    assert quantiles == sorted(quantiles) and 0.0 <= quantiles[0] < 0.25


def test_a_render_worse_everywhere_does_not_outscore_a_small_defect(comparator, views):
    """A novel view the field renders worse everywhere (more blur and noise than the calibration
    pairs) raises the whole map; a small painted defect raises a few pixels. Measured against each
    map's own spread the defect scores higher, while the standardised maps alone rank them the
    other way round."""
    from kornia.filters import gaussian_blur2d

    normal = views[7]
    generator = torch.Generator().manual_seed(7)
    worse = gaussian_blur2d(normal.permute(2, 0, 1)[None], (9, 9), (1.5, 1.5))
    worse = (worse + 0.03 * torch.randn(worse.shape, generator=generator)).clamp(0, 1)[0].permute(1, 2, 0)
    defective, _ = plant_square(normal, PAINT, half=3)
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    # Pixel to pixel: the colour term's shift would forgive the blurred edges before the own spread does.
    unshifted = replace(comparator.config, color_shift=0)
    standardising = Comparator(replace(unshifted, own_spread=False), device="cpu", extractor=comparator.extractor)
    standardising.fit(views[:6], normals, progress=False)
    comparator = Comparator(unshifted, device="cpu", extractor=comparator.extractor)
    comparator.fit(views[:6], normals, progress=False)

    def scores(chosen: Comparator) -> tuple[float, float]:
        return float(chosen.compare(worse, normal).score[0]), float(chosen.compare(perturb(defective, 91), normal).score[0])

    worse_score, defect_score = scores(standardising)
    assert worse_score > defect_score
    worse_score, defect_score = scores(comparator)
    assert defect_score > 1.2 * worse_score


def test_terms_measured_each_against_its_own_spread(comparator, views):
    """With ``own_spread_per_term`` each standardised term is measured against its own spread, then
    the terms are averaged with their weights. With one term that is the map measured against its
    spread (both are affine in the term), so the two must agree; with three, a planted defect must
    still top the map, and the normal calibration views stay below it."""
    normals = torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])])
    query, reference = perturb(plant_square(views[8], PAINT, half=4)[0], 3), views[8]
    colour_only = replace(comparator.config, structure_weight=0.0, feature_weight=0.0)
    one_term = {}
    for per_term in (False, True):
        chosen = Comparator(replace(colour_only, own_spread_per_term=per_term), device="cpu")
        chosen.fit(views[:6], normals, progress=False)
        one_term[per_term] = chosen.compare(query, reference)
    torch.testing.assert_close(one_term[True].anomaly_map, one_term[False].anomaly_map, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one_term[True].fit_score, one_term[False].fit_score)

    per_term = Comparator(replace(comparator.config, own_spread_per_term=True), device="cpu", extractor=comparator.extractor)
    calibration = per_term.fit(views[:6], normals, progress=False)
    assert set(calibration.term_spreads) == {"color", "structure", "feature"}
    assert all(0.1 < spread < 10.0 for spread in calibration.term_spreads.values())
    defective, defect = plant_square(views[9], PAINT)
    result = per_term.compare(perturb(defective, 90), views[9])
    assert defect.flatten()[result.anomaly_map[0].argmax()]
    assert float(result.score[0]) > 2.0 * max(calibration.normal_scores)
    with pytest.raises(CompareError, match="own_spread_per_term: calibrated with True, configured False"):
        Comparator(replace(comparator.config, own_spread_per_term=False), calibration, device="cpu")


def test_normalize_by_own_spread_on_known_values():
    values = torch.arange(1.0, 101.0).view(1, 10, 10)  # quartiles 25.75 and 75.25, median 50.5
    mask = torch.ones(1, 10, 10, dtype=torch.bool)
    mask[0, 0, 0] = False
    values[0, 0, 0] = 1000.0  # outside the mask: ignored, and 0 in the result
    median, spread = in_mask_spread(values, mask)
    expected_median = float(torch.arange(2.0, 101.0).median())
    assert float(median[0]) == pytest.approx(expected_median)
    out = normalize_by_own_spread(values, mask, normal_spread=2.0)
    assert float(out[0, 0, 0]) == 0.0
    assert float(out[0, 9, 9]) == pytest.approx((100.0 - float(median[0])) / (float(spread[0]) + 2.0))
    torch.testing.assert_close(normalize_by_own_spread(values * 3.0, mask, 6.0), out)  # in units of the map's own spread
    with pytest.raises(CompareError, match="normal_spread"):
        normalize_by_own_spread(values, mask, 0.0)


def test_contrast_bins_separate_a_defect_from_normal_pairs_better(comparator, views):
    """Shifted, blurred copies leave larger colour residuals where the reference has more contrast;
    statistics per contrast bin expect that, and a painted defect stands further above the held-out
    normal pairs than with pooled statistics."""
    colour = comparator.calibration.contrast["color"]
    assert len(colour.edges) == 7 and colour.edges == sorted(colour.edges)
    assert colour.location[-1] > 4.0 * colour.location[0] and colour.scale[-1] > 2.0 * colour.scale[0]
    pooled = Comparator(replace(comparator.config, contrast_bins=1), device="cpu", extractor=comparator.extractor)
    pooled.fit(views[:6], torch.stack([perturb(view, seed) for seed, view in enumerate(views[:6])]), progress=False)
    assert len(pooled.calibration.contrast["color"].scale) == 1
    held_out = views[6:]
    renders = torch.stack([perturb(view, 100 + i) for i, view in enumerate(held_out)])
    defective, _ = plant_square(views[9], PAINT)

    def separation(chosen: Comparator) -> float:
        normal = float(chosen.compare(held_out, renders).score.max())
        return float(chosen.compare(perturb(defective, 90), views[9]).score[0]) / normal

    assert separation(comparator) > 1.1 * separation(pooled)


def test_contrast_statistics_per_bin():
    flat = torch.full((1, 3, 20, 20), 0.5)
    assert float(reference_contrast(flat).max()) < 2e-3
    step = flat.clone()
    step[..., 10:] = 0.9
    contrast = reference_contrast(step)[0]
    assert float(contrast[:, 9:11].min()) > 0.1 and float(contrast[:, :5].max()) < 2e-3, "contrast marks the edge only"

    stats = ContrastStatistics(edges=[0.1, 0.5], location=[0.0, 1.0, 2.0], scale=[1.0, 2.0, 4.0])
    contrast = torch.tensor([[[0.0, 0.1, 0.3, 0.5, 0.9]]])  # bins 0, 1, 1, 2, 2: an edge opens its bin
    values = torch.tensor([[[1.0, 3.0, 3.0, 6.0, 10.0]]])
    torch.testing.assert_close(stats.standardize(values, contrast), torch.tensor([[[1.0, 1.0, 1.0, 1.0, 2.0]]]))

    generator = torch.Generator().manual_seed(0)
    contrast = torch.rand(200_000, generator=generator)
    spread = torch.where(contrast < 0.5, 0.01, 1.0 + 4.0 * contrast)  # flat pixels nearly noise-free
    values = 3.0 + spread * torch.randn(200_000, generator=generator)
    edges = [0.25, 0.5, 0.75]
    fitted = fit_contrast_statistics(values, contrast, edges, "median_mad", floor=0.5)
    pooled_scale = 1.4826 * float((values - values.median()).abs().median())
    assert fitted.edges == edges and fitted.location == pytest.approx([3.0] * 4, abs=0.1)
    assert fitted.scale[0] == fitted.scale[1] == pytest.approx(0.5 * pooled_scale, rel=1e-3), "floored at half the pooled scale"
    assert fitted.scale[2] == pytest.approx(1.0 + 4.0 * 0.625, rel=0.1) and fitted.scale[3] == pytest.approx(1.0 + 4.0 * 0.875, rel=0.1)
    values[contrast < 0.25] = 3.0  # no spread at all in the first bin: it takes the pooled statistics
    fitted = fit_contrast_statistics(values, contrast, edges, "median_mad", floor=0.5)
    pooled_scale = 1.4826 * float((values - values.median()).abs().median())
    assert fitted.scale[0] == pytest.approx(pooled_scale, rel=1e-3) and fitted.location[0] == pytest.approx(float(values.median()))
    single = fit_contrast_statistics(values, contrast, [], "median_mad", floor=0.5)
    assert single.scale == pytest.approx([pooled_scale], rel=1e-3), "one bin is the pooled statistic"


def test_a_sample_mostly_at_one_value_is_scaled_by_its_standard_deviation():
    """Where re-projected photographs match a white query exactly, over half the residuals are ~0:
    their MAD would be a tiny scale that blows every other residual up."""
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(10_000, generator=generator)
    assert location_scale(normal, "median_mad")[1] == pytest.approx(1.0, rel=0.05)
    spiked = torch.cat([1e-7 * torch.rand(6_000, generator=generator), torch.rand(4_000, generator=generator)])
    assert location_scale(spiked, "median_mad")[1] == pytest.approx(float(spiked.double().std()), rel=1e-9)


def test_calibration_round_trips_through_json(comparator, views, tmp_path):
    path = tmp_path / "calibration.json"
    comparator.calibration.save(path)
    loaded = Calibration.load(path)
    assert loaded == Calibration.from_dict(json.loads(path.read_text()))
    again = Comparator(comparator.config, loaded, device="cpu", extractor=comparator.extractor)
    query, reference = perturb(views[7], 5), views[7]
    torch.testing.assert_close(again.anomaly_map(query, reference), comparator.anomaly_map(query, reference))
    with pytest.raises(CompareError, match="sigma: calibrated with 4.0, configured 2.0"):
        Comparator(CompareConfig(sigma=2.0), loaded, device="cpu")
    with pytest.raises(CompareError, match="neighbour_views: calibrated with 2, configured 0"):
        Comparator(CompareConfig(neighbour_views=0), loaded, device="cpu")
    with pytest.raises(CompareError, match="PAD mode uses no calibration"):
        Comparator(CompareConfig.pad(), loaded, device="cpu")
    with pytest.raises(CompareError, match="not an omnipose calibration"):
        Calibration.from_dict({"terms": {}})
    # Format 3 predates neighbour_views: read as it stood, a calibration fitted on the render alone
    # would pass for one fitted with neighbours (whose residuals are smaller) and inflate every score.
    # Format 4 predates term_spreads (``own_spread_per_term``).
    for older in ("omnipose-calibration/1", "omnipose-calibration/2", "omnipose-calibration/3", "omnipose-calibration/4"):
        with pytest.raises(CompareError, match="older format.*refit"):
            Calibration.from_dict({**loaded.to_dict(), "format": older})
    broken = loaded.to_dict()
    del broken["combined"]
    with pytest.raises(CompareError, match="malformed"):
        Calibration.from_dict(broken)


def test_calibration_on_identical_pairs_is_refused(views):
    comparator = Comparator(CompareConfig(feature_weight=0.0), device="cpu")
    with pytest.raises(CompareError, match="no spread"):
        comparator.fit(views[:3], views[:3], progress=False)
    with pytest.raises(CompareError, match="3 views but 2 renders"):
        comparator.fit(views[:3], views[:2], progress=False)


def test_pad_recipe(comparator, views):
    pad = Comparator(CompareConfig.pad(), device="cpu")
    normal = views[7]
    assert float(pad.compare(normal, normal).anomaly_map.abs().max()) < 1e-4
    defective, defect = plant_square(normal, PAINT)
    anomaly_map = pad.anomaly_map(defective, normal)
    assert anomaly_map.shape == (224, 224)  # PAD compares at 224x224
    defect_224 = F.interpolate(defect[None, None].float(), size=(224, 224))[0, 0] > 0.5
    assert defect_224.flatten()[anomaly_map.argmax()]
    with pytest.raises(CompareError, match="PAD mode has no calibration"):
        pad.fit(views[:2], views[:2], progress=False)


def test_object_mask_is_the_union_grown_by_the_margin(views):
    view = views[7].permute(2, 0, 1)[None]
    blank = torch.ones_like(view)
    only_reference = object_mask(blank, view, margin=0)
    shown = view[0].amin(0) < 0.95
    assert only_reference[0][shown].all()  # the object seen by the reference alone is kept
    assert object_mask(blank, blank, margin=4).sum() == 0
    grown = object_mask(view, view, margin=6)[0]
    assert grown.sum() > only_reference.sum()
    assert not grown[0, 0] and not grown[-1, -1]  # the empty corners stay out



def test_object_mask_grows_by_a_square_of_the_margin_as_two_max_filters_did(views):
    """The margin is a square dilation (core.image.dilate): the same pixels as the two 1-D max
    filters the comparison used before, on a single pixel and on a real view."""
    dot = torch.ones(1, 3, 21, 21)
    dot[0, :, 10, 3] = 0.0  # one object pixel near the left border
    mask = object_mask(dot, dot, margin=4)[0]
    expected = torch.zeros(21, 21, dtype=torch.bool)
    expected[6:15, 0:8] = True
    assert torch.equal(mask, expected)
    view = views[7].permute(2, 0, 1)[None]
    bare = object_mask(view, view, margin=0)
    grown = F.max_pool2d(bare[:, None].float(), (1, 13), stride=1, padding=(0, 6))
    grown = F.max_pool2d(grown, (13, 1), stride=1, padding=(6, 0))[:, 0] > 0.5
    assert torch.equal(object_mask(view, view, margin=6), grown)

def test_render_opacity_replaces_the_reference_colour_test(lego_dir, views):
    from omnipose.core.image import read_image_rgba

    alpha = torch.from_numpy(read_image_rgba(lego_dir / "train" / "r_0.png")[..., 3].copy())
    alpha = F.interpolate(alpha[None, None], size=(SIZE, SIZE), mode="area")[0]  # (1, H, W)
    blank = torch.ones(1, 3, SIZE, SIZE)
    from_alpha = object_mask(blank, blank, margin=0, reference_alpha=alpha)
    assert torch.equal(from_alpha[0] & (alpha[0] > 0.5), alpha[0] > 0.5)
    assert not from_alpha[0][alpha[0] < 0.01].all()
    comparator = Comparator(CompareConfig(feature_weight=0.0), device="cpu")
    result = comparator.compare(views[0], views[0], reference_alpha=alpha)
    assert result.mask.shape == (1, SIZE, SIZE) and result.mask[0][alpha[0] > 0.5].all()


# ----------------------------------------------------------------------------- pure functions
def test_image_score_methods():
    anomaly_map = torch.arange(100, dtype=torch.float32).view(10, 10)
    assert float(image_score(anomaly_map, "max")) == 99.0
    assert float(image_score(anomaly_map, "topk", 0.05)) == pytest.approx(97.0)  # mean of 95..99
    assert float(image_score(anomaly_map, "topk", 1e-6)) == 99.0  # at least one pixel
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:2] = True  # pixels 0..19
    assert float(image_score(anomaly_map, "max", mask=mask)) == 19.0
    assert float(image_score(anomaly_map, "topk", 0.1, mask=mask)) == pytest.approx(18.5)  # top 2 of 20
    batch = torch.stack([anomaly_map, -anomaly_map])
    assert image_score(batch, "max").tolist() == [99.0, 0.0]
    with pytest.raises(CompareError, match="unknown score method"):
        image_score(anomaly_map, "mean")


def test_threshold_for_fpr_on_known_distributions():
    values = np.arange(100, dtype=np.float64)
    assert threshold_for_fpr(values, 0.10) == 89.0  # 90..99 lie above: exactly 10%
    assert threshold_for_fpr(values, 0.0) == 99.0
    assert threshold_for_fpr(values.reshape(10, 10), 0.25) == 74.0  # maps are flattened
    generator = np.random.default_rng(0)
    normal = generator.standard_normal(200_000)
    assert threshold_for_fpr(normal, 0.05) == pytest.approx(1.6449, abs=0.02)
    uniform = torch.from_numpy(generator.uniform(0, 1, 100_000))
    threshold = threshold_for_fpr(uniform, 0.01)
    assert threshold == pytest.approx(0.99, abs=0.002)
    assert float((uniform > threshold).double().mean()) <= 0.01
    with pytest.raises(CompareError, match="fpr"):
        threshold_for_fpr(values, 1.0)
    with pytest.raises(CompareError, match="at least one"):
        threshold_for_fpr([], 0.1)


def test_gaussian_smooth_matches_scipy_inside_and_keeps_constants():
    from scipy.ndimage import gaussian_filter

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 64, 64, generator=generator)
    ours = gaussian_blur(maps, 2.0)[0].numpy()
    expected = gaussian_filter(maps[0].double().numpy(), sigma=2.0)
    np.testing.assert_allclose(ours[10:-10, 10:-10], expected[10:-10, 10:-10], atol=1e-5)
    constant = torch.full((2, 20, 30), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, 4.0), constant)
    assert gaussian_blur(maps, 0.0) is maps


# ----------------------------------------------------------------------------- shapes, devices, errors
def test_shapes_and_device(views):
    comparator = Comparator(CompareConfig(feature_weight=0.0), device="cpu")
    assert comparator.anomaly_map(views[0], views[0]).shape == (SIZE, SIZE)
    batch = comparator.compare(views[:2], views[:2])
    assert batch.anomaly_map.shape == (2, SIZE, SIZE) and batch.score.shape == (2,) and batch.mask.dtype == torch.bool
    channels_first = views[:2].permute(0, 3, 1, 2)
    torch.testing.assert_close(comparator.compare(channels_first, channels_first).anomaly_map, batch.anomaly_map)
    as_uint8 = (views[0].numpy() * 255).round().astype(np.uint8)
    assert comparator.anomaly_map(as_uint8, as_uint8).shape == (SIZE, SIZE)
    assert batch.anomaly_map.device == comparator.device == torch.device("cpu")
    smaller = Comparator(CompareConfig(feature_weight=0.0, image_size=100), device="cpu")
    half = F.interpolate(views[:1].permute(0, 3, 1, 2), size=(100, 100), mode="area")
    assert smaller.compare(views[:1], half).anomaly_map.shape == (1, 100, 100)  # resized to one size


def test_bad_inputs_give_clear_errors(views):
    comparator = Comparator(CompareConfig(feature_weight=0.0), device="cpu")
    small = views[0][:100, :100]
    with pytest.raises(CompareError, match=r"query is 200x200 pixels but the reference is 100x100.*image_size"):
        comparator.compare(views[0], small)
    with pytest.raises(CompareError, match="2 query image"):
        comparator.compare(views[:2], views[:1])
    with pytest.raises(CompareError, match="alpha"):
        comparator.compare(torch.rand(50, 50, 4), torch.rand(50, 50, 4))
    with pytest.raises(CompareError, match="Divide 8-bit data by 255"):
        comparator.compare(views[0] * 255, views[0] * 255)
    with pytest.raises(CompareError, match="NaN"):
        comparator.compare(torch.full((20, 20, 3), float("nan")), views[0][:20, :20])
    with pytest.raises(ConfigError, match="score_method = 'mean'"):
        CompareConfig(score_method="mean").validate()



@pytest.mark.parametrize(
    "field, value",
    [("mode", "fast"), ("score_method", "mean"), ("feature_distance", "l1"), ("statistic", "mode"),
     ("topk_fraction", 0.0), ("topk_fraction", float("nan")), ("sigma", -1.0), ("sigma", float("inf")),
     ("ssim_window", 4), ("ssim_window", 1), ("color_weight", -0.5), ("image_size", 8), ("mask_margin", -1),
     ("contrast_bins", 0), ("contrast_floor", 0.0), ("neighbour_views", -1), ("reprojection_tolerance", 0.0),
     ("samples_per_pair", 0), ("object_tolerance", -0.1), ("background", (1.0, 1.0, 2.0)), ("feature_layers", (4, -8)),
     ("match_shading", -1), ("match_shading", 2.5), ("color_shift", -1), ("color_shift", 1.5), ("skip_unseen", 1),
     ("match_sharpness_from", 0), ("match_sharpness_from", 400.0)],
)  # fmt: skip
def test_a_bad_config_value_is_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"CompareConfig.{field} = "):
        CompareConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"CompareConfig.{field} = "):
        replace(CompareConfig(), **{field: value})


def test_config_refuses_a_comparison_without_terms_and_features_without_layers():
    with pytest.raises(ConfigError, match="all term weights are 0"):
        CompareConfig(color_weight=0.0, structure_weight=0.0, feature_weight=0.0)
    with pytest.raises(ConfigError, match="feature_layers"):
        CompareConfig(feature_layers=())
    assert CompareConfig(feature_layers=(), feature_weight=0.0).feature_layers == ()
    with pytest.raises(ConfigError, match="CompareConfig.feature_layers"):
        CompareConfig(feature_layers=("four",))
    with pytest.raises(ConfigError, match="CompareConfig.background"):
        CompareConfig(background=None)
    with pytest.raises(ConfigError, match="unknown field"):
        CompareConfig.from_dict({"sigmas": 2.0})


def test_config_spellings_are_brought_to_one_and_round_trip():
    config = CompareConfig(features="lite0", feature_layers=[4.0, 8], background=[1, 1, 1], score_method="topk")
    assert config.features == "efficientnet-lite0" and config.feature_layers == (4, 8)
    assert config.background == (1.0, 1.0, 1.0) and config.score_method == "topk_mean"
    assert CompareConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert CompareConfig.pad().to_dict()["feature_layers"] == [4, 8, 16, 32]


def test_topk_and_topk_mean_are_one_score_and_old_calibrations_still_fit(comparator, views):
    anomaly_map = torch.arange(100, dtype=torch.float32).view(10, 10)
    assert float(image_score(anomaly_map, "topk_mean", 0.05)) == float(image_score(anomaly_map, "topk", 0.05))
    topk = Comparator(replace(comparator.config, score_method="topk_mean"), device="cpu", extractor=comparator.extractor)
    calibration = topk.fit(views[:3], torch.stack([perturb(view, seed) for seed, view in enumerate(views[:3])]), progress=False)
    assert calibration.signature["score_method"] == "topk_mean"
    written_before = {**calibration.to_dict(), "signature": {**calibration.signature, "score_method": "topk"}}
    loaded = Calibration.from_dict(written_before)
    assert loaded.signature == calibration.signature
    again = Comparator(replace(comparator.config, score_method="topk"), loaded, device="cpu", extractor=comparator.extractor)
    query = perturb(views[7], 5)
    assert torch.equal(again.score(query, views[7]), topk.score(query, views[7]))
    # A calibration stored before highlight_floor existed was fitted without it: it fits that setting turned off.
    older = Calibration.from_dict({**calibration.to_dict(), "signature": {k: v for k, v in calibration.signature.items()
                                                                          if k != "highlight_floor"}})
    with pytest.raises(CompareError, match="highlight_floor: calibrated with None, configured 0.05"):
        Comparator(replace(comparator.config, score_method="topk", highlight_floor=0.05), older, device="cpu",
                   extractor=comparator.extractor)
    Comparator(replace(comparator.config, score_method="topk", highlight_floor=None), older, device="cpu",
               extractor=comparator.extractor)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(comparator, views):
    on_gpu = Comparator(comparator.config, comparator.calibration, device="cuda")
    query, reference = perturb(views[7], 3), views[7]
    gpu_map = on_gpu.anomaly_map(query, reference)
    assert gpu_map.is_cuda
    torch.testing.assert_close(gpu_map.cpu(), comparator.anomaly_map(query, reference), atol=1e-2, rtol=1e-3)


# ----------------------------------------------------------------------------- command line
def test_command_line_calibrates_then_compares(views, tmp_path, capsys):
    real, renders = tmp_path / "views", tmp_path / "renders"
    for i in range(3):
        save_image(real / f"{i}.png", views[i].numpy())
        save_image(renders / f"{i}.png", perturb(views[i], i).numpy())
    defective, _ = plant_square(views[7], PAINT)
    save_image(tmp_path / "query.png", defective.numpy())
    save_image(tmp_path / "reference.png", views[7].numpy())

    parser = argparse.ArgumentParser()
    add_calibrate_arguments(parser)
    calibration = tmp_path / "calibration.json"
    assert (
        run_calibrate(
            parser.parse_args(
                ["--views", str(real), "--renders", str(renders), "--out", str(calibration), "--device", "cpu"]
            )
        )
        == 0
    )
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = tmp_path / "result"
    args = parser.parse_args(
        [
            str(tmp_path / "query.png"),
            str(tmp_path / "reference.png"),
            "--calibration",
            str(calibration),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert run_compare(args) == 0
    summary = json.loads((out / "result.json").read_text())
    assert summary["calibrated"] and summary["score"] > summary["score_threshold_fpr_0.05"]
    assert np.load(out / "anomaly_map.npy").shape == (SIZE, SIZE)
    assert "normal standard deviations" in capsys.readouterr().out


def test_the_feature_term_describes_the_query_once_for_the_render_and_its_neighbours():
    """With two re-projected neighbours the feature network sees four images (the query once, then the
    three references), at most two at a time, and the feature term is still, pixel by pixel, the smallest
    of the three references' terms taken one at a time."""
    from omnipose.compare.terms import raw_residuals

    batches = []

    def extract(images):  # a feature map per stride 4 and 8: pooled colours
        batches.append(images.shape[0])
        return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8)]

    generator = torch.Generator().manual_seed(0)
    query, render, *neighbours = [torch.rand(1, 3, 32, 32, generator=generator) * 0.8 for _ in range(4)]
    config = CompareConfig(color_weight=0.0, structure_weight=0.0)
    together, _ = raw_residuals(config, extract, query, render, None, neighbours)
    assert batches == [2, 2]
    apart = [raw_residuals(config, extract, query, reference, None)[0]["feature"] for reference in (render, *neighbours)]
    assert batches == [2, 2, 2, 2, 2]
    torch.testing.assert_close(together["feature"], torch.stack(apart).amin(0))

"""Residual terms: how a query differs from one normal reference, each a (B, H, W) map.

- ``color``: CIE76 colour difference ΔE in Lab (perceptual units: ~2.3 is just noticeable);
- ``structure``: 1 - SSIM of the luminance on a small window (edges and texture colour misses);
- ``feature``: 1 - cosine similarity of pretrained EfficientNet-Lite features at strides 4/8/16,
  each upsampled bilinearly to image size and summed (semantic changes, robust to small shifts).

Given further normal references per query (the nearest training photographs re-projected to its
pose, ``reproject.py``), each term is the smallest over the render and them, pixel by pixel: a
defect is in none of them, a colour the field renders wrongly only in the render.

Inputs are (B, 3, H, W) in [0, 1] (``inputs.as_image_batch``).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omnipose.compare.config import FEATURE_DISTANCES, CompareConfig, CompareError
from omnipose.compare.statistics import ContrastStatistics
from omnipose.core.image import dilate, gaussian_blur, narrow_blur

# images (B, 3, H, W) in [0, 1] -> feature maps, one (B, C, h, w) per layer (a FeatureExtractor)
Extract = Callable[[torch.Tensor], Sequence[torch.Tensor]]

# Gaussian widths in pixels, of the compared image, that ``sharpness_matched`` tries on a query: from
# none to a render softer than the query by a pixel and a half, finer where the fields measured lie
# (0.4 - 1 px; narrower than 0.4 was chosen once in about 1400 pairs).
SHARPNESS_WIDTHS = (0.0, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5)


def color_residual(
    query: torch.Tensor,
    reference: torch.Tensor,
    shift: int = 0,
    highlight_floor: float | None = None,
    backdrop: torch.Tensor | None = None,
) -> torch.Tensor:
    """CIE76 colour difference ΔE in CIE Lab. query, reference: (B, 3, H, W) sRGB in [0, 1] -> (B, H, W).

    With ``shift`` > 0, per pixel the smallest difference to the reference moved by up to ``shift``
    pixels each way (borders repeated): an edge the reference draws that far from the query's costs
    nothing, a patch wider than the shift still costs its full difference.
    With a ``highlight_floor``, white light the query has over the reference beyond that floor
    (``highlight_lift``) is taken off the query before the difference, except where ``backdrop``
    (B, H, W) bool says the query shows the backdrop: a part missing against a white backdrop is a
    lift too, and the whole of its difference counts.
    """
    from kornia.color import rgb_to_lab

    height, width = query.shape[-2:]
    lab_query = rgb_to_lab(query)
    query_pixels = query.permute(0, 2, 3, 1).contiguous() if highlight_floor is not None else None
    padded = F.pad(reference, (shift,) * 4, mode="replicate") if shift > 0 else reference
    padded_lab = rgb_to_lab(padded)
    smallest = None
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            window = (..., slice(dy, dy + height), slice(dx, dx + width))
            seen = lab_query
            if highlight_floor is not None:
                lift = highlight_lift(query, padded[window], highlight_floor, backdrop)
                lit = lift[:, 0] > 0
                if lit.any():  # few pixels are lit: convert only those to Lab again
                    seen = lab_query.clone()
                    pixels = (query_pixels[lit] - lift[:, 0][lit][:, None]).clamp(0.0, 1.0)  # (N, 3)
                    seen.permute(0, 2, 3, 1)[lit] = rgb_to_lab(pixels.T[None, :, :, None])[0, :, :, 0].T
            squared = ((seen - padded_lab[window]) ** 2).sum(1)
            smallest = squared if smallest is None else torch.minimum(smallest, squared)
    return torch.sqrt(smallest + 1e-12) - 1e-6  # eps: finite gradient at 0


def highlight_lift(
    query: torch.Tensor, reference: torch.Tensor, floor: float = 0.0, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """The white light query (B, 3, H, W) has over reference, (B, 1, H, W): per pixel, the mean over
    the channels of query - reference beyond ``floor``; 0 where ``keep`` (B, H, W) bool is set.

    A specular highlight adds the light's colour (white) to the surface's, so a highlight at a mirror
    angle no training view caught makes the query lighter by about as much in each channel, which the
    field cannot draw. A stain or a missing part changes the hue or darkens: what is left of it after
    the lift is taken off is the colour difference that counts (and its outline stays in the structure
    and feature terms). The floor leaves the small lifts of a soft render alone: they are half of a
    normal view's residual, and taking them off would leave the other half, the render too light, to
    count double.
    """
    lift = ((query - reference).mean(1, keepdim=True) - floor).clamp_min(0.0)
    return lift if keep is None else lift.masked_fill(keep[:, None], 0.0)


def structure_residual(query: torch.Tensor, reference: torch.Tensor, window: int = 7) -> torch.Tensor:
    """1 - SSIM of the luminance over a ``window``-pixel Gaussian window. (B, 3, H, W) -> (B, H, W) in [0, 2].

    Luminance only: colour changes are the colour term's job, and one channel is a third of the cost.
    """
    from kornia.color import rgb_to_grayscale
    from kornia.metrics import ssim

    return (1.0 - ssim(rgb_to_grayscale(query), rgb_to_grayscale(reference), window, max_val=1.0))[:, 0].clamp_min(0.0)


def feature_residual(
    query_features: Sequence[torch.Tensor],
    reference_features: Sequence[torch.Tensor],
    size: tuple[int, int],
    distance: str = "cosine",
) -> torch.Tensor:
    """Feature distance per layer, upsampled bilinearly to ``size`` = (H, W) and summed over layers.

    query_features, reference_features: lists of (B, C_l, h_l, w_l). distance 'cosine': 1 - cosine
    similarity over channels; 'squared': squared difference summed over channels (PAD).
    Returns (B, H, W).
    """
    if len(query_features) != len(reference_features):
        raise CompareError(
            "query and reference feature lists differ in length: extract both with one FeatureExtractor."
        )
    total = None
    for fq, fr in zip(query_features, reference_features):
        if distance == "cosine":
            layer = 1.0 - F.cosine_similarity(fq, fr, dim=1, eps=1e-6)
        elif distance == "squared":
            layer = ((fq - fr) ** 2).sum(1)
        else:
            raise CompareError(f"unknown feature distance '{distance}'; use one of {FEATURE_DISTANCES}.")
        layer = F.interpolate(layer[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        total = layer if total is None else total + layer
    return total


def reference_contrast(reference: torch.Tensor) -> torch.Tensor:
    """Local contrast of the reference: Sobel gradient magnitude of CIE L* / 100, blurred by 1 px.

    reference: (B, 3, H, W) sRGB in [0, 1]. Returns (B, H, W): about 0.1 on a step of 0.4 in grey
    level, 0.001 (kornia's epsilon) on flat regions.
    """
    from kornia.color import rgb_to_lab
    from kornia.filters import sobel

    lightness = rgb_to_lab(reference)[:, :1] / 100.0
    return gaussian_blur(sobel(lightness)[:, 0], 1.0)


def object_mask(
    query: torch.Tensor,
    reference: torch.Tensor,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    tolerance: float = 0.05,
    margin: int = 8,
    reference_alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Where either image shows the object, grown by ``margin`` pixels, holes filled.

    Both images count: an added part (burr) shows only in the query, a missing part only in the
    reference. Without the mask, background pixels (compression noise, floaters of the field,
    exposure) dominate a map whose object covers a fraction of the frame.
    query, reference: (B, 3, H, W); reference_alpha: optional (B, H, W) accumulated opacity of the
    render, used for the reference instead of its colour. Returns (B, H, W) bool.
    """
    shown = shows_object(query, background, tolerance)
    if reference_alpha is not None:
        shown |= reference_alpha.to(query.device).reshape(shown.shape) > 0.5
    else:
        shown |= shows_object(reference, background, tolerance)
    # Object parts of background colour leave holes; a hole is still object.
    from scipy.ndimage import binary_fill_holes

    filled = np.stack([dilate(binary_fill_holes(m), margin, shape="square") for m in shown.cpu().numpy()])
    return torch.from_numpy(filled).to(query.device)


def shows_object(image: torch.Tensor, background: Sequence[float], tolerance: float) -> torch.Tensor:
    """(B, H, W) bool: pixels of image (B, 3, H, W) further than ``tolerance`` from the background
    colour in some channel."""
    colour = torch.as_tensor(background, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image - colour).abs().amax(1) > tolerance


def query_backdrop(config: CompareConfig, query: torch.Tensor) -> torch.Tensor | None:
    """(B, H, W) bool: where the query shows the backdrop colour, the pixels the colour term takes no
    highlight off; None when ``highlight_floor`` is off."""
    if config.highlight_floor is None:
        return None
    return ~shows_object(query, config.background, config.object_tolerance)


def comparison_mask(
    config: CompareConfig, query: torch.Tensor, reference: torch.Tensor, alpha: torch.Tensor | None
) -> torch.Tensor:
    """The pixels compared: ``object_mask`` with the config's background, tolerance and margin, or
    every pixel when ``use_object_mask`` is off. Returns (B, H, W) bool."""
    if not config.use_object_mask:
        return torch.ones(query.shape[0], *query.shape[-2:], dtype=torch.bool, device=query.device)
    return object_mask(query, reference, config.background, config.object_tolerance, config.mask_margin, alpha)


def residual_terms(
    config: CompareConfig,
    query: torch.Tensor,
    reference: torch.Tensor,
    query_features: Sequence[torch.Tensor] | None,
    reference_features: Sequence[torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Unsmoothed terms {term: (B, H, W)} with weight > 0 of query against one reference, both (B, 3, H, W);
    the feature term takes both images' feature maps (``image_features``: None without a feature term)."""
    terms: dict[str, torch.Tensor] = {}
    if config.color_weight > 0:
        terms["color"] = color_residual(query, reference, config.color_shift, config.highlight_floor,
                                        query_backdrop(config, query))
    if config.structure_weight > 0:
        terms["structure"] = structure_residual(query, reference, config.ssim_window)
    if config.feature_weight > 0:
        terms["feature"] = feature_residual(query_features, reference_features, tuple(query.shape[-2:]),
                                            config.feature_distance)
    return terms


def image_features(config: CompareConfig, extract: Extract, images: Sequence[torch.Tensor]) -> list:
    """The feature maps of each of ``images`` (each (B, 3, H, W)), each image through the network once, so
    that a query compared with several references is described once; None for each without a feature term.
    A pass takes at most 2 B images, a query and one reference: more at once would raise the peak memory of
    a calibration (B = 8) at 800 px by gigabytes for no fewer operations."""
    if config.feature_weight <= 0:
        return [None] * len(images)
    batch = images[0].shape[0]
    stacked = torch.cat(list(images))
    passes = [extract(stacked[start:start + 2 * batch]) for start in range(0, stacked.shape[0], 2 * batch)]
    maps = [torch.cat(level) for level in zip(*passes)]
    return [[level[i * batch:(i + 1) * batch] for level in maps] for i in range(len(images))]


def raw_residuals(
    config: CompareConfig,
    extract: Extract,
    query: torch.Tensor,
    reference: torch.Tensor,
    alpha: torch.Tensor | None,
    neighbours: Sequence[torch.Tensor] = (),
    unseen: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Unsmoothed terms {term: (B, H, W)} and the compared pixels (B, H, W) bool (from the render).

    With neighbours (each (B, 3, H, W)), each term is the smallest over the render and them, pixel by pixel.
    Where ``unseen`` (B, H, W) bool is set, the terms are 0: no training view saw the surface the
    render shows there, so it is the field's guess and a residual says nothing of the object.
    With ``match_exposure`` the references are first brought to the query's exposure and white balance
    (``exposure_gains``, or with ``exposure_curve`` its tones, ``exposure_curves``; measured against the
    render, applied to every reference: all come from the training session), and with ``match_shading``
    each reference to its shading (``shading_matched``); with ``shade_color`` alone, the colour term only."""
    mask = comparison_mask(config, query, reference, alpha)
    sharpen = config.match_sharpness_from is not None and query.shape[-1] >= config.match_sharpness_from
    shade_color = config.shade_color > 0 and config.match_shading == 0 and config.color_weight > 0
    if sharpen or config.match_exposure or config.match_shading > 0 or shade_color:
        # Only the object is matched: the background is the model's colour in every image.
        solid = _solid(config, reference, alpha)
    if sharpen:
        query = sharpness_matched(query, reference, mask & (solid[:, 0] > 0.5))
    if config.match_exposure or config.match_shading > 0:
        curves, gains = None, 1.0
        if config.match_exposure and config.exposure_curve:
            curves = exposure_curves(query, reference, mask, alpha)
        elif config.match_exposure:
            gains = exposure_gains(query, reference, mask, alpha)[..., None, None]

        def matched(image: torch.Tensor) -> torch.Tensor:
            image = tone_mapped(image, curves) if curves is not None else (image * gains).clamp(0.0, 1.0)
            return shading_matched(image, query, config.match_shading) if config.match_shading > 0 else image

        reference, *neighbours = [image + solid * (matched(image) - image) for image in (reference, *neighbours)]
    query_features, *reference_features = image_features(config, extract, (query, reference, *neighbours))
    terms = residual_terms(config, query, reference, query_features, reference_features[0])
    for neighbour, features in zip(neighbours, reference_features[1:]):
        others = residual_terms(config, query, neighbour, query_features, features).values()
        terms = {name: torch.minimum(value, other) for (name, value), other in zip(terms.items(), others)}
    if shade_color:
        radius = max(1, round(config.shade_color * query.shape[-1]))
        shaded = [image + solid * (shading_matched(image, query, radius, per_channel=False) - image)
                  for image in (reference, *neighbours)]
        backdrop = query_backdrop(config, query)
        terms["color"] = torch.stack([color_residual(query, image, config.color_shift, config.highlight_floor, backdrop)
                                      for image in shaded]).amin(0)
    if unseen is not None:
        terms = {name: value.masked_fill(unseen, 0.0) for name, value in terms.items()}
    return terms, mask


def _solid(config: CompareConfig, reference: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, H, W): how solid the render is (its opacity, else 1 where it is not the background colour)."""
    if alpha is not None:
        return alpha.to(reference.device).reshape(reference.shape[0], 1, *reference.shape[-2:])
    return shows_object(reference, config.background, config.object_tolerance)[:, None].to(reference.dtype)


def sharpness_matched(query: torch.Tensor, reference: torch.Tensor, solid: torch.Tensor) -> torch.Tensor:
    """The query blurred to the reference's sharpness: of ``SHARPNESS_WIDTHS``, the Gaussian (``narrow_blur``)
    after which it differs least from the reference, in squared colour over the ``solid`` pixels, one width
    per image (the narrowest of equals).

    A field renders a novel view softer than a photograph shows it, most on fine texture (a tread, rows of
    studs): at 400 px such texture outscored small defects in the structure and feature terms. A defect
    wider than the blur keeps most of its difference, and a defect covering a small part of the object
    does not move the least-squares choice. query, reference: (B, 3, H, W); solid: (B, H, W) bool (an
    empty one counts every pixel). Returns (B, 3, H, W).
    """
    kernels = _sharpness_kernels(query)
    count, taps = kernels.shape
    radius = taps // 2
    matched = []
    for image, target, inside in zip(query, reference, solid):
        if not inside.any():
            inside = torch.ones_like(inside)
        # Every width at once, one pass per axis, over the object's box and every other row of it (enough
        # to choose by), image by image to bound the memory.
        rows, columns = (torch.nonzero(inside.any(axis)).flatten() for axis in (1, 0))
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
        padded = F.pad(image[:, None], (radius,) * 4, mode="replicate")
        along = F.conv2d(padded[..., top:bottom + 2 * radius, left:right + 2 * radius], kernels.view(count, 1, 1, taps))
        blurred = F.conv2d(along, kernels.view(count, 1, taps, 1), groups=count, stride=(2, 1))  # (3, widths, h, w)
        sampled = (slice(top, bottom, 2), slice(left, right))
        error = ((blurred - target[:, None, sampled[0], sampled[1]]) ** 2).sum(0)[:, inside[sampled]].sum(1)
        matched.append(narrow_blur(image, SHARPNESS_WIDTHS[int(error.argmin())]))
    return torch.stack(matched)


def _sharpness_kernels(like: torch.Tensor) -> torch.Tensor:
    """(widths, taps): the 1-D kernels of ``narrow_blur`` at ``SHARPNESS_WIDTHS``, as wide as the widest."""
    radius = max(1, int(4.0 * max(SHARPNESS_WIDTHS) + 0.5))
    impulse = like.new_zeros(1, 1, 2 * radius + 1)
    impulse[..., radius] = 1.0
    return torch.stack([narrow_blur(impulse, width)[0, 0] for width in SHARPNESS_WIDTHS])


def exposure_gains(
    query: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 3) per-channel gains that take the reference to the query's exposure and white balance.

    The median ratio query / reference over the object's lit pixels (both above 0.05, neither clipped
    at 1, inside ``mask`` and, given the render's opacity alpha (B, H, W), where the render is solid):
    a defect covering less than half of the object does not move a median. Gains are kept within
    [0.5, 2]; a pair with too few such pixels (under 64) keeps gain 1.
    query, reference: (B, 3, H, W); mask: (B, H, W) bool.
    """
    usable = _lit_pixels(query, reference, mask, alpha, 0.05)
    ratio = query / reference.clamp_min(1e-3)
    gains = torch.ones(query.shape[:2], dtype=query.dtype, device=query.device)
    for b in range(query.shape[0]):
        for c in range(3):
            values = ratio[b, c][usable[b, c]]
            if values.numel() >= 64:
                gains[b, c] = values.median().clamp(0.5, 2.0)
    return gains


def _lit_pixels(query: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, alpha: torch.Tensor | None,
                dark: float) -> torch.Tensor:
    """(B, 3, H, W) bool: the pixels of query and reference (B, 3, H, W) that exposure is measured on: both
    above ``dark``, neither clipped at 1, inside ``mask`` (B, H, W) and, given the render's opacity alpha
    (B, H, W), where the render is solid."""
    usable = mask[:, None] & (query > dark) & (reference > dark) & (query < 0.99) & (reference < 0.99)
    if alpha is not None:
        usable &= alpha.to(query.device).reshape(mask.shape)[:, None] > 0.99
    return usable


TONE_LEVELS = 8
"""Levels of the reference (its quantiles on the object) at which ``exposure_curves`` reads the query's median."""


def exposure_curves(
    query: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, alpha: torch.Tensor | None = None
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per image and channel, the curve (levels, values), each (L,), that takes the reference to the
    query's tones: at ``TONE_LEVELS`` levels of the reference (the medians of its quantile bins on the
    pixels ``exposure_gains`` uses, down to 0.02 rather than 0.05: the dark parts are what a curve is
    for), the query's median there, made non-decreasing. An image or channel with fewer than 64 such
    pixels gets the empty curve (left as it is).

    A gain per channel cannot take a render to a photograph of another camera: the photograph's dark
    parts are lifted more than its light ones (another tone curve, light scattered in a tent). A few
    levels over the whole object follow that and cannot draw a defect, which takes less than half of
    any level's pixels. query, reference: (B, 3, H, W); mask: (B, H, W) bool."""
    usable = _lit_pixels(query, reference, mask, alpha, 0.02)
    curves = []
    for b in range(query.shape[0]):
        channels = []
        for c in range(3):
            source, target = reference[b, c][usable[b, c]], query[b, c][usable[b, c]]
            if source.numel() < 64:
                channels.append((source.new_zeros(0), source.new_zeros(0)))
                continue
            order = source.argsort()
            bins = torch.tensor_split(order, TONE_LEVELS)
            levels = torch.stack([source[i].median() for i in bins])
            values = torch.stack([target[i].median() for i in bins]).cummax(0).values
            channels.append((levels, values))
        curves.append(channels)
    return curves


def tone_mapped(image: torch.Tensor, curves: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> torch.Tensor:
    """image (B, 3, H, W) through ``exposure_curves``: linear between the levels, and beyond the first and
    last level the gain there (so black stays black), within [0, 1]."""
    out = image.clone()
    for b, channels in enumerate(curves):
        for c, (levels, values) in enumerate(channels):
            if levels.numel() == 0:
                continue
            x = image[b, c]
            upper = torch.searchsorted(levels, x.contiguous()).clamp(1, levels.numel() - 1)
            x0, x1, y0, y1 = levels[upper - 1], levels[upper], values[upper - 1], values[upper]
            inner = y0 + (x - x0) * (y1 - y0) / (x1 - x0).clamp_min(1e-6)
            low, high = x * values[0] / levels[0].clamp_min(1e-3), x * values[-1] / levels[-1].clamp_min(1e-3)
            out[b, c] = torch.where(x < levels[0], low, torch.where(x > levels[-1], high, inner))
    return out.clamp(0.0, 1.0)


SHADING_REGULARISATION = 1e-3
"""Variance of the reference below which a window of ``shading_matched`` takes the query's mean
rather than a slope: flat faces are brightened or darkened, never given the query's details."""


def shading_matched(
    reference: torch.Tensor, query: torch.Tensor, radius: int, per_channel: bool = True
) -> torch.Tensor:
    """The reference brought to the query's shading: in every window of (2 radius + 1)^2 pixels,
    the affine function of the reference that best draws the query there (a guided filter with the
    reference as the guide, slopes regularised by ``SHADING_REGULARISATION``), averaged over the
    windows holding each pixel; one function per colour channel, or with ``per_channel`` False one
    for the three together.

    Light from another direction brightens and darkens whole faces, each by its own factor; an
    affine function per window follows that up to the faces' edges, which the reference shows. What
    the reference does not show (a stain on a flat face, a missing part's new outline) is drawn by no
    function of it: the window's mean absorbs only the defect's share of the window. One function for
    the three channels changes lightness, not hue: light of the same colour, brighter or dimmer, or a
    white highlight; a stain's hue is then left to the comparison whole, whatever its share of the
    window. Per channel it also follows light of another colour (another session's lamps).
    reference, query: (B, 3, H, W) in [0, 1]. Returns (B, 3, H, W).
    """

    def window_mean(x: torch.Tensor) -> torch.Tensor:
        if not per_channel:
            x = x.mean(1, keepdim=True)
        # A box filter is separable: two 1-D passes cost 2 (2 radius + 1) per pixel instead of its square.
        padded = F.pad(x, (radius,) * 4, mode="replicate")
        return F.avg_pool2d(F.avg_pool2d(padded, (2 * radius + 1, 1), stride=1), (1, 2 * radius + 1), stride=1)

    mean_r, mean_q = window_mean(reference), window_mean(query)
    slope = (window_mean(reference * query) - mean_r * mean_q) / (
        window_mean(reference * reference) - mean_r * mean_r + SHADING_REGULARISATION)
    offset = mean_q - slope * mean_r
    return (window_mean(slope) * reference + window_mean(offset)).clamp(0.0, 1.0)


def finish_terms(
    raw: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    sigma: float,
    contrast: torch.Tensor | None = None,
    statistics: Mapping[str, ContrastStatistics] | None = None,
) -> dict[str, torch.Tensor]:
    """Raw terms (B, H, W) -> standardised per bin of the reference's ``contrast`` (B, H, W) (when
    ``statistics`` are given), smoothed by ``sigma`` and zeroed outside ``mask``."""
    terms = {}
    for name, value in raw.items():
        value = value.float()
        if statistics is not None:
            value = statistics[name].standardize(value, contrast)
        terms[name] = gaussian_blur(value, sigma) * mask
    return terms

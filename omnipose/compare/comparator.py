"""Anomaly maps: compare a query image with the normal reference rendered at its estimated pose.

Two recipes:

``mode="calibrated"`` (default). Three residual terms, each a (B, H, W) map:

- ``color``: CIE76 colour difference ΔE in Lab (perceptual units: ~2.3 is just noticeable);
- ``structure``: 1 - SSIM of the luminance on a small window (edges and texture colour misses);
- ``feature``: 1 - cosine similarity of pretrained EfficientNet-Lite features at strides 4/8/16,
  each upsampled bilinearly to image size and summed (semantic changes, robust to small shifts).

Given ``neighbours`` (further normal references per query: the nearest training photographs
re-projected to its pose, ``reproject.py``), each term is the smallest over the render and them,
pixel by pixel: a defect is in none of them, a colour the field renders wrongly only in the render.

``Comparator.fit`` calibrates on NORMAL data only: pairs of (real training view, render of the
field at that view's own pose). The residuals a defect-free object leaves (render blur, floaters,
small pose and exposure differences) are largest where the reference changes fast (edges, thin
parts) and smallest on flat surfaces, so each raw term gets a robust location and scale (median and
MAD by default) per bin of the reference's local contrast (``reference_contrast``, ``contrast_bins``
quantile bins): a residual on an edge counts less than the same residual on a flat face. A bin's
scale is floored at ``contrast_floor`` times the pooled one, because flat faces of training views
are fitted more closely than those of a novel view. The standardised terms are smoothed with a
Gaussian (``sigma``), zeroed outside the object (see ``object_mask``), standardised once more,
summed with their weights and the sum standardised again. Last, each map is measured against its
own spread (``own_spread``, on by default; see ``normalize_by_own_spread``): a novel view that the
field renders worse everywhere (grain on flat faces, blurred edges, a pose a little off) raises
the whole map, while a defect raises a small part of it. The final map is in units of normal
residual spread: comparable across images, objects and runs, and a threshold can be set from
normal data alone (``threshold_for_fpr`` / ``Calibration.score_threshold``) instead of from the
min and max of the test set.

``mode="pad"``: PAD's recipe (NeurIPS 2023), kept for ablations. Squared difference of
ImageNet-normalised RGB summed over channels, plus, per feature layer, the squared feature
difference summed over channels and upsampled, at 224x224, Gaussian sigma 4, image score = max.
No mask and no calibration: PAD's evaluator min-max normalises the maps over the whole test set.

Images follow the project convention: float in [0, 1], (H, W, 3) or batches (N, H, W, 3) as data,
(B, 3, H, W) as network input. ``Comparator`` accepts either; the pure functions take
(B, 3, H, W) (``as_image_batch`` converts) and return (B, H, W) maps.

The statistics are pooled over pixel positions on purpose: query poses differ from the training
poses, so a pixel position has no fixed meaning and per-position statistics would not transfer.
The contrast of the reference, computed at any pose, does transfer.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from omnipose.compare.features import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, canonical_name, is_weights_path
from omnipose.core.device import pick_device
from omnipose.core.errors import OmniposeError
from omnipose.core.files import atomic_write_json
from omnipose.core.image import gaussian_blur, save_image

TERMS = ("color", "structure", "feature")
MODES = ("calibrated", "pad")
SCORE_METHODS = ("max", "topk")
FEATURE_DISTANCES = ("cosine", "squared")
STATISTICS = ("median_mad", "mean_std")
MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
MAD_FLOOR = 1e-3  # a MAD scale below this many standard deviations is degenerate (see location_scale)
CALIBRATION_FORMAT = "omnipose-calibration/4"  # 4: the signature holds neighbour_views


class CompareError(OmniposeError):
    """Query and reference cannot be compared as given (shapes, values, configuration, calibration)."""


# ----------------------------------------------------------------------------- configuration
@dataclass
class CompareConfig:
    """How a query is compared with its reference; the defaults work for MAD-style data.

    sigma is in pixels of the compared image (PAD uses 4 at 224x224). image_size, when set, resizes
    both images so that their shorter side has this many pixels before comparing (the maps are
    returned at that size); None compares at the input size.
    """

    mode: str = "calibrated"
    color_weight: float = 1.0
    structure_weight: float = 1.0
    feature_weight: float = 1.0
    features: str = "efficientnet-lite0"  # a shipped name or the path of a state dict (see features.py)
    feature_layers: tuple[int, ...] = (4, 8, 16)  # total strides of the feature maps compared
    feature_distance: str = "cosine"  # "cosine": 1 - cos per cell; "squared": squared L2 summed over channels
    ssim_window: int = 7
    sigma: float = 4.0
    score_method: str = "max"  # "max" of the smoothed map, or "topk": mean of its top topk_fraction
    topk_fraction: float = 0.01
    image_size: int | None = None
    use_object_mask: bool = True
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    object_tolerance: float = 0.05  # a pixel within this of the background colour in every channel is background
    mask_margin: int = 8  # pixels the object mask is grown by
    statistic: str = "median_mad"  # location/scale of normal residuals: "median_mad" (robust) or "mean_std"
    samples_per_pair: int = 20000  # pixels per calibration pair that enter the statistics
    contrast_bins: int = 8  # bins of the reference's local contrast with their own normal statistics (1: pooled)
    contrast_floor: float = 0.5  # a bin's scale is at least this fraction of the pooled scale
    own_spread: bool = True  # measure each map against its own spread (normalize_by_own_spread)
    # Training views re-projected to the query's pose that the Detector compares besides the render
    # (reproject.py): per pixel the smallest residual over the references counts, so that what
    # the field renders wrongly but the photographs show right is not flagged. A Comparator on its
    # own compares with the neighbours it is given (none: the render alone).
    neighbour_views: int = 2
    reprojection_tolerance: float = 0.02  # relative depth difference up to which a view sees a point

    @classmethod
    def pad(
        cls, features: str = "efficientnet-lite0", feature_layers: tuple[int, ...] = (4, 8, 16, 32)
    ) -> "CompareConfig":
        """PAD's recipe. PAD itself uses EfficientNet-B4 (pass its lukemelas .pth path) at strides 4-32."""
        return cls(
            mode="pad",
            features=features,
            feature_layers=tuple(feature_layers),
            feature_distance="squared",
            sigma=4.0,
            score_method="max",
            image_size=224,
            use_object_mask=False,
        )

    def validate(self) -> "CompareConfig":
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode '{self.mode}' (use one of {MODES})")
        if self.score_method not in SCORE_METHODS:
            problems.append(f"score_method '{self.score_method}' (use one of {SCORE_METHODS})")
        if self.feature_distance not in FEATURE_DISTANCES:
            problems.append(f"feature_distance '{self.feature_distance}' (use one of {FEATURE_DISTANCES})")
        if self.statistic not in STATISTICS:
            problems.append(f"statistic '{self.statistic}' (use one of {STATISTICS})")
        if not 0.0 < self.topk_fraction <= 1.0:
            problems.append(f"topk_fraction {self.topk_fraction} (must be in (0, 1])")
        if self.sigma < 0:
            problems.append(f"sigma {self.sigma} (must be >= 0; 0 turns smoothing off)")
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            problems.append(f"ssim_window {self.ssim_window} (must be odd and >= 3)")
        if min(self.color_weight, self.structure_weight, self.feature_weight) < 0:
            problems.append("a negative term weight (weights must be >= 0)")
        if self.mode == "calibrated" and self.color_weight + self.structure_weight + self.feature_weight <= 0:
            problems.append("all term weights are 0 (give at least one term a positive weight)")
        if self.image_size is not None and self.image_size < 16:
            problems.append(f"image_size {self.image_size} (must be >= 16, or None for the input size)")
        if self.mask_margin < 0:
            problems.append(f"mask_margin {self.mask_margin} (must be >= 0)")
        if self.contrast_bins < 1:
            problems.append(f"contrast_bins {self.contrast_bins} (must be >= 1; 1 pools all pixels)")
        if not self.contrast_floor > 0:
            problems.append(f"contrast_floor {self.contrast_floor} (must be > 0)")
        if self.neighbour_views < 0:
            problems.append(f"neighbour_views {self.neighbour_views} (must be >= 0; 0 compares with the render alone)")
        if not self.reprojection_tolerance > 0:
            problems.append(f"reprojection_tolerance {self.reprojection_tolerance} (must be > 0)")
        if not self.feature_layers and (self.feature_weight > 0 or self.mode == "pad"):
            problems.append("no feature_layers (give strides such as (4, 8, 16), or set feature_weight=0)")
        if problems:
            raise CompareError("invalid CompareConfig: " + "; ".join(problems) + ".")
        self.feature_layers = tuple(int(s) for s in self.feature_layers)
        self.features = str(self.features)
        if not is_weights_path(self.features):  # 'lite0' and 'efficientnet-lite0' are one network
            self.features = canonical_name(self.features)
        self.background = tuple(float(c) for c in self.background)
        return self

    @property
    def weights(self) -> dict[str, float]:
        return {"color": self.color_weight, "structure": self.structure_weight, "feature": self.feature_weight}

    @property
    def active_terms(self) -> tuple[str, ...]:
        return tuple(term for term in TERMS if self.weights[term] > 0)

    @property
    def uses_features(self) -> bool:
        return self.mode == "pad" or self.feature_weight > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["feature_layers"] = list(self.feature_layers)
        data["background"] = list(self.background)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompareConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CompareError(f"unknown CompareConfig fields {unknown}; known fields are {sorted(known)}.")
        values = dict(data)
        if "feature_layers" in values:
            values["feature_layers"] = tuple(values["feature_layers"])
        if "background" in values:
            values["background"] = tuple(values["background"])
        return cls(**values).validate()


# Fields whose change invalidates a calibration (everything that shapes the residual values).
_CALIBRATION_FIELDS = (
    "color_weight", "structure_weight", "feature_weight", "features", "feature_layers", "feature_distance",
    "ssim_window", "sigma", "score_method", "topk_fraction", "image_size", "use_object_mask", "background",
    "object_tolerance", "mask_margin", "statistic", "contrast_bins", "contrast_floor", "own_spread",
    "neighbour_views", "reprojection_tolerance",
)  # fmt: skip


def _signature(config: CompareConfig) -> dict[str, Any]:
    data = config.to_dict()
    return {name: data[name] for name in _CALIBRATION_FIELDS}


# ----------------------------------------------------------------------------- inputs
def as_image_batch(image: Any, name: str = "image") -> torch.Tensor:
    """Images as a float (B, 3, H, W) tensor in [0, 1].

    image: (H, W, 3) or (N, H, W, 3) data layout, or (B, 3, H, W) network layout; numpy or torch;
    float in [0, 1] or uint8 (divided by 255). Raises CompareError for other shapes, non-finite
    values, or floats far outside [0, 1].
    """
    tensor = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    tensor = tensor.float()
    if tensor.dim() == 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(2, 0, 1)[None]
    elif tensor.dim() == 4 and tensor.shape[1] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise CompareError(
            f"{name} has shape {tuple(tensor.shape)}; expected an RGB image (H, W, 3), a batch (N, H, W, 3) "
            "or (B, 3, H, W). Drop the alpha channel (composite it with io.composite_on_background) first."
        )
    if not torch.isfinite(tensor).all():
        raise CompareError(f"{name} holds NaN or infinite values; check the renderer's output.")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -0.05 or high > 1.05:
        raise CompareError(
            f"{name} has values in [{low:.3g}, {high:.3g}]; expected floats in [0, 1]. Divide 8-bit data by 255."
        )
    return tensor.clamp(0.0, 1.0)


def resize_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images: (B, C, H, W) -> (B, C, height, width), antialiased bilinear. size = (height, width)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def compared_size(height: int, width: int, image_size: int | None) -> tuple[int, int]:
    """(height, width) the comparison runs at: the input's, or shorter side = image_size."""
    if image_size is None:
        return height, width
    scale = image_size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_pair(query: torch.Tensor, reference: torch.Tensor, resizable: bool) -> None:
    """Raise CompareError when query (B, 3, H, W) and reference cannot be compared pixel by pixel."""
    if query.shape[0] != reference.shape[0]:
        raise CompareError(
            f"{query.shape[0]} query image(s) but {reference.shape[0]} reference(s): give one reference per query."
        )
    (qh, qw), (rh, rw) = query.shape[-2:], reference.shape[-2:]
    if (qh, qw) == (rh, rw):
        return
    if resizable and abs(qh / qw - rh / rw) < 0.01:
        return
    hint = (
        "the aspect ratios differ, so resizing cannot align them: render the reference with the query's camera"
        if resizable
        else "render the reference at the query's resolution (geometry.scale_intrinsics), or set "
        "CompareConfig.image_size to compare both at one size"
    )
    raise CompareError(f"query is {qw}x{qh} pixels but the reference is {rw}x{rh}: {hint}.")


# ----------------------------------------------------------------------------- residual terms
def color_residual(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """CIE76 colour difference ΔE in CIE Lab. query, reference: (B, 3, H, W) sRGB in [0, 1] -> (B, H, W)."""
    from kornia.color import rgb_to_lab

    difference = rgb_to_lab(query) - rgb_to_lab(reference)
    return torch.sqrt((difference**2).sum(1) + 1e-12) - 1e-6  # eps keeps the gradient finite at 0


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
    colour = torch.as_tensor(background, dtype=query.dtype, device=query.device).view(1, 3, 1, 1)
    shown = (query - colour).abs().amax(1) > tolerance
    if reference_alpha is not None:
        shown |= reference_alpha.to(query.device).reshape(shown.shape) > 0.5
    else:
        shown |= (reference - colour).abs().amax(1) > tolerance
    # Object parts of background colour leave holes; a hole is still object.
    from scipy.ndimage import binary_fill_holes

    filled = np.stack([binary_fill_holes(m) for m in shown.cpu().numpy()])
    mask = torch.from_numpy(filled).to(query.device)
    if margin > 0:  # a square dilation, done as two 1-D max filters
        grown = F.max_pool2d(mask[:, None].float(), (1, 2 * margin + 1), stride=1, padding=(0, margin))
        mask = F.max_pool2d(grown, (2 * margin + 1, 1), stride=1, padding=(margin, 0))[:, 0] > 0.5
    return mask


def image_score(
    anomaly_map: torch.Tensor, method: str = "max", topk_fraction: float = 0.01, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Image score from an anomaly map: its maximum, or the mean of its top ``topk_fraction`` of pixels.

    anomaly_map: (B, H, W) or (H, W); mask: optional bool of the same shape restricting the pixels
    considered (an empty mask scores the whole map). Returns (B,) (or a 0-d tensor for one map).
    """
    single = anomaly_map.dim() == 2
    maps = anomaly_map[None] if single else anomaly_map
    if mask is not None:
        mask = (mask[None] if mask.dim() == 2 else mask).to(maps.device)
        empty = ~mask.flatten(1).any(1)
        mask = mask | empty.view(-1, 1, 1)
        maps = maps.masked_fill(~mask, float("-inf"))
    flat = maps.flatten(1)
    if method == "max":
        scores = flat.amax(1)
    elif method == "topk":
        if not 0.0 < topk_fraction <= 1.0:
            raise CompareError(f"topk_fraction {topk_fraction} must be in (0, 1].")
        counts = (flat > float("-inf")).sum(1)
        scores = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
        for row, count in enumerate(counts.tolist()):
            k = max(1, math.ceil(topk_fraction * count))
            scores[row] = flat[row].topk(k).values.mean()
    else:
        raise CompareError(f"unknown score method '{method}'; use one of {SCORE_METHODS}.")
    return scores[0] if single else scores


def in_mask_spread(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and interquartile range of each map over its mask. maps: (B, H, W); mask: (B, H, W)
    bool (an empty mask takes the whole map). Returns (median (B,), iqr (B,))."""
    medians, spreads = [], []
    for values, inside in zip(maps, mask):
        values = values[inside] if inside.any() else values.flatten()
        low, median, high = torch.quantile(values.float(), torch.tensor([0.25, 0.5, 0.75], device=values.device))
        medians.append(median)
        spreads.append(high - low)
    return torch.stack(medians), torch.stack(spreads)


def normalize_by_own_spread(maps: torch.Tensor, mask: torch.Tensor, normal_spread: float) -> torch.Tensor:
    """(map - its median) / (its interquartile range + ``normal_spread``), over each map's mask; 0 outside.

    maps: (B, H, W) calibrated anomaly maps; mask: (B, H, W) bool; normal_spread: the interquartile
    range that maps of normal views have (``Calibration.normal_spread``), which keeps a clean map
    from being blown up and makes a map as spread as a normal one count half. Why: the calibration
    learns the residuals of training views, which the field fits closely; a novel view can be
    rendered worse everywhere (grain, blur, a pose a little off), and that raises the whole map,
    where a defect raises a few percent of it and leaves median and quartiles in place.
    Returns (B, H, W).
    """
    if normal_spread <= 0:
        raise CompareError(f"normal_spread {normal_spread} must be > 0 (refit the calibration).")
    median, spread = in_mask_spread(maps, mask)
    normalised = (maps - median.view(-1, 1, 1)) / (spread.view(-1, 1, 1) + normal_spread)
    return normalised * mask


def threshold_for_fpr(normal_values: Any, fpr: float) -> float:
    """The smallest threshold t with at most a fraction ``fpr`` of normal values strictly above it.

    normal_values: normal image scores (N,) or normal anomaly maps of any shape (every element is
    one sample; select in-object pixels first for pixel thresholds). fpr in [0, 1).
    With n values sorted ascending, t is the value at index n - 1 - floor(fpr * n).
    """
    values = torch.as_tensor(
        np.asarray(normal_values, dtype=np.float64) if not isinstance(normal_values, torch.Tensor) else normal_values
    )
    values = values.detach().flatten().double().cpu()
    if values.numel() == 0:
        raise CompareError("threshold_for_fpr needs at least one normal value.")
    if not torch.isfinite(values).all():
        raise CompareError("threshold_for_fpr got NaN or infinite normal values; drop them first.")
    if not 0.0 <= fpr < 1.0:
        raise CompareError(
            f"fpr {fpr} must be in [0, 1): it is the fraction of normal samples allowed above the threshold."
        )
    ordered = values.sort().values
    allowed_above = math.floor(fpr * ordered.numel() + 1e-9)
    return float(ordered[ordered.numel() - 1 - allowed_above])


def location_scale(values: torch.Tensor, statistic: str = "median_mad") -> tuple[float, float]:
    """Location and scale of a 1-D sample: median and 1.4826 MAD, or mean and standard deviation.

    A MAD below ``MAD_FLOOR`` standard deviations (over half the sample (nearly) identical, as
    where a re-projected photograph matches a white query exactly) falls back to the standard
    deviation: such a scale would blow every other residual up. Raises CompareError when the sample
    has no spread at all.
    """
    values = values.flatten().double()
    if statistic == "median_mad":
        location = float(values.median())
        scale = MAD_TO_STD * float((values - location).abs().median())
        spread = float(values.std()) if values.numel() > 1 else 0.0
        if scale <= MAD_FLOOR * spread or scale <= 1e-12:
            scale = spread
    elif statistic == "mean_std":
        location = float(values.mean())
        scale = float(values.std()) if values.numel() > 1 else 0.0
    else:
        raise CompareError(f"unknown statistic '{statistic}'; use one of {STATISTICS}.")
    if not scale > 1e-12:
        raise CompareError(
            "the normal residuals have no spread (all equal): the calibration pairs are identical images. "
            "Calibrate with real training views against renders of the field at their poses."
        )
    return location, scale


# ----------------------------------------------------------------------------- PAD recipe
def pad_anomaly_map(
    query: torch.Tensor,
    reference: torch.Tensor,
    extractor: FeatureExtractor,
    sigma: float = 4.0,
) -> torch.Tensor:
    """PAD's anomaly map (uncalibrated): RGB + multi-layer feature squared differences, smoothed.

    query, reference: (B, 3, H, W) in [0, 1] (PAD resizes to 224 first). Returns (B, H, W).
    """
    mean = torch.tensor(IMAGENET_MEAN, device=query.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=query.device).view(1, 3, 1, 1)
    score = (((query - mean) / std - (reference - mean) / std) ** 2).sum(1)
    features = extractor(torch.cat([query, reference]))
    batch = query.shape[0]
    score = score + feature_residual(
        [f[:batch] for f in features], [f[batch:] for f in features], tuple(query.shape[-2:]), "squared"
    )
    return gaussian_blur(score, sigma)


# ----------------------------------------------------------------------------- calibration
@dataclass
class TermStatistics:
    """Location and scale of one residual on normal data: standardised = (raw - location) / scale."""

    location: float
    scale: float

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.location) / self.scale


@dataclass
class ContrastStatistics:
    """Location and scale of one raw residual per bin of the reference's contrast.

    edges: (bins - 1,) increasing inner bin edges; location, scale: (bins,). Bin i holds contrasts in
    [edges[i - 1], edges[i]).
    """

    edges: list[float]
    location: list[float]
    scale: list[float]

    def standardize(self, values: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """values, contrast: (B, H, W) -> (values - location[bin]) / scale[bin]."""
        as_tensor = lambda numbers: torch.tensor(numbers, dtype=values.dtype, device=values.device)  # noqa: E731
        index = torch.bucketize(contrast.to(values.dtype).contiguous(), as_tensor(self.edges), right=True)
        return (values - as_tensor(self.location)[index]) / as_tensor(self.scale)[index]


def fit_contrast_statistics(
    values: torch.Tensor, contrast: torch.Tensor, edges: list[float], statistic: str, floor: float
) -> ContrastStatistics:
    """Per-bin location and scale of a 1-D sample of raw residuals ``values`` (S,) at ``contrast`` (S,).

    A bin's scale is at least ``floor`` times the pooled scale; a bin with fewer than 100 samples, or
    with no spread (background margin where query and reference are both exactly white), takes the
    pooled statistics.
    """
    pooled_location, pooled_scale = location_scale(values, statistic)
    bins = torch.bucketize(contrast.float().contiguous(), torch.tensor(edges, dtype=torch.float32), right=True)
    locations, scales = [], []
    for index in range(len(edges) + 1):
        chosen = values[bins == index]
        location, scale = pooled_location, pooled_scale
        if chosen.numel() >= 100 and float(chosen.max() - chosen.min()) > 0:
            location, scale = location_scale(chosen, statistic)
        locations.append(location)
        scales.append(max(scale, floor * pooled_scale))
    return ContrastStatistics(list(edges), locations, scales)


@dataclass
class Calibration:
    """What normal (defect-free) data looks like to the comparison, fitted by ``Comparator.fit``.

    contrast: per-term statistics of raw residuals per contrast bin; terms: per-term statistics of
    the contrast-standardised, smoothed in-object residuals; combined: statistics of the weighted
    sum of standardised terms; normal_spread: median over the calibration pairs of the in-object
    interquartile range of that standardised sum (``normalize_by_own_spread``; 0 when
    ``own_spread`` is off). normal_scores: image scores of the calibration pairs
    (in final units); normal_pixel_quantiles: quantiles of their in-object final map values.
    signature: the CompareConfig fields the numbers depend on (checked when it is used).
    """

    contrast: dict[str, ContrastStatistics]
    terms: dict[str, TermStatistics]
    combined: TermStatistics
    normal_scores: list[float]
    normal_pixel_quantiles: dict[str, float]
    num_pairs: int
    signature: dict[str, Any] = field(default_factory=dict)
    normal_spread: float = 0.0

    def score_threshold(self, fpr: float = 0.05) -> float:
        """Image-score threshold flagging at most ``fpr`` of the normal calibration images."""
        return threshold_for_fpr(self.normal_scores, fpr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "contrast": {name: asdict(stats) for name, stats in self.contrast.items()},
            "terms": {name: asdict(stats) for name, stats in self.terms.items()},
            "combined": asdict(self.combined),
            "normal_scores": [float(s) for s in self.normal_scores],
            "normal_pixel_quantiles": dict(self.normal_pixel_quantiles),
            "num_pairs": int(self.num_pairs),
            "normal_spread": float(self.normal_spread),
            "signature": dict(self.signature),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        if data.get("format") in ("omnipose-calibration/1", "omnipose-calibration/2", "omnipose-calibration/3"):
            raise CompareError(
                f"this calibration is of an older format ({data['format']}); refit it "
                "with Comparator.fit or `omnipose calibrate` (the detector refits on its own)."
            )
        if data.get("format") != CALIBRATION_FORMAT:
            raise CompareError(
                f"not an omnipose calibration (format {data.get('format')!r}); fit one with Comparator.fit "
                "or `omnipose calibrate`."
            )
        try:
            return cls(
                contrast={
                    name: ContrastStatistics(
                        [float(e) for e in s["edges"]], [float(v) for v in s["location"]], [float(v) for v in s["scale"]]
                    )
                    for name, s in data["contrast"].items()
                },
                terms={
                    name: TermStatistics(float(s["location"]), float(s["scale"])) for name, s in data["terms"].items()
                },
                combined=TermStatistics(float(data["combined"]["location"]), float(data["combined"]["scale"])),
                normal_scores=[float(s) for s in data["normal_scores"]],
                normal_pixel_quantiles={str(k): float(v) for k, v in data["normal_pixel_quantiles"].items()},
                num_pairs=int(data["num_pairs"]),
                normal_spread=float(data["normal_spread"]),
                signature=dict(data.get("signature", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CompareError(f"calibration data is incomplete or malformed ({error!r}); refit it.") from error

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        import json

        path = Path(path)
        if not path.is_file():
            raise CompareError(f"calibration file not found: {path}. Fit one with `omnipose calibrate` first.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CompareError(f"{path} is not valid JSON ({error}); refit the calibration.") from error
        return cls.from_dict(data)


def _check_signature(calibration: Calibration, config: CompareConfig) -> None:
    expected = _signature(config)
    differences = [
        f"{name}: calibrated with {calibration.signature[name]!r}, configured {expected[name]!r}"
        for name in expected
        if name in calibration.signature and calibration.signature[name] != expected[name]
    ]
    missing_terms = [
        term for term in config.active_terms if term not in calibration.terms or term not in calibration.contrast
    ]
    if differences or missing_terms:
        detail = "; ".join(differences + [f"no statistics for term '{t}'" for t in missing_terms])
        raise CompareError(
            f"the calibration does not fit this CompareConfig ({detail}). "
            "Refit it with this config, or use the config it was fitted with."
        )


@dataclass
class ComparisonResult:
    """anomaly_map: (B, H, W) at the compared size; score: (B,); mask: (B, H, W) bool; terms: the (B, H, W)
    maps that were combined, smoothed (and, when calibrated, standardised per contrast bin first).
    fit_score: (B,) the image score before each map is measured against its own spread (equal to
    score when ``own_spread`` is off): how well the reference explains the query, to choose between
    references (a wrong pose raises the whole map, which its own spread would excuse)."""

    anomaly_map: torch.Tensor
    score: torch.Tensor
    terms: dict[str, torch.Tensor]
    mask: torch.Tensor
    calibrated: bool
    fit_score: torch.Tensor


# ----------------------------------------------------------------------------- comparator
class Comparator:
    """Holds the feature extractor, the config and the calibration; compares query/reference pairs.

    >>> comparator = Comparator(CompareConfig())
    >>> comparator.fit(train_views, renders_at_train_poses)      # normal data only
    >>> result = comparator.compare(query, render_at_estimated_pose)
    >>> result.anomaly_map, result.score                       # in normal standard deviations
    """

    def __init__(
        self,
        config: CompareConfig | None = None,
        calibration: Calibration | None = None,
        device: str | torch.device | None = None,
        extractor: FeatureExtractor | None = None,
    ):
        self.config = (config or CompareConfig()).validate()
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        if (
            extractor is not None
            and self.config.uses_features
            and tuple(extractor.layers) != self.config.feature_layers
        ):
            raise CompareError(
                f"the feature extractor returns strides {tuple(extractor.layers)} but the config asks for "
                f"{self.config.feature_layers}: build the extractor with layers=config.feature_layers."
            )
        self._extractor = extractor
        self._calibration: Calibration | None = None
        if calibration is not None:
            self.calibration = calibration

    @property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor, loaded on first use (only when a feature term is on)."""
        if self._extractor is None:
            self._extractor = FeatureExtractor(
                self.config.features, layers=self.config.feature_layers, device=self.device
            )
        return self._extractor

    @property
    def calibration(self) -> Calibration | None:
        return self._calibration

    @calibration.setter
    def calibration(self, calibration: Calibration | None) -> None:
        if calibration is not None:
            if self.config.mode == "pad":
                raise CompareError(
                    "PAD mode uses no calibration (its maps are min-max normalised over the test set); "
                    "use mode='calibrated'."
                )
            _check_signature(calibration, self.config)
        self._calibration = calibration

    # -- preparation
    def _prepare(self, query: Any, reference: Any, reference_alpha: Any = None):
        query_t = as_image_batch(query, "query").to(self.device)
        reference_t = as_image_batch(reference, "reference").to(self.device)
        check_pair(query_t, reference_t, resizable=self.config.image_size is not None)
        size = compared_size(*query_t.shape[-2:], self.config.image_size)
        query_t, reference_t = resize_batch(query_t, size), resize_batch(reference_t, size)
        alpha = None
        if reference_alpha is not None:
            alpha = torch.as_tensor(
                np.asarray(reference_alpha) if not isinstance(reference_alpha, torch.Tensor) else reference_alpha
            )
            alpha = alpha.float().to(self.device).reshape(query_t.shape[0], 1, *alpha.shape[-2:])
            alpha = resize_batch(alpha, size)[:, 0]
        return query_t, reference_t, alpha

    def _prepare_neighbours(self, neighbours: Any, reference: torch.Tensor) -> list[torch.Tensor]:
        """neighbours: None or (B, R, H, W, 3) / (B, R, 3, H, W) in [0, 1], R references per query
        (see ``reproject.neighbour_references``). Returns R batches (B, 3, h, w) at the compared size."""
        if neighbours is None:
            return []
        neighbours = torch.as_tensor(np.asarray(neighbours) if not isinstance(neighbours, torch.Tensor) else neighbours)
        if neighbours.ndim != 5 or neighbours.shape[0] != reference.shape[0]:
            raise CompareError(
                f"neighbours of shape {tuple(neighbours.shape)}: give (B, R, H, W, 3), R references for each of the "
                f"{reference.shape[0]} queries."
            )
        batches = [as_image_batch(neighbours[:, r], "neighbour").to(self.device) for r in range(neighbours.shape[1])]
        return [resize_batch(batch, tuple(reference.shape[-2:])) for batch in batches]

    def _mask(self, query: torch.Tensor, reference: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        if not self.config.use_object_mask:
            return torch.ones(query.shape[0], *query.shape[-2:], dtype=torch.bool, device=query.device)
        cfg = self.config
        return object_mask(query, reference, cfg.background, cfg.object_tolerance, cfg.mask_margin, alpha)

    # -- the terms
    @torch.no_grad()
    def residuals(
        self, query: Any, reference: Any, reference_alpha: Any = None, neighbours: Any = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Raw residual terms, smoothed and zeroed outside the object mask.

        query, reference: images (see ``as_image_batch``); reference_alpha: optional (B, H, W) render
        opacity; neighbours: optional (B, R, H, W, 3) further references (see ``compare``).
        Returns ({term: (B, H, W)} for the terms with weight > 0, mask (B, H, W) bool), at the compared size.
        """
        if self.config.mode == "pad":
            raise CompareError("residuals() is for mode='calibrated'; PAD mode has a single map (use anomaly_map).")
        query_t, reference_t, alpha = self._prepare(query, reference, reference_alpha)
        return self._residuals(query_t, reference_t, alpha, self._prepare_neighbours(neighbours, reference_t))

    def _residuals(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        alpha: torch.Tensor | None,
        neighbours: Sequence[torch.Tensor] = (),
        calibration: Calibration | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The terms that enter the map and the mask: each raw term (standardised per contrast bin
        of ``reference`` when a calibration is given) smoothed and zeroed outside the mask."""
        raw, mask = self._raw_residuals(query, reference, alpha, neighbours)
        contrast = reference_contrast(reference) if calibration is not None else None
        return self._finish_terms(raw, mask, contrast, calibration), mask

    def _finish_terms(
        self,
        raw: Mapping[str, torch.Tensor],
        mask: torch.Tensor,
        contrast: torch.Tensor | None,
        calibration: Calibration | None,
    ) -> dict[str, torch.Tensor]:
        """Raw terms (B, H, W) -> standardised per contrast bin (when calibrated), smoothed, masked."""
        terms = {}
        for name, value in raw.items():
            value = value.float()
            if calibration is not None:
                value = calibration.contrast[name].standardize(value, contrast)
            terms[name] = gaussian_blur(value, self.config.sigma) * mask
        return terms

    def _raw_residuals(
        self, query: torch.Tensor, reference: torch.Tensor, alpha: torch.Tensor | None, neighbours: Sequence[torch.Tensor] = ()
    ):
        """Unsmoothed terms {term: (B, H, W)} and the object mask (B, H, W) bool (from the render).

        With neighbours, each term is the smallest over the render and the neighbours, pixel by pixel."""
        terms = self._terms(query, reference)
        for neighbour in neighbours:
            terms = {name: torch.minimum(value, other) for (name, value), other in zip(terms.items(), self._terms(query, neighbour).values())}
        return terms, self._mask(query, reference, alpha)

    def _terms(self, query: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unsmoothed terms {term: (B, H, W)} of query against one reference, both (B, 3, H, W)."""
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        if cfg.color_weight > 0:
            terms["color"] = color_residual(query, reference)
        if cfg.structure_weight > 0:
            terms["structure"] = structure_residual(query, reference, cfg.ssim_window)
        if cfg.feature_weight > 0:
            batch = query.shape[0]
            features = self.extractor(torch.cat([query, reference]))
            terms["feature"] = feature_residual(
                [f[:batch] for f in features],
                [f[batch:] for f in features],
                tuple(query.shape[-2:]),
                cfg.feature_distance,
            )
        return terms

    def _combine(self, terms: Mapping[str, torch.Tensor], calibration: Calibration | None) -> torch.Tensor:
        """Weighted sum of (standardised, when calibrated) terms, then the combined standardisation."""
        weights = self.config.weights
        if calibration is None:
            return sum(weights[name] * value for name, value in terms.items())
        combined = sum(weights[name] * calibration.terms[name].standardize(value) for name, value in terms.items())
        return calibration.combined.standardize(combined)

    # -- public comparison
    @torch.no_grad()
    def compare(self, query: Any, reference: Any, reference_alpha: Any = None, neighbours: Any = None) -> ComparisonResult:
        """Compare queries with their references.

        query, reference: (H, W, 3), (N, H, W, 3) or (B, 3, H, W) in [0, 1], same size unless
        ``image_size`` is set. neighbours: optional (B, R, H, W, 3), R further normal references per
        query (training views re-projected to its pose, ``reproject.neighbour_references``); each
        residual is then the smallest over the render and them. Calibrate with neighbours made the
        same way (``fit(..., neighbours=)``), since a minimum over references is smaller than one.
        Without a calibration (mode 'calibrated') the map is the weighted sum of raw terms, whose
        units differ: fit or load a calibration for maps in normal standard deviations.
        """
        cfg = self.config
        query_t, reference_t, alpha = self._prepare(query, reference, reference_alpha)
        if cfg.mode == "pad":
            anomaly_map = pad_anomaly_map(query_t, reference_t, self.extractor, cfg.sigma)
            mask = self._mask(query_t, reference_t, alpha)
            anomaly_map = anomaly_map * mask
            terms: dict[str, torch.Tensor] = {}
        else:
            extra = self._prepare_neighbours(neighbours, reference_t)
            terms, mask = self._residuals(query_t, reference_t, alpha, extra, self._calibration)
            anomaly_map = self._combine(terms, self._calibration)
        score_mask = mask if cfg.use_object_mask else None
        fit_score = image_score(anomaly_map, cfg.score_method, cfg.topk_fraction, score_mask)
        score = fit_score
        if self._calibration is not None and cfg.own_spread:  # PAD mode never holds a calibration
            anomaly_map = normalize_by_own_spread(anomaly_map, mask, self._calibration.normal_spread)
            score = image_score(anomaly_map, cfg.score_method, cfg.topk_fraction, score_mask)
        return ComparisonResult(anomaly_map, score, terms, mask, self._calibration is not None, fit_score)

    def anomaly_map(self, query: Any, reference: Any, reference_alpha: Any = None) -> torch.Tensor:
        """The anomaly map alone: (B, H, W), or (H, W) for a single (H, W, 3) query."""
        result = self.compare(query, reference, reference_alpha)
        single = _is_single(query)
        return result.anomaly_map[0] if single else result.anomaly_map

    def score(self, query: Any, reference: Any, reference_alpha: Any = None) -> torch.Tensor:
        """Image scores: (B,), or a 0-d tensor for a single (H, W, 3) query."""
        result = self.compare(query, reference, reference_alpha)
        return result.score[0] if _is_single(query) else result.score

    # -- calibration on normal data
    @torch.no_grad()
    def fit(
        self,
        views: Any,
        renders: Any,
        alphas: Any = None,
        neighbours: Any = None,
        batch_size: int = 8,
        progress: bool = True,
        seed: int = 0,
    ) -> Calibration:
        """Calibrate on normal pairs: real training views and renders of the field at their own poses.

        views, renders: (N, H, W, 3) or (N, 3, H, W) in [0, 1]; alphas: optional (N, H, W) render
        opacities; neighbours: optional (N, R, H, W, 3), other training views re-projected to each
        view's pose (as ``compare`` will get them). Sets and returns ``self.calibration``. Needs no
        defect image.
        """
        cfg = self.config
        if cfg.mode != "calibrated":
            raise CompareError(
                "fit() calibrates mode='calibrated'; PAD mode has no calibration (the evaluator min-max normalises)."
            )
        views_t = as_image_batch(views, "views")
        renders_t = as_image_batch(renders, "renders")
        if views_t.shape[0] != renders_t.shape[0]:
            raise CompareError(
                f"{views_t.shape[0]} views but {renders_t.shape[0]} renders: render every view at its own pose."
            )
        if views_t.shape[0] < 2:
            raise CompareError(
                "calibration needs at least 2 normal pairs (the more views, the steadier the statistics)."
            )
        alphas_t = (
            None
            if alphas is None
            else torch.as_tensor(np.asarray(alphas) if not isinstance(alphas, torch.Tensor) else alphas).float()
        )
        generator = torch.Generator().manual_seed(seed)

        # Raw terms and reference contrast of every pair, kept at half precision on the CPU: the
        # per-bin statistics need all pairs first, and recomputing the features would double the cost.
        stored_raw: dict[str, list[torch.Tensor]] = {name: [] for name in cfg.active_terms}
        stored_contrast: list[torch.Tensor] = []
        stored_masks: list[torch.Tensor] = []
        starts = range(0, views_t.shape[0], batch_size)
        for start in tqdm(starts, desc="calibrating on normal views", disable=not progress, leave=False):
            stop = start + batch_size
            alpha = None if alphas_t is None else alphas_t[start:stop]
            query, reference, alpha = self._prepare(views_t[start:stop], renders_t[start:stop], alpha)
            extra = self._prepare_neighbours(None if neighbours is None else neighbours[start:stop], reference)
            raw, mask = self._raw_residuals(query, reference, alpha, extra)
            for name, value in raw.items():
                stored_raw[name].append(value.half().cpu())
            stored_contrast.append(reference_contrast(reference).half().cpu())
            stored_masks.append(mask.cpu())
        masks = torch.cat(stored_masks)
        contrast = torch.cat(stored_contrast).float()
        raw_maps = {name: torch.cat(values).float() for name, values in stored_raw.items()}
        samples = _sample_indices(masks, cfg.samples_per_pair, generator)

        sampled_contrast = _gather(contrast, samples)
        bin_levels = np.arange(1, cfg.contrast_bins) / cfg.contrast_bins
        edges = [float(e) for e in np.quantile(sampled_contrast.double().numpy(), bin_levels)]
        contrast_stats = {
            name: fit_contrast_statistics(_gather(value, samples), sampled_contrast, edges, cfg.statistic, cfg.contrast_floor)
            for name, value in raw_maps.items()
        }
        partial = Calibration(contrast_stats, {}, TermStatistics(0.0, 1.0), [], {}, int(masks.shape[0]), _signature(cfg))
        maps = self._finish_terms(raw_maps, masks, contrast, partial)
        partial.terms = {
            name: TermStatistics(*location_scale(_gather(value, samples), cfg.statistic))
            for name, value in maps.items()
        }
        combined = self._combine(maps, partial)
        partial.combined = TermStatistics(*location_scale(_gather(combined, samples), cfg.statistic))
        final = partial.combined.standardize(combined)
        if cfg.own_spread:
            partial.normal_spread = float(in_mask_spread(final, masks)[1].median())
            final = normalize_by_own_spread(final, masks, partial.normal_spread)
        scores = image_score(final, cfg.score_method, cfg.topk_fraction, masks if cfg.use_object_mask else None)
        inside = _gather(final, samples).double()
        levels = (0.5, 0.9, 0.99, 0.999)
        quantiles = torch.quantile(inside, torch.tensor(levels, dtype=torch.float64))
        partial.normal_scores = [float(s) for s in scores]
        partial.normal_pixel_quantiles = {str(level): float(q) for level, q in zip(levels, quantiles)}
        self._calibration = partial
        return partial


def _is_single(image: Any) -> bool:
    return hasattr(image, "shape") and len(image.shape) == 3


def _sample_indices(masks: torch.Tensor, per_pair: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Up to ``per_pair`` random flat in-mask pixel indices per pair (all pixels when the mask is empty)."""
    chosen = []
    for mask in masks:
        flat = mask.flatten().nonzero()[:, 0]
        if flat.numel() == 0:
            flat = torch.arange(mask.numel())
        if flat.numel() > per_pair:
            flat = flat[torch.randperm(flat.numel(), generator=generator)[:per_pair]]
        chosen.append(flat)
    return chosen


def _gather(maps: torch.Tensor, samples: Sequence[torch.Tensor]) -> torch.Tensor:
    """maps: (N, H, W); samples: N flat index tensors. Returns the sampled values, concatenated."""
    flat = maps.flatten(1).cpu()
    return torch.cat([flat[i, index] for i, index in enumerate(samples)])


# ----------------------------------------------------------------------------- command line
def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CompareConfig()
    parser.add_argument(
        "--features",
        default=defaults.features,
        help="feature network: efficientnet-lite0 / -lite2, or a state-dict path (e.g. lukemelas efficientnet-b4 .pth)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="feature strides to compare (default 4 8 16; PAD mode 4 8 16 32)",
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="compare at this shorter side (default: input size; PAD mode 224)"
    )
    parser.add_argument("--sigma", type=float, default=None, help="Gaussian smoothing in pixels (default 4)")
    parser.add_argument(
        "--score", choices=SCORE_METHODS, default=None, help="image score: max of the map or top-k mean"
    )
    parser.add_argument("--topk-fraction", type=float, default=defaults.topk_fraction)
    parser.add_argument(
        "--contrast-bins",
        type=int,
        default=defaults.contrast_bins,
        help="bins of the reference's local contrast with their own normal statistics (1: pooled)",
    )
    parser.add_argument("--no-mask", action="store_true", help="compare the whole frame, not only the object")
    parser.add_argument(
        "--background",
        type=float,
        nargs=3,
        default=list(defaults.background),
        metavar=("R", "G", "B"),
        help="background colour in [0, 1]",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")


def _config_from_args(args: argparse.Namespace, mode: str = "calibrated") -> CompareConfig:
    config = CompareConfig.pad(features=args.features) if mode == "pad" else CompareConfig(features=args.features)
    if args.layers:
        config.feature_layers = tuple(args.layers)
    if args.image_size is not None:
        config.image_size = args.image_size
    if args.sigma is not None:
        config.sigma = args.sigma
    if args.score is not None:
        config.score_method = args.score
    config.topk_fraction = args.topk_fraction
    config.contrast_bins = args.contrast_bins
    if args.no_mask:
        config.use_object_mask = False
    config.background = tuple(args.background)
    return config.validate()


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `omnipose compare QUERY REFERENCE`: anomaly map and score of one pair of images."""
    parser.add_argument("query", type=Path, help="query image")
    parser.add_argument("reference", type=Path, help="normal reference rendered at the query's pose")
    parser.add_argument("--calibration", type=Path, default=None, help="calibration JSON from `omnipose calibrate`")
    parser.add_argument("--mode", choices=MODES, default="calibrated", help="calibrated (ours) or pad (PAD's recipe)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for anomaly_map.npy, anomaly_map.png and result.json"
    )
    _add_config_arguments(parser)


def run_compare(args: argparse.Namespace) -> int:
    from omnipose.core.image import read_image_rgb

    calibration = Calibration.load(args.calibration) if args.calibration else None
    if calibration is not None and args.mode == "pad":
        raise CompareError("--calibration is for mode 'calibrated'; PAD mode is uncalibrated. Drop one of the two.")
    config = _config_from_args(args, args.mode)
    if calibration is not None and calibration.signature:
        # The calibration fixes the config it was fitted with; command-line flags cannot change it.
        config = CompareConfig.from_dict({**calibration.signature, "mode": "calibrated"})
    comparator = Comparator(config, calibration, device=args.device)
    background = config.background
    query = read_image_rgb(args.query, background=background)
    reference = read_image_rgb(args.reference, background=background)
    result = comparator.compare(query, reference)
    anomaly_map = result.anomaly_map[0].cpu().numpy()
    score = float(result.score[0])
    summary = {
        "query": str(args.query),
        "reference": str(args.reference),
        "score": score,
        "calibrated": result.calibrated,
        "mode": config.mode,
        "map_size": list(anomaly_map.shape),
    }
    if calibration is not None:
        summary["score_threshold_fpr_0.05"] = calibration.score_threshold(0.05)
    if args.out is not None:
        from omnipose.core.files import atomic_path

        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "anomaly_map.npy") as tmp:
            np.save(tmp, anomaly_map.astype(np.float32))
        save_image(args.out / "anomaly_map.png", _heatmap(anomaly_map))
        atomic_write_json(args.out / "result.json", summary)
    units = "normal standard deviations" if result.calibrated else "raw units (uncalibrated)"
    print(f"score {score:.4g} ({units})")
    return 0


def _heatmap(anomaly_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) jet colours over its own range, for viewing."""
    import matplotlib

    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    scaled = (anomaly_map - low) / (high - low) if high > low else np.zeros_like(anomaly_map)
    return matplotlib.colormaps["jet"](scaled)[..., :3].astype(np.float32)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `omnipose calibrate`: fit a calibration from real views and renders at their poses."""
    parser.add_argument("--views", type=Path, required=True, help="folder of real normal training views")
    parser.add_argument(
        "--renders", type=Path, required=True, help="folder of renders at the same poses, same file names"
    )
    parser.add_argument("--out", type=Path, required=True, help="calibration JSON to write")
    _add_config_arguments(parser)


def run_calibrate(args: argparse.Namespace) -> int:
    from omnipose.core.image import read_image_rgb
    from omnipose.data import IMAGE_SUFFIXES, natural_key

    config = _config_from_args(args)
    for folder in (args.views, args.renders):
        if not folder.is_dir():
            raise CompareError(f"folder not found: {folder}.")
    views = sorted((p for p in args.views.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    pairs = [(p, args.renders / p.name) for p in views if (args.renders / p.name).is_file()]
    if len(pairs) < 2:
        raise CompareError(
            f"found {len(pairs)} view/render pairs with matching file names in {args.views} and {args.renders}; "
            "render every training view at its own pose and save it under the view's file name."
        )
    real = np.stack([read_image_rgb(v, background=config.background) for v, _ in pairs])
    rendered = np.stack(
        [read_image_rgb(r, background=config.background, size=(real.shape[2], real.shape[1])) for _, r in pairs]
    )
    comparator = Comparator(config, device=args.device)
    calibration = comparator.fit(real, rendered)
    calibration.save(args.out)
    print(
        f"calibrated on {calibration.num_pairs} normal pairs -> {args.out}; "
        f"score threshold at 5% false positives: {calibration.score_threshold(0.05):.3g}"
    )
    return 0

"""``CompareConfig``: how a query is compared with its normal reference, and the names of its choices."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omnipose.compare.weights import canonical_name, is_weights_path
from omnipose.core.config import Config, fraction, non_negative, one_of, positive, require
from omnipose.core.errors import OmniposeError

TERMS = ("color", "structure", "feature")
MODES = ("calibrated", "pad")
# "topk_mean" is the name the evaluation metrics use for the same score; "topk" is accepted as an alias
# so that configs, calibrations and command lines that spell it so keep working.
SCORE_METHODS = ("max", "topk_mean")
SCORE_METHOD_ALIASES = {"topk": "topk_mean"}
FEATURE_DISTANCES = ("cosine", "squared")
STATISTICS = ("median_mad", "mean_std")


class CompareError(OmniposeError):
    """Query and reference cannot be compared as given (shapes, values, configuration, calibration)."""


def canonical_score_method(method: str) -> str:
    """'topk' -> 'topk_mean'; other names as they are."""
    return SCORE_METHOD_ALIASES.get(method, method)


@dataclass
class CompareConfig(Config):
    """How a query is compared with its reference; the defaults work for MAD-style data."""

    mode: str = "calibrated"
    """Recipe: "calibrated" (ours), three residual terms standardised on normal data
    (``Comparator.fit``); "pad", PAD's recipe (NeurIPS 2023) for ablations, uncalibrated (see
    ``CompareConfig.pad``)."""
    color_weight: float = 1.0
    """Weight of the colour term: CIE76 colour difference in Lab (about 2.3 is just noticeable)."""
    color_shift: int = 1
    """Pixels (of the compared image) by which the colour term forgives the reference's drawing: per
    pixel the smallest colour difference to the reference moved up to this far each way; 0 compares
    pixel to pixel. A field draws an edge a pixel or so from where a photograph has it (a softer
    render, a pose a tenth of a degree off), and that line of colour difference outscored small
    defects; a defect wider than the shift keeps most of its difference."""
    highlight_floor: float | None = 0.05
    """In the colour term, take off the query the white light it has over the reference beyond this
    lift (in [0, 1), of each channel; ``terms.highlight_lift``) before the difference, except where
    the query shows the backdrop colour (``terms.query_backdrop``); None: off. A specular highlight at
    a mirror angle no training view caught makes a face lighter by about as much in every channel,
    which the field cannot draw, while a stain changes the hue or darkens and keeps that difference;
    a part missing against the backdrop is a lift too, and keeps its. 0.05 leaves a soft render's
    small lifts alone. On the built-in classes' and the lego's references it cut the false alarms at
    the normal-data threshold and kept the recall (``docs/RESULTS.md``)."""
    structure_weight: float = 1.0
    """Weight of the structure term: 1 - SSIM of the luminance (edges and texture the colour misses)."""
    feature_weight: float = 1.0
    """Weight of the feature term: 1 - cosine similarity of pretrained features (semantic changes,
    robust to small shifts). 0 skips loading the feature network."""
    features: str = "efficientnet-lite0"
    """Feature network: a shipped name ('efficientnet-lite0', 'lite2') or the path of a state dict
    (see ``omnipose.compare.weights``)."""
    feature_layers: tuple[int, ...] = (4, 8, 16)
    """Total strides of the feature maps compared, each upsampled to image size and summed."""
    feature_distance: str = "cosine"
    """Distance of feature maps: "cosine", 1 - cosine similarity per cell; "squared", squared L2
    summed over channels (PAD)."""
    ssim_window: int = 7
    """Side of the Gaussian SSIM window in pixels (odd)."""
    sigma: float = 4.0
    """Gaussian smoothing of the maps, in pixels of the compared image (PAD uses 4 at 224x224; 0: off)."""
    score_method: str = "max"
    """Image score: "max" of the smoothed map, or "topk_mean", the mean of its top ``topk_fraction``
    (alias "topk")."""
    topk_fraction: float = 0.01
    """Share of the pixels whose mean is the "topk_mean" score, in (0, 1]."""
    image_size: int | None = None
    """Resize both images so that their shorter side has this many pixels before comparing (the maps
    come out at that size); None compares at the input size."""
    use_object_mask: bool = True
    """Compare only where either image shows the object (``object_mask``): without it, background
    pixels (compression noise, floaters of the field, exposure) dominate a map whose object covers a
    fraction of the frame."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour of query and reference, RGB in [0, 1]."""
    object_tolerance: float = 0.05
    """A pixel within this of the background colour in every channel is background."""
    mask_margin: int = 8
    """Pixels the object mask is grown by."""
    statistic: str = "median_mad"
    """Location and scale of normal residuals: "median_mad" (robust) or "mean_std"."""
    samples_per_pair: int = 20000
    """Pixels per calibration pair that enter the statistics."""
    contrast_bins: int = 8
    """Bins of the reference's local contrast with their own normal statistics (1: pooled): a
    residual on an edge counts less than the same residual on a flat face."""
    contrast_floor: float = 0.5
    """A bin's scale is at least this fraction of the pooled scale, because flat faces of training
    views are fitted more closely than those of a novel view."""
    own_spread: bool = True
    """Measure each map against its own spread (``normalize_by_own_spread``): a novel view the field
    renders worse everywhere raises the whole map, a defect a small part of it."""
    own_spread_per_term: bool = True
    """With ``own_spread``, measure each term against its own spread and average them with their
    weights (``calibration.combine_own_spread``), rather than the weighted sum against its spread: a
    view the field renders worse in one respect only (features everywhere, colours right) then
    keeps the other terms at full weight, and maps of different queries are on one scale, which the
    pixel-level metrics pool (``docs/RESULTS.md``)."""
    neighbour_views: int = 2
    """Training views re-projected to the query's pose that the Detector compares besides the render
    (``omnipose.compare.reproject``): per pixel the smallest residual over the references counts, so
    that what the field renders wrongly but the photographs show right is not flagged. A Comparator
    on its own compares with the neighbours it is given (none: the render alone); 0 turns them off."""
    reprojection_tolerance: float = 0.02
    """Relative depth difference up to which a training view counts as seeing a point."""
    skip_unseen: bool = True
    """Count no residual where the render shows a surface that no training view sees
    (``reproject.unseen_surface``): the field made that part up (the underside of a part every
    training camera looked down on, seen from a little lower), so it says nothing of the object. The
    Detector finds these pixels through the training views' depth, so only with ``neighbour_views``
    > 0; a Comparator on its own skips what it is given (``compare(..., unseen=)``)."""
    match_sharpness_from: int | None = 400
    """Compared images at least this wide have the query blurred to the render's sharpness first
    (``terms.sharpness_matched``: per pair, the Gaussian of at most 1.5 px that brings it closest to the
    render on the object; the calibration's pairs alike); None: never. A field renders novel views softer
    than a photograph shows them, and at 400 px the detail it loses on fine texture (the lego's tread and
    studs) outscored small defects. At 200 px the same blur is as wide as the small defects and cost
    more than it gave on the built-in benchmark (``docs/RESULTS.md``, sharpness), hence the width."""
    object_crop: float = 0.0
    """Compare on a square crop about the object instead of the whole frame (the detector crops; 0: off):
    the box of the reference's opacity grown on each side by this share of its longer side, sampled at
    the working width from the query in its own frame (not scaled to the model's lens) and rendered
    there by the field. An object small in the frame (photographs taken from afar or with a long lens)
    is then compared with as many pixels as the training views gave it, instead of a few dozen across
    which a small defect is a pixel or two. A crop is never larger than the frame nor zooms more than
    4 times."""
    match_exposure: bool = False
    """Bring the references to the query's exposure and white balance before comparing (one gain per
    colour channel, the median ratio on the object), for queries taken in another session with the
    camera set otherwise. Off by default: on queries 5 % darker it helped one built-in class and hurt
    another more (``docs/RESULTS.md``, backdrops)."""
    exposure_curve: bool = False
    """With ``match_exposure``, a curve per colour channel in place of one gain (``terms.exposure_curves``:
    the query's median at eight levels of the reference on the object), for photographs against renders
    (``omnipose sim2real``): another camera's tone curve lifts dark parts more than light ones."""
    shade_color: float = 0.0
    """Measure the colour term against the references brought to the query's lightness
    (``omnipose.compare.terms.shading_matched`` with one affine function for the three channels, in
    windows whose radius is this share of the compared image's width, 0.08 for 16 px at 200; 0: off):
    a face that the query shows lighter or darker than the training views do (a highlight at its
    mirror angle, which no training view caught) then adds less than half the colour residual, while
    a stain, whose hue and outline no such function of the reference draws, keeps most of its own.
    The structure and feature terms compare the references as rendered. Off by default: on the
    built-in benchmark it lifted image AUROC by 0.2 (the weakest classes by 1.6 and 2.1), left the
    lego's fine defects where they were, and cost the recall at the normal-data threshold 5-9 points
    (``docs/RESULTS.md``)."""
    match_shading: int = 0
    """Bring each reference to the query's shading before comparing, for queries lit from another
    direction than the training views (another capture session): in windows of this radius in
    pixels of the compared image, the affine function of the reference that draws the query best
    (``omnipose.compare.terms.shading_matched``). 0: off. Off by default: under the training
    session's light it explains small defects away with the light (``docs/RESULTS.md``)."""

    @classmethod
    def pad(
        cls, features: str = "efficientnet-lite0", feature_layers: tuple[int, ...] = (4, 8, 16, 32)
    ) -> "CompareConfig":
        """PAD's recipe: squared differences of ImageNet-normalised RGB and of features at 224x224,
        sigma 4, image score = max, no mask, no calibration (PAD's evaluator min-max normalises the
        maps over the test set). PAD itself uses EfficientNet-B4 (pass its lukemelas .pth path) at
        strides 4-32."""
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
        """Bring equivalent spellings to one (layers as ints, 'lite0' -> 'efficientnet-lite0',
        'topk' -> 'topk_mean'), then check the ranges; returns self."""
        try:
            self.feature_layers = tuple(int(s) for s in self.feature_layers)
        except (TypeError, ValueError):
            require(self, "feature_layers", False, "must be a sequence of strides such as (4, 8, 16)")
        try:
            self.background = tuple(float(c) for c in self.background)
        except (TypeError, ValueError):
            require(self, "background", False, "must be three numbers in [0, 1]")
        self.features = str(self.features)
        if isinstance(self.score_method, str):
            self.score_method = canonical_score_method(self.score_method)
        super().validate()
        if not is_weights_path(self.features):  # 'lite0' and 'efficientnet-lite0' are one network
            self.features = canonical_name(self.features)
        return self

    def check(self) -> None:
        one_of(self, "mode", MODES)
        one_of(self, "score_method", SCORE_METHODS)
        one_of(self, "feature_distance", FEATURE_DISTANCES)
        one_of(self, "statistic", STATISTICS)
        fraction(self, "topk_fraction", open_low=True)
        non_negative(self, "sigma", "mask_margin", "neighbour_views", "color_weight", "structure_weight",
                     "feature_weight", "object_tolerance")  # fmt: skip
        require(self, "ssim_window", _is_int(self.ssim_window) and self.ssim_window >= 3 and self.ssim_window % 2 == 1,
                "must be odd and >= 3")  # fmt: skip
        if self.mode == "calibrated":
            require(self, "color_weight", self.color_weight + self.structure_weight + self.feature_weight > 0,
                    "all term weights are 0: give at least one term a positive weight")  # fmt: skip
        require(self, "image_size", self.image_size is None or (_is_int(self.image_size) and self.image_size >= 16),
                "must be >= 16, or None for the input size")  # fmt: skip
        require(self, "contrast_bins", _is_int(self.contrast_bins) and self.contrast_bins >= 1,
                "must be an integer >= 1 (1 pools all pixels)")  # fmt: skip
        positive(self, "contrast_floor", "reprojection_tolerance", "samples_per_pair")
        require(self, "background", len(self.background) == 3 and all(0.0 <= c <= 1.0 for c in self.background),
                "must be three numbers in [0, 1]")  # fmt: skip
        require(self, "feature_layers", all(s > 0 for s in self.feature_layers), "must be positive strides")
        require(self, "feature_layers", bool(self.feature_layers) or not self.uses_features,
                "no feature_layers: give strides such as (4, 8, 16), or set feature_weight=0")  # fmt: skip
        require(self, "features", bool(self.features), "must name a network or a state-dict path")
        require(self, "sigma", math.isfinite(self.sigma), "must be finite")
        require(self, "color_shift", _is_int(self.color_shift) and self.color_shift >= 0,
                "must be a whole number of pixels, 0 or more (0: off)")
        for name in ("match_exposure", "exposure_curve"):
            require(self, name, isinstance(getattr(self, name), bool), "must be True or False")
        require(self, "match_sharpness_from", self.match_sharpness_from is None
                or (_is_int(self.match_sharpness_from) and self.match_sharpness_from >= 1),
                "must be an image width in pixels (400: from the default working size up), or None for never")
        require(self, "highlight_floor", self.highlight_floor is None or (isinstance(self.highlight_floor, (int, float))
                and not isinstance(self.highlight_floor, bool) and 0 <= self.highlight_floor < 1),
                "must be None (off) or a lift in [0, 1), e.g. 0.05")
        require(self, "skip_unseen", isinstance(self.skip_unseen, bool), "must be True or False")
        require(self, "shade_color", 0 <= self.shade_color < 0.5,
                "must be a share of the image width in [0, 0.5) (0.08: a radius of 16 px at 200), or 0 for off")
        require(self, "object_crop", 0 <= self.object_crop <= 1,
                "must be a margin around the object as a share of its size in [0, 1] (0.1: a tenth), or 0 for off")
        require(self, "match_shading", _is_int(self.match_shading) and self.match_shading >= 0,
                "must be a window radius in pixels, 0 or more (0: off)")

    @property
    def weights(self) -> dict[str, float]:
        return {"color": self.color_weight, "structure": self.structure_weight, "feature": self.feature_weight}

    @property
    def active_terms(self) -> tuple[str, ...]:
        return tuple(term for term in TERMS if self.weights[term] > 0)

    @property
    def uses_features(self) -> bool:
        return self.mode == "pad" or self.feature_weight > 0


# Fields whose change invalidates a calibration (everything that shapes the residual values).
CALIBRATION_FIELDS = (
    "color_weight", "color_shift", "highlight_floor", "structure_weight", "feature_weight", "features", "feature_layers",
    "feature_distance", "ssim_window", "sigma", "score_method", "topk_fraction", "image_size", "use_object_mask",
    "background", "object_tolerance", "mask_margin", "statistic", "contrast_bins", "contrast_floor", "own_spread",
    "own_spread_per_term", "neighbour_views", "reprojection_tolerance", "match_exposure", "exposure_curve",
    "shade_color", "match_shading", "match_sharpness_from", "object_crop",
)  # fmt: skip


# What a calibration stored before one of these fields existed was fitted with: its signature lacks the field.
FITTED_BEFORE_FIELD: dict[str, Any] = {"highlight_floor": None, "match_sharpness_from": None, "exposure_curve": False,
                                       "object_crop": 0.0}


def calibration_signature(config: CompareConfig) -> dict[str, Any]:
    """The fields of ``config`` a calibration depends on, as JSON-ready values."""
    data = config.to_dict()
    return {name: data[name] for name in CALIBRATION_FIELDS}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

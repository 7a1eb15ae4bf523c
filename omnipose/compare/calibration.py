"""Calibration on normal data: what a defect-free object looks like to the comparison.

``fit_calibration`` (``Comparator.fit``) uses NORMAL data only: pairs of (real training view,
render of the field at that view's own pose). Each raw term gets a location and scale per bin of
the reference's contrast (``statistics.py``). The standardised terms are smoothed (``sigma``),
zeroed outside the object and standardised once more. Last, each term is measured against its
own spread and the terms averaged with their weights (``own_spread_per_term``), or the weighted sum,
standardised, is measured against its spread (``own_spread`` alone). The final map is in units of
normal residual spread, 0 where nothing is above normal (``scoring.above_normal``): comparable
across images, objects and runs.

A calibration is saved as JSON (``CALIBRATION_FORMAT``) with the signature of the config it was
fitted with; a config whose residuals differ from it is refused (``check_signature``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.compare.config import (
    FITTED_BEFORE_FIELD,
    CompareConfig,
    CompareError,
    calibration_signature,
    canonical_score_method,
)
from omnipose.compare.inputs import as_image_batch, prepare_neighbours, prepare_pair
from omnipose.compare.scoring import (
    above_normal,
    image_score,
    in_mask_spread,
    normalize_by_own_spread,
    threshold_for_fpr,
)
from omnipose.compare.statistics import ContrastStatistics, TermStatistics, fit_contrast_statistics, location_scale
from omnipose.compare.terms import Extract, finish_terms, raw_residuals, reference_contrast
from omnipose.core.files import atomic_write_json, read_json

CALIBRATION_FORMAT = "omnipose-calibration/5"
OLDER_FORMATS = ("omnipose-calibration/1", "omnipose-calibration/2", "omnipose-calibration/3", "omnipose-calibration/4")


@dataclass
class Calibration:
    """What normal (defect-free) data looks like to the comparison, fitted by ``Comparator.fit``.

    contrast: per-term statistics of raw residuals per contrast bin; terms: per-term statistics of
    the contrast-standardised, smoothed in-object residuals; combined: statistics of the weighted
    sum of standardised terms; normal_spread: median over the calibration pairs of the in-object
    interquartile range of that standardised sum (``normalize_by_own_spread``; 0 when
    ``own_spread`` is off); term_spreads: the same per standardised term (``combine_own_spread``;
    empty unless ``own_spread_per_term``). normal_scores: image scores of the calibration pairs
    (in final units); normal_pixel_quantiles: quantiles of their in-object final map values.
    signature: the CompareConfig fields the numbers depend on (checked when it is used).
    field_key: fingerprint of the radiance field whose renders it was fitted on ('' when unknown): a
    field trained further needs a new calibration. held_out_scores: image scores of normal views the field
    never learnt from, each run as a query (empty when there were none; ``score_threshold``).
    """

    contrast: dict[str, ContrastStatistics]
    terms: dict[str, TermStatistics]
    combined: TermStatistics
    normal_scores: list[float]
    normal_pixel_quantiles: dict[str, float]
    num_pairs: int
    signature: dict[str, Any] = field(default_factory=dict)
    normal_spread: float = 0.0
    term_spreads: dict[str, float] = field(default_factory=dict)
    field_key: str = ""
    held_out_scores: list[float] = field(default_factory=list)

    def score_threshold(self, fpr: float = 0.05) -> float:
        """Image-score threshold flagging at most ``fpr`` of the normal calibration images, raised by the
        ratio of the median scores of ``held_out_scores`` and of the calibration images where the held-out
        views score higher: a field renders the views it learnt from closer to their photographs than any
        new view, so every new normal view scores higher than the calibration's, and the few held-out views
        give how much higher better than they give a tail quantile of their own."""
        threshold = threshold_for_fpr(self.normal_scores, fpr)
        if self.held_out_scores:
            seen = max(float(np.median(self.normal_scores)), 1e-6)
            threshold *= max(1.0, float(np.median(self.held_out_scores)) / seen)
        return threshold

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
            "term_spreads": {name: float(value) for name, value in self.term_spreads.items()},
            "signature": dict(self.signature),
            "field_key": self.field_key,
            "held_out_scores": [float(s) for s in self.held_out_scores],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        # Their signature lacks neighbour_views: a calibration fitted on the render alone would pass for
        # one fitted with neighbours (whose residuals are smaller) and inflate every score.
        if data.get("format") in OLDER_FORMATS:
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
                term_spreads={str(name): float(value) for name, value in data["term_spreads"].items()},
                signature=_read_signature(data.get("signature", {})),
                field_key=str(data.get("field_key", "")),
                held_out_scores=[float(s) for s in data.get("held_out_scores", [])],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CompareError(f"calibration data is incomplete or malformed ({error!r}); refit it.") from error

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        missing = f"calibration file not found: {path}. Fit one with `omnipose calibrate` first."
        return cls.from_dict(read_json(path, CompareError, "Refit the calibration.", missing))


def _read_signature(signature: Mapping[str, Any]) -> dict[str, Any]:
    """A stored signature with the score method under its current name ('topk' -> 'topk_mean')."""
    signature = dict(signature)
    if "score_method" in signature:
        signature["score_method"] = canonical_score_method(signature["score_method"])
    return signature


def check_signature(calibration: Calibration, config: CompareConfig) -> None:
    """Raise CompareError when ``calibration`` was fitted with a config whose residuals differ from ``config``'s."""
    expected = calibration_signature(config)
    stored = {**FITTED_BEFORE_FIELD, **calibration.signature}
    differences = [
        f"{name}: calibrated with {stored[name]!r}, configured {expected[name]!r}"
        for name in expected
        if name in stored and stored[name] != expected[name]
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


def combine_terms(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], calibration: Calibration | None
) -> torch.Tensor:
    """Weighted sum of the terms (B, H, W); when calibrated, each term is standardised first and the
    sum after. Returns (B, H, W)."""
    if calibration is None:
        return sum(weights[name] * value for name, value in terms.items())
    combined = sum(weights[name] * calibration.terms[name].standardize(value) for name, value in terms.items())
    return calibration.combined.standardize(combined)


def combine_own_spread(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], calibration: Calibration, mask: torch.Tensor
) -> torch.Tensor:
    """Weighted mean of the terms (B, H, W), each standardised and then measured against its own
    spread over ``mask`` (B, H, W) bool (``normalize_by_own_spread`` with the term's normal spread).
    Returns (B, H, W), 0 outside the mask."""
    total = sum(weights[name] for name in terms)
    return sum(
        weights[name] * normalize_by_own_spread(calibration.terms[name].standardize(value), mask, calibration.term_spreads[name])
        for name, value in terms.items()
    ) / total


def own_spread_map(
    config: CompareConfig,
    calibration: Calibration,
    terms: Mapping[str, torch.Tensor],
    standardised: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The calibrated map before ``above_normal``: with ``own_spread``, each term measured against its
    own spread and averaged (``combine_own_spread``; ``own_spread_per_term``) or ``standardised``, their
    standardised weighted sum (``combine_terms``), measured against its spread; without, ``standardised``
    as it is. terms: {term: (B, H, W)}; mask: (B, H, W) bool. Returns (B, H, W)."""
    if not config.own_spread:
        return standardised
    if config.own_spread_per_term:
        return combine_own_spread(terms, config.weights, calibration, mask)
    return normalize_by_own_spread(standardised, mask, calibration.normal_spread)


@torch.no_grad()
def fit_calibration(
    config: CompareConfig,
    extract: Extract,
    device: torch.device,
    views: Any,
    renders: Any,
    alphas: Any = None,
    neighbours: Any = None,
    batch_size: int = 8,
    progress: bool = True,
    seed: int = 0,
) -> Calibration:
    """The calibration of ``config`` on normal pairs: real training views and renders of the field at
    their own poses (see ``Comparator.fit`` for the shapes). ``extract`` computes feature maps."""
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
    raw_maps, contrast, masks = _normal_residuals(config, extract, device, views_t, renders_t, alphas_t, neighbours,
                                                  batch_size, progress)  # fmt: skip
    samples = _sample_indices(masks, config.samples_per_pair, generator)

    sampled_contrast = _gather(contrast, samples)
    bin_levels = np.arange(1, config.contrast_bins) / config.contrast_bins
    edges = [float(e) for e in np.quantile(sampled_contrast.double().numpy(), bin_levels)]
    contrast_stats = {
        name: fit_contrast_statistics(_gather(value, samples), sampled_contrast, edges, config.statistic, config.contrast_floor)
        for name, value in raw_maps.items()
    }
    calibration = Calibration(contrast_stats, {}, TermStatistics(0.0, 1.0), [], {}, int(masks.shape[0]),
                              calibration_signature(config))  # fmt: skip
    maps = finish_terms(raw_maps, masks, config.sigma, contrast, calibration.contrast)
    calibration.terms = {
        name: TermStatistics(*location_scale(_gather(value, samples), config.statistic)) for name, value in maps.items()
    }
    combined = combine_terms(maps, config.weights, calibration)
    calibration.combined = TermStatistics(*location_scale(_gather(combined, samples), config.statistic))
    final = calibration.combined.standardize(combined)
    if config.own_spread:
        calibration.normal_spread = float(in_mask_spread(final, masks)[1].median())
        if config.own_spread_per_term:
            calibration.term_spreads = {
                name: float(in_mask_spread(calibration.terms[name].standardize(value), masks)[1].median())
                for name, value in maps.items()
            }
    final = above_normal(own_spread_map(config, calibration, maps, final, masks))
    scores = image_score(final, config.score_method, config.topk_fraction, masks if config.use_object_mask else None)
    inside = _gather(final, samples).double()
    levels = (0.5, 0.9, 0.99, 0.999)
    quantiles = torch.quantile(inside, torch.tensor(levels, dtype=torch.float64))
    calibration.normal_scores = [float(s) for s in scores]
    calibration.normal_pixel_quantiles = {str(level): float(q) for level, q in zip(levels, quantiles)}
    return calibration


def _normal_residuals(
    config: CompareConfig,
    extract: Extract,
    device: torch.device,
    views: torch.Tensor,
    renders: torch.Tensor,
    alphas: torch.Tensor | None,
    neighbours: Any,
    batch_size: int,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Raw terms {term: (N, H, W)}, reference contrast (N, H, W) and masks (N, H, W) of every pair.

    Kept at half precision on the CPU between batches: the per-bin statistics need all pairs
    first, and recomputing the features would double the cost."""
    stored_raw: dict[str, list[torch.Tensor]] = {name: [] for name in config.active_terms}
    stored_contrast: list[torch.Tensor] = []
    stored_masks: list[torch.Tensor] = []
    starts = range(0, views.shape[0], batch_size)
    for start in tqdm(starts, desc="calibrating on normal views", disable=not progress, leave=False):
        stop = start + batch_size
        alpha = None if alphas is None else alphas[start:stop]
        query, reference, alpha = prepare_pair(views[start:stop], renders[start:stop], alpha, config.image_size, device)
        extra = prepare_neighbours(None if neighbours is None else neighbours[start:stop], reference, device)
        raw, mask = raw_residuals(config, extract, query, reference, alpha, extra)
        for name, value in raw.items():
            stored_raw[name].append(value.half().cpu())
        stored_contrast.append(reference_contrast(reference).half().cpu())
        stored_masks.append(mask.cpu())
    masks = torch.cat(stored_masks)
    contrast = torch.cat(stored_contrast).float()
    raw_maps = {name: torch.cat(values).float() for name, values in stored_raw.items()}
    return raw_maps, contrast, masks


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

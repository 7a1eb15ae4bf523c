"""Anomaly maps: compare a query image with the normal reference rendered at its estimated pose.

``Comparator`` holds the config, the feature network and the calibration, and runs the recipe of
``CompareConfig.mode``:

- "calibrated" (default): residual terms (``terms.py``), each the smallest over the render and any
  further references; standardised per contrast bin, smoothed and masked with the statistics of
  normal data (``calibration.py``), then each measured against its own spread and averaged with
  the term weights (``calibration.combine_own_spread``). The map is in units of normal residual spread,
  0 where nothing is above normal (``scoring.above_normal``), and a threshold can be set from normal
  data alone (``Calibration.score_threshold``).
- "pad": PAD's recipe (``pad.py``), uncalibrated, for ablations.

Images may come as (H, W, 3), (N, H, W, 3) or (B, 3, H, W) in [0, 1] (``inputs.as_image_batch``);
maps come out as (B, H, W) at the compared size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from omnipose.compare.calibration import (
    Calibration,
    check_signature,
    combine_terms,
    fit_calibration,
    own_spread_map,
)
from omnipose.compare.config import CompareConfig, CompareError
from omnipose.compare.features import FeatureExtractor
from omnipose.compare.inputs import prepare_neighbours, prepare_pair, prepare_unseen
from omnipose.compare.pad import pad_anomaly_map
from omnipose.compare.scoring import above_normal, image_score
from omnipose.compare.terms import comparison_mask, finish_terms, raw_residuals, reference_contrast
from omnipose.core.device import pick_device


@dataclass
class ComparisonResult:
    """anomaly_map: (B, H, W) at the compared size; score: (B,); mask: (B, H, W) bool; terms: the (B, H, W)
    maps that were combined, smoothed (and, when calibrated, standardised per contrast bin first).
    fit_score: (B,) the image score before each map is measured against its own spread and raised to
    0 where below (``above_normal``; so the score when ``own_spread`` is off and a pixel is above 0):
    how well the reference explains the query, to choose between references (a wrong pose raises
    the whole map, which its own spread would excuse)."""

    anomaly_map: torch.Tensor
    score: torch.Tensor
    terms: dict[str, torch.Tensor]
    mask: torch.Tensor
    calibrated: bool
    fit_score: torch.Tensor


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

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.extractor(images)

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
            check_signature(calibration, self.config)
        self._calibration = calibration

    # -- the terms
    @torch.no_grad()
    def residuals(
        self, query: Any, reference: Any, reference_alpha: Any = None, neighbours: Any = None, unseen: Any = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Raw residual terms, smoothed and zeroed outside the object mask.

        query, reference: images (see ``as_image_batch``); reference_alpha: optional (B, H, W) render
        opacity; neighbours: optional (B, R, H, W, 3) further references; unseen: optional (B, H, W)
        bool (both: see ``compare``).
        Returns ({term: (B, H, W)} for the terms with weight > 0, mask (B, H, W) bool), at the compared size.
        """
        if self.config.mode == "pad":
            raise CompareError("residuals() is for mode='calibrated'; PAD mode has a single map (use anomaly_map).")
        query_t, reference_t, alpha = prepare_pair(query, reference, reference_alpha, self.config.image_size, self.device)
        extra = prepare_neighbours(neighbours, reference_t, self.device)
        return self._residuals(query_t, reference_t, alpha, extra, prepare_unseen(unseen, reference_t, self.device))

    def _residuals(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        alpha: torch.Tensor | None,
        neighbours: Sequence[torch.Tensor] = (),
        unseen: torch.Tensor | None = None,
        calibration: Calibration | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The terms that enter the map and the mask: each raw term (standardised per contrast bin
        of ``reference`` when a calibration is given) smoothed and zeroed outside the mask."""
        raw, mask = raw_residuals(self.config, self._features, query, reference, alpha, neighbours, unseen)
        if calibration is None:
            return finish_terms(raw, mask, self.config.sigma), mask
        return finish_terms(raw, mask, self.config.sigma, reference_contrast(reference), calibration.contrast), mask

    # -- public comparison
    @torch.no_grad()
    def compare(
        self, query: Any, reference: Any, reference_alpha: Any = None, neighbours: Any = None, unseen: Any = None
    ) -> ComparisonResult:
        """Compare queries with their references.

        query, reference: (H, W, 3), (N, H, W, 3) or (B, 3, H, W) in [0, 1], same size unless
        ``image_size`` is set. neighbours: optional (B, R, H, W, 3), R further normal references per
        query (training views re-projected to its pose, ``reproject.neighbour_references``); each
        residual is then the smallest over the render and them. Calibrate with neighbours made the
        same way (``fit(..., neighbours=)``), since a minimum over references is smaller than one.
        unseen: optional (B, H, W) bool, pixels where the render shows a surface no training view
        sees (``reproject.unseen_surface``): their residuals count as 0 (the field made that part
        up). Calibration needs none: a training view sees all it shows.
        Without a calibration (mode 'calibrated') the map is the weighted sum of raw terms, whose
        units differ: fit or load a calibration for maps in normal standard deviations.
        """
        cfg = self.config
        query_t, reference_t, alpha = prepare_pair(query, reference, reference_alpha, cfg.image_size, self.device)
        if cfg.mode == "pad":
            anomaly_map = pad_anomaly_map(query_t, reference_t, self.extractor, cfg.sigma)
            mask = comparison_mask(cfg, query_t, reference_t, alpha)
            anomaly_map = anomaly_map * mask
            terms: dict[str, torch.Tensor] = {}
        else:
            extra = prepare_neighbours(neighbours, reference_t, self.device)
            unseen_t = prepare_unseen(unseen, reference_t, self.device)
            terms, mask = self._residuals(query_t, reference_t, alpha, extra, unseen_t, self._calibration)
            anomaly_map = combine_terms(terms, cfg.weights, self._calibration)
        score_mask = mask if cfg.use_object_mask else None
        fit_score = image_score(anomaly_map, cfg.score_method, cfg.topk_fraction, score_mask)
        score = fit_score
        if self._calibration is not None:  # PAD mode never holds a calibration
            anomaly_map = above_normal(own_spread_map(cfg, self._calibration, terms, anomaly_map, mask))
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
    def fit(self, views: Any, renders: Any, alphas: Any = None, neighbours: Any = None, batch_size: int = 8,
            progress: bool = True, seed: int = 0) -> Calibration:  # fmt: skip
        """Calibrate on normal pairs: real training views and renders of the field at their own poses.

        views, renders: (N, H, W, 3) or (N, 3, H, W) in [0, 1]; alphas: optional (N, H, W) render
        opacities; neighbours: optional (N, R, H, W, 3), other training views re-projected to each
        view's pose (as ``compare`` will get them). Sets and returns ``self.calibration``. Needs no
        defect image.
        """
        if self.config.mode != "calibrated":
            raise CompareError(
                "fit() calibrates mode='calibrated'; PAD mode has no calibration (the evaluator min-max normalises)."
            )
        self._calibration = fit_calibration(self.config, self._features, self.device, views, renders, alphas,
                                            neighbours, batch_size, progress, seed)  # fmt: skip
        return self._calibration


def _is_single(image: Any) -> bool:
    return hasattr(image, "shape") and len(image.shape) == 3

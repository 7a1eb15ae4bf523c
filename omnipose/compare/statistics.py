"""Location and scale of normal residuals: pooled, or per bin of the reference's local contrast.

The residuals a defect-free object leaves (render blur, floaters, small pose and exposure
differences) are largest where the reference changes fast (edges, thin parts) and smallest on flat
surfaces, so each raw term gets a robust location and scale (median and MAD by default) per bin
of the reference's local contrast (``terms.reference_contrast``): a residual on an edge counts
less than the same residual on a flat face.

The statistics are pooled over pixel positions on purpose: query poses differ from the training
poses, so a pixel position has no fixed meaning and per-position statistics would not transfer.
The contrast of the reference, computed at any pose, does transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omnipose.compare.config import STATISTICS, CompareError

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
MAD_FLOOR = 1e-3  # a MAD scale below this many standard deviations is degenerate (see location_scale)


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

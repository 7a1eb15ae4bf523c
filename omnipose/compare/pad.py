"""PAD's comparison recipe (NeurIPS 2023), kept for ablations (``CompareConfig.pad``).

Squared difference of ImageNet-normalised RGB summed over channels, plus, per feature layer, the
squared feature difference summed over channels and upsampled, at 224x224, Gaussian sigma 4, image
score = max. No mask and no calibration: PAD's evaluator min-max normalises the maps over the
whole test set.
"""

from __future__ import annotations

import torch

from omnipose.compare.efficientnet import IMAGENET_MEAN, IMAGENET_STD
from omnipose.compare.features import FeatureExtractor
from omnipose.compare.terms import feature_residual
from omnipose.core.image import gaussian_blur


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


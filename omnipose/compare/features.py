"""Pretrained image features for comparing a query with its rendered reference: a frozen
EfficientNet (``omnipose.compare.efficientnet``, weights from ``omnipose.compare.weights``)
returning feature maps at several strides."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from omnipose.compare.efficientnet import WeightsError
from omnipose.compare.weights import load_efficientnet
from omnipose.core.device import pick_device
from omnipose.core.errors import OmniposeError


class FeatureExtractor(nn.Module):
    """Frozen pretrained EfficientNet returning feature maps at several strides.

    name_or_path: 'efficientnet-lite0' (default, shipped), 'efficientnet-lite2', or a state-dict path
    (lukemelas B0..B7, or a Lite state dict). layers: total strides of the maps to return, e.g.
    (4, 8, 16); each is the output of the last block at that stride. Images go in as (B, 3, H, W)
    in [0, 1]; the normalisation the weights expect is applied inside. Batch norms are folded into
    the convolutions, so save weights from ``load_efficientnet(...)``, not from ``.network``.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike = "efficientnet-lite0",
        layers: Sequence[int] = (4, 8, 16),
        device: str | torch.device | None = None,
        variant: str | None = None,
    ):
        super().__init__()
        self.source = str(name_or_path)
        # Folding batch norms and channels-last layout roughly halve the CPU time of a forward pass.
        self.network = load_efficientnet(name_or_path, variant=variant).fuse_batchnorm()
        self.network.to(memory_format=torch.channels_last)
        self.layers = tuple(int(s) for s in layers)
        if not self.layers:
            raise WeightsError("FeatureExtractor needs at least one layer (a stride such as 4, 8 or 16).")
        self.network.stride_outputs(self.layers)  # fail now, not at the first image
        spec = self.network.spec
        self.register_buffer("mean", torch.tensor(spec.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.input_std).view(1, 3, 1, 1), persistent=False)
        self.to(pick_device(device) if device is None or isinstance(device, str) else device)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def channels(self) -> list[int]:
        """Channels of each returned map, in the order of ``layers``."""
        blocks = self.network.spec.blocks
        return [blocks[i].out_channels for i in self.network.stride_outputs(self.layers)]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> the network's input scaling."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise OmniposeError(
                f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}; permute (H, W, 3) data first."
            )
        normalized = (images.to(self.device, torch.float32) - self.mean) / self.std
        return normalized.contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, H, W) in [0, 1]. Returns [(B, C_s, ceil(H / s), ceil(W / s)) for s in layers].

        The weights are frozen, but the maps are differentiable with respect to the images (for a
        feature-space photometric loss); wrap calls in ``torch.no_grad()`` when no gradient is needed.
        """
        return self.network.forward_features(self.normalize(images), self.layers)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, for checking that the weights loaded right. images: (B, 3, H, W) in [0, 1] -> (B, 1000)."""
        return self.network(self.normalize(images))

"""Query and reference images as the comparison takes them: one layout, one size, checked values.

Images follow the project convention: float in [0, 1], (H, W, 3) or batches (N, H, W, 3) as data,
(B, 3, H, W) as network input. The comparison accepts either; ``as_image_batch`` converts to
(B, 3, H, W), and the residual maps come out as (B, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnipose.compare.config import CompareError


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
            "or (B, 3, H, W). Drop the alpha channel (composite it with omnipose.core.image.composite_on_background) first."
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
        else "render the reference at the query's resolution (omnipose.core.geometry.scale_intrinsics), or set "
        "CompareConfig.image_size to compare both at one size"
    )
    raise CompareError(f"query is {qw}x{qh} pixels but the reference is {rw}x{rh}: {hint}.")


def prepare_pair(
    query: Any, reference: Any, reference_alpha: Any, image_size: int | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Query and reference as (B, 3, h, w) on ``device`` at the compared size (see ``compared_size``),
    and the render's opacity ``reference_alpha`` (B, H, W), when given, as (B, h, w)."""
    query_t = as_image_batch(query, "query").to(device)
    reference_t = as_image_batch(reference, "reference").to(device)
    check_pair(query_t, reference_t, resizable=image_size is not None)
    size = compared_size(*query_t.shape[-2:], image_size)
    query_t, reference_t = resize_batch(query_t, size), resize_batch(reference_t, size)
    alpha = None
    if reference_alpha is not None:
        alpha = torch.as_tensor(
            np.asarray(reference_alpha) if not isinstance(reference_alpha, torch.Tensor) else reference_alpha
        )
        alpha = alpha.float().to(device).reshape(query_t.shape[0], 1, *alpha.shape[-2:])
        alpha = resize_batch(alpha, size)[:, 0]
    return query_t, reference_t, alpha


def prepare_neighbours(neighbours: Any, reference: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """neighbours: None or (B, R, H, W, 3) / (B, R, 3, H, W) in [0, 1], R further references per query
    (see ``reproject.neighbour_references``). Returns R batches (B, 3, h, w) at the size of
    ``reference`` (B, 3, h, w)."""
    if neighbours is None:
        return []
    neighbours = torch.as_tensor(np.asarray(neighbours) if not isinstance(neighbours, torch.Tensor) else neighbours)
    if neighbours.ndim != 5 or neighbours.shape[0] != reference.shape[0]:
        raise CompareError(
            f"neighbours of shape {tuple(neighbours.shape)}: give (B, R, H, W, 3), R references for each of the "
            f"{reference.shape[0]} queries."
        )
    batches = [as_image_batch(neighbours[:, r], "neighbour").to(device) for r in range(neighbours.shape[1])]
    return [resize_batch(batch, tuple(reference.shape[-2:])) for batch in batches]


def prepare_unseen(unseen: Any, reference: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """unseen: None or (B, H, W) / (H, W) bool, pixels whose rendered surface no training view sees
    (``reproject.unseen_surface``). Returns (B, h, w) bool at the size of ``reference`` (B, 3, h, w)."""
    if unseen is None:
        return None
    mask = torch.as_tensor(np.asarray(unseen) if not isinstance(unseen, torch.Tensor) else unseen).to(device)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] != reference.shape[0]:
        raise CompareError(
            f"unseen of shape {tuple(mask.shape)}: give (B, H, W), one mask for each of the {reference.shape[0]} queries."
        )
    return resize_batch(mask[:, None].float(), tuple(reference.shape[-2:]))[:, 0] > 0.5

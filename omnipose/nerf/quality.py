"""How well a field reproduces its views: PSNR and SSIM of renders against posed images."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.geometry import scale_intrinsics
from omnipose.core.image import foreground_mask, resize_to_width
from omnipose.data import PosedImages


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]. a, b: same shape."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5) of (H, W, 3) images in [0, 1]."""
    from kornia.metrics import ssim as kornia_ssim

    to_batch = lambda image: image.permute(2, 0, 1)[None].float().cpu()  # noqa: E731
    return float(kornia_ssim(to_batch(a).clamp(0, 1), to_batch(b).clamp(0, 1), 11).mean())


@torch.no_grad()
def evaluate_views(model: torch.nn.Module, views: PosedImages, max_views: int | None = None, progress: bool = False) -> dict:
    """PSNR / SSIM of renders against posed images.

    Returns {'psnr', 'ssim', 'per_view': [{'path', 'psnr', 'ssim'}], 'seconds_per_image'}.
    """
    was_training = model.training
    model.eval()
    count = len(views) if max_views is None else min(max_views, len(views))
    per_view, elapsed = [], 0.0
    for i in tqdm(range(count), desc="evaluating", disable=not progress, leave=False):
        start = time.perf_counter()
        render = model.render_image(views.c2w[i], views.K, views.height, views.width)["rgb"].cpu()
        elapsed += time.perf_counter() - start
        target = views.images[i]
        per_view.append({"path": str(views.paths[i]), "psnr": psnr(render, target), "ssim": ssim(render, target)})
    model.train(was_training)
    if not per_view:
        return {"psnr": float("nan"), "ssim": float("nan"), "per_view": [], "seconds_per_image": float("nan")}
    return {
        "psnr": float(np.mean([v["psnr"] for v in per_view])),
        "ssim": float(np.mean([v["ssim"] for v in per_view])),
        "per_view": per_view,
        "seconds_per_image": elapsed / len(per_view),
    }


@torch.no_grad()
def object_psnrs(model: torch.nn.Module, images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                 background, max_width: int = 100) -> np.ndarray:
    """PSNR of each view over its object only: the pixels the render covers or the image does not show as the
    ``background`` colour, so that how much of the frame the object fills does not count. images (N, H, W, 3),
    c2w (N, 4, 4), K (3, 3); rendered at most ``max_width`` pixels wide (the images shrunk to it)."""
    count, height, width = images.shape[:3]
    small_w = min(width, max_width)
    values = np.empty(count)
    for i in range(count):
        image = images[i].float().cpu().numpy()
        if small_w < width:
            image = resize_to_width(image, small_w)
        small_h = image.shape[0]
        out = model.render_image(c2w[i], scale_intrinsics(K.float(), small_w / width, small_h / height), small_h, small_w)
        on_object = (out["opacity"].cpu() > 0.5) | torch.from_numpy(foreground_mask(image, background, 0.05))
        image = torch.from_numpy(image)
        values[i] = psnr(out["rgb"].cpu()[on_object], image[on_object]) if on_object.any() else float("inf")
    return values


def unexplained_views(psnrs: np.ndarray, gap_db: float) -> list[int]:
    """Indices of the views whose object PSNR (``object_psnrs``) lies more than ``gap_db`` below the median view's:
    a field reproduces every view it learnt from about as well, except those that disagree with the others (a pose
    a reconstruction got wrong, a photo of something else). None among fewer than 8 views, where a median says
    little."""
    psnrs = np.asarray(psnrs, dtype=float)
    if len(psnrs) < 8:
        return []
    return [int(i) for i in np.flatnonzero(psnrs < np.median(psnrs) - gap_db)]

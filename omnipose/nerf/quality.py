"""How well a field reproduces its views: PSNR and SSIM of renders against posed images."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

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

"""The training-view index: what retrieval needs of the retrieval views (keypoint features, the 3D
point under each keypoint, appearance thumbnails), built once per (field, matcher), shared in
memory and cached on disk."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.backdrop import read_on_background
from omnipose.core.files import load_cache, save_cache
from omnipose.core.geometry import generate_rays
from omnipose.core.image import foreground_mask
from omnipose.pose.appearance import (
    THUMBNAIL_SIZE,
    ObjectFrame,
    object_frame,
    thumbnails,
)
from omnipose.pose.config import PoseConfig
from omnipose.pose.matching import Features, Matcher
from omnipose.pose.query import PoseError, info_value, object_region
from omnipose.pose.retrieval import DescriptorBank
from omnipose.pose.scene import PoseScene
from omnipose.pose.scoring import PoseScoring, RenderRays, render_pixels

CACHE_VERSION = 4
# Indexes kept in memory, shared by every estimator of the same field and matcher (oldest dropped first).
_INDEX_MEMORY: dict[str, "TrainingIndex"] = {}
_MEMORY_SIZE = 4


def feature_cache_path(folder: str | Path, matcher: str, fingerprint: str | None = None) -> Path:
    """The file that caches the training-view index of a field for ``matcher`` in ``folder``.

    In a checkpoint's folder (one field): ``pose_features.<matcher>.pt``, matcher as
    ``PoseConfig.matcher`` names it. In a folder shared by many fields, give the field's
    ``fingerprint`` (``model_fingerprint``): ``<fingerprint[:16]>.<matcher>.pt``. The file's key says
    what it was built for (keypoint count, size, scoring settings), so a stale one is rebuilt.
    """
    name = f"{fingerprint[:16]}.{matcher}.pt" if fingerprint else f"pose_features.{matcher}.pt"
    return Path(folder) / name


@dataclass
class TrainingIndex:
    """What retrieval needs of the training views (then the renders at their gaps, see
    ``gap_filling_poses``), computed once per (model, matcher).

    features: one Features per view (keypoints in the view's pixels). points3d: per view (N_i, 3)
    world points under the keypoints, read from the field's depth; NaN where the keypoint sits on
    the background or on a depth edge. baseline_residual and baseline_chromaticity: the field's own
    pose residual (``PoseScoring``) of colour and of chromaticity on training views (what a correct
    pose achieves). key: what the cache was built for.
    thumbnails: (V, D) object-centred thumbnails (``omnipose.pose.appearance``); frames: (V, 3) each
    view's object centroid (u, v) and RMS radius in pixels (radius 0: no object in the view).
    """

    features: list[Features]
    points3d: list[torch.Tensor]
    baseline_residual: float
    baseline_chromaticity: float
    key: str
    thumbnails: torch.Tensor
    frames: torch.Tensor
    bank: DescriptorBank | None = None

    def __post_init__(self):
        if self.bank is None:
            self.bank = DescriptorBank.from_features(self.features)

    def save(self, path: str | Path) -> None:
        payload = {
            "baseline_residual": self.baseline_residual, "baseline_chromaticity": self.baseline_chromaticity,
            "features": [f.as_dict() for f in self.features], "points3d": [p.cpu() for p in self.points3d],
            "thumbnails": self.thumbnails.cpu(), "frames": self.frames.cpu(),
        }
        save_cache(path, payload, CACHE_VERSION, self.key)

    @classmethod
    def load(cls, path: str | Path, key: str, device) -> "TrainingIndex | None":
        """The cached index at ``path`` if it was built for ``key``, else None (stale or unreadable)."""
        payload = load_cache(path, CACHE_VERSION, key)
        if payload is None:
            return None
        features = [Features.from_dict(f).to(device) for f in payload["features"]]
        return cls(features, payload["points3d"], float(payload["baseline_residual"]),
                   float(payload["baseline_chromaticity"]), key,
                   payload["thumbnails"], payload["frames"])


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer: a retrained or edited field never reuses stale features."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def index_key(scene: PoseScene, fingerprint: str, matcher: Matcher, config: PoseConfig) -> str:
    """What an index depends on: the field, the matcher, the image size and background, the cameras,
    and the scoring settings its baseline residual is measured with."""
    digest = hashlib.sha1()
    digest.update(fingerprint.encode())
    digest.update(matcher.key.encode())
    digest.update(f"{scene.width}x{scene.height}|{scene.background}|{config.min_opacity}".encode())
    digest.update(f"{config.eval_rays}|{config.eval_trim}|{config.foreground_threshold}".encode())
    digest.update(scene.K.numpy().tobytes())
    digest.update(scene.retrieval_c2w.numpy().tobytes())
    return digest.hexdigest()


def shared_index(key: str, cache_path: Path | None, device, build: Callable[[], TrainingIndex]) -> TrainingIndex:
    """The index for ``key``: from memory, else from the cache file, else built (and cached)."""
    if key in _INDEX_MEMORY:
        return _INDEX_MEMORY[key]
    index = TrainingIndex.load(cache_path, key, device) if cache_path else None
    if index is None:
        index = build()
        if cache_path is not None:
            index.save(cache_path)
    if len(_INDEX_MEMORY) >= _MEMORY_SIZE:
        _INDEX_MEMORY.pop(next(iter(_INDEX_MEMORY)))
    _INDEX_MEMORY[key] = index
    return index


def keypoint_points3d(
    render_rays: RenderRays, c2w: torch.Tensor, K: torch.Tensor, keypoints: torch.Tensor,
    min_opacity: float = 0.95, edge_px: float = 1.5, max_depth_spread: float = 0.03, chunk: int = 16384,
) -> torch.Tensor:
    """World points under keypoints of one view, from the depth the field renders there.

    A keypoint is trusted where the ray is opaque and the depth barely changes ``edge_px`` pixels
    around it (keypoints like silhouettes, where depth jumps from the object to the background).
    c2w: (4, 4); K: (3, 3); keypoints: (N, 2). Returns (N, 3), NaN rows where untrusted.
    """
    if len(keypoints) == 0:
        return torch.zeros(0, 3)
    offsets = torch.tensor([[0, 0], [edge_px, 0], [-edge_px, 0], [0, edge_px], [0, -edge_px]], dtype=torch.float32)
    pixels = (keypoints.float().cpu()[:, None, :] + offsets[None]).reshape(-1, 2).to(c2w.device)
    with torch.no_grad():
        out = render_pixels(render_rays, c2w[None], K.to(c2w.device), pixels, chunk)
    depth = out["depth"].reshape(-1, 5).cpu()
    opacity = out["opacity"].reshape(-1, 5).cpu()
    centre = depth[:, 0]
    spread = (depth - centre[:, None]).abs().max(1).values / centre.clamp(min=1e-6)
    trusted = (opacity.min(1).values > min_opacity) & (spread < max_depth_spread) & (centre > 0)
    rays_o, rays_d = generate_rays(c2w.cpu(), K.cpu(), keypoints.float().cpu())
    points = rays_o + centre[:, None] * rays_d
    points[~trusted] = float("nan")
    return points


# ----------------------------------------------------------------------------- building an index
def training_images(scene: PoseScene, info, views=None, progress: bool = False) -> torch.Tensor:
    """(N, H, W, 3) training images at the model's size: given, read from ``info.train_image_paths``,
    or (when those moved) rendered at the training poses."""
    if views is not None:
        images = torch.as_tensor(views.images if hasattr(views, "images") else views, dtype=torch.float32)
        if images.shape[0] != scene.train_c2w.shape[0] or tuple(images.shape[1:3]) != (scene.height, scene.width):
            raise PoseError(
                f"training views are {tuple(images.shape)} but the checkpoint has {scene.train_c2w.shape[0]} views "
                f"at {scene.width}x{scene.height}; pass the views the model was trained on (same size)."
            )
        return images.cpu()
    paths = [Path(p) for p in (info_value(info, "train_image_paths") or [])]
    if paths and len(paths) == scene.train_c2w.shape[0] and all(p.is_file() for p in paths):
        return torch.from_numpy(np.stack([
            read_on_background(p, scene.background, (scene.width, scene.height), bool(info_value(info, "backdrop", True)))[0]
            for p in tqdm(paths, desc="reading training views", disable=not progress, leave=False)
        ]))
    return scene.render_views(scene.train_c2w, "rendering training views for retrieval", progress)


def build_index(scene: PoseScene, matcher: Matcher, images: torch.Tensor, key: str, config: PoseConfig) -> TrainingIndex:
    """Index of the training images (N, H, W, 3) and of renders at the scene's gap cameras, in that order."""
    baseline, chromaticity = baseline_residuals(scene, images, config)
    images = torch.cat([images, scene.render_views(scene.gap_c2w, "rendering views at the gaps", config.progress)])
    features = matcher.extract(images.numpy())
    points3d = []
    for c2w, f in tqdm(list(zip(scene.retrieval_c2w, features)), desc="3D points of retrieval keypoints",
                       disable=not config.progress, leave=False):
        points3d.append(keypoint_points3d(
            scene.render_rays, c2w.to(scene.device), scene.render_K, f.keypoints.cpu(), config.min_opacity,
            chunk=config.chunk,
        ))
    thumbs, frames = [], []
    for image in images.numpy():
        frame = object_frame(foreground_mask(image, scene.background, config.foreground_threshold))
        if frame is None:  # a view without the object: a thumbnail nothing will match
            frame = ObjectFrame(np.array([scene.width / 2.0, scene.height / 2.0]), 0.0)
            thumbs.append(torch.full((1, 3 * THUMBNAIL_SIZE**2), 1e3))
        else:
            thumbs.append(thumbnails(image, frame, scene.background, [0.0]))
        frames.append([*frame.centroid, frame.radius])
    return TrainingIndex(features, points3d, baseline, chromaticity, key, torch.cat(thumbs),
                         torch.tensor(frames, dtype=torch.float64))


def baseline_residuals(scene: PoseScene, images: torch.Tensor, config: PoseConfig,
                       views: int = 6) -> tuple[float, float]:
    """The pose residuals of the field at its own training poses (what a right pose gives), of colour
    and of chromaticity (``PoseScoring.residual``, one render per view): the medians over ``views`` training images
    (N, H, W, 3) spread over the set."""
    chosen = np.linspace(0, images.shape[0] - 1, min(views, images.shape[0])).round().astype(int)
    residuals = []
    for i in chosen:
        image = images[i].numpy()
        region = object_region(image, scene.background, config.foreground_threshold, 4)
        if not region.any():
            continue
        scoring = PoseScoring.of_region(image, region, config.eval_rays, config.eval_trim, int(i)).to(scene.device)
        with torch.no_grad():
            rendered = render_pixels(scene.render_rays, scene.train_c2w[i][None].to(scene.device), scene.render_K,
                                     scoring.pixels, config.chunk)["rgb"]  # fmt: skip
        residuals.append([float(scoring.residual(rendered, by_chromaticity=by)[0]) for by in (False, True)])
    if not residuals:
        return 0.02, 0.005
    colour, chromaticity = np.median(np.array(residuals), axis=0)
    return float(colour), float(chromaticity)


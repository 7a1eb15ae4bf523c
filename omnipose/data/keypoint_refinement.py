"""Photometric refinement of the keypoints of each track, before structure from motion's final
bundle adjustment.

A detector places a keypoint where its own response peaks, and that place moves a little with the
view (the peak of a large SIFT blob, XFeat's 8-pixel cells), so the observations of one 3-D point
disagree by a fraction of a pixel in a way the bundle adjustment cannot average out. Here every
observation is moved so that the image around it matches the track's other views: a small square
patch on the point's tangent plane is projected into each view with the reconstruction's cameras
(its shape there: foreshortening, rotation, scale), sampled around the keypoint plus a free 2-D
shift, and the shifts (and the plane's tilt, shared by the track) are chosen so that the
normalised patches of a track agree. In the spirit of pixel-perfect structure from motion, with
image intensities in place of learned dense features.

The reference implementation is pure PyTorch (``refine_keypoints``, on arrays);
``refine_reconstruction`` applies it to a pycolmap reconstruction.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnipose.core.image import gaussian_blur, read_image_rgba, resize_image

STAGES = ((1.0, 4), (0.5, 3))
"""(blur sigma in pixels, patch half-width in pixels) of each pass, coarse to fine: the wider, smoother
patch pulls keypoints a pixel or more off (a learned matcher's) into place, the finer one settles
them on the detail that a precise detector (SIFT) already nearly agrees on."""

TILT_PRIOR = 0.01
"""Weight keeping the tangent plane's tilt near its first guess (the mean direction to the cameras)
where a patch has too little texture to say."""


def _project(points: torch.Tensor, rotations: torch.Tensor, translations: torch.Tensor, focal: float,
             principal: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """points (N, K, 3) into views (N, 3, 3) / (N, 3), pinhole; returns (N, K, 2) pixels. COLMAP's
    world-to-camera (OpenCV axes), one view per row of points, as the tracks come; ``core.geometry.project``
    takes one OpenGL camera-to-world instead."""
    camera = (rotations[:, None] @ points[..., None])[..., 0] + translations[:, None]
    return focal * camera[..., :2] / camera[..., 2:] + principal


def _tangent_bases(normals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors (T, 3) each, orthogonal to normals (T, 3) and to each other."""
    helper = torch.zeros_like(normals)
    helper[:, 0] = (normals[:, 0].abs() < 0.9).to(normals.dtype)
    helper[:, 1] = 1 - helper[:, 0]
    first = torch.linalg.cross(normals, helper)
    first = first / first.norm(dim=-1, keepdim=True)
    return first, torch.linalg.cross(normals, first)


def _track_mean(values: torch.Tensor, observation_track: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The mean over each track's observations of values (N, ...); counts: (T,) observations per track, at
    least 1. Returns (T, ...)."""
    total = torch.zeros(len(counts), *values.shape[1:], dtype=values.dtype).index_add_(0, observation_track, values)
    return total / counts.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))


class _ViewSampler:
    """Bilinear samples of views (V, C, H, W) at N sets of K pixel positions each, one ``grid_sample``
    call for all views: the views are laid side by side in one mosaic, each observation's positions
    moved into its view's tile. Positions are clamped to the view's outer pixel centres, which is what
    ``grid_sample``'s border padding does to a lone view (value and gradient alike), so a patch off
    the photo's edge never reads the neighbouring tile. A near-square mosaic keeps the normalised
    coordinates precise to about 1e-4 px in float32."""

    def __init__(self, images: torch.Tensor, observation_view: torch.Tensor):
        views, channels, height, width = images.shape
        columns = math.ceil(math.sqrt(views))
        rows = math.ceil(views / columns)
        mosaic = torch.zeros(rows, columns, channels, height, width, dtype=images.dtype)
        mosaic.view(rows * columns, channels, height, width)[:views] = images
        self.mosaic = mosaic.permute(2, 0, 3, 1, 4).reshape(1, channels, rows * height, columns * width)
        self.tile = torch.stack([observation_view % columns * width, observation_view // columns * height], -1)
        self.tile = self.tile.to(torch.float32)[:, None]
        self.low = torch.tensor([0.5, 0.5])
        self.high = torch.tensor([width - 0.5, height - 0.5])
        self.scale = torch.tensor([2.0 / (columns * width), 2.0 / (rows * height)])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (N, K, 2) in COLMAP's convention. Returns (N, K * C)."""
        grid = (torch.clamp(pixels, self.low, self.high) + self.tile) * self.scale - 1
        sampled = F.grid_sample(self.mosaic, grid[None], mode="bilinear", padding_mode="border", align_corners=False)
        return sampled[0].permute(1, 2, 0).reshape(pixels.shape[0], -1)


def refine_keypoints(
    images: torch.Tensor, focal: float, principal: tuple[float, float], rotations: torch.Tensor,
    translations: torch.Tensor, points: torch.Tensor, observation_view: torch.Tensor, observation_track: torch.Tensor,
    keypoints: torch.Tensor, max_shift: float = 2.0, steps: int = 60, learning_rate: float = 0.1,
    shift_prior: float = 0.01,
) -> torch.Tensor:  # fmt: skip
    """Keypoints moved so that each track's views agree photometrically.

    images: (V, C, H, W) in [0, 1]; focal, principal: the pinhole camera all views share, in pixels
    (COLMAP's convention: the first pixel's centre at (0.5, 0.5)); rotations (V, 3, 3), translations
    (V, 3): world to camera; points: (T, 3) the tracks' points; observation_view, observation_track:
    (N,) the view and track of each observation; keypoints: (N, 2) where the detector put them.
    Each keypoint moves by at most ``max_shift`` pixels along each axis; ``shift_prior`` weighs the
    squared shift against the photometric disagreement, holding each track's common slide along its
    surface (which the disagreement does not see) near the detected keypoints. ``steps`` of Adam per
    pass. Returns (N, 2).
    """
    dtype = torch.float64
    tracks, count = points.shape[0], keypoints.shape[0]
    rotations = rotations.to(dtype)[observation_view]
    translations = translations.to(dtype)[observation_view]
    principal_t = torch.tensor(principal, dtype=dtype)

    def project(world: torch.Tensor) -> torch.Tensor:  # (N, K, 3) -> (N, K, 2), each in its own view
        return _project(world, rotations, translations, focal, principal_t)

    counts = torch.bincount(observation_track, minlength=tracks).clamp_min(1)
    centres = -(rotations.transpose(1, 2) @ translations[..., None])[..., 0]
    track_points = points.to(dtype)[observation_track]
    to_camera = centres - track_points
    distance = to_camera.norm(dim=-1)
    # The plane first faces the mean direction to the track's cameras; the tilt refines it.
    normals = _track_mean(to_camera / distance[:, None], observation_track, counts)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normals, first, second = (basis[observation_track] for basis in (normals, *_tangent_bases(normals)))
    # One step on the patch is about one image pixel at the track's mean distance.
    step = (_track_mean(distance, observation_track, counts) / focal)[observation_track][:, None, None]
    centre_pixels = project(track_points[:, None])

    shift = torch.zeros(count, 2, requires_grad=True)
    tilt = torch.zeros(tracks, 2, requires_grad=True)
    detected = keypoints.to(torch.float32)
    for sigma, half_width in STAGES:
        offsets = torch.arange(-half_width, half_width + 1.0, dtype=dtype)
        across, down = (grid.flatten()[None, :, None] for grid in torch.meshgrid(offsets, offsets, indexing="ij"))
        on_plane = track_points[:, None] + step * (across * first[:, None] + down * second[:, None])
        patch = project(on_plane)
        shape = (patch - centre_pixels).float()  # (N, K, 2): the patch as each view sees it, around its centre
        # The tilt's effect, linearised: the plane turned by a small angle about each tangent axis.
        turned = [((project(on_plane + 0.1 * step * weight * normals[:, None]) - patch) / 0.1).float()
                  for weight in (across, down)]  # fmt: skip
        sample = _ViewSampler(gaussian_blur(images.float(), sigma), observation_view)
        optimiser = torch.optim.Adam([shift, tilt], lr=learning_rate)
        for _ in range(steps):
            track_tilt = tilt[observation_track][:, None]
            values = sample(detected[:, None] + shape + shift[:, None] + track_tilt[..., :1] * turned[0]
                            + track_tilt[..., 1:] * turned[1])  # fmt: skip
            values = values - values.mean(1, keepdim=True)
            values = values / (values.norm(dim=1, keepdim=True) + 1e-6)
            disagreement = ((values - _track_mean(values, observation_track, counts)[observation_track]) ** 2).sum()
            loss = disagreement + shift_prior * (shift**2).sum() + TILT_PRIOR * (tilt**2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                shift.clamp_(-max_shift, max_shift)
    return (detected + shift.detach()).to(keypoints.dtype)


def refine_reconstruction(reconstruction, images_dir: Path, max_shift: float = 2.0,
                          max_image_size: int = 1600) -> dict:  # fmt: skip
    """``refine_keypoints`` on a pycolmap reconstruction of one SIMPLE_PINHOLE or PINHOLE camera with
    square pixels: its registered images read (grey) from images_dir, its points' observations moved
    in place. Photos larger than ``max_image_size`` are refined shrunk to it, the scale their features
    were found at, which also bounds the memory (a grey float copy of every photo). Returns
    {'observations', 'median_shift_px', 'seconds'} ({} for other cameras)."""
    start = time.perf_counter()
    camera = next(iter(reconstruction.cameras.values()))
    params = np.asarray(camera.params, dtype=np.float64)
    if camera.model.name == "SIMPLE_PINHOLE":
        focal, principal = float(params[0]), (float(params[1]), float(params[2]))
    elif camera.model.name == "PINHOLE" and abs(params[0] - params[1]) < 1e-6 * params[0]:
        focal, principal = float(params[0]), (float(params[2]), float(params[3]))
    else:
        return {}
    ids = sorted(reconstruction.reg_image_ids())
    view_of = {image_id: k for k, image_id in enumerate(ids)}
    scale = min(1.0, max_image_size / max(camera.width, camera.height))
    shrunk = (round(camera.width * scale), round(camera.height * scale))
    grey = [read_image_rgba(images_dir / reconstruction.image(i).name)[..., :3].mean(-1) for i in ids]
    if scale < 1:
        grey = [resize_image(image, shrunk) for image in grey]
    images = torch.from_numpy(np.stack(grey)[:, None].astype(np.float32))
    poses = [reconstruction.image(i).cam_from_world() for i in ids]
    rotations = torch.from_numpy(np.stack([pose.rotation.matrix() for pose in poses]))
    translations = torch.from_numpy(np.stack([pose.translation for pose in poses]))
    points, views, tracks, keypoints, where = [], [], [], [], []
    for point in reconstruction.points3D.values():
        track = len(points)
        points.append(point.xyz)
        for element in point.track.elements:
            views.append(view_of[element.image_id])
            tracks.append(track)
            where.append((element.image_id, element.point2D_idx))
            keypoints.append(reconstruction.image(element.image_id).points2D[element.point2D_idx].xy)
    if not where:
        return {}
    detected = torch.from_numpy(np.array(keypoints))
    # Pixel corners stay where they were under a shrink (COLMAP's convention), so coordinates just scale.
    refined = refine_keypoints(
        images, focal * scale, (principal[0] * scale, principal[1] * scale), rotations, translations,
        torch.from_numpy(np.array(points)), torch.tensor(views), torch.tensor(tracks), detected * scale,
        max_shift=max_shift * scale,
    ) / scale
    for (image_id, index), xy in zip(where, refined.numpy()):
        reconstruction.image(image_id).points2D[index].xy = xy
    return {"observations": len(where), "median_shift_px": float((refined - detected).norm(dim=1).median()),
            "seconds": time.perf_counter() - start}

"""Where the cameras of a synth class sit, and how one view is rendered.

Training views sit on rings (equal azimuth steps, several elevations from below to above the
object, like MAD's camera every 15 degrees on rings along Z); test views look at the origin from
directions spread over the whole sphere, with a random roll about the viewing axis, at the same
distance. Lighting is fixed in the object frame (see ``raycast.Lighting``). Every random draw comes
from a stream of its own (``class_rng``), so that the output is a deterministic function of
(class name, seed, config).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from scipy import ndimage

from omnipose.core.geometry import intrinsics_from_fov, look_at, roll_camera, spherical_pose
from omnipose.data.synth.config import SynthConfig
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.figures import Figure
from omnipose.data.synth.raycast import Render, Scene, Stain, render

MASK_TOLERANCE = 1  # a pixel is anomalous where some channel differs by more than 1/255
MASK_MIN_REGION = 3
"""Connected groups of changed pixels smaller than this are left out of a defect's mask. A burr's box
can share the plane of the face it grows on; along that plane the ray caster's ties between the two
solids flip a sub-pixel sample here and there, leaving single pixels a few levels apart in lines
7-22 px from the visible defect. The benchmark's AUPRO weighs every region of a mask alike, so each
such speck counted as much as the defect (08Elephant at 400 px: 34 of 62 regions)."""


def class_rng(seed: int, class_name: str, *stream: int) -> np.random.Generator:
    """An independent random stream per (seed, class, purpose...): one view's retries never shift another's."""
    return np.random.default_rng([int(seed), zlib.crc32(class_name.encode()), *stream])


def camera_distance(figure: Figure, config: SynthConfig) -> float:
    """The configured distance, or the one at which the figure's bounding sphere fills ~85 % of the view."""
    if config.camera_distance is not None:
        return float(config.camera_distance)
    radius = float(np.linalg.norm(np.maximum(np.abs(figure.scene.lo), np.abs(figure.scene.hi)), axis=1).max())
    return round(radius / math.sin(0.5 * config.camera_angle_x) / 0.85, 3)


def training_poses(class_name: str, config: SynthConfig, distance: float) -> torch.Tensor:
    """Cameras on rings around the object, looking at the origin, world up +Z. Returns (N, 4, 4) float32.

    Rings sit at evenly spaced elevations in ``train_elevation_range_deg``; each gets a share of the
    views proportional to its circumference, at equal azimuth steps (a seeded phase, staggered by
    half a step from ring to ring). 96 views on 4 rings give MAD's camera every 15 degrees.
    """
    count = config.train_views
    rings = config.train_rings or round(math.sqrt(count / 2.5))
    rings = max(1, min(count, rings))
    low, high = config.train_elevation_range_deg
    elevations = np.radians(np.linspace(low, high, rings)) if rings > 1 else np.radians([0.5 * (low + high)])
    weights = np.cos(elevations) / np.cos(elevations).sum()
    per_ring = np.floor(weights * count).astype(int)
    remainder = np.argsort(-(weights * count - per_ring), kind="stable")[: count - per_ring.sum()]
    per_ring[remainder] += 1
    phase = class_rng(config.seed, class_name, 0).uniform(0, 2 * math.pi)
    poses = []
    for ring, (elevation, views) in enumerate(zip(elevations, per_ring)):
        step = 2 * math.pi / max(int(views), 1)
        for k in range(int(views)):
            azimuth = phase + (k + 0.5 * (ring % 2)) * step
            poses.append(spherical_pose(azimuth, float(elevation), distance))
    return torch.stack(poses)


def random_test_pose(rng: np.random.Generator, distance: float) -> torch.Tensor:
    """A camera looking at the origin from a direction uniform on the sphere, rolled at random. (4, 4) float32."""
    z = rng.uniform(-1.0, 1.0)
    azimuth = rng.uniform(0.0, 2 * math.pi)
    across = math.sqrt(max(0.0, 1.0 - z * z))
    eye = torch.tensor([across * math.cos(azimuth), across * math.sin(azimuth), z]) * distance
    return roll_camera(look_at(eye, torch.zeros(3)), float(rng.uniform(-math.pi, math.pi)))


def class_intrinsics(config: SynthConfig) -> torch.Tensor:
    """K (3, 3) float32 of every view, as ``load_transforms`` derives it from camera_angle_x."""
    return intrinsics_from_fov(config.camera_angle_x, config.size, config.size)


def render_scene(scene: Scene, c2w: torch.Tensor, config: SynthConfig, stain: Stain | None = None) -> Render:
    """Render at the config's size and lens. c2w: (4, 4); its float32 values are what gets rendered."""
    pose = np.asarray(torch.as_tensor(c2w, dtype=torch.float32), dtype=np.float64)
    K = class_intrinsics(config).numpy().astype(np.float64)
    return render(scene, pose, K, config.size, config.size, config.lighting, stain, config.antialias)


def render_defect_free(class_name: str, c2w: torch.Tensor, config: SynthConfig | None = None) -> np.ndarray:
    """The defect-free view of a class from a pose, exactly as ``generate_class`` draws it.

    c2w: (4, 4), e.g. from ``load_ground_truth_poses``. Returns (H, W, 3) uint8.
    """
    config = config or SynthConfig()
    return render_scene(build_figure(class_name).scene, c2w, config).to_uint8()


def anomaly_mask(defective: np.ndarray, defect_free: np.ndarray) -> np.ndarray:
    """Pixels where two uint8 renders differ by more than MASK_TOLERANCE in any channel, without specks.

    defective, defect_free: (H, W, 3) uint8. Returns (H, W) bool.
    """
    difference = np.abs(defective.astype(np.int16) - defect_free.astype(np.int16)).max(-1)
    return without_specks(difference > MASK_TOLERANCE)


def without_specks(mask: np.ndarray) -> np.ndarray:
    """``mask`` less its 8-connected groups of fewer than MASK_MIN_REGION pixels (its largest always stays)."""
    regions, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count < 2:
        return mask
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0  # the background: below any minimum, never the largest
    keep = sizes >= MASK_MIN_REGION
    keep[sizes.argmax()] = True
    return keep[regions]


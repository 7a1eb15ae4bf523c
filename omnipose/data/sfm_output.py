"""The class folder ``omnipose onboard`` writes from a reconstruction: its photos, ``transforms.json`` in the
object's frame (with the scene box around its points), the COLMAP model, the report and a picture of the cameras.
Used by ``sfm.onboard``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.data.colmap import colmap_to_c2w, object_frame, read_colmap_model, transforms_from_model

if TYPE_CHECKING:
    from omnipose.data.sfm import OnboardConfig


def scene_box(points: np.ndarray, margin: float = 0.1) -> list[list[float]] | None:
    """The box (2, 3) around the object's points (1st-99th percentile, widened by ``margin`` of its size)."""
    if len(points) < 10:
        return None
    low, high = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    pad = margin * (high - low).max()
    return [(low - pad).tolist(), (high + pad).tolist()]


def plot_cameras(path: Path, c2w: np.ndarray, points: np.ndarray, title: str) -> None:
    """A picture of the cameras (N, 4, 4) around the object's points (M, 3), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(6, 6))
    axes = figure.add_subplot(projection="3d")
    if len(points):
        shown = points[np.random.default_rng(0).permutation(len(points))[:5000]]
        axes.scatter(*shown.T, s=0.5, c="0.3")
    centres = c2w[:, :3, 3]
    reach = 0.15 * np.linalg.norm(centres, axis=1).mean()
    axes.quiver(*centres.T, *(-c2w[:, :3, 2] * reach).T, color="tab:red", linewidth=0.8)
    axes.quiver(*centres.T, *(c2w[:, :3, 1] * reach * 0.5).T, color="tab:blue", linewidth=0.6)
    axes.scatter(*centres.T, s=6, c="tab:red")
    extent = np.abs(np.concatenate([centres, points[:0]])).max()
    axes.set_xlim(-extent, extent), axes.set_ylim(-extent, extent), axes.set_zlim(-extent, extent)
    axes.set_xlabel("x"), axes.set_ylabel("y"), axes.set_zlabel("z (up)")
    axes.set_title(title, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def write_class(stage: Path, reconstruction, images_dir: Path, prepared: dict, stats: dict, config: OnboardConfig) -> dict:
    """Fill ``stage`` with the class folder of a pinhole reconstruction; returns the report."""
    (stage / "sparse" / "0").mkdir(parents=True)
    reconstruction.write(stage / "sparse" / "0")
    model = read_colmap_model(stage / "sparse" / "0")
    images = sorted(model.images.values(), key=lambda image: image.name)
    c2w = np.stack([colmap_to_c2w(image.qvec, image.tvec) for image in images])
    track_lengths = np.array([len(track) for track in model.tracks])
    solid = model.xyz[(model.error < 2.0) & (track_lengths >= 3)] if len(model.xyz) else model.xyz
    transform = object_frame(c2w, solid)
    meta = transforms_from_model(model, transform, prefix="train/good/")
    points = solid @ transform[:3, :3].T + transform[:3, 3]
    box = scene_box(points)
    if box is not None:
        meta["aabb"] = box
    (stage / "train" / "good").mkdir(parents=True)
    for image in images:
        shutil.copy2(images_dir / image.name, stage / "train" / "good" / image.name)
    atomic_write_json(stage / "transforms.json", meta)
    camera = next(iter(model.cameras.values()))
    fx, fy, cx, cy = camera.pinhole()
    report = {
        "images_registered": len(images),
        "images_given": len(images),
        "mean_reprojection_error_px": float(reconstruction.compute_mean_reprojection_error()),
        "points": int(len(model.xyz)),
        "mean_track_length": float(track_lengths.mean()) if len(track_lengths) else 0.0,
        "camera": {"model": camera.model, "width": camera.width, "height": camera.height,
                   "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "distortion": camera.distortion()},  # fmt: skip
        "features_on_object_only": bool(prepared["masked"]),
        **stats,
        "config": config.to_dict(),
    }
    atomic_write_json(stage / "onboard_report.json", report)
    frames = np.array([frame["transform_matrix"] for frame in meta["frames"]])
    plot_cameras(stage / "onboard_cameras.png", frames, points,
                 f"{len(images)} cameras, {len(points)} points, reprojection error "
                 f"{report['mean_reprojection_error_px']:.2f} px")  # fmt: skip
    return report

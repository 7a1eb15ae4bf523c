"""``omnipose synth --style photo``: the built-in classes photographed, as a stand-in for MAD-Real.

The same figures and defects as the sim style, path traced by Mitsuba 3 (``scalar_rgb``, CPU) in
rough plastic on a wooden table among clutter, under a softbox, a fill panel and a room with
windows; the training and the test photos come from two sessions under different lighting. The
camera has a longer lens and stands farther than the sim views, is held by hand (aim, distance and
roll jitter), focuses on the figure through a thin lens, and adds sensor noise and JPEG. Training
views cover a hemisphere above the table; their poses are written as a reconstruction leaves them:
each with about half a degree of error, all in an arbitrary frame and scale (see ``PhotoStyle``).

Masks are exact and come from geometry, not from pixel differences (a path-traced image is noisy,
and a defect's shadow and reflections fall on the table too): the exact ray caster, with the
photo camera's lens, marks the pixel centres that see a burr, that saw the removed part, or that
see a stained surface, less what the clutter hides. Everything is a deterministic function of
(class, seed, config): Mitsuba is seeded per view and its box filter keeps a pixel's samples to
that pixel, and a photo is one image block, so thread scheduling cannot change its noise.
"""
from __future__ import annotations

import dataclasses
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from omnipose.core.errors import DataError
from omnipose.core.files import read_json
from omnipose.core.geometry import intrinsics_from_fov, look_at, roll_camera, rotation_error_deg, so3_exp
from omnipose.data import GOOD, OnboardConfig, apply_similarity, camera_similarity, onboard_leaving_out
from omnipose.data.synth.config import TEST_TYPES, SynthConfig
from omnipose.data.synth.defects import Proposal, RenderedTestView, defect_not_placed, fit_defect
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.figures import AABB_MARGIN
from omnipose.data.synth.photo_config import PhotoConfig
from omnipose.data.synth.photo_scene import build_scene, figure_shapes, load, make_studio, mitsuba_module
from omnipose.data.synth.raycast import Render, render
from omnipose.data.synth.views import class_rng, render_scene

# Streams of class_rng, apart from the sim style's 0 (training rings) and 1 (test views).
_STUDIO, _TRAIN_POSES, _TEST_VIEWS, _RENDER_SEEDS, _SENSOR, _RECONSTRUCTION = 20, 21, 22, 23, 24, 25
ONBOARDED_MAX_ERROR_DEG = 1.0
"""Median rotation error, against the true poses, beyond which onboarded training poses are refused: a
reconstruction of these photos that registers them is 0.1-0.3 deg off; one many degrees off matched
the figure's sides with each other and would stand in for no user's poses."""
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


# ----------------------------------------------------------------------------- cameras
def figure_radius(figure_scene) -> float:
    """Radius of the figure's bounding sphere about the origin."""
    return float(np.linalg.norm(np.maximum(np.abs(figure_scene.lo), np.abs(figure_scene.hi)), axis=1).max())


def photo_distance(figure_scene, photo: PhotoConfig) -> float:
    """Distance at which the figure's bounding sphere spans ``photo.fill`` of the image width."""
    return round(figure_radius(figure_scene) / math.sin(0.5 * photo.camera_angle_x) / photo.fill, 3)


def _hand_held(azimuth: float, elevation: float, distance: float, rng: np.random.Generator, photo: PhotoConfig,
               roll_deg: float) -> torch.Tensor:  # fmt: skip
    """A camera near the ideal one: its distance, aim and roll vary a little. (4, 4) float32."""
    reach = distance * (1.0 + rng.uniform(-photo.distance_jitter, photo.distance_jitter))
    eye = reach * torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                math.sin(elevation)], dtype=torch.float32)  # fmt: skip
    aim = rng.normal(size=3)
    aim *= photo.aim_jitter * rng.uniform() ** (1 / 3) / max(float(np.linalg.norm(aim)), 1e-12)
    c2w = look_at(eye, torch.tensor(aim, dtype=torch.float32))
    return roll_camera(c2w, math.radians(float(rng.uniform(-roll_deg, roll_deg))))


def photo_training_poses(class_name: str, config: SynthConfig, distance: float) -> torch.Tensor:
    """Training cameras spread evenly over the hemisphere band of ``elevation_range_deg`` (a Fibonacci
    spiral: equal area per camera), each hand-held. Returns (N, 4, 4) float32."""
    photo = config.photo
    rng = class_rng(config.seed, class_name, _TRAIN_POSES)
    low, high = (math.sin(math.radians(v)) for v in photo.elevation_range_deg)
    phase = rng.uniform(0, 2 * math.pi)
    poses = []
    for index in range(config.train_views):
        elevation = math.asin(low + (high - low) * (index + 0.5) / config.train_views)
        poses.append(_hand_held(phase + index * _GOLDEN_ANGLE, elevation, distance, rng, photo, photo.roll_deg))
    return torch.stack(poses)


def photo_test_pose(rng: np.random.Generator, distance: float, photo: PhotoConfig) -> torch.Tensor:
    """A query camera from a random direction above the table (uniform in area), rolled up to four
    times a training camera's roll. (4, 4) float32."""
    low, high = (math.sin(math.radians(v)) for v in photo.elevation_range_deg)
    elevation = math.asin(rng.uniform(low, high))
    return _hand_held(rng.uniform(0, 2 * math.pi), elevation, distance, rng, photo, min(4 * photo.roll_deg, 45.0))


def reconstruction_error(true_c2w: torch.Tensor, rng: np.random.Generator, photo: PhotoConfig,
                         distance: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Training poses as a reconstruction leaves them, and the similarity T (4, 4) of its frame.

    Each camera turns by a random rotation of rms ``pose_rotation_noise_deg`` about its centre and
    its centre moves by ``pose_position_noise * distance`` per axis; then all of them are carried by
    one random similarity (any rotation, scale 0.3-3, an offset), as a reconstruction has its own
    frame and scale. true_c2w: (N, 4, 4). Returns written (N, 4, 4) and T, object frame -> written.
    """
    poses = np.asarray(true_c2w, np.float64).copy()
    sigma = math.radians(photo.pose_rotation_noise_deg) / math.sqrt(3.0)
    for pose in poses:
        pose[:3, :3] = so3_exp(torch.from_numpy(rng.normal(0.0, sigma, 3))).numpy() @ pose[:3, :3]
        pose[:3, 3] += rng.normal(0.0, photo.pose_position_noise * distance, 3)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    similarity = np.eye(4)
    similarity[:3, :3] = math.exp(rng.uniform(math.log(0.3), math.log(3.0))) * q
    similarity[:3, 3] = rng.normal(0.0, 2.0, 3)
    return apply_similarity(similarity, poses), similarity


# ----------------------------------------------------------------------------- the camera's image
def develop(linear: np.ndarray, rng: np.random.Generator, photo: PhotoConfig) -> np.ndarray:
    """What the camera makes of the light: exposure, sensor noise (shot and read), sRGB, JPEG.

    linear: (H, W, 3) float radiance. Returns (H, W, 3) uint8.
    """
    signal = np.maximum(linear * photo.exposure, 0.0)
    if photo.shot_noise > 0 or photo.read_noise > 0:
        spread = np.sqrt(photo.shot_noise**2 * np.minimum(signal, 4.0) + photo.read_noise**2)
        signal = signal + rng.normal(size=signal.shape) * spread
    signal = np.clip(signal, 0.0, 1.0)
    encoded = np.where(signal <= 0.0031308, 12.92 * signal, 1.055 * signal ** (1 / 2.4) - 0.055)
    image = (encoded * 255.0 + 0.5).astype(np.uint8)
    if photo.jpeg_quality is None:
        return image
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=photo.jpeg_quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def _sensor(mi, c2w: torch.Tensor, config: SynthConfig, focus: float, radius: float):
    """The Mitsuba camera of a view: OpenGL c2w (looking down -Z) turned into Mitsuba's (down +Z, +X left)."""
    photo = config.photo
    to_world = np.asarray(c2w, np.float64) @ np.diag([-1.0, 1.0, -1.0, 1.0])
    sensor = {
        "type": "perspective", "fov": math.degrees(photo.camera_angle_x), "fov_axis": "x",
        "to_world": mi.ScalarTransform4f(to_world.tolist()),
        "film": {"type": "hdrfilm", "width": config.size, "height": config.size, "pixel_format": "rgb",
                 "rfilter": {"type": "box"}},  # a pixel's samples stay in that pixel: sums are order-free
        "sampler": {"type": "independent", "sample_count": photo.samples_per_pixel},
    }  # fmt: skip
    if photo.defocus > 0:
        # Blur circle b * W pixels for a point R behind the focus d: b W = 2 a f_px R / (d (d + R)).
        aperture = photo.defocus * math.tan(0.5 * photo.camera_angle_x) * focus * (focus + radius) / radius
        sensor.update({"type": "thinlens", "aperture_radius": aperture, "focus_distance": focus})
    return load(mi, sensor)


def _depth(view: Render, c2w: torch.Tensor) -> np.ndarray:
    """Distance from the camera to what each pixel centre sees; inf where it sees nothing. (H, W)."""
    eye = np.asarray(c2w[:3, 3], np.float64)
    return np.where(view.solid >= 0, np.linalg.norm(view.points - eye, axis=-1), np.inf)


# ----------------------------------------------------------------------------- the style
class PhotoStyle:
    """The photo style of one class, as ``writer.generate_class`` draws it.

    ``frame`` is the similarity (4, 4) from the object frame to the frame the training poses are
    written in (the identity without ``reconstruction_poses``); the writer carries the test poses
    it publishes for evaluation into that frame too, so that they match a field trained on them.
    """

    reconstructed = True

    def __init__(self, class_name: str, config: SynthConfig):
        self.class_name, self.config, self.photo = class_name, config, config.photo
        self.mi = mitsuba_module(self.photo.threads)
        self.figure = build_figure(class_name)
        self.camera_angle_x = self.photo.camera_angle_x
        self.distance = photo_distance(self.figure.scene, self.photo)
        self.studio = make_studio(class_rng(config.seed, class_name, _STUDIO), self.figure.scene, self.photo)
        # The exact ray caster at the photo camera: masks, defect sizes and what the clutter hides.
        self.geometry = dataclasses.replace(config, camera_angle_x=self.camera_angle_x, antialias=False)
        self.intrinsics = intrinsics_from_fov(self.camera_angle_x, config.size, config.size).numpy().astype(np.float64)
        self._scenes: dict = {}  # the defect-free figure's scene per session
        self.frame = np.eye(4)
        self.onboarded: dict = {}  # what onboard made of the training photos (PhotoConfig.onboard_poses)

    # -- what the writer asks
    def marker(self) -> dict:
        onboarded = {"onboarded_training_poses": self.onboarded} if self.onboarded else {}
        return {"camera_distance": self.distance, "mask": "geometric (exact ray casting at pixel centres)", **onboarded}

    def train_poses(self) -> torch.Tensor:
        return photo_training_poses(self.class_name, self.config, self.distance)

    def written_train_poses(self, true_c2w: torch.Tensor, photos: Path, matcher=None) -> dict[int, torch.Tensor]:
        """The training poses to write, by index of ``true_c2w`` (N, 4, 4), of the photos rendered into
        ``photos`` as ``<index>.png``: the true ones, the true ones with a reconstruction's noise, or those
        ``onboard`` recovers from the photos (``matcher`` as ``onboard`` takes it), which leaves out the
        photos it cannot place and sets ``camera_angle_x`` to the focal length it found."""
        if self.photo.onboard_poses:
            return self._onboarded_poses(true_c2w, photos, matcher)
        if not self.photo.reconstruction_poses:
            return dict(enumerate(true_c2w))
        rng = class_rng(self.config.seed, self.class_name, _RECONSTRUCTION)
        written, self.frame = reconstruction_error(true_c2w, rng, self.photo, self.distance)
        return dict(enumerate(torch.tensor(written, dtype=torch.float32)))

    def _onboarded_poses(self, true_c2w: torch.Tensor, photos: Path, matcher) -> dict[int, torch.Tensor]:
        config = OnboardConfig(seed=self.config.seed, num_threads=self.photo.threads or -1)
        with tempfile.TemporaryDirectory(prefix=".onboard-", dir=photos.parent) as work:
            try:
                report, left_out = onboard_leaving_out(photos, Path(work) / "class", config, matcher=matcher)
            except DataError as error:
                raise DataError(f"onboarding the {len(true_c2w)} training photos of {self.class_name} failed: {error} "
                                "Make the class with the true poses and a reconstruction's noise instead "
                                "(without --onboard-poses).") from None
            meta = read_json(Path(work) / "class" / "transforms.json", DataError, "Run again.")
        self.onboarded = {"registered": report["images_registered"], "left_out": left_out,
                          "mean_reprojection_error_px": report["mean_reprojection_error_px"],
                          "matching": report["matching"]}  # fmt: skip
        written = {int(Path(frame["file_path"]).stem): torch.tensor(frame["transform_matrix"], dtype=torch.float32)
                   for frame in meta["frames"]}  # fmt: skip
        order = sorted(written)
        estimated = np.stack([written[k].numpy() for k in order]).astype(np.float64)
        self.frame = camera_similarity(np.asarray(true_c2w[order], np.float64), estimated)
        true_there = apply_similarity(self.frame, np.asarray(true_c2w[order], np.float64))
        errors = rotation_error_deg(torch.from_numpy(true_there[:, :3, :3]),
                                    torch.from_numpy(estimated[:, :3, :3])).numpy()  # fmt: skip
        self.onboarded["rotation_error_deg"] = {"median": float(np.median(errors)), "max": float(errors.max())}
        if np.median(errors) > ONBOARDED_MAX_ERROR_DEG:
            raise DataError(
                f"onboard placed the {len(order)} training photos of {self.class_name} {np.median(errors):.1f} deg off "
                f"their true poses in median ({errors.max():.0f} at worst): a wrong reconstruction (the figure's plain "
                "faces matched across its sides), not the poses a user would train on. Make the class with the true "
                "poses and a reconstruction's noise instead (without --onboard-poses)."
            )
        self.camera_angle_x = float(meta["camera_angle_x"])
        return {k: written[k] for k in order}

    def to_written_frame(self, c2w: torch.Tensor) -> torch.Tensor:
        return torch.tensor(apply_similarity(self.frame, np.asarray(c2w, np.float64)[None])[0], dtype=torch.float32)

    def aabb(self) -> list[list[float]]:
        """The figure's box with a margin, carried into the written frame (what a reconstruction
        that separated the object would bound)."""
        low, high = self.figure.scene.bounds()
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        corners = np.where(corners > 0, corners + AABB_MARGIN, corners - AABB_MARGIN)
        moved = corners @ self.frame[:3, :3].T + self.frame[:3, 3]
        return [[round(float(v), 4) for v in moved.min(0)], [round(float(v), 4) for v in moved.max(0)]]

    def render_train(self, index: int, c2w: torch.Tensor) -> np.ndarray:
        return self._photograph(c2w, None, False, ("train", index))

    def test_view(self, defect_type: str, index: int, max_views: int = 16) -> RenderedTestView:
        """A query photo of a type: a random view above the table that the clutter does not cut into,
        and for defect types a defect whose exact mask covers ``defect_area`` of the image."""
        type_id = TEST_TYPES.index(defect_type)
        attempts = 0
        for view in range(max_views):
            rng = class_rng(self.config.seed, self.class_name, _TEST_VIEWS, type_id, index, view)
            c2w = photo_test_pose(rng, self.distance, self.photo)
            attempts += 1
            good = render_scene(self.figure.scene, c2w, self.geometry)
            clutter = self.clutter_depth(c2w)
            if ((clutter < _depth(good, c2w)) & (good.solid >= 0)).any():
                continue  # a query shows the whole figure, so that its mask is all there is to find
            tag = ("test", type_id, index)
            if defect_type == GOOD:
                return RenderedTestView(defect_type, index, c2w, self._photograph(c2w, None, True, tag), None, attempts)

            def mask_of(proposal: Proposal) -> np.ndarray:
                return self.defect_mask(defect_type, proposal, good, c2w, clutter)

            c2w64 = c2w.numpy().astype(np.float64)
            proposal, mask, tries = fit_defect(self.figure, defect_type, good, rng, c2w64, self.geometry, mask_of)
            attempts += tries
            if proposal is not None:
                image = self._photograph(c2w, proposal, True, tag)
                return RenderedTestView(defect_type, index, c2w, image, mask, attempts)
        raise defect_not_placed(self.class_name, defect_type, index, self.geometry, max_views)

    def render_linear(self, c2w: torch.Tensor, proposal: Proposal | None = None, test: bool = False,
                      seed: int = 0) -> np.ndarray:  # fmt: skip
        """The light reaching the sensor (before exposure, noise and JPEG) from a pose (4, 4): the figure,
        or the defective figure of ``proposal``, under the training or the test session's lighting.
        Returns (H, W, 3) float32, linear."""
        if proposal is None:
            key = "test" if test else "train"
            if key not in self._scenes:
                self._scenes[key] = self._scene(figure_shapes(self.mi, self.figure.scene, self.photo), test)
            scene = self._scenes[key]
        else:
            scene = self._scene(figure_shapes(self.mi, proposal.scene, self.photo, proposal.stain), test)
        focus = float(np.linalg.norm(np.asarray(c2w[:3, 3], np.float64)))
        sensor = _sensor(self.mi, c2w, self.config, focus, figure_radius(self.figure.scene))
        return np.asarray(self.mi.render(scene, sensor=sensor, seed=seed, spp=self.photo.samples_per_pixel))

    def clutter_depth(self, c2w: torch.Tensor) -> np.ndarray:
        """Distance to the clutter seen at each pixel centre (inf where none). (H, W)."""
        scene = self.studio.clutter.scene
        if len(scene) == 0:
            return np.full((self.config.size, self.config.size), np.inf)
        view = render(scene, c2w, self.intrinsics, self.config.size, self.config.size, antialias=False)
        return _depth(view, c2w)

    def defect_mask(self, defect_type: str, proposal: Proposal, good: Render, c2w: torch.Tensor,
                    clutter: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Pixel centres that see the defect: a burr's solids, where the removed part was, a stained
        surface; less what the clutter hides. good: the exact render of the defect-free figure at
        ``c2w`` with the photo camera (``render_scene(scene, c2w, self.geometry)``). (H, W) bool."""
        clutter = self.clutter_depth(c2w) if clutter is None else clutter
        if defect_type == "Missing":
            return np.isin(good.solid, proposal.removed) & (clutter >= _depth(good, c2w))
        seen = render_scene(proposal.scene, c2w, self.geometry, proposal.stain)
        if defect_type == "Burrs":
            mask = seen.solid >= len(self.figure.scene)
        else:
            inside = proposal.stain.inside(seen.points.reshape(-1, 3)).reshape(seen.solid.shape)
            mask = (seen.solid >= 0) & inside
        return mask & (clutter >= _depth(seen, c2w))

    # -- helpers
    def _scene(self, figure: dict, test: bool):
        lighting = self.photo.lighting(test)
        return build_scene(self.mi, self.studio, figure, lighting, self.photo, self.distance, self.config.size)

    def _photograph(self, c2w: torch.Tensor, proposal: Proposal | None, test: bool, tag: tuple) -> np.ndarray:
        """Path trace a view and develop it: (H, W, 3) uint8."""
        seed = int(class_rng(self.config.seed, self.class_name, _RENDER_SEEDS, *_tag_numbers(tag)).integers(2**31))
        linear = self.render_linear(c2w, proposal, test, seed)
        return develop(linear, class_rng(self.config.seed, self.class_name, _SENSOR, *_tag_numbers(tag)), self.photo)


def _tag_numbers(tag: tuple) -> tuple[int, ...]:
    return tuple(0 if value == "train" else 1 if value == "test" else int(value) for value in tag)

"""Poses from photographs: structure from motion with pycolmap, written as a MAD-style class folder.

``onboard(images, out, config)`` runs SIFT features (on the object only, when masks or an alpha
channel say where it is), exhaustive matching for small sets and pairs chosen by a coarse match of every
pair for large ones, incremental mapping, each track's keypoints refined photometrically (``keypoint_refinement``)
and a final bundle adjustment, then writes::

    <out>/train/good/<name>.png     the registered photos (composited on white when they have alpha)
    <out>/transforms.json           Blender convention, in the object frame (colmap.object_frame)
    <out>/sparse/0/*.bin            the COLMAP model, in COLMAP's own frame
    <out>/onboard_report.json       what registered, reprojection error, the camera, timings
    <out>/onboard_cameras.png       the cameras around the object's points

Everything is built in a temporary folder beside ``out`` and renamed at the end, so a failed run
leaves nothing half-written. pycolmap is imported only here (``pip install -e ".[sfm]"``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from omnipose.core.config import Config
from omnipose.core.device import torch_threads
from omnipose.core.errors import ConfigError, DataError
from omnipose.core.files import atomic_write_json
from omnipose.core.image import dilate, read_image_rgba, read_mask, save_image
from omnipose.data.blender import IMAGE_SUFFIXES, natural_key
from omnipose.data.sfm_adjustment import checked_final_adjustment
from omnipose.data.sfm_checks import (
    FOLDED_PAIRS,
    FoldedMappingError,
    FoldedViewpointsError,
    MirroredPhotosError,
    OneSidedMappingError,
    PhotosRefusedError,
    UnexplainedPhotosError,
    UnregisteredPhotosError,
    blurred_photos,
    check_one_object,
    detail_kept,
    folded_photos,
    mirrored_photos,
    read_matches,
    unregistered_reasons,
    unseen_arc,
)
from omnipose.data.sfm_matching import learned_matches, match_features
from omnipose.data.sfm_output import write_class

CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV")


@dataclasses.dataclass
class OnboardConfig(Config):
    """Structure-from-motion settings; the defaults suit an object photographed all around on a plain background."""

    camera_model: str = "SIMPLE_PINHOLE"
    """COLMAP camera model shared by all photos. SIMPLE_PINHOLE (one focal length, principal point at the
    centre) is the simplest model and the right one for undistorted or rendered images; a radial term
    the data do not need only trades focal length for distortion. SIMPLE_RADIAL / OPENCV for real lenses
    (the images are then undistorted)."""
    focal: float | None = None
    """Known focal length in pixels of the photos as given (None: estimated by bundle adjustment)."""
    max_features: int = 8192
    """Most SIFT features per image."""
    first_octave: int | None = None
    """SIFT's first octave: -1 doubles the image before detection, -2 quadruples it. None: -1, or -2 for
    photos under 500 pixels wide, where -1 finds about a third as many features (lego at 200 px)."""
    init_min_inliers: int = 100
    """Fewest verified matches of the pair the reconstruction starts from (lower it for small images)."""
    max_image_size: int = 1600
    """Photos wider or taller than this are shrunk before feature extraction (COLMAP rescales the keypoints)."""
    guided_matching: bool = False
    """Match again along each pair's verified epipolar geometry, for more matches and longer tracks."""
    exhaustive_limit: int = 50
    """Up to this many photos every pair is matched; above it each photo is matched in full with the
    ``retrieval_neighbours`` photos a coarse match of every pair finds it shares most features with
    (``sfm_matching.coarse_pairs``): on the lego's 100 views at 400 px as accurate as every pair, in two thirds
    of the time (docs/RESULTS.md)."""
    retrieval_neighbours: int = 15
    """Pairs per photo when matching beyond ``exhaustive_limit``."""
    learned_neighbours: int = 10
    """With a learned matcher (``onboard(matcher=...)``, ``--matcher``), the pairs per photo matched, by
    thumbnail retrieval: learned matching costs about half a second a pair on a CPU."""
    min_images: int = 3
    """Fewest photos structure from motion can start from."""
    min_pose_inliers: int = 60
    """Fewest 2-D/3-D inliers for a photo to register in the first pass. COLMAP's 30 lets a few photos of
    repetitive objects register mirrored (180 degrees off) on wrong matches while the model is still
    small; 60 keeps them out on the lego views."""
    late_pose_inliers: int = 30
    """The same threshold in the second pass, which continues the first pass's model with the photos it
    left out: with most of the object's points known they now register correctly."""
    pose_max_error: float = 4.0
    """Largest reprojection error in pixels of an inlier when registering a photo."""
    blur_margin: float | None = 0.2
    """Refuse photos blurred beyond the others: a photo is named when the share of its detail that a
    1-pixel blur leaves (``detail_kept``: about 0.3-0.45 for sharp photos, 0.6 and more after motion
    or focus blur) exceeds the median photo's by this much (and ``BLURRED`` in any case). Blurred
    photos give few, imprecise keypoints. None: no check."""
    use_masks: bool = True
    """Extract features on the object only: from the alpha channel, or from the masks given."""
    mask_erosion: float = 0.0
    """Shrink the object's mask by this fraction of the photo's width before extracting features, so that
    keypoints on the silhouette (where the outline meets the background: no fixed 3-D point) are left out."""
    final_ba_iterations: int = 200
    """Iterations of the final, tightly converged global bundle adjustment (0: none)."""
    refine_keypoints: bool = True
    """Before the final bundle adjustment, move each track's keypoints so that the image around them agrees
    across its views (``keypoint_refinement``): detectors place a point a little differently in each view,
    which bounds the cameras' accuracy. Pinhole cameras of square pixels only (the default camera model)."""
    keypoint_max_shift: float = 2.0
    """Farthest in pixels, along each axis, the refinement moves a keypoint from where it was detected."""
    final_ba_loss_px: float = 0.35
    """Scale in pixels of the Cauchy loss of the final bundle adjustment (0: least squares), so that the few
    keypoints a pixel or more off (outlines, highlights) do not pull every camera a tenth of a degree."""
    max_unseen_arc_deg: float | None = 75.0
    """Widest arc around the object's vertical that a mapping's cameras may leave with no photo
    (``sfm_checks.unseen_arc_deg``); a mapping that leaves more is refused as folded and mapped again with the next
    seed. A near-symmetric object whose sides a mapping folded onto each other leaves its far side unseen (93 - 275
    degrees measured), photos all around it 15 - 37. None: photos from part of the way round (``--one-sided``)."""
    mapping_attempts: int = 3
    """Mappings tried, each with the next seed, while some photos sit across the object from the photos they
    match best (``mirrored_views``) or the final adjustment moves cameras by degrees (``FoldedMappingError``):
    wrong matches between the sides of a symmetric object (30 % of the verified pairs of the photographed
    stand-in with learned matches) mislead a mapping now and then (1 of 7 seeds there), and another start order
    avoids them. The last mapping's refusal is raised if every mapping is refused."""
    seed: int = 0
    """Seed of COLMAP's random sampling, so that a run repeats (the n-th mapping attempt uses seed + n)."""
    num_threads: int = -1
    """CPU threads for pycolmap and for torch (learned matches, keypoint refinement, the field check) (-1: all)."""
    verbose: bool = False
    """Show COLMAP's own log (several thousand lines for 100 photos); off: its warnings and errors only."""

    def check(self) -> None:
        if self.camera_model not in CAMERA_MODELS:
            raise ConfigError(f"camera_model must be one of {', '.join(CAMERA_MODELS)}, not {self.camera_model!r}.")
        if self.focal is not None and not self.focal > 0:
            raise ConfigError(f"focal must be a positive number of pixels, not {self.focal}.")
        if self.min_images < 2:
            raise ConfigError("min_images must be at least 2: structure from motion starts from a pair.")
        for name in ("max_features", "max_image_size", "exhaustive_limit", "retrieval_neighbours", "learned_neighbours",
                     "min_pose_inliers", "late_pose_inliers", "mapping_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.first_octave is not None and self.first_octave not in (-2, -1, 0, 1):
            raise ConfigError(f"first_octave must be -2, -1, 0, 1 or None, not {self.first_octave}.")
        if self.init_min_inliers < 8:
            raise ConfigError(f"init_min_inliers must be at least 8, not {self.init_min_inliers}.")
        if not 0 <= self.mask_erosion < 0.25:
            raise ConfigError(f"mask_erosion is a fraction of the width in [0, 0.25), not {self.mask_erosion}.")
        if self.blur_margin is not None and not 0 < self.blur_margin < 1:
            raise ConfigError(f"blur_margin is a share of detail in (0, 1), or None for no check; not {self.blur_margin}.")
        if not self.keypoint_max_shift > 0:
            raise ConfigError(f"keypoint_max_shift must be a positive number of pixels, not {self.keypoint_max_shift}.")
        if self.max_unseen_arc_deg is not None and not 0 < self.max_unseen_arc_deg <= 360:
            raise ConfigError(f"max_unseen_arc_deg is in (0, 360] degrees, or None for photos from part of the way "
                              f"round; not {self.max_unseen_arc_deg}.")
        if self.pose_max_error <= 0 or self.final_ba_iterations < 0 or self.final_ba_loss_px < 0:
            raise ConfigError("pose_max_error must be positive; final_ba_iterations, final_ba_loss_px >= 0.")


def import_pycolmap():
    """pycolmap, or an error that says how to install it."""
    try:
        import pycolmap
    except ImportError as error:
        raise DataError(
            f"omnipose onboard needs pycolmap ({error}). Install the extra: pip install -e \".[sfm]\" "
            "(or pip install pycolmap==4.2.1)."
        ) from None
    return pycolmap


@contextmanager
def colmap_log(verbose: bool):
    """COLMAP's INFO lines only when asked for: they would bury the few lines that matter to a user."""
    pycolmap = import_pycolmap()
    previous = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = pycolmap.logging.INFO if verbose else pycolmap.logging.WARNING
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


# ----------------------------------------------------------------------------- input photos
def list_photos(folder: str | Path) -> list[Path]:
    """The image files of a folder, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--images {folder} is not a folder: give the folder that holds the photos.")
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def prepare_photos(photos: list[Path], work: Path, masks: Path | None, config: OnboardConfig) -> dict:
    """Copy the photos to ``work/images`` as RGB PNGs (alpha composited on white) and their masks to
    ``work/masks`` in COLMAP's naming (``<name>.png``, 0 where features are ignored).

    Refuses too few photos, mixed sizes, duplicates and photos blurred beyond the others
    (``OnboardConfig.blur_margin``), naming them. Returns {'size': (w, h), 'masked': bool}.
    """
    if len(photos) < config.min_images:
        raise DataError(
            f"{len(photos)} photo(s) found, structure from motion needs at least {config.min_images}: photograph "
            "the object all around (30 or more views, each overlapping its neighbours)."
        )
    (work / "images").mkdir(parents=True)
    seen: dict[str, str] = {}
    kept: dict[str, float] = {}
    size, masked = None, False
    for photo in photos:
        rgba = read_image_rgba(photo)
        this_size = (rgba.shape[1], rgba.shape[0])
        if size is None:
            size = this_size
        elif this_size != size:
            raise DataError(
                f"{photo.name} is {this_size[0]}x{this_size[1]} but {photos[0].name} is {size[0]}x{size[1]}: "
                "onboard assumes one camera. Give photos of one size (and one zoom)."
            )
        digest = hashlib.sha1(np.ascontiguousarray((rgba * 255).round().astype(np.uint8)).tobytes()).hexdigest()
        if digest in seen:
            raise DataError(
                f"{photo.name} is a duplicate of {seen[digest]}: two identical photos give no parallax and break "
                "the reconstruction. Remove one of them."
            )
        seen[digest] = photo.name
        alpha = rgba[..., 3]
        rgb = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
        name = photo.with_suffix(".png").name
        save_image(work / "images" / name, rgb)
        mask = None
        if masks is not None:
            mask_file = next((m for m in (masks / photo.name, masks / name, masks / f"{photo.stem}_mask.png") if m.is_file()), None)
            if mask_file is None:
                raise DataError(f"no mask for {photo.name} in {masks}: give one mask per photo (same name), or leave out --masks.")
            mask = read_mask(mask_file, size=size)
        elif (alpha < 0.5).any():
            mask = alpha >= 0.5
        if mask is not None and config.use_masks:
            masked = True
            erosion = round(config.mask_erosion * size[0])
            if erosion > 0:
                mask = ~dilate(~mask, erosion)
            (work / "masks").mkdir(exist_ok=True)
            save_image(work / "masks" / f"{name}.png", np.repeat(mask[..., None].astype(np.float32), 3, -1))
        if config.blur_margin is not None:
            kept[photo.name] = detail_kept(rgb, mask if mask is not None and mask.any() else None, config.max_image_size)
    blurred = blurred_photos(kept, config.blur_margin) if kept else {}
    if blurred:
        median = float(np.median(list(kept.values())))
        listed = ", ".join(f"{name} ({value:.2f})" for name, value in blurred.items())
        raise DataError(
            f"{len(blurred)} photo(s) blurred beyond the others: {listed} of their detail survive a 1-pixel blur, "
            f"against {median:.2f} for the median photo (motion or focus blur gives few, imprecise keypoints). "
            "Retake or remove them (--keep-blurred, or OnboardConfig.blur_margin=None, keeps them)."
        )
    return {"size": size, "masked": masked}


# ----------------------------------------------------------------------------- structure from motion
def _reader_options(pycolmap, work: Path, prepared: dict, config: OnboardConfig):
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    if prepared["masked"]:
        reader.mask_path = work / "masks"
    if config.focal is not None:
        width, height = prepared["size"]
        base = [config.focal, width / 2, height / 2]
        params = {"SIMPLE_PINHOLE": base, "PINHOLE": [config.focal, *base], "SIMPLE_RADIAL": [*base, 0.0],
                  "OPENCV": [config.focal, *base, 0.0, 0.0, 0.0, 0.0]}[config.camera_model]  # fmt: skip
        reader.camera_params = ",".join(f"{v:.6f}" for v in params)
    return reader


def _mapper_options(pycolmap, config: OnboardConfig, fixed_focal: bool, min_inliers: int, seed: int):
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = config.num_threads
    options.random_seed = seed
    options.mapper.random_seed = seed
    options.mapper.abs_pose_min_num_inliers = min_inliers
    options.mapper.init_min_num_inliers = config.init_min_inliers
    options.mapper.abs_pose_max_error = config.pose_max_error
    options.ba_refine_focal_length = not fixed_focal
    options.mapper.abs_pose_refine_focal_length = not fixed_focal
    options.ba_refine_principal_point = False
    return options


def incremental_mapping(pycolmap, database: Path, images: Path, work: Path, count: int, config: OnboardConfig,
                        seed: int):
    """COLMAP's incremental mapping of the ``count`` photos in ``images`` into ``work`` (a new folder): a
    first pass at ``min_pose_inliers``, then, if photos were left out, a second pass at
    ``late_pose_inliers`` that continues the first pass's model. Returns (the model with the most photos,
    or None when no pair could start one; photos registered by the first pass)."""
    fixed_focal = config.focal is not None
    (work / "first_pass").mkdir(parents=True)
    options = _mapper_options(pycolmap, config, fixed_focal, config.min_pose_inliers, seed)
    models = pycolmap.incremental_mapping(database, images, work / "first_pass", options)
    if not models:
        return None, 0
    reconstruction = max(models.values(), key=lambda r: r.num_reg_images())
    first_pass = reconstruction.num_reg_images()
    if first_pass < count and config.late_pose_inliers < config.min_pose_inliers:
        (work / "first_model").mkdir()
        (work / "second_pass").mkdir()
        reconstruction.write(work / "first_model")
        options = _mapper_options(pycolmap, config, fixed_focal, config.late_pose_inliers, seed)
        options.multiple_models = False
        second = pycolmap.incremental_mapping(database, images, work / "second_pass", options,
                                              input_path=work / "first_model")  # fmt: skip
        if second:
            reconstruction = max(second.values(), key=lambda r: r.num_reg_images())
    return reconstruction, first_pass


def run_sfm(work: Path, prepared: dict, config: OnboardConfig, matcher=None, keep_drifted: bool = False) -> tuple[object, dict]:
    """Features, matches (SIFT, or ``matcher``'s: ``learned_matches``), mapping and final bundle
    adjustment in ``work``. Returns (reconstruction, stats). keep_drifted: where no mapping passed its
    checks but one's final adjustment moved cameras by degrees without diverging, return that one (the
    fewest cameras moved; 'mapping_kept' says which, 'moved_cameras' names them), its stats'
    'drift_refusal' holding the refusal, for the caller to judge; otherwise that refusal is raised."""
    pycolmap = import_pycolmap()
    pycolmap.set_random_seed(config.seed)
    database = work / "database.db"
    names = sorted(p.name for p in (work / "images").iterdir())
    timings = {}
    start = time.perf_counter()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = config.num_threads
    extraction.max_image_size = config.max_image_size
    extraction.sift.max_num_features = config.max_features
    extraction.sift.first_octave = config.first_octave if config.first_octave is not None else (
        -2 if prepared["size"][0] < 500 else -1)
    pycolmap.extract_features(database, work / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=_reader_options(pycolmap, work, prepared, config),
                              extraction_options=extraction)  # fmt: skip
    timings["features_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if matcher is None:
        strategy = match_features(pycolmap, database, work, len(names), config)
    else:
        strategy = learned_matches(pycolmap, database, work, prepared, config, matcher)
    timings["matching_s"] = time.perf_counter() - start
    pairs, features = read_matches(pycolmap, database)
    check_one_object(names, pairs, config.min_images)
    failure: DataError | None = None
    timings["mapping_s"], mirrored_mappings, least_drift = 0.0, 0, None
    for attempt in range(config.mapping_attempts):
        start = time.perf_counter()
        mapped, first_pass = incremental_mapping(
            pycolmap, database, work / "images", work / "mapping" / str(attempt), len(names), config, config.seed + attempt
        )
        timings["mapping_s"] += time.perf_counter() - start
        if mapped is None:
            reasons = unregistered_reasons(pairs, features, names, set())
            worst = "; ".join(f"{n}: {r}" for n, r in list(reasons.items())[:8])
            raise DataError(
                f"structure from motion found no initial pair among the {len(names)} photos ({worst}). Photograph the "
                "object with more overlap between neighbouring views (every 10-15 degrees), on a textured turntable or "
                "with the object filling more of the frame; or match with a learned matcher (--matcher xfeat)."
            )
        mirrored = mirrored_photos(pairs, mapped)
        if mirrored:
            mirrored_mappings += 1
            failure = MirroredPhotosError(mirrored, mirrored_mappings)
            continue
        registered = {image.name for image in mapped.images.values() if image.has_pose}
        if len(registered) < len(names):
            raise UnregisteredPhotosError(unregistered_reasons(pairs, features, names, registered), len(names))
        folded = folded_photos(mapped, work / "images")
        if len(folded) >= FOLDED_PAIRS:
            failure = FoldedViewpointsError(folded, attempt + 1)
            if attempt + 1 < config.mapping_attempts:
                warnings.warn(f"onboard: mapping {attempt + 1} put {len(folded)} pairs of photos that show different "
                              f"things at the same viewpoint ({', '.join(' and '.join(pair) for pair in list(folded)[:3])}):"
                              " folded; mapping again with the next seed.", stacklevel=3)  # fmt: skip
            continue
        if config.max_unseen_arc_deg is not None and (arc := unseen_arc(mapped)) > config.max_unseen_arc_deg:
            failure = OneSidedMappingError(arc, config.max_unseen_arc_deg, attempt + 1)
            if attempt + 1 < config.mapping_attempts:
                warnings.warn(f"onboard: mapping {attempt + 1} left {arc:.0f} deg around the object with no camera: "
                              "folded; mapping again with the next seed.", stacklevel=3)
            continue
        try:
            reconstruction, adjustment = checked_final_adjustment(pycolmap, mapped, work / "images", config)
        except FoldedMappingError as folded:
            failure = folded
            if folded.drifted is not None:
                moved = len(folded.drifted[1]["moved_cameras"])
                if least_drift is None or moved < least_drift[0]:
                    least_drift = (moved, attempt + 1, folded)
            if attempt + 1 < config.mapping_attempts:
                warnings.warn(f"onboard: the final adjustment of mapping {attempt + 1} moved cameras by degrees "
                              f"({', '.join(folded.cameras[:5])}): the mapping does not hold together; mapping again "
                              "with the next seed.", stacklevel=3)
            continue
        break
    else:
        if not (keep_drifted and least_drift is not None):
            raise failure
        _, kept_mapping, refusal = least_drift
        reconstruction, adjustment = refusal.drifted
        adjustment = {**adjustment, "mapping_kept": kept_mapping, "drift_refusal": str(refusal)}
    timings.update(adjustment.pop("timings"))
    stats = {"matching": strategy, "registered_first_pass": first_pass, "mapping_attempts": attempt + 1,
             **adjustment, "timings": timings}
    return reconstruction, stats


def undistort(pycolmap, reconstruction, work: Path) -> Path:
    """Undistort the images of a model with lens distortion into ``work/undistorted``; returns the
    folder holding images/ and sparse/ of the pinhole model."""
    (work / "distorted").mkdir()
    reconstruction.write(work / "distorted")
    out = work / "undistorted"
    pycolmap.undistort_images(out, work / "distorted", work / "images")
    return out


def onboard(images: str | Path, out: str | Path, config: OnboardConfig | None = None, masks: str | Path | None = None,
            matcher=None, field_check=None) -> dict:
    """Poses of the photos in ``images`` by structure from motion, written as a class folder at ``out``.

    masks: optional folder of object masks (same names as the photos; white = object); without it the
    photos' alpha channel, when they have one, says where the object is. matcher: a learned keypoint
    matcher (``omnipose.pose.make_matcher("xfeat")``: ``extract`` and ``match``) used instead of SIFT:
    it matches photos 15-30 degrees apart over repeating texture where SIFT finds a handful of matches.
    field_check: where every mapping was refused and one only because its final adjustment moved cameras by
    degrees (which a fold does, and so does an adjustment correcting cameras the mapping left off), a judge
    of that mapping (``omnipose.nerf.FieldCheck``): called with the class folder as it would be written, it
    returns a dict whose 'held' says whether the views hold together; the class is written where they do
    (the verdict in the report's 'field_check'), refused as before otherwise. None: refused. Photos it names
    as 'unexplained' (drawn far worse than the rest) are refused by name (``UnexplainedPhotosError``).
    Returns the report (also in ``out/onboard_report.json``). Nothing is left at ``out`` on failure.
    """
    config = config or OnboardConfig()
    with torch_threads(config.num_threads):
        return _onboard(images, Path(out), config, masks, matcher, field_check)


def _onboard(images: str | Path, out: Path, config: OnboardConfig, masks: str | Path | None, matcher,
             field_check) -> dict:  # fmt: skip
    """``onboard``'s work, on the threads its config allows."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} already exists and is not empty: give a new folder, or remove it first.")
    photos = list_photos(images)
    masks = Path(masks) if masks is not None else None
    if masks is not None and not masks.is_dir():
        raise DataError(f"--masks {masks} is not a folder: give the folder of the object masks, or leave it out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.onboard-", dir=out.parent))
    try:
        start = time.perf_counter()
        work, stage = temp / "work", temp / "class"
        prepared = prepare_photos(photos, work, masks, config)
        with colmap_log(config.verbose):
            reconstruction, stats = run_sfm(work, prepared, config, matcher, keep_drifted=field_check is not None)
        drift_refusal = stats.pop("drift_refusal", None)
        images_dir = work / "images"
        if any(camera.model.name not in ("SIMPLE_PINHOLE", "PINHOLE") for camera in reconstruction.cameras.values()):
            pycolmap = import_pycolmap()
            camera = next(iter(reconstruction.cameras.values()))
            stats["camera_before_undistortion"] = {"model": camera.model.name, "params": camera.params.tolist()}
            stats["focal_before_undistortion"] = float(camera.params[0])
            with colmap_log(config.verbose):
                undistorted = undistort(pycolmap, reconstruction, work)
            reconstruction = pycolmap.Reconstruction(undistorted / "sparse")
            images_dir = undistorted / "images"
            stats["undistorted"] = True
        report = write_class(stage, reconstruction, images_dir, prepared, stats, config)
        if drift_refusal is not None:
            report["field_check"] = verdict = field_check(stage)
            moved = sorted(stats["moved_cameras"])
            if not verdict["held"]:
                raise FoldedMappingError(
                    moved, f"{drift_refusal} A field trained on that mapping's photos "
                    f"({verdict['steps']} steps) draws them at {verdict['median_object_psnr_db']:.1f} dB over the object, "
                    f"under the {verdict['min_psnr_db']:.1f} dB of photos whose cameras hold together.")
            if verdict.get("unexplained"):
                raise UnexplainedPhotosError(verdict["unexplained"], verdict["unexplained_gap_db"])
            warnings.warn(f"onboard: the final adjustment moved cameras by degrees ({', '.join(moved[:5])}); "
                          f"kept, as a field trained on the photos draws them at {verdict['median_object_psnr_db']:.1f} "
                          "dB over the object, none far under the others: the cameras hold together.", stacklevel=2)
        report["images_given"] = len(photos)
        report["timings"]["total_s"] = time.perf_counter() - start
        atomic_write_json(stage / "onboard_report.json", report)
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        return report
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def onboard_leaving_out(images: str | Path, out: str | Path, config: OnboardConfig | None = None,
                        masks: str | Path | None = None, matcher=None, retries: int = 1,
                        field_check=None) -> tuple[dict, list[str]]:
    """``onboard`` doing what a user does when it refuses single photos (they did not register, or
    registered mirrored): run again without them, at most ``retries`` times. ``images`` is left as it
    is (the others are linked into a temporary folder). Returns the report and the photos left out."""
    images, left_out = Path(images), []
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onboard-photos-", dir=Path(out).parent) as kept:
        for attempt in range(retries + 1):
            try:
                return onboard(kept if left_out else images, out, config, masks, matcher, field_check=field_check), left_out
            except PhotosRefusedError as error:
                if attempt == retries:
                    raise
                warnings.warn(f"onboard: {error} Running again without them.", stacklevel=2)
                left_out += error.photos
                for photo in list_photos(images):
                    link = Path(kept) / photo.name
                    if photo.name in left_out:
                        link.unlink(missing_ok=True)
                    elif not link.exists():
                        os.symlink(photo.resolve(), link)
    raise AssertionError("unreachable")

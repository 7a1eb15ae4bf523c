"""Writing a synth class in exactly the MAD-Sim layout, and reading back what was written.

Per class::

    <out>/<class>/transforms.json          training poses, Blender/NeRF format, + "aabb"
    <out>/<class>/train/good/<n>.png        defect-free training views (RGB, on white unless --backdrop)
    <out>/<class>/test/{good,Burrs,Missing,Stains}/<n>.png   unposed query views
    <out>/<class>/ground_truth/<Type>/<n>_mask.png          uint8 0/255, 255 = anomalous
    <out>/<class>/synth.json                 marker with the generator settings
    <out>/ground_truth_poses/<class>.json    {"Type/n": c2w} for evaluation only (outside the class)

The photo style (``--style photo``, MAD-Real conditions) writes the same files; its transforms.json
holds the training poses as a reconstruction leaves them (in its own frame and scale), and the test
poses above are in that frame too. The true poses of both, in the object frame, and the similarity
between the frames go to ``<out>/ground_truth_poses/<class>_true_frame.json``, for benchmarks only.
How a style draws is written once per style (``SimStyle``, ``photo.PhotoStyle``); this module
writes any of them.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.errors import DataError
from omnipose.core.files import atomic_write_json, read_json
from omnipose.core.image import read_mask, save_image
from omnipose.data import GOOD
from omnipose.data.synth.config import TEST_TYPES, SynthConfig, SynthError
from omnipose.data.synth.defects import RenderedTestView, make_test_view
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.photo import PhotoStyle
from omnipose.data.synth.preview import write_preview
from omnipose.data.synth.views import (
    MASK_MIN_REGION,
    MASK_TOLERANCE,
    camera_distance,
    render_scene,
    training_poses,
    without_specks,
)

GROUND_TRUTH_POSES = "ground_truth_poses"
TRUE_FRAME_SUFFIX = "_true_frame.json"
MARKER = "synth.json"
FORMAT_VERSION = 1


def _check_target(folder: Path, overwrite: bool) -> None:
    """Refuse to replace a class folder that ``omnipose synth`` did not make, unless told to."""
    if folder.exists() and not (folder / MARKER).is_file() and not overwrite:
        raise SynthError(
            f"{folder} exists and was not made by `omnipose synth` (no {MARKER} in it); it may be a real "
            "dataset. Choose another --out, or pass --overwrite to replace it."
        )


def _write_test_view(stage: Path, view: RenderedTestView) -> str:
    key = f"{view.defect_type}/{view.index}"
    save_image(stage / "test" / view.defect_type / f"{view.index}.png", view.image)
    if view.mask is not None:
        mask_path = stage / "ground_truth" / view.defect_type / f"{view.index}_mask.png"
        save_image(mask_path, view.mask.astype(np.uint8) * 255)
    return key


def _pose_list(c2w: torch.Tensor) -> list[list[float]]:
    """A float32 pose as JSON numbers that read back to the same float32 values."""
    return [[float(v) for v in row] for row in c2w.to(torch.float32).tolist()]


class SimStyle:
    """The sim style of one class: exact ray casting on white, poses written as they are."""

    reconstructed = False

    def __init__(self, class_name: str, config: SynthConfig):
        self.class_name, self.config = class_name, config
        self.figure = build_figure(class_name)
        self.camera_angle_x = config.camera_angle_x
        self.distance = camera_distance(self.figure, config)

    def marker(self) -> dict:
        return {"camera_distance": self.distance, "mask_tolerance": MASK_TOLERANCE, "mask_min_region": MASK_MIN_REGION}

    def train_poses(self) -> torch.Tensor:
        return training_poses(self.class_name, self.config, self.distance)

    def written_train_poses(self, true_c2w: torch.Tensor, photos: Path, matcher=None) -> dict[int, torch.Tensor]:
        return dict(enumerate(true_c2w))

    def to_written_frame(self, c2w: torch.Tensor) -> torch.Tensor:
        return c2w

    def aabb(self) -> list[list[float]]:
        return self.figure.aabb()

    def render_train(self, index: int, c2w: torch.Tensor) -> np.ndarray:
        return render_scene(self.figure.scene, c2w, self.config).to_uint8()

    def test_view(self, defect_type: str, index: int) -> RenderedTestView:
        return make_test_view(self.class_name, defect_type, index, self.config, self.distance)


def generate_class(out_root: str | Path, class_name: str, config: SynthConfig | None = None, matcher=None) -> Path:
    """Render one class in the MAD-Sim layout under ``out_root``; returns the class folder.

    matcher: the keypoint matcher ``onboard`` uses when the photo style recovers its training poses by
    structure from motion (``PhotoConfig.onboard_poses``; ``omnipose.pose.make_matcher("xfeat")``);
    None: COLMAP's SIFT.

    The class is built in ``<out_root>/.synth-staging/<class>`` and moved into place when complete,
    so an interrupted run never leaves a half-made class where readers would find it. Its
    ground-truth test poses go to ``<out_root>/ground_truth_poses/<class>.json``.
    """
    config = config or SynthConfig()
    config.validate()
    out_root = Path(out_root)
    folder = out_root / class_name
    _check_target(folder, config.overwrite)
    style = PhotoStyle(class_name, config) if config.style == "photo" else SimStyle(class_name, config)
    staging_root = out_root / ".synth-staging"
    stage = staging_root / class_name
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)

    train = style.train_poses()
    total = len(train) + config.test_views_per_type * len(TEST_TYPES)
    bar = tqdm(total=total, desc=f"synth {class_name}", disable=not config.progress, leave=False)
    names = [f"train/{GOOD}/{index}.png" for index in range(len(train))]
    for index, (name, c2w) in enumerate(zip(names, train)):
        save_image(stage / name, style.render_train(index, c2w))
        bar.update()
    bar.set_postfix_str("training poses")  # onboarding them, in the photo style, takes minutes
    written = style.written_train_poses(train, stage / "train" / GOOD, matcher)
    bar.set_postfix_str("")
    for index in set(range(len(train))) - set(written):  # photos a reconstruction could not place
        (stage / names[index]).unlink()
    frames = [{"file_path": names[index], "transform_matrix": _pose_list(pose)} for index, pose in written.items()]
    true_train = {names[index]: _pose_list(train[index]) for index in written}
    atomic_write_json(
        stage / "transforms.json",
        {"camera_angle_x": style.camera_angle_x, "aabb": style.aabb(), "frames": frames},
    )
    poses, true_test, previews = {}, {}, []
    for defect_type in TEST_TYPES:
        (stage / "test" / defect_type).mkdir(parents=True, exist_ok=True)
        for index in range(config.test_views_per_type):
            view = style.test_view(defect_type, index)
            key = _write_test_view(stage, view)
            poses[key], true_test[key] = _pose_list(style.to_written_frame(view.c2w)), _pose_list(view.c2w)
            if config.preview:
                previews.append(view)
            bar.update()
    bar.close()
    atomic_write_json(
        stage / MARKER,
        {
            "generator": "omnipose synth", "format_version": FORMAT_VERSION, "class": class_name,
            **style.marker(), "settings": config.settings(),
        },
    )
    # Swap the finished class in, then publish its poses (outside the class folder: query images are unposed).
    if folder.exists():
        shutil.rmtree(folder)
    stage.rename(folder)
    try:
        staging_root.rmdir()  # only when empty: another run may be staging a class beside this one
    except OSError:
        pass
    atomic_write_json(out_root / GROUND_TRUTH_POSES / f"{class_name}.json", poses)
    true_frame = out_root / GROUND_TRUTH_POSES / f"{class_name}{TRUE_FRAME_SUFFIX}"
    if style.reconstructed:
        atomic_write_json(true_frame, {
            "similarity": [[float(v) for v in row] for row in style.frame],
            "train": true_train, "test": true_test,
        })  # fmt: skip
    elif true_frame.exists():
        true_frame.unlink()  # left by a photo class of the same name
    if config.preview:
        write_preview(out_root / f"preview_{class_name}.png", folder, previews)
    return folder


def ensure_class(out_root: str | Path, class_name: str, config: SynthConfig, matcher=None) -> set[str]:
    """Make a class unless one made by ``omnipose synth`` with these settings is already there.

    A class made with other settings (say another size or fewer test views) is made again; a
    folder that synth did not make is refused by ``generate_class``. Returns what changed, so that
    callers drop only what they derived from it: {} when the class was kept, {"test"} when only the
    test views may differ (predictions are stale, a trained field is not), {"train", "test"} when
    the training views changed too (generation is deterministic, so unchanged settings give the same
    bytes). A class whose masks were written with their specks (before ``MASK_MIN_REGION``) is kept, its
    masks brought up to date where they lie.
    """
    folder = Path(out_root) / class_name
    if (folder / MARKER).is_file() and read_synth_config(folder).settings() == config.settings():
        if _masks_brought_up_to_date(folder):
            return set()
    before = _training_fingerprint(folder)
    generate_class(out_root, class_name, config, matcher)
    return {"test"} if before is not None and before == _training_fingerprint(folder) else {"train", "test"}


def _masks_brought_up_to_date(folder: Path) -> bool:
    """Take the specks out of the masks of a sim class written before ``MASK_MIN_REGION``; False when the
    class must be made again instead (written with a larger minimum than today's).

    Nothing else changed with it: the images are the same bytes, and the old masks less their specks are
    exactly what the generator writes now, so evaluation is all that has to be run again.
    """
    marker = read_json(folder / MARKER, DataError, "Regenerate the class with `omnipose synth`.")
    if "mask_tolerance" not in marker:  # the photo style's masks are geometric: no specks to take out
        return True
    written = marker.get("mask_min_region", 1)
    if written > MASK_MIN_REGION:
        return False
    if written < MASK_MIN_REGION:
        for path in sorted((folder / "ground_truth").rglob("*_mask.png")):
            mask = read_mask(path)
            save_image(path, without_specks(mask).astype(np.uint8) * 255)
        atomic_write_json(folder / MARKER, {**marker, "mask_min_region": MASK_MIN_REGION})
    return True


def _training_fingerprint(folder: Path) -> str | None:
    """SHA-256 of a class's transforms.json and training images, or None when it has none."""
    files = sorted((folder / "train").rglob("*.png")) if (folder / "transforms.json").is_file() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in [folder / "transforms.json", *files]:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def generate_dataset(out_root: str | Path, config: SynthConfig | None = None, matcher=None) -> list[Path]:
    """Render every class the config names (all SYNTH_CLASSES by default); returns the class folders.
    matcher: as ``generate_class`` takes it."""
    config = config or SynthConfig()
    config.validate()
    names = config.class_names()
    for name in names:  # refuse before rendering anything
        _check_target(Path(out_root) / name, config.overwrite)
    quiet = not config.progress or len(names) < 2
    names = tqdm(names, desc="synth classes", disable=quiet)
    return [generate_class(out_root, name, config, matcher) for name in names]


def read_synth_config(class_folder: str | Path) -> SynthConfig:
    """The settings a synth class was generated with (from its synth.json), e.g. to re-render views.

    Settings this version does not know (written by another version) are ignored.
    """
    path = Path(class_folder) / MARKER
    if not path.is_file():
        raise DataError(f"{path} not found: {class_folder} was not made by `omnipose synth`.")
    settings = read_json(path, DataError, "Regenerate the class with `omnipose synth`.")["settings"]
    return SynthConfig.from_dict({**settings, "progress": False}, drop_unknown=True)


def load_ground_truth_poses(root: str | Path, class_name: str) -> dict[str, torch.Tensor]:
    """Ground-truth poses of a synth class's test views: {"Type/stem": c2w (4, 4) float32}.

    For evaluation and benchmarks only; the dataset itself gives query images no poses, as MAD.
    """
    path = Path(root) / GROUND_TRUTH_POSES / f"{class_name}.json"
    if not path.is_file():
        raise DataError(
            f"no ground-truth test poses at {path}. They exist only for datasets made by `omnipose synth` "
            f"(MAD ships none); regenerate with `omnipose synth --out {root} --classes {class_name}`."
        )
    poses = {}
    for key, matrix in read_json(path, DataError, "Regenerate the class with `omnipose synth`.").items():
        pose = torch.tensor(matrix, dtype=torch.float32)
        if pose.shape != (4, 4) or not torch.isfinite(pose).all():
            raise DataError(f"pose '{key}' in {path} is not a finite 4x4 matrix; regenerate the class.")
        poses[key] = pose
    return poses


def load_true_poses(root: str | Path, class_name: str) -> dict:
    """The true poses of a photo-style class, for benchmarks: {"similarity": T (4, 4) float64,
    object frame -> the written frame; "train": {"train/good/n.png": c2w}; "test": {"Type/n": c2w}},
    the poses (4, 4) float32 in the object frame. ``apply_similarity(T, true)`` is near the written poses.
    """
    path = Path(root) / GROUND_TRUTH_POSES / f"{class_name}{TRUE_FRAME_SUFFIX}"
    if not path.is_file():
        raise DataError(
            f"no true poses at {path}: only photo-style classes have them; make one with "
            f"`omnipose synth --style photo --out {root} --classes {class_name}`."
        )
    data = read_json(path, DataError, "Regenerate the class with `omnipose synth --style photo`.")
    out = {"similarity": np.asarray(data["similarity"], np.float64)}
    for part in ("train", "test"):
        out[part] = {key: torch.tensor(matrix, dtype=torch.float32) for key, matrix in data[part].items()}
    return out

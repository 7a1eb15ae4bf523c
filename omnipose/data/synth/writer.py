"""Writing a synth class in exactly the MAD-Sim layout, and reading back what was written.

Per class::

    <out>/<class>/transforms.json          training poses, Blender/NeRF format, + "aabb"
    <out>/<class>/train/good/<n>.png        defect-free training views (white background, RGB)
    <out>/<class>/test/{good,Burrs,Missing,Stains}/<n>.png   unposed query views
    <out>/<class>/ground_truth/<Type>/<n>_mask.png          uint8 0/255, 255 = anomalous
    <out>/<class>/synth.json                 marker with the generator settings
    <out>/ground_truth_poses/<class>.json    {"Type/n": c2w} for evaluation only (outside the class)
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
from omnipose.core.image import save_image
from omnipose.data import GOOD
from omnipose.data.synth.config import TEST_TYPES, SynthConfig, SynthError
from omnipose.data.synth.defects import RenderedTestView, make_test_view
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.preview import write_preview
from omnipose.data.synth.views import MASK_TOLERANCE, camera_distance, render_scene, training_poses

GROUND_TRUTH_POSES = "ground_truth_poses"
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


def generate_class(out_root: str | Path, class_name: str, config: SynthConfig | None = None) -> Path:
    """Render one class in the MAD-Sim layout under ``out_root``; returns the class folder.

    The class is built in ``<out_root>/.synth-staging/<class>`` and moved into place when complete,
    so an interrupted run never leaves a half-made class where readers would find it. Its
    ground-truth test poses go to ``<out_root>/ground_truth_poses/<class>.json``.
    """
    config = config or SynthConfig()
    config.validate()
    out_root = Path(out_root)
    folder = out_root / class_name
    _check_target(folder, config.overwrite)
    figure = build_figure(class_name)
    distance = camera_distance(figure, config)
    staging_root = out_root / ".synth-staging"
    stage = staging_root / class_name
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)

    train = training_poses(class_name, config, distance)
    total = len(train) + config.test_views_per_type * len(TEST_TYPES)
    bar = tqdm(total=total, desc=f"synth {class_name}", disable=not config.progress, leave=False)
    frames = []
    for index, c2w in enumerate(train):
        save_image(stage / "train" / GOOD / f"{index}.png", render_scene(figure.scene, c2w, config).to_uint8())
        frames.append({"file_path": f"train/{GOOD}/{index}.png", "transform_matrix": _pose_list(c2w)})
        bar.update()
    atomic_write_json(
        stage / "transforms.json",
        {"camera_angle_x": config.camera_angle_x, "aabb": figure.aabb(), "frames": frames},
    )
    poses, previews = {}, []
    for defect_type in TEST_TYPES:
        (stage / "test" / defect_type).mkdir(parents=True, exist_ok=True)
        for index in range(config.test_views_per_type):
            view = make_test_view(class_name, defect_type, index, config, distance)
            poses[_write_test_view(stage, view)] = _pose_list(view.c2w)
            if config.preview:
                previews.append(view)
            bar.update()
    bar.close()
    atomic_write_json(
        stage / MARKER,
        {
            "generator": "omnipose synth", "format_version": FORMAT_VERSION, "class": class_name,
            "camera_distance": distance, "mask_tolerance": MASK_TOLERANCE, "settings": config.settings(),
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
    if config.preview:
        write_preview(out_root / f"preview_{class_name}.png", folder, previews)
    return folder


def ensure_class(out_root: str | Path, class_name: str, config: SynthConfig) -> set[str]:
    """Make a class unless one made by ``omnipose synth`` with these settings is already there.

    A class made with other settings (say another size or fewer test views) is made again; a
    folder that synth did not make is refused by ``generate_class``. Returns what changed, so that
    callers drop only what they derived from it: {} when the class was kept, {"test"} when only the
    test views may differ (predictions are stale, a trained field is not), {"train", "test"} when
    the training views changed too (generation is deterministic, so unchanged settings give the same
    bytes).
    """
    folder = Path(out_root) / class_name
    if (folder / MARKER).is_file() and read_synth_config(folder).settings() == config.settings():
        return set()
    before = _training_fingerprint(folder)
    generate_class(out_root, class_name, config)
    return {"test"} if before is not None and before == _training_fingerprint(folder) else {"train", "test"}


def _training_fingerprint(folder: Path) -> str | None:
    """SHA-256 of a class's transforms.json and training images, or None when it has none."""
    files = sorted((folder / "train").rglob("*.png")) if (folder / "transforms.json").is_file() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in [folder / "transforms.json", *files]:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def generate_dataset(out_root: str | Path, config: SynthConfig | None = None) -> list[Path]:
    """Render every class the config names (all SYNTH_CLASSES by default); returns the class folders."""
    config = config or SynthConfig()
    config.validate()
    names = config.class_names()
    for name in names:  # refuse before rendering anything
        _check_target(Path(out_root) / name, config.overwrite)
    quiet = not config.progress or len(names) < 2
    return [generate_class(out_root, name, config) for name in tqdm(names, desc="synth classes", disable=quiet)]


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


"""The MAD-Sim / MAD-Real layout: classes, training views and test images with their masks.

MAD-Sim layout (as shipped; we never rename or modify a user's dataset)::

    <root>/<class>/transforms.json            training poses (Blender/NeRF format; or a COLMAP model in sparse/0)
    <root>/<class>/train/good/<n>.png         defect-free training views (n not zero-padded)
    <root>/<class>/test/{good,Burrs,Missing,Stains}/<n>.png   query images, no poses
    <root>/<class>/ground_truth/<Type>/<n>_mask.png           single channel, > 0 is anomalous

MAD-Real follows the same idea; its test images have no poses either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omnipose.core.errors import DataError
from omnipose.core.files import read_json
from omnipose.data.blender import IMAGE_SUFFIXES, PosedImages, load_transforms, natural_key

MAD_CLASSES = (
    "01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird", "07Owl", "08Sabertooth",
    "09Swan", "10Sheep", "11Pig", "12Zalika", "13Pheonix", "14Elephant", "15Parrot", "16Cat",
    "17Scorpion", "18Obesobeso", "19Bear", "20Puppy",
)  # fmt: skip
DEFECT_TYPES = ("Burrs", "Missing", "Stains")
GOOD = "good"

@dataclass
class QueryItem:
    """One test image of a MAD class: its file, defect type and mask (None when good)."""

    image_path: Path
    defect_type: str
    mask_path: Path | None

    @property
    def name(self) -> str:
        """'Type/stem', the key predictions and scores are stored under."""
        return f"{self.defect_type}/{self.image_path.stem}"

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != GOOD


@dataclass
class MADClass:
    """Paths of one class of a MAD-format dataset (MAD-Sim, MAD-Real, or ``omnipose synth``)."""

    root: Path
    name: str
    transforms_path: Path
    train_images: list[Path]
    test_items: list[QueryItem] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def colmap_path(self) -> Path:
        """Where a COLMAP sparse model of the training views may stand in for transforms.json."""
        return self.folder / "sparse" / "0"

    def load_train_views(self, size=None, background=1.0, progress=True, backdrop=True) -> PosedImages:
        """Posed training views from transforms.json (frames under train/ when it lists more), or
        else from a COLMAP model in sparse/0 whose image names are those of train/good/ (``backdrop``:
        as ``load_transforms``)."""
        if not self.transforms_path.is_file() and (self.colmap_path / "images.bin").is_file():
            from omnipose.data.colmap import load_colmap

            return load_colmap(self.colmap_path, self.folder / "train" / GOOD, size, background, progress, backdrop)
        if not self.transforms_path.is_file():
            raise DataError(
                f"class {self.name} has no transforms.json at {self.transforms_path}: training the radiance "
                "field needs posed training views. MAD-Sim ships one per class; for your own photos, run "
                "omnipose onboard, or put a COLMAP sparse model in sparse/0."
            )
        meta = read_json(self.transforms_path, DataError, "Re-export the class's poses (Blender/NeRF transforms.json format).")
        frames = meta.get("frames") if isinstance(meta, dict) else None
        has_train = isinstance(frames, list) and any(isinstance(f, dict) and "train/" in str(f.get("file_path", "")) for f in frames)
        return load_transforms(
            self.transforms_path, size=size, background=background,
            frame_filter="train/" if has_train else None, progress=progress, backdrop=backdrop,
        )


def list_classes(root: str | Path) -> list[str]:
    """Class folders under a MAD-format root (folders holding train/ or test/), sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def open_mad_class(root: str | Path, class_name: str, require_masks: bool = True) -> MADClass:
    """Index one class of a MAD-format dataset, checking its layout.

    Raises DataError for a missing root or class (listing the classes found), a defect image
    without its mask (when ``require_masks``), or an empty class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset root {root} does not exist. Download MAD with `omnipose download mad-sim --to {root}` "
            f"or make a built-in one with `omnipose synth --out {root}`."
        )
    folder = root / class_name
    if not folder.is_dir():
        found = list_classes(root)
        hint = f"classes found there: {', '.join(found)}" if found else "no class folders were found there"
        raise DataError(f"class '{class_name}' not found under {root}; {hint}.")

    train_dir = folder / "train" / GOOD
    train_images = _image_files(train_dir) if train_dir.is_dir() else []
    test_items: list[QueryItem] = []
    test_dir = folder / "test"
    if test_dir.is_dir():
        for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            for image_path in _image_files(type_dir):
                mask_path = None
                if type_dir.name != GOOD:
                    mask_path = folder / "ground_truth" / type_dir.name / f"{image_path.stem}_mask.png"
                    if require_masks and not mask_path.is_file():
                        raise DataError(
                            f"defect image {image_path} has no mask: expected {mask_path}. "
                            "Every test/<Type>/<n>.png needs ground_truth/<Type>/<n>_mask.png."
                        )
                test_items.append(QueryItem(image_path, type_dir.name, mask_path))
    if not train_images and not test_items:
        raise DataError(f"class folder {folder} holds neither train/good/ images nor test/<Type>/ images.")
    return MADClass(root, class_name, folder / "transforms.json", train_images, test_items)

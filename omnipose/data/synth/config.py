"""What ``omnipose synth`` makes: class names, test types, scene bounds, ``SynthConfig`` and its ``Lighting``."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from omnipose.core.config import Config, fraction, non_negative, positive, require
from omnipose.core.errors import OmniposeError
from omnipose.data import DEFECT_TYPES, GOOD
from omnipose.data.synth.photo_config import PhotoConfig

SYNTH_CLASSES = (
    "01Robot", "02Tower", "03Duck", "04Turtle", "05Giraffe", "06Car",
    "07House", "08Elephant", "09Rocket", "10Fish", "11Dog", "12Penguin",
)  # fmt: skip
TEST_TYPES = (GOOD,) + DEFECT_TYPES  # good, Burrs, Missing, Stains
SCENE_BOUNDS = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))  # every figure, defects included, lies inside
STYLES = ("sim", "photo")

# Settings that choose what to make or how to report it, not what a class looks like.
_TRANSIENT = ("classes", "num_classes", "overwrite", "progress", "preview")


class SynthError(OmniposeError):
    """A synth request that cannot be carried out as asked."""


@dataclass(frozen=True)
class Lighting(Config):
    """A lighting rig fixed in the object frame, so that a radiance field can learn it.

    Directions point from the surface towards the light. The key light casts shadows; the fill
    and bottom lights do not (they stand for light bounced off a studio's walls and floor).
    """

    key_direction: tuple[float, float, float] = (0.35, -0.55, 0.76)
    """Direction towards the key light, the one that casts shadows (need not be unit length)."""
    key_intensity: float = 0.65
    """Diffuse and specular strength of the key light."""
    fill_direction: tuple[float, float, float] = (-0.7, 0.45, 0.25)
    """Direction towards the fill light (light bounced off the walls; no shadows)."""
    fill_intensity: float = 0.3
    """Strength of the fill light."""
    bottom_direction: tuple[float, float, float] = (0.2, 0.3, -1.0)
    """Direction towards the bottom light (light bounced off the floor; no shadows)."""
    bottom_intensity: float = 0.25
    """Strength of the bottom light."""
    ambient: float = 0.36
    """Ambient light on every face, so that faces no light reaches are not black."""
    ambient_sky: float = 0.1
    """Extra ambient on faces pointing up (+z), fading to none on faces pointing down."""
    specular: float = 0.32
    """Strength of the Blinn-Phong highlights (glossy plastic)."""
    shininess: float = 48.0
    """Blinn-Phong exponent: higher gives smaller, sharper highlights."""
    background: float | tuple[float, float, float] = 1.0
    """Colour of the backdrop: a grey level or (r, g, b), in [0, 1] (MAD's renders are on white)."""

    def check(self) -> None:
        for name in ("key_direction", "fill_direction", "bottom_direction"):
            value = getattr(self, name)
            ok = isinstance(value, (tuple, list)) and len(value) == 3 and all(_number(v) for v in value)
            require(self, name, ok and any(v != 0 for v in value), "must be three finite numbers, not all 0")
        non_negative(self, "key_intensity", "fill_intensity", "bottom_intensity", "ambient", "ambient_sky", "specular")
        positive(self, "shininess")
        if isinstance(self.background, (tuple, list)):
            ok = len(self.background) == 3 and all(_number(v) and 0.0 <= v <= 1.0 for v in self.background)
            require(self, "background", ok, "must be a grey level or three numbers (r, g, b) in [0, 1]")
        else:
            fraction(self, "background")


@dataclass
class SynthConfig(Config):
    """Settings of the generator; the defaults make a MAD-like class at 200x200.

    ``style`` chooses how a class is drawn: ``sim`` ray casts it exactly on white (MAD-Sim);
    ``photo`` photographs it (``photo``'s settings; a stand-in for MAD-Real). Fields marked
    "(sim)" apply to the sim style only.
    """

    style: str = "sim"
    """How classes are drawn: "sim" (exact ray casting on white, MAD-Sim) or "photo" (path traced photographs, MAD-Real)."""
    size: int = 400
    """Image width = height in pixels (MAD: 800, which PAD works at 400; the detector's default is 400);
    16 or more, so that a figure shows."""
    train_views: int = 40
    """Defect-free training views per class, on rings around the object (photo: over a hemisphere; MAD-Real has 40-50)."""
    test_views_per_type: int = 10
    """Unposed query views per test type (good, Burrs, Missing, Stains); 0 makes none."""
    seed: int = 0
    """Seed of the cameras and defects; the figures do not depend on it (they are the class identity)."""
    classes: tuple[str, ...] = ()
    """Class names to make (``generate_dataset``); empty: the first ``num_classes`` of SYNTH_CLASSES."""
    num_classes: int | None = None
    """How many of SYNTH_CLASSES to make when ``classes`` is empty; None: all of them."""
    camera_angle_x: float = 0.6911112070083618
    """(sim) Horizontal field of view in radians: Blender's default 50 mm lens, as in nerf_synthetic."""
    camera_distance: float | None = None
    """(sim) Distance of every camera from the origin; None: per figure, so that the figure fills the view."""
    train_elevation_range_deg: tuple[float, float] = (-40.0, 70.0)
    """(sim) Elevations in degrees of the lowest and the highest training ring (from below to above the object)."""
    train_rings: int | None = None
    """(sim) Rings of training cameras; None: about sqrt(train_views / 2.5), 4 rings for 40 views."""
    antialias: bool = True
    """(sim) Supersample the pixels where what is seen changes (edges); False: one ray per pixel, faster, jagged."""
    defect_area: tuple[float, float] = (0.001, 0.02)
    """(low, high): the range of a defect mask's share of the image (MAD: about 0.001 - 0.02)."""
    overwrite: bool = False
    """Replace a class folder that ``omnipose synth`` did not make (it may be a real dataset)."""
    progress: bool = True
    """Show progress bars."""
    preview: bool = False
    """Also write ``<out>/preview_<class>.png``, a contact sheet of each class."""
    lighting: Lighting = field(default_factory=Lighting)
    """(sim) The lighting rig, fixed in the object frame so that a radiance field can learn it."""
    photo: PhotoConfig = field(default_factory=PhotoConfig)
    """(photo) The studio, the camera and the reconstruction's pose error of the photo style."""

    def check(self) -> None:
        require(self, "style", self.style in STYLES, f"must be one of {', '.join(map(repr, STYLES))}")
        _count(self, "size", 16, "to show a figure (MAD: 400 or 800)")
        _count(self, "train_views", 1)
        _count(self, "test_views_per_type", 0)
        _count(self, "seed", 0)
        unknown = [name for name in self.classes if name not in SYNTH_CLASSES]
        names, choices = ", ".join(map(repr, unknown)), ", ".join(SYNTH_CLASSES)
        require(self, "classes", not unknown, f"unknown synth class {names}; choose from {choices}")
        if self.num_classes is not None:
            _count(self, "num_classes", 1)
            require(self, "num_classes", self.num_classes <= len(SYNTH_CLASSES),
                    f"must be between 1 and {len(SYNTH_CLASSES)}")  # fmt: skip
        require(self, "camera_angle_x", _number(self.camera_angle_x) and 0 < self.camera_angle_x < math.pi,
                "must be a field of view in radians, between 0 and pi")  # fmt: skip
        inside = math.sqrt(3.0) * SCENE_BOUNDS[1][0]  # the scene's corner
        require(self, "camera_distance",
                self.camera_distance is None or (_number(self.camera_distance) and self.camera_distance > inside),
                "must be None or put cameras outside the scene bounds; use 2 or more")  # fmt: skip
        require(self, "train_elevation_range_deg", _pair(self.train_elevation_range_deg)
                and -90 < self.train_elevation_range_deg[0] <= self.train_elevation_range_deg[1] < 90,
                "must be (low, high) degrees with -90 < low <= high < 90")  # fmt: skip
        if self.train_rings is not None:
            _count(self, "train_rings", 1)
        require(self, "defect_area", _pair(self.defect_area) and 0 < self.defect_area[0] < self.defect_area[1] < 0.5,
                "must be (low, high) with 0 < low < high < 0.5 (MAD: about 0.001-0.02)")  # fmt: skip
        for name in ("antialias", "overwrite", "progress", "preview"):
            require(self, name, isinstance(getattr(self, name), bool), "must be True or False")
        require(self, "lighting", isinstance(self.lighting, Lighting), "must be a Lighting")
        require(self, "photo", isinstance(self.photo, PhotoConfig), "must be a PhotoConfig")

    def class_names(self) -> list[str]:
        """The classes to make, in order."""
        if self.classes:
            return list(self.classes)
        count = len(SYNTH_CLASSES) if self.num_classes is None else self.num_classes
        return list(SYNTH_CLASSES[:count])

    def settings(self) -> dict:
        """The settings that decide the output, for the synth.json marker."""
        out = self.to_dict()
        for transient in _TRANSIENT:
            out.pop(transient)
        if self.style == "sim":  # so that classes made before the photo style keep their marker
            out.pop("style")
            out.pop("photo")
        return out


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(_number(v) for v in value)


def _count(config: SynthConfig, name: str, minimum: int, why: str = "") -> None:
    value = getattr(config, name)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    require(config, name, ok, f"must be a whole number of {minimum} or more" + (f" {why}" if why else ""))

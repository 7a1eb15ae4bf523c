"""Settings of the photoreal style of ``omnipose synth`` (``--style photo``): the studio, the camera and
what a reconstruction does to the training poses. ``SynthConfig.photo`` holds one ``PhotoConfig``.

Every effect a photograph brings can be switched off on its own (a flag, or its strength set to 0),
so that a study can tell which one hurts. Units: lengths are in the object frame, where a figure's
longest side is 1.8; brightness is linear, 1 being a white matte card that just saturates.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from omnipose.core.config import Config, fraction, non_negative, positive, require


@dataclass(frozen=True)
class PhotoLighting(Config):
    """One capture session's lighting, fixed in the world while the camera moves (a desk studio):
    a square softbox (the key light), a dim panel across from it (the fill) and the room around
    (an environment map with windows)."""

    key_azimuth_deg: float = 35.0
    """Azimuth of the key light about the figure, in degrees (0 = +x, 90 = +y)."""
    key_elevation_deg: float = 55.0
    """Elevation of the key light above the table, in degrees."""
    key_distance: float = 1.8
    """Distance of the key light from the figure's centre, as a multiple of the camera distance (above 1:
    behind the cameras, so that the light never stands in a photo; the fill stands 1.2 times as far)."""
    key_size_deg: float = 20.0
    """Angular size of the square softbox seen from the figure, in degrees; larger gives softer shadows."""
    key_intensity: float = 0.55
    """Linear brightness of a white matte card facing the key light, lit by it alone."""
    fill_intensity: float = 0.12
    """The same for the fill panel, which stands across from the key light; 0: no fill."""
    colour_temperature_k: float = 5000.0
    """Colour temperature of the key and fill lights, in kelvin (tungsten ~3000, daylight ~5500-6500)."""
    environment_intensity: float = 0.22
    """Mean linear brightness of the room around (the environment map); 0: a black room."""
    environment_temperature_k: float = 6500.0
    """Colour temperature of the room's light (its windows), in kelvin."""

    def check(self) -> None:
        for name in ("key_azimuth_deg", "key_elevation_deg"):
            require(self, name, _number(getattr(self, name)), "must be a finite number of degrees")
        require(self, "key_elevation_deg", 5.0 <= self.key_elevation_deg <= 90.0,
                "must be between 5 and 90 degrees (the light stands above the table)")  # fmt: skip
        require(self, "key_distance", _number(self.key_distance) and 1.05 <= self.key_distance <= 20.0,
                "must be between 1.05 and 20 camera distances (behind the cameras)")  # fmt: skip
        require(self, "key_size_deg", _number(self.key_size_deg) and 0.5 <= self.key_size_deg <= 90.0,
                "must be between 0.5 and 90 degrees")  # fmt: skip
        non_negative(self, "key_intensity", "fill_intensity", "environment_intensity")
        for name in ("colour_temperature_k", "environment_temperature_k"):
            value = getattr(self, name)
            require(self, name, _number(value) and 1000.0 <= value <= 40000.0, "must be between 1000 and 40000 kelvin")


def _test_lighting() -> PhotoLighting:
    """Another session: the key from the other side and lower, warmer (tungsten) and dimmer."""
    return PhotoLighting(
        key_azimuth_deg=215.0, key_elevation_deg=35.0, key_distance=1.5, key_size_deg=12.0, key_intensity=0.36,
        fill_intensity=0.08, colour_temperature_k=3300.0, environment_intensity=0.16, environment_temperature_k=5200.0,
    )


@dataclass(frozen=True)
class PhotoConfig(Config):
    """How ``--style photo`` photographs a class: Mitsuba 3 (``pip install -e ".[photo]"``) path traces
    the figure in rough plastic on a textured table among clutter; the camera adds defocus, noise and
    JPEG; the training poses come out as a reconstruction leaves them."""

    samples_per_pixel: int = 32
    """Path-tracing samples per pixel; fewer is faster and noisier."""
    max_bounces: int = 6
    """Longest light path (Mitsuba's max_depth); 2 is direct light only."""
    threads: int | None = None
    """Dr.Jit's thread pool (set for the whole process); None: Mitsuba's default. A photo renders as one
    image block (deterministic), so one thread per photo does the path tracing."""
    focal_length_mm: float = 70.0
    """35 mm-equivalent focal length (the sim views: 50 mm); sets camera_angle_x."""
    fill: float = 0.55
    """Share of the image width the figure's bounding sphere spans (the sim views: 0.85); sets the distance."""
    elevation_range_deg: tuple[float, float] = (15.0, 75.0)
    """Elevations of the cameras in degrees, (lowest, highest): a hemisphere above the table."""
    aim_jitter: float = 0.08
    """Hand-held framing: how far from the figure's centre a camera may aim (object units)."""
    distance_jitter: float = 0.06
    """Hand-held framing: the camera's distance varies by up to this share."""
    roll_deg: float = 4.0
    """Largest roll of a training camera about its axis, in degrees (queries: four times this)."""
    specular: bool = True
    """Rough plastic with specular highlights (Mitsuba's roughplastic); False: matte (diffuse) plastic."""
    plastic_roughness: float = 0.12
    """GGX roughness of the plastic: lower gives smaller, sharper highlights."""
    soft_shadows: bool = True
    """Area lights (a softbox and a panel) that cast soft shadows; False: point lights, hard shadows."""
    environment: bool = True
    """The room around (an environment map, seen behind the table and in reflections); False: black."""
    table: bool = True
    """A textured (wooden) table under the figure; False: the figure floats in the room."""
    clutter: int = 9
    """Objects on the table around the figure (books, mugs, boxes, pens, a can); 0: none."""
    backdrop: tuple[float, float, float] | None = None
    """A plain backdrop all around the figure, as in a light tent, of this colour as the photo shows it
    (sRGB in [0, 1]; it also lights the figure), instead of the table, the clutter and the room, whose
    settings are then ignored; None: the studio."""
    test_lighting_differs: bool = True
    """Test photos are taken in another session (``test_lighting``); False: under ``train_lighting``."""
    train_lighting: PhotoLighting = field(default_factory=PhotoLighting)
    """Lighting of the training photos."""
    test_lighting: PhotoLighting = field(default_factory=_test_lighting)
    """Lighting of the test photos (another direction, intensity and colour temperature)."""
    exposure: float = 1.0
    """The camera's fixed exposure (a multiplier of the linear image), the same for both sessions."""
    white_balance_k: float = 5500.0
    """The camera's fixed white balance, in kelvin: light of this temperature comes out neutral."""
    shot_noise: float = 0.012
    """Sensor noise that grows with the signal: its standard deviation at linear brightness 1."""
    read_noise: float = 0.004
    """Sensor noise of constant standard deviation (linear brightness)."""
    defocus: float = 0.004
    """Blur diameter, as a share of the image width, of a point one figure radius behind the focus (thin lens); 0: pinhole."""
    jpeg_quality: int | None = 90
    """JPEG quality the photos go through (saved back as PNG, the file names MAD readers expect); None: none."""
    reconstruction_poses: bool = True
    """Write training poses as a reconstruction leaves them (noise, an arbitrary frame); False: the true poses."""
    onboard_poses: bool = False
    """Recover the training poses from the training photos themselves with ``omnipose onboard`` (structure
    from motion; needs the sfm extra): the poses, the frame, the scale and the focal length a user
    onboarding these photos would get, with their own errors, instead of the true poses with noise. The
    photos it cannot register are left out of the training views."""
    pose_rotation_noise_deg: float = 0.5
    """Root-mean-square rotation error of each written training pose, in degrees."""
    pose_position_noise: float = 0.004
    """Standard deviation of each written camera centre's error, per axis, as a share of the camera distance."""

    def check(self) -> None:
        _whole(self, "samples_per_pixel", 1)
        _whole(self, "max_bounces", 1)
        if self.threads is not None:
            _whole(self, "threads", 1)
        require(self, "focal_length_mm", _number(self.focal_length_mm) and 10.0 <= self.focal_length_mm <= 600.0,
                "must be a focal length in mm between 10 and 600 (35 mm-equivalent)")  # fmt: skip
        fraction(self, "fill", open_low=True)
        require(self, "fill", self.fill <= 0.95, "must leave the figure inside the image: 0.95 or less")
        pair = self.elevation_range_deg
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_number(v) for v in pair)
        require(self, "elevation_range_deg", ok and 2.0 <= pair[0] <= pair[1] <= 89.0,
                "must be (low, high) degrees with 2 <= low <= high <= 89 (cameras above the table)")  # fmt: skip
        non_negative(self, "aim_jitter", "distance_jitter", "roll_deg", "shot_noise", "read_noise", "defocus",
                     "pose_rotation_noise_deg", "pose_position_noise")  # fmt: skip
        require(self, "distance_jitter", self.distance_jitter < 0.5, "must be below 0.5")
        require(self, "roll_deg", self.roll_deg <= 45.0, "must be 45 degrees or less")
        require(self, "defocus", self.defocus <= 0.05, "must be 0.05 or less (slight defocus)")
        positive(self, "plastic_roughness", "exposure")
        require(self, "plastic_roughness", self.plastic_roughness <= 1.0, "must be a roughness in (0, 1]")
        for name in ("specular", "soft_shadows", "environment", "table", "test_lighting_differs",
                     "reconstruction_poses", "onboard_poses"):
            require(self, name, isinstance(getattr(self, name), bool), "must be True or False")
        _whole(self, "clutter", 0)
        require(self, "clutter", self.clutter <= 24, "must be 24 or fewer objects")
        if self.backdrop is not None:
            ok = isinstance(self.backdrop, (tuple, list)) and len(self.backdrop) == 3
            require(self, "backdrop", ok and all(_number(v) and 0.0 <= v <= 1.0 for v in self.backdrop),
                    "must be None or three numbers (r, g, b) in [0, 1]")  # fmt: skip
        for name in ("train_lighting", "test_lighting"):
            require(self, name, isinstance(getattr(self, name), PhotoLighting), "must be a PhotoLighting")
        require(self, "white_balance_k", _number(self.white_balance_k) and 1000.0 <= self.white_balance_k <= 40000.0,
                "must be between 1000 and 40000 kelvin")  # fmt: skip
        if self.jpeg_quality is not None:
            _whole(self, "jpeg_quality", 1)
            require(self, "jpeg_quality", self.jpeg_quality <= 100, "must be None or a JPEG quality in 1-100")

    @property
    def camera_angle_x(self) -> float:
        """Horizontal field of view in radians, from the focal length on a 36 mm wide sensor."""
        return 2.0 * math.atan(18.0 / self.focal_length_mm)

    def lighting(self, test: bool) -> PhotoLighting:
        """The lighting of the training (``test=False``) or the test session."""
        return self.test_lighting if test and self.test_lighting_differs else self.train_lighting


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(config: Config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    require(config, name, ok, f"must be a whole number of {minimum} or more")

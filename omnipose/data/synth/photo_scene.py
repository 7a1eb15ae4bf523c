"""The photo studio of ``--style photo``: the table, the clutter, the room, the lights, and the
Mitsuba scene that holds them with a figure.

Textures are drawn with numpy from the class's random stream, so a class's studio is the same
on every run; the clutter is made of boxes and cylinders like the figures, so the exact ray caster
can tell where it hides the figure (a query's mask must not mark what the clutter covers).
Mitsuba is imported only inside ``mitsuba_module`` and the functions that build its objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from omnipose.data.synth.config import SynthError
from omnipose.data.synth.photo_config import PhotoConfig, PhotoLighting
from omnipose.data.synth.photo_meshes import TriangleSoup, solid_mesh, stain_touches
from omnipose.data.synth.raycast import Scene, Stain, combine, make_box, make_cylinder

TABLE_HALF_SIZE = 7.0  # object units; the figure is 1.8 across
TABLE_REPEATS = 2  # the wood texture repeats twice across the table (about 150 texels per object unit)


def mitsuba_module(threads: int | None = None):
    """Mitsuba 3 in its CPU variant ``scalar_rgb``, or an error that says how to install it."""
    try:
        import drjit
        import mitsuba
    except ImportError as error:
        raise SynthError(
            f"omnipose synth --style photo needs Mitsuba 3 ({error}). Install the extra: "
            'pip install -e ".[photo]" (or pip install mitsuba==3.9.1).'
        ) from None
    if mitsuba.variant() != "scalar_rgb":
        mitsuba.set_variant("scalar_rgb")
    mitsuba.set_log_level(mitsuba.LogLevel.Warn)
    if threads is not None:
        drjit.set_thread_count(threads)
    return mitsuba


def load(mi, description: dict):
    """``mi.load_dict`` with the shapes kept in the dict's order. Mitsuba's default optimisation pass put
    the two light panels in either order from one load to the next, and which light a sample picks
    follows that order: the same photo came out with other noise now and then."""
    return mi.load_dict(description, optimize=False)


# ----------------------------------------------------------------------------- colour
def _cie_xyz(wavelength_nm: np.ndarray) -> np.ndarray:
    """CIE 1931 colour matching functions (Wyman, Sloan and Shirley's fit). (N,) -> (N, 3)."""
    def lobe(x, mean, low, high):
        return np.exp(-0.5 * ((x - mean) / np.where(x < mean, low, high)) ** 2)

    w = wavelength_nm
    x = 1.056 * lobe(w, 599.8, 37.9, 31.0) + 0.362 * lobe(w, 442.0, 16.0, 26.7) - 0.065 * lobe(w, 501.1, 20.4, 26.2)
    y = 0.821 * lobe(w, 568.8, 46.9, 40.5) + 0.286 * lobe(w, 530.9, 16.3, 31.1)
    z = 1.217 * lobe(w, 437.0, 11.8, 36.0) + 0.681 * lobe(w, 459.0, 26.0, 13.8)
    return np.stack([x, y, z], -1)


def blackbody_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB colour (3,) of a black body at ``kelvin``, scaled to luminance 1."""
    wavelength = np.linspace(380.0, 780.0, 201)
    metres = wavelength * 1e-9
    planck = 1.0 / (metres**5 * (np.exp(1.4387769e-2 / (metres * kelvin)) - 1.0))
    xyz = (_cie_xyz(wavelength) * planck[:, None]).sum(0)
    xyz_to_rgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = np.maximum(xyz_to_rgb @ (xyz / xyz[1]), 0.0)
    return rgb / (np.array([0.2126, 0.7152, 0.0722]) @ rgb)


# ----------------------------------------------------------------------------- textures
def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] (size, size) that tiles: a random grid of ``cells`` interpolated."""
    import cv2

    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    tiled = np.pad(grid, ((0, 1), (0, 1)), mode="wrap")
    return cv2.resize(tiled, (size + size // cells, size + size // cells), interpolation=cv2.INTER_CUBIC)[:size, :size]


def _fractal(rng: np.random.Generator, size: int, base: int, octaves: int) -> np.ndarray:
    return sum(_value_noise(rng, size, base * 2**k) * 0.55**k for k in range(octaves))


def wood_texture(rng: np.random.Generator, size: int = 1024, planks: int = 8) -> np.ndarray:
    """A varnished plank table top (size, size, 3) in [0, 1]: boards of their own tone with fine grain,
    joints, knots, scuffs and ink marks; the marks and joints give structure from motion features
    the plain plastic lacks."""
    v, u = np.meshgrid(np.linspace(0, 1, size, endpoint=False), np.linspace(0, 1, size, endpoint=False), indexing="ij")
    row = np.floor(v * planks).astype(int)
    local = v * planks - row
    phase, tone_of, shift = rng.uniform(0, 1, planks), rng.uniform(0.8, 1.15, planks), rng.uniform(0, 1, planks)
    warp = 0.25 * _fractal(rng, size, 4, 3)
    grain = np.sin(2 * np.pi * (14 * local + 1.5 * warp + 3 * phase[row]))  # growth rings across the board
    fibres = np.sin(2 * np.pi * (90 * local + 4 * warp + 7 * phase[row])) * (0.5 + 0.5 * _fractal(rng, size, 32, 2))
    tone = tone_of[row] * (0.62 + 0.1 * grain + 0.06 * fibres + 0.08 * _fractal(rng, size, 12, 3))
    tone = np.where((local < 0.012) | (local > 0.988), 0.25, tone)  # gaps between boards
    joint = np.abs(((u + shift[row]) * 1.0) % 1.0 - 0.5) < 0.0025  # one end joint per board and repeat
    tone = np.where(joint, 0.3, tone)
    for _ in range(int(rng.integers(3, 7))):  # knots
        cu, cv, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.008, 0.02)
        du, dv = ((u - cu + 0.5) % 1 - 0.5) * 0.5, (v - cv + 0.5) % 1 - 0.5
        d = np.sqrt(du * du + dv * dv) / r
        tone = tone - 0.3 * np.exp(-d * d) - 0.06 * np.sin(6 * d) * np.exp(-0.15 * d * d)
    colour = np.stack([0.62 * tone + 0.06, 0.42 * tone + 0.03, 0.24 * tone + 0.015], -1)
    for _ in range(int(rng.integers(50, 90))):  # ink dots, scratches, crumbs
        cu, cv = rng.uniform(0, 1, 2)
        ru, rv = rng.uniform(0.001, 0.01, 2)
        d = (((u - cu + 0.5) % 1 - 0.5) / ru) ** 2 + (((v - cv + 0.5) % 1 - 0.5) / rv) ** 2
        shade = rng.choice([0.2, 0.4, 0.8, 1.3]) if rng.uniform() < 0.8 else rng.uniform(0.2, 1.2, 3)
        colour = np.where((d < 1)[..., None], colour * shade, colour)
    return np.clip(colour, 0.02, 0.95).astype(np.float32)


def printed_texture(rng: np.random.Generator, colour: np.ndarray, size: int = 256) -> np.ndarray:
    """A printed cover or carton (size, size, 3): a base colour with blocks of 'text' and a picture."""
    out = np.ones((size, size, 3), np.float32) * colour.astype(np.float32)
    out *= (1.0 + 0.06 * _fractal(rng, size, 8, 3))[..., None]
    ink = np.clip(1.0 - colour, 0.05, 0.95) * rng.uniform(0.3, 0.8)
    for row in range(int(rng.integers(4, 9))):
        top = int(rng.integers(0, size - 8))
        left, length = int(rng.integers(0, size // 2)), int(rng.integers(size // 6, size // 2))
        height = int(rng.integers(3, 9))
        out[top : top + height, left : left + length] = ink
    top, left = (int(v) for v in rng.integers(0, size // 2, 2))
    out[top : top + size // 3, left : left + size // 3] = rng.uniform(0.05, 0.95, 3)
    return np.clip(out, 0.0, 1.0)


def room_environment(rng: np.random.Generator, width: int = 512) -> np.ndarray:
    """An equirectangular room (width/2, width, 3), linear, mean 1 before scaling: walls and floor,
    a ceiling, two windows and some dark furniture; up is the map's top row."""
    height = width // 2
    elevation = np.linspace(0.5 * np.pi, -0.5 * np.pi, height)[:, None] * np.ones((1, width))
    azimuth = np.linspace(-np.pi, np.pi, width, endpoint=False)[None, :] * np.ones((height, 1))
    wall = 0.75 + 0.25 * _fractal(rng, width, 8, 3)[:height] * 0.5
    radiance = np.where(elevation > 0.55, 1.1, np.where(elevation < -0.2, 0.35, wall))
    for _ in range(2):  # windows
        centre, half_width = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 0.35)
        low, high = rng.uniform(0.0, 0.12), rng.uniform(0.35, 0.55)
        near = np.abs((azimuth - centre + np.pi) % (2 * np.pi) - np.pi) < half_width
        radiance = np.where(near & (elevation > low) & (elevation < high), rng.uniform(5.0, 8.0), radiance)
    for _ in range(4):  # shelves and furniture
        centre, half_width = rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 0.4)
        top = rng.uniform(-0.1, 0.3)
        near = np.abs((azimuth - centre + np.pi) % (2 * np.pi) - np.pi) < half_width
        radiance = np.where(near & (elevation < top) & (elevation > -0.3), rng.uniform(0.1, 0.3), radiance)
    tint = np.stack([np.ones_like(radiance), 0.97 * np.ones_like(radiance), 0.92 * np.ones_like(radiance)], -1)
    image = radiance[..., None] * tint
    return (image / image.mean()).astype(np.float32)


# ----------------------------------------------------------------------------- clutter
@dataclass
class Clutter:
    """Objects on the table: their solids (a ``Scene``; ``part`` numbers the object) and per object
    the material: ('plastic' | 'ceramic' | 'printed' | 'metal', colour (3,))."""

    scene: Scene
    materials: list


def make_clutter(rng: np.random.Generator, count: int, floor: float) -> Clutter:
    """``count`` objects around the figure on the table at height ``floor``, none within 2.1 of the
    figure's axis (the figure's bounding sphere is at most 1.56)."""
    solids, materials, placed = [], [], []
    kinds = ("book", "mug", "carton", "pen", "can", "block")
    for index in range(count):
        kind = kinds[index % len(kinds)] if index < len(kinds) else kinds[int(rng.integers(len(kinds)))]
        for _ in range(50):  # a place clear of the others
            distance = rng.uniform(2.2, 4.8)
            angle = rng.uniform(0, 2 * math.pi)
            x, y = distance * math.cos(angle), distance * math.sin(angle)
            if all(math.hypot(x - px, y - py) > 0.9 for px, py in placed):
                break
        placed.append((x, y))
        colour = rng.uniform(0.05, 0.9, 3) * rng.uniform(0.6, 1.0)
        tall = min(1.4, 0.35 * distance)  # low near the figure, so that it rarely hides it
        if kind == "book":
            w, d, h = rng.uniform(0.9, 1.4), rng.uniform(0.6, 1.0), rng.uniform(0.12, 0.3)
            solids.append(make_box((x - w / 2, y - d / 2, floor), (x + w / 2, y + d / 2, floor + h), colour, part=index))
            materials.append(("printed", colour))
        elif kind == "carton":
            w, d, h = rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9), rng.uniform(0.4, tall)
            solids.append(make_box((x - w / 2, y - d / 2, floor), (x + w / 2, y + d / 2, floor + h), colour, part=index))
            materials.append(("printed", colour))
        elif kind in ("mug", "can"):
            r, h = rng.uniform(0.22, 0.32), rng.uniform(0.5, tall)
            solids.append(make_cylinder((x, y, floor + h / 2), 2, r, h, colour, part=index))
            materials.append(("ceramic" if kind == "mug" else "metal", colour))
        elif kind == "pen":
            axis = int(rng.integers(0, 2))
            r, length = rng.uniform(0.035, 0.06), rng.uniform(0.9, 1.5)
            solids.append(make_cylinder((x, y, floor + r), axis, r, length, colour, part=index))
            materials.append(("plastic", colour))
        else:
            s = rng.uniform(0.3, 0.5)
            solids.append(make_box((x - s / 2, y - s / 2, floor), (x + s / 2, y + s / 2, floor + s), colour, part=index))
            materials.append(("plastic", colour))
    return Clutter(combine(solids), materials)


# ----------------------------------------------------------------------------- the scene
@dataclass
class Studio:
    """What stays the same across a class's photos: the table and room textures and the clutter."""

    floor: float
    table: np.ndarray
    room: np.ndarray
    clutter: Clutter
    printed: list


def make_studio(rng: np.random.Generator, figure_scene: Scene, config: PhotoConfig) -> Studio:
    floor = float(figure_scene.lo[:, 2].min())
    table = wood_texture(rng)
    room = room_environment(rng)
    in_studio = config.backdrop is None
    clutter = make_clutter(rng, config.clutter, floor) if config.clutter and in_studio else Clutter(Scene.empty(), [])
    printed = [printed_texture(rng, np.asarray(colour)) if kind == "printed" else None for kind, colour in clutter.materials]
    return Studio(floor, table, room, clutter, printed)


def _rgb(mi, value) -> dict:
    return {"type": "rgb", "value": [float(v) for v in value]}


def _mesh(mi, name: str, soup: TriangleSoup, bsdf: dict):
    """A Mitsuba mesh of a triangle soup, with its normals and texture coordinates."""
    props = mi.Properties()
    props["bsdf"] = load(mi, bsdf)
    count = len(soup)
    mesh = mi.Mesh(name, 3 * count, count, props=props, has_vertex_normals=True, has_vertex_texcoords=True)
    params = mi.traverse(mesh)
    params["vertex_positions"] = soup.positions.astype(np.float32).ravel()
    params["vertex_normals"] = soup.normals.astype(np.float32).ravel()
    params["vertex_texcoords"] = soup.texcoords.astype(np.float32).ravel()
    params["faces"] = np.arange(3 * count, dtype=np.uint32)
    params.update()
    return mesh


def _plastic(albedo, config: PhotoConfig, roughness: float | None = None) -> dict:
    reflectance = {"type": "rgb", "value": [float(v) for v in albedo]}
    if not config.specular:
        return {"type": "diffuse", "reflectance": reflectance}
    alpha = config.plastic_roughness if roughness is None else roughness
    return {"type": "roughplastic", "distribution": "ggx", "alpha": alpha, "int_ior": 1.49,
            "diffuse_reflectance": reflectance}  # fmt: skip


def figure_shapes(mi, scene: Scene, config: PhotoConfig, stain: Stain | None = None) -> dict:
    """Mitsuba meshes of a figure, one per colour (a stain's triangles in a matte material of their own)."""
    groups: dict[tuple, list[TriangleSoup]] = {}
    for index in range(len(scene)):
        touched = stain if stain_touches(scene, index, stain) else None
        soup, stained = solid_mesh(scene, index, touched)
        albedo = tuple(np.round(scene.albedo[index], 4))
        groups.setdefault(("plastic", albedo), []).append(soup.take(~stained))
        if stained.any():
            blended = (1 - stain.opacity) * np.asarray(albedo) + stain.opacity * np.asarray(stain.colour)
            groups.setdefault(("stain", tuple(np.round(blended, 4))), []).append(soup.take(stained))
    shapes = {}
    for number, ((kind, albedo), soups) in enumerate(sorted(groups.items())):
        soup = TriangleSoup.concat(soups)
        if len(soup):
            bsdf = _plastic(albedo, config, roughness=0.45 if kind == "stain" else None)
            shapes[f"figure_{number}"] = _mesh(mi, f"figure_{number}", soup, bsdf)
    return shapes


def _clutter_bsdf(mi, kind: str, colour, texture: np.ndarray | None, config: PhotoConfig) -> dict:
    if kind == "metal":
        return {"type": "roughconductor", "material": "Al", "alpha": 0.25}
    if kind == "printed":
        base = {"type": "bitmap", "bitmap": mi.Bitmap(texture), "filter_type": "bilinear"}
        return {"type": "roughplastic", "alpha": 0.3, "diffuse_reflectance": base} if config.specular else {
            "type": "diffuse", "reflectance": base}
    return _plastic(colour, config, roughness=0.08 if kind == "ceramic" else 0.2)


def _look_at(mi, origin, target=(0.0, 0.0, 0.0)):
    origin = [float(v) for v in origin]
    up = [0.0, 0.0, 1.0] if abs(origin[0] - target[0]) + abs(origin[1] - target[1]) > 1e-6 else [0.0, 1.0, 0.0]
    return mi.ScalarTransform4f().look_at(origin=origin, target=[float(v) for v in target], up=up)


def light_shapes(mi, lighting: PhotoLighting, config: PhotoConfig, camera_distance: float) -> dict:
    """The key and fill lights of a session, as area lights (soft shadows) or point lights."""
    white_balance = 1.0 / blackbody_rgb(config.white_balance_k)
    colour = blackbody_rgb(lighting.colour_temperature_k) * white_balance
    shapes = {}
    key_distance = lighting.key_distance * camera_distance
    size = 2.0 * key_distance * math.tan(math.radians(0.5 * lighting.key_size_deg))
    rigs = (("key", lighting.key_azimuth_deg, lighting.key_elevation_deg, key_distance, size, lighting.key_intensity),
            ("fill", lighting.key_azimuth_deg + 180.0, 30.0, 1.2 * key_distance, 2.0 * size, lighting.fill_intensity))
    for name, azimuth, elevation, distance, side, intensity in rigs:
        if intensity <= 0:
            continue
        a, e = math.radians(azimuth), math.radians(elevation)
        position = distance * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        # A white matte card facing the light shows E / pi = intensity: E = pi * intensity.
        irradiance = math.pi * intensity
        if config.soft_shadows:
            radiance = irradiance * distance**2 / (side * side)
            shapes[name] = {
                "type": "rectangle", "to_world": _look_at(mi, position).scale([0.5 * side, 0.5 * side, 1.0]),
                "emitter": {"type": "area", "radiance": _rgb(mi, radiance * colour)},
            }  # fmt: skip
        else:
            shapes[name] = {"type": "point", "position": [float(v) for v in position],
                            "intensity": _rgb(mi, irradiance * distance**2 * colour)}  # fmt: skip
    return shapes


def build_scene(mi, studio: Studio, figure: dict, lighting: PhotoLighting, config: PhotoConfig, camera_distance: float,
                size: int):  # fmt: skip
    """The Mitsuba scene of one session: ``figure`` (from ``figure_shapes``) on the table, with the
    clutter, the room and the lights, for images of ``size`` x ``size``. The sensor is given to each render."""
    white_balance = 1.0 / blackbody_rgb(config.white_balance_k)
    # One image block: Mitsuba's scalar mode hands blocks to worker threads whose samplers run on from
    # block to block, so with several blocks a busy machine could change the noise (seen once in tests).
    block = 1 << max(0, int(size - 1).bit_length())
    integrator = {"type": "path", "max_depth": config.max_bounces, "block_size": block}
    scene = {"type": "scene", "integrator": integrator, **figure}
    if config.backdrop is not None:  # a light tent: the backdrop is all the figure stands in front of
        encoded = np.asarray(config.backdrop, dtype=np.float64)
        linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4) / config.exposure
        scene["backdrop"] = {"type": "constant", "radiance": _rgb(mi, linear)}
        scene.update(light_shapes(mi, lighting, config, camera_distance))
        return load(mi, scene)
    if config.environment and lighting.environment_intensity > 0:
        tint = blackbody_rgb(lighting.environment_temperature_k) * white_balance * lighting.environment_intensity
        # Mitsuba's environment map has +Y up; the object frame has +Z up.
        scene["room"] = {"type": "envmap", "bitmap": mi.Bitmap((studio.room * tint).astype(np.float32)),
                         "to_world": mi.ScalarTransform4f().rotate([1.0, 0.0, 0.0], 90.0)}  # fmt: skip
    if config.table:
        scene["table"] = {
            "type": "rectangle",
            "to_world": mi.ScalarTransform4f().translate([0.0, 0.0, studio.floor]).scale(TABLE_HALF_SIZE),
            "bsdf": {"type": "roughplastic", "alpha": 0.35, "int_ior": 1.5, "diffuse_reflectance": {
                "type": "bitmap", "bitmap": mi.Bitmap(studio.table), "filter_type": "bilinear",
                "to_uv": mi.ScalarTransform4f().scale([TABLE_REPEATS, TABLE_REPEATS, 1.0])}},
        }  # fmt: skip
    clutter = studio.clutter
    for index, (kind, colour) in enumerate(clutter.materials):
        solids = np.flatnonzero(clutter.scene.part == index)
        soup = TriangleSoup.concat([solid_mesh(clutter.scene, int(s))[0] for s in solids])
        bsdf = _clutter_bsdf(mi, kind, colour, studio.printed[index], config)
        scene[f"clutter_{index}"] = _mesh(mi, f"clutter_{index}", soup, bsdf)
    scene.update(light_shapes(mi, lighting, config, camera_distance))
    return load(mi, scene)

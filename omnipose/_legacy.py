"""Old module paths (omnipose 0.1's flat modules) resolved to where their contents live now.

``import omnipose.train`` or ``from omnipose.pose import refine_poses`` keep working: a module
path that is no package now is served by a stand-in module whose attributes come from the new
modules listed in ``MOVED``; an old path that is a package now (``omnipose.pose``, ...) looks
names it lacks up the same way. Names whose convention changed on the way are served by
``SHIMS``, which keep the old behaviour. ``tests/test_legacy_paths.py`` lists what must resolve.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import math
import sys
from typing import Any, Callable

MOVED: dict[str, tuple[str, ...]] = {
    "omnipose.io": ("omnipose.core.errors", "omnipose.core.files", "omnipose.core.image", "omnipose.core.device"),
    "omnipose.geometry": ("omnipose.core.geometry",),
    "omnipose.data": ("omnipose.data.blender", "omnipose.data.mad"),
    "omnipose.m2ad": ("omnipose.data.m2ad",),
    "omnipose.download": ("omnipose.data.download", "omnipose.cli.download"),
    "omnipose.raycast": ("omnipose.data.synth.raycast", "omnipose.data.synth.config"),
    "omnipose.synth": (
        "omnipose.data.synth.config", "omnipose.data.synth.figures", "omnipose.data.synth.designs",
        "omnipose.data.synth.views", "omnipose.data.synth.defects", "omnipose.data.synth.writer",
        "omnipose.data.synth.preview", "omnipose.cli.synth",
    ),
    "omnipose.encoding": (
        "omnipose.nerf.encoding", "omnipose.nerf.hash_grid", "omnipose.nerf.triplane", "omnipose.nerf.interpolation",
    ),
    "omnipose.field": ("omnipose.nerf.field", "omnipose.nerf.nerf_mlp"),
    "omnipose.render": ("omnipose.nerf.bounds", "omnipose.nerf.sampling", "omnipose.nerf.occupancy", "omnipose.nerf.compositing",
                        "omnipose.nerf.models", "omnipose.nerf.hash_grid"),
    "omnipose.train": ("omnipose.nerf.train", "omnipose.nerf.checkpoint", "omnipose.nerf.quality", "omnipose.cli.train"),
    "omnipose.matching": ("omnipose.pose.matching", "omnipose.pose.retrieval", "omnipose.core.image", "omnipose.core.device"),
    "omnipose.appearance": ("omnipose.pose.appearance",),
    "omnipose.pose": ("omnipose.pose.estimator", "omnipose.pose.config", "omnipose.pose.query", "omnipose.pose.scene",
                      "omnipose.pose.hypotheses", "omnipose.pose.scoring", "omnipose.pose.align", "omnipose.pose.refine",
                      "omnipose.pose.index", "omnipose.pose.results", "omnipose.pose.pad", "omnipose.core.image",
                      "omnipose.cli.pose"),
    "omnipose.features": ("omnipose.compare.features", "omnipose.compare.efficientnet", "omnipose.compare.weights"),
    "omnipose.registration": ("omnipose.compare.registration",),
    "omnipose.reproject": ("omnipose.compare.reproject",),
    "omnipose.compare": ("omnipose.compare.comparator", "omnipose.compare.config", "omnipose.compare.inputs",
                         "omnipose.compare.terms", "omnipose.compare.statistics", "omnipose.compare.scoring",
                         "omnipose.compare.calibration", "omnipose.compare.pad", "omnipose.cli.compare"),
    "omnipose.detector": ("omnipose.detector.detector", "omnipose.detector.references", "omnipose.cli.detect"),
    "omnipose.metrics": ("omnipose.evaluation.metrics", "omnipose.evaluation.inputs", "omnipose.evaluation.ranking"),
    "omnipose.evaluate": (
        "omnipose.evaluation.config", "omnipose.evaluation.results", "omnipose.evaluation.protocols",
        "omnipose.evaluation.inputs", "omnipose.evaluation.predictions", "omnipose.evaluation.tables",
        "omnipose.evaluation.figures", "omnipose.evaluation.report", "omnipose.cli.evaluate",
    ),
    "omnipose.demo": ("omnipose.evaluation.demo", "omnipose.evaluation.report", "omnipose.cli.demo"),
    "omnipose.original": ("omnipose.evaluation.original", "omnipose.cli.original"),
    "omnipose.cli": ("omnipose.cli.app",),
}


# ----------------------------------------------------------------------------- old conventions
def _read_binary_mask(path, size=None):
    """0.1's M2AD mask reader: size was (height, width)."""
    from omnipose.core.image import read_mask

    return read_mask(path, None if size is None else (size[1], size[0]), strict=True)


def _gaussian_blur_hwc(image, sigma):
    """0.1's pose blur: (H, W, C) images, a kernel radius of 3 sigma rounded up."""
    from omnipose.core.image import gaussian_blur

    if sigma <= 0:
        return image
    return gaussian_blur(image.permute(2, 0, 1), sigma, radius=max(1, math.ceil(3 * sigma))).permute(1, 2, 0)


def _gaussian_smooth(maps, sigma, truncate=4.0):
    """0.1's comparison blur of (B, H, W) maps."""
    from omnipose.core.image import gaussian_blur

    return gaussian_blur(maps, sigma, radius=max(1, int(truncate * sigma + 0.5)) if sigma > 0 else None)


def _ecc_warp_image(image, warp, border):
    """0.1's registration warp: OpenCV ECC's convention (inverse map, pixel centres on integers)."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    border = tuple(float(c) for c in border) if isinstance(border, (tuple, list)) else float(border)
    return cv2.warpAffine(np.ascontiguousarray(image, dtype=np.float32), warp, (width, height),
                          flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=border)  # fmt: skip


def _one_torch_thread():
    from omnipose.core.device import one_torch_thread

    return one_torch_thread()


def _config_dict(config):
    """0.1's dataclass-to-dict of encoding configs (``dataclasses.asdict``)."""
    import dataclasses

    return dataclasses.asdict(config)


SHIMS: dict[tuple[str, str], Callable[..., Any]] = {
    ("omnipose.encoding", "config_dict"): _config_dict,
    ("omnipose.m2ad", "read_binary_mask"): _read_binary_mask,
    ("omnipose.pose", "gaussian_blur"): _gaussian_blur_hwc,
    ("omnipose.compare", "gaussian_smooth"): _gaussian_smooth,
    ("omnipose.registration", "warp_image"): _ecc_warp_image,
    ("omnipose.raycast", "_one_torch_thread"): _one_torch_thread,
}


def legacy_attribute(old_module: str, name: str) -> Any:
    """``name`` as the old module ``old_module`` offered it."""
    if (old_module, name) in SHIMS:
        return SHIMS[(old_module, name)]
    if not name.startswith("__"):
        for new_module in MOVED.get(old_module, ()):
            module = importlib.import_module(new_module)
            if name in vars(module):
                return vars(module)[name]
    raise AttributeError(f"module {old_module!r} has no attribute {name!r}")


def legacy_getattr(old_module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a package that took over an old module's path."""

    def __getattr__(name: str) -> Any:
        return legacy_attribute(old_module, name)

    return __getattr__


class _LegacyModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the old paths that are no package now with a module that resolves names lazily.
    It is asked last (``install`` appends it), so an old path that is a package now
    (``omnipose.pose``) is found as that package before this finder is consulted."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.__getattr__ = legacy_getattr(module.__name__)
        module.__doc__ = f"Old path of {', '.join(MOVED[module.__name__])} (kept so that old imports work)."


def install() -> None:
    """Let the old module paths import (idempotent)."""
    if not any(isinstance(finder, _LegacyModules) for finder in sys.meta_path):
        sys.meta_path.append(_LegacyModules())

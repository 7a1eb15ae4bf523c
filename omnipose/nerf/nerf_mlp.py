"""The vanilla NeRF MLP of nerf-pytorch, so that the original OmniposeAD / nerf-pytorch checkpoints load.

``NeRFMLP`` has nerf-pytorch's exact parameter names and forward, so a ``.tar`` checkpoint's state
dict loads unchanged; ``load_nerf_mlp`` infers the architecture from the state dict and refuses
one that does not fit with a message naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from omnipose.core.config import Config, non_negative, positive, require
from omnipose.core.errors import CheckpointError
from omnipose.nerf.encoding import PositionalEncoding


@dataclass
class NeRFMLPConfig(Config):
    """nerf-pytorch's ``NeRF`` network (its defaults: 8 layers of 256, skip after layer 4,
    63-channel positions, 27-channel directions)."""

    depth: int = 8
    """Layers D of the position MLP."""
    width: int = 256
    """Width W of the position MLP (the direction layer is W / 2 wide)."""
    skips: tuple[int, ...] = (4,)
    """Layers after which the encoded position is concatenated again."""
    multires: int = 10
    """Frequencies of the position encoding (10 -> 63 channels)."""
    multires_views: int = 4
    """Frequencies of the direction encoding (4 -> 27 channels)."""
    use_viewdirs: bool = True
    """Colour depends on the view direction (separate alpha, feature and rgb heads)."""
    output_ch: int = 4
    """Outputs of the single head used without view directions."""

    def check(self) -> None:
        positive(self, "depth", "width", "output_ch")
        non_negative(self, "multires", "multires_views")
        require(self, "skips", isinstance(self.skips, (tuple, list)) and all(
            isinstance(s, int) and 0 <= s < self.depth for s in self.skips), "must be layer indices below depth")  # fmt: skip
        require(self, "use_viewdirs", isinstance(self.use_viewdirs, bool), "must be True or False")

    @property
    def input_ch(self) -> int:
        return 3 + 3 * 2 * self.multires

    @property
    def input_ch_views(self) -> int:
        return 3 + 3 * 2 * self.multires_views if self.use_viewdirs else 0


class NeRFMLP(torch.nn.Module):
    """The vanilla NeRF MLP with nerf-pytorch's parameter names (pts_linears.i, views_linears.0,
    feature_linear, alpha_linear, rgb_linear; output_linear without view directions).

    forward(x, d) embeds itself; ``raw(embedded)`` is nerf-pytorch's ``NeRF.forward`` on an
    already-embedded (N, input_ch + input_ch_views) input and returns raw (N, 4) = (rgb logits, sigma).
    """

    field_type = "nerf"

    def __init__(self, config: NeRFMLPConfig | None = None):
        super().__init__()
        self.config = c = config or NeRFMLPConfig()
        self.position_encoding = PositionalEncoding(c.multires)
        self.direction_encoding = PositionalEncoding(c.multires_views)
        self.pts_linears = torch.nn.ModuleList(
            [torch.nn.Linear(c.input_ch, c.width)]
            + [torch.nn.Linear(c.width + (c.input_ch if i in c.skips else 0), c.width) for i in range(c.depth - 1)]
        )
        self.views_linears = torch.nn.ModuleList([torch.nn.Linear(c.input_ch_views + c.width, c.width // 2)])
        if c.use_viewdirs:
            self.feature_linear = torch.nn.Linear(c.width, c.width)
            self.alpha_linear = torch.nn.Linear(c.width, 1)
            self.rgb_linear = torch.nn.Linear(c.width // 2, 3)
        else:
            self.output_linear = torch.nn.Linear(c.width, c.output_ch)

    def raw(self, embedded: torch.Tensor) -> torch.Tensor:
        """embedded: (N, input_ch + input_ch_views). Returns raw: (N, 4) = rgb logits, density logit."""
        c = self.config
        points, views = embedded[:, : c.input_ch], embedded[:, c.input_ch :]
        h = points
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i in c.skips:
                h = torch.cat([points, h], -1)
        if not c.use_viewdirs:
            return self.output_linear(h)
        alpha = self.alpha_linear(h)
        h = torch.cat([self.feature_linear(h), views], -1)
        for layer in self.views_linears:
            h = F.relu(layer(h))
        return torch.cat([self.rgb_linear(h), alpha], -1)

    def forward(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) world points; directions: (N, 3) unit view directions. Returns raw: (N, 4)."""
        embedded = self.position_encoding(x)
        if self.config.use_viewdirs:
            embedded = torch.cat([embedded, self.direction_encoding(directions)], -1)
        return self.raw(embedded)


def nerf_config_from_state_dict(state: dict, name: str = "network") -> NeRFMLPConfig:
    """Infer the architecture of a nerf-pytorch ``NeRF`` from its state dict.

    Raises CheckpointError naming the missing or misshaped key.
    """

    def weight(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(
                f"{name} lacks '{key}': this is not a nerf-pytorch NeRF state dict "
                "(expected pts_linears.i, views_linears.0, feature_linear, alpha_linear, rgb_linear)."
            )
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            raise CheckpointError(f"{name}: '{key}' should be a 2-D weight matrix, found {getattr(value, 'shape', type(value))}.")
        return value

    depth = 0
    while f"pts_linears.{depth}.weight" in state:
        depth += 1
    if depth == 0:
        weight("pts_linears.0.weight")
    first = weight("pts_linears.0.weight")
    width, input_ch = first.shape
    if (input_ch - 3) % 6:
        raise CheckpointError(f"{name}: pts_linears.0 takes {input_ch} inputs, not 3 + 6 k (a positional encoding).")
    skips = []
    for i in range(1, depth):
        in_features = weight(f"pts_linears.{i}.weight").shape[1]
        if in_features == width + input_ch:
            skips.append(i - 1)
        elif in_features != width:
            raise CheckpointError(f"{name}: pts_linears.{i} takes {in_features} inputs, expected {width} or {width + input_ch}.")
    use_viewdirs = "rgb_linear.weight" in state
    multires_views, output_ch = 4, 4
    if use_viewdirs:
        views_in = weight("views_linears.0.weight").shape[1] - width
        if views_in < 3 or (views_in - 3) % 6:
            raise CheckpointError(f"{name}: views_linears.0 takes {views_in + width} inputs; cannot infer the direction encoding.")
        multires_views = (views_in - 3) // 6
        for key in ("feature_linear.weight", "alpha_linear.weight"):
            weight(key)
    else:
        output_ch = weight("output_linear.weight").shape[0]
    return NeRFMLPConfig(depth, width, tuple(skips), (input_ch - 3) // 6, multires_views, use_viewdirs, output_ch)


def load_nerf_mlp(state: dict, name: str = "network") -> NeRFMLP:
    """A NeRFMLP holding a nerf-pytorch state dict; CheckpointError when keys or shapes disagree."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{name} is a {type(state).__name__}, not a state dict.")
    net = NeRFMLP(nerf_config_from_state_dict(state, name))
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}; not a nerf-pytorch NeRF of one architecture."
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{name}: '{key}' has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}.")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net

"""The NGP radiance field: what a point looks like (density and colour), independent of how rays are sampled.

``NGPField``: a grid encoding (hash grid or tri-plane) -> small density MLP -> (density, geometry
features); a colour MLP takes the features and the view direction in spherical harmonics
(Instant-NGP's design). The vanilla NeRF network of nerf-pytorch checkpoints is in ``nerf_mlp.py``.

Fields take world-space points ``x: (N, 3)`` and unit view directions ``d: (N, 3)``; the NGP field
maps points into its scene box itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from omnipose.core.config import Config, non_negative, one_of, positive, require
from omnipose.core.device import frozen
from omnipose.core.errors import OmniposeError
from omnipose.nerf.encoding import SphericalHarmonicsEncoding
from omnipose.nerf.hash_grid import HashGridConfig, make_grid_encoding
from omnipose.nerf.triplane import TriPlaneConfig, TriPlaneEncoding


# ----------------------------------------------------------------------------- activations
class _TruncatedExp(torch.autograd.Function):
    """exp(x) whose gradient is computed with x clamped at 15, so one bad sample cannot overflow it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def truncated_exp(x: torch.Tensor) -> torch.Tensor:
    """Instant-NGP's density activation. x: any shape. Returns the same shape."""
    return _TruncatedExp.apply(x)


def mlp(in_dim: int, hidden_dim: int, n_hidden: int, out_dim: int) -> torch.nn.Sequential:
    """ReLU MLP with ``n_hidden`` hidden layers of ``hidden_dim`` and a linear output."""
    layers: list[torch.nn.Module] = []
    width = in_dim
    for _ in range(n_hidden):
        layers += [torch.nn.Linear(width, hidden_dim), torch.nn.ReLU(inplace=True)]
        width = hidden_dim
    layers.append(torch.nn.Linear(width, out_dim))
    return torch.nn.Sequential(*layers)


# ----------------------------------------------------------------------------- NGP field
@dataclass
class NGPFieldConfig(Config):
    """Instant-NGP style field: position encoding, density MLP, colour MLP."""

    encoding: str = "hash"
    """Position encoding: 'hash' (the hash grid ``grid``) or 'triplane' (``triplane``)."""
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """The hash grid, used when encoding is 'hash'."""
    triplane: TriPlaneConfig = field(default_factory=TriPlaneConfig)
    """The tri-plane, used when encoding is 'triplane'."""
    hidden_dim: int = 64
    """Width of the density MLP's hidden layers."""
    density_layers: int = 1
    """Hidden layers of the density MLP."""
    geometry_features: int = 15
    """Features passed from the density MLP to the colour MLP."""
    color_hidden_dim: int = 64
    """Width of the colour MLP's hidden layers."""
    color_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 2
    """Bands of the view-direction encoding (4 -> 16 coefficients, Instant-NGP's; 2 -> 4). Two
    bands by default: queries come from anywhere on the sphere, training views from a band of
    elevations, and higher bands let colour drift on directions no view constrained."""
    reflection: bool = False
    """Colour from the view direction reflected about the surface normal (Ref-NeRF's idea), the normal being
    the density's gradient, in place of the view direction: a highlight of a light fixed around the object
    is then one function of that direction on every face, so a view between the training views gets its
    highlights where they fall; from the view direction the field learns each face's highlights apart and
    blurs them between views. One more pass of the density (and its gradient) per coloured sample."""
    density_bias: float = -1.0
    """Added before the exponential; negative starts the scene nearly empty, which lets the
    occupancy grid skip space from the first updates."""
    encoding_backend: str = "auto"
    """'auto' (tinycudann on CUDA when installed), 'torch' or 'tcnn'."""

    def check(self) -> None:
        one_of(self, "encoding", ("hash", "triplane"))
        require(self, "grid", isinstance(self.grid, HashGridConfig), "must be a HashGridConfig")
        require(self, "triplane", isinstance(self.triplane, TriPlaneConfig), "must be a TriPlaneConfig")
        positive(self, "hidden_dim", "geometry_features", "color_hidden_dim")
        non_negative(self, "density_layers", "color_layers")
        one_of(self, "sh_degree", (1, 2, 3, 4))
        require(self, "density_bias", isinstance(self.density_bias, (int, float)) and math.isfinite(self.density_bias), "must be a finite number")
        one_of(self, "encoding_backend", ("auto", "torch", "tcnn"))


class NGPField(torch.nn.Module):
    """Hash-grid radiance field inside an axis-aligned box.

    aabb: (2, 3) world box [min, max]; points outside it are clamped to its faces.
    """

    field_type = "ngp"

    def __init__(self, config: NGPFieldConfig | None = None, aabb: torch.Tensor | None = None, device=None):
        super().__init__()
        self.config = config or NGPFieldConfig()
        aabb = torch.tensor([[-1.5] * 3, [1.5] * 3]) if aabb is None else torch.as_tensor(aabb, dtype=torch.float32)
        self.register_buffer("aabb", aabb.clone().float())
        if self.config.encoding == "hash":
            self.encoding = make_grid_encoding(self.config.grid, device, self.config.encoding_backend, accumulate_in_place=True)
        elif self.config.encoding == "triplane":
            self.encoding = TriPlaneEncoding(self.config.triplane, accumulate_in_place=True)
        else:
            raise OmniposeError(f"unknown field encoding '{self.config.encoding}'; use 'hash' or 'triplane'.")
        c = self.config
        self.density_net = mlp(self.encoding.n_output_dims, c.hidden_dim, c.density_layers, 1 + c.geometry_features)
        self.direction_encoding = SphericalHarmonicsEncoding(self.config.sh_degree)
        self.color_net = mlp(
            self.config.geometry_features + self.direction_encoding.n_output_dims,
            self.config.color_hidden_dim, self.config.color_layers, 3,
        )  # fmt: skip
        if device is not None:
            self.to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) -> unit-cube coordinates (N, 3) of the scene box."""
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def density(self, x: torch.Tensor, with_features: bool = False):
        """Volume density at world points. x: (N, 3). Returns sigma: (N,) (and features (N, G))."""
        out = self.density_net(self.encoding(self.normalize(x)))
        sigma = truncated_exp(out[:, 0] + self.config.density_bias)
        return (sigma, out[:, 1:]) if with_features else sigma

    @property
    def reflects(self) -> bool:
        """Whether ``color`` needs the points (``NGPFieldConfig.reflection``)."""
        return self.config.reflection

    def color(self, features: torch.Tensor, directions: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Radiance from geometry features (N, G) and unit view directions (N, 3) at world points x (N, 3),
        which only a field with ``reflection`` needs. Returns (N, 3)."""
        if self.config.reflection:
            if x is None:
                raise OmniposeError("a field with reflection needs the points its colours are taken at.")
            normals = self.surface_normals(x)
            directions = directions - 2.0 * (directions * normals).sum(-1, keepdim=True) * normals
        return torch.sigmoid(self.color_net(torch.cat([features, self.direction_encoding(directions)], -1)))

    def surface_normals(self, x: torch.Tensor) -> torch.Tensor:
        """Outward unit normals (N, 3) at world points x (N, 3): the density's gradient, reversed, held
        constant (no gradient reaches the field or x through it, which keeps a training step one backward pass)."""
        # Frozen: with its parameters trainable the hash grid would add a table gradient to table.grad in place.
        with frozen(self), torch.enable_grad():
            points = x.detach().requires_grad_(True)
            logit = self.density_net(self.encoding(self.normalize(points)))[:, 0]
            (gradient,) = torch.autograd.grad(logit.sum(), points)
        return -gradient / gradient.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, directions: (N, 3). Returns sigma: (N,) and rgb: (N, 3)."""
        sigma, features = self.density(x, with_features=True)
        return sigma, self.color(features, directions, x)

    def grid_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.encoding.parameters())

    def network_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.density_net.parameters()) + list(self.color_net.parameters())

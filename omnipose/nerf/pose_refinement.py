"""Training poses refined with the field: reconstructions (structure from motion, MAD-Real's poses)
leave each view about half a degree off, which a field averages into blur of a few pixels.

Each training view gets a rigid correction, a twist (translation, rotation) optimised by the same
loss as the field. It acts in the world frame, turning the camera about the centre of the scene box
and moving it in units of the cameras' distance to that centre, so that one learning rate suits any
scene scale. A correction shared by every view only moves the whole scene (the field would follow
it), so the mean correction is removed after each step: the refined poses stay in the frame of the
given ones.
"""
from __future__ import annotations

import torch

from omnipose.core.geometry import so3_exp


class PoseCorrections(torch.nn.Module):
    """Corrections of ``count`` training poses about ``pivot`` (3,), translations in units of ``scale``."""

    def __init__(self, count: int, pivot: torch.Tensor, scale: float):
        super().__init__()
        self.twists = torch.nn.Parameter(torch.zeros(count, 6, dtype=torch.float32, device=pivot.device))
        self.register_buffer("pivot", pivot.detach().float().clone())
        self.scale = float(scale)

    @classmethod
    def for_cameras(cls, c2w: torch.Tensor, aabb: torch.Tensor) -> "PoseCorrections":
        """Corrections of the cameras ``c2w`` (N, 4, 4) turning about the centre of ``aabb`` (2, 3)."""
        pivot = aabb.float().mean(0).to(c2w.device)
        scale = float((c2w[:, :3, 3].float() - pivot).norm(dim=-1).median().clamp(min=1e-6))
        return cls(int(c2w.shape[0]), pivot, scale)

    def _motion(self, views: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        twists = self.twists[views]
        return so3_exp(twists[:, 3:]), self.scale * twists[:, :3]

    def rays(self, origins: torch.Tensor, directions: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rays (n, 3) of cameras ``views`` (n,) as their corrected cameras cast them."""
        rotation, shift = self._motion(views)
        moved = (rotation @ (origins - self.pivot)[:, :, None])[:, :, 0] + self.pivot + shift
        return moved, (rotation @ directions[:, :, None])[:, :, 0]

    def poses(self, c2w: torch.Tensor) -> torch.Tensor:
        """All the corrected poses (N, 4, 4), detached."""
        with torch.no_grad():
            rotation, shift = self._motion(slice(None))
            out = c2w.detach().float().clone().to(self.pivot.device)
            out[:, :3, :3] = rotation @ out[:, :3, :3]
            out[:, :3, 3] = (rotation @ (out[:, :3, 3] - self.pivot)[:, :, None])[:, :, 0] + self.pivot + shift
        return out

    @torch.no_grad()
    def remove_drift(self) -> None:
        """Take out the correction all views share (a motion of the whole scene)."""
        self.twists -= self.twists.mean(0, keepdim=True)

    def angles_deg(self) -> torch.Tensor:
        """(N,) the rotation of each correction in degrees."""
        return torch.rad2deg(self.twists.detach()[:, 3:].norm(dim=-1))

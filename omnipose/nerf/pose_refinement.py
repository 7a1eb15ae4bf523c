"""Training poses refined with the field: reconstructions (structure from motion, MAD-Real's poses)
leave each view about half a degree off, which a field averages into blur of a few pixels.

Each training view gets a rigid correction, a twist (translation, rotation) optimised by the same
loss as the field. It acts in the world frame, turning the camera about the centre of the scene box
and moving it in units of the cameras' distance to that centre, so that one learning rate suits any
scene scale. A correction shared by every view only moves the whole scene (the field would follow
it), so the mean correction is removed after each step: the refined poses stay in the frame of the
given ones.

With ``focal=True`` one focal length shared by every view is refined too (as a log scale): an object
seen from a few of its sizes away leaves a reconstruction's focal length about 1 % off, traded against
the cameras' distance (the focal-relief ambiguity), which only the field's perspective can settle.
"""
from __future__ import annotations

import torch

from omnipose.core.geometry import so3_exp


class PoseCorrections(torch.nn.Module):
    """Corrections of ``count`` training poses about ``pivot`` (3,), translations in units of ``scale``."""

    def __init__(self, count: int, pivot: torch.Tensor, scale: float, axes: torch.Tensor | None = None):
        """axes: (count, 3, 3) the given cameras' rotations, to refine the focal length in their frames
        (None: the focal length stays as given)."""
        super().__init__()
        self.twists = torch.nn.Parameter(torch.zeros(count, 6, dtype=torch.float32, device=pivot.device))
        self.register_buffer("pivot", pivot.detach().float().clone())
        self.scale = float(scale)
        self.log_focal = None if axes is None else torch.nn.Parameter(torch.zeros((), device=pivot.device))
        if axes is not None:
            self.register_buffer("axes", axes.detach().float().clone())

    @classmethod
    def for_cameras(cls, c2w: torch.Tensor, aabb: torch.Tensor, focal: bool = False) -> "PoseCorrections":
        """Corrections of the cameras ``c2w`` (N, 4, 4) turning about the centre of ``aabb`` (2, 3), and of
        their shared focal length when ``focal``."""
        pivot = aabb.float().mean(0).to(c2w.device)
        scale = float((c2w[:, :3, 3].float() - pivot).norm(dim=-1).median().clamp(min=1e-6))
        return cls(int(c2w.shape[0]), pivot, scale, c2w[:, :3, :3] if focal else None)

    def focal_scale(self) -> float:
        """How much the refined focal length is of the given one (1.0 when it is not refined)."""
        return 1.0 if self.log_focal is None else float(torch.exp(self.log_focal.detach()))

    def intrinsics(self, K: torch.Tensor) -> torch.Tensor:
        """The intrinsics (3, 3) ``K`` with the refined focal length."""
        out = K.detach().float().clone()
        out[:2, :2] *= self.focal_scale()
        return out

    def _motion(self, views: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        twists = self.twists[views]
        return so3_exp(twists[:, 3:]), self.scale * twists[:, :3]

    def rays(self, origins: torch.Tensor, directions: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rays (n, 3) of cameras ``views`` (n,) as their corrected cameras cast them; ``directions``
        are unit vectors and so are those returned."""
        if self.log_focal is not None:  # x and y over the focal length in each camera's own frame
            axes = self.axes[views]
            local = (axes.transpose(1, 2) @ directions[:, :, None])[:, :, 0]
            shrink = torch.exp(-self.log_focal)
            local = torch.stack([local[:, 0] * shrink, local[:, 1] * shrink, local[:, 2]], -1)
            directions = torch.nn.functional.normalize((axes @ local[:, :, None])[:, :, 0], dim=-1)
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

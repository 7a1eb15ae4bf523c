"""The object whose pose is sought, as pose estimation sees it: its radiance field, the camera
intrinsics, the training cameras and the cameras added where they leave gaps."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.device import frozen, pick_device
from omnipose.core.geometry import axes_focus, gap_directions, half_turn, look_at, roll_camera, so3_exp, turn_about
from omnipose.pose.config import PoseConfig
from omnipose.pose.query import PoseError, info_value


def upright_axis(train_c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The object's vertical as its capture shows it: the point the training cameras look at (3,)
    and their mean up vector (3,), unit. train_c2w: (N, 4, 4)."""
    up = train_c2w[:, :3, 1].mean(0)
    return axes_focus(train_c2w), up / up.norm().clamp_min(1e-12)


def gap_filling_poses(train_c2w: torch.Tensor, count: int, min_angle_deg: float) -> torch.Tensor:
    """Cameras where the training views leave gaps: up to ``count`` directions farther than
    ``min_angle_deg`` from every training view, at the median training distance from the point the
    training cameras look at, looking at it with the training cameras' mean up vector.

    train_c2w: (N, 4, 4). Returns (M, 4, 4), M <= count.
    """
    if count <= 0 or len(train_c2w) < 2:
        return torch.zeros(0, 4, 4)
    focus, up = upright_axis(train_c2w)
    offsets = train_c2w[:, :3, 3] - focus
    distance = float(offsets.norm(dim=1).median())
    directions = gap_directions(offsets / offsets.norm(dim=1, keepdim=True), count, min_angle_deg)
    return torch.stack([look_at(focus + distance * d, focus, up) for d in directions]) if len(directions) else torch.zeros(0, 4, 4)


@dataclass(eq=False)
class PoseScene:
    """A radiance field and the cameras around it.

    model: a RadianceModel (``render_rays(rays_o, rays_d) -> {'rgb', 'depth', 'opacity'}``), on
    ``device``. width, height: the model's image size; background: its colour (3,). K: (3, 3) true
    intrinsics (what PnP uses); render_K: the intrinsics rendering uses (see ``of_model``).
    train_c2w: (N, 4, 4) training cameras; gap_c2w: (M, 4, 4) cameras where they leave gaps
    (``gap_filling_poses``); retrieval runs over both, in that order. centre: (3,) the middle of the
    object's box; distance: the median distance of the training cameras to it (the scene scale).
    """

    model: object
    device: torch.device
    width: int
    height: int
    background: tuple[float, float, float]
    K: torch.Tensor
    render_K: torch.Tensor
    train_c2w: torch.Tensor
    gap_c2w: torch.Tensor
    centre: torch.Tensor
    distance: float

    @classmethod
    def of_model(cls, model, info, config: PoseConfig, views=None) -> "PoseScene":
        """The scene of a model and its CheckpointInfo (width, height, K, background, train_c2w, aabb);
        ``views`` (PosedImages) supply the cameras a checkpoint without them lacks."""
        device = pick_device(config.device) if config.device else _model_device(model)
        background = tuple(float(c) for c in np.broadcast_to(np.asarray(info_value(info, "background", 1.0)), (3,)))
        K, train_c2w = info_value(info, "K"), info_value(info, "train_c2w")
        if K is None or train_c2w is None or len(train_c2w) == 0:
            if views is None:
                raise PoseError(
                    "the checkpoint stores no camera or training poses (a nerf-pytorch .tar?): pass the training "
                    "views, PoseEstimator(model, info, views=load_transforms(...)), to retrieve poses against."
                )
            K, train_c2w = views.K, views.c2w
        K = torch.as_tensor(K, dtype=torch.float32).cpu()
        train_c2w = torch.as_tensor(train_c2w, dtype=torch.float32).cpu()
        # Models whose pixel (i, j) ray passes off our centre (i + 0.5, j + 0.5) render with the
        # principal point moved by that offset: PnP keeps the true K, rendering uses this one.
        render_K = K.clone()
        render_K[:2, 2] -= float(getattr(model, "pixel_offset", 0.0))
        aabb = info_value(info, "aabb")
        centre = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).mean(0) if aabb is not None else torch.zeros(3)
        distance = float((train_c2w[:, :3, 3] - centre).norm(dim=1).median())
        return cls(
            model, device, int(info_value(info, "width")), int(info_value(info, "height")), background, K, render_K,
            train_c2w, gap_filling_poses(train_c2w, config.gap_views, config.gap_angle_deg), centre, distance,
        )

    @cached_property
    def retrieval_c2w(self) -> torch.Tensor:
        """(N + M, 4, 4): the training cameras followed by the gap cameras."""
        return torch.cat([self.train_c2w, self.gap_c2w])

    def half_turned(self, c2w: torch.Tensor) -> torch.Tensor:
        """Poses c2w (..., 4, 4) turned 180 degrees about the object's vertical (``upright_axis``):
        the view of its other side, which a plain object lit from another side can be taken for."""
        focus, up = upright_axis(self.train_c2w)
        return half_turn(c2w, up.to(c2w), focus.to(c2w))

    def nearby(self, c2w: torch.Tensor, angle_deg: float, directions: int = 4) -> torch.Tensor:
        """Poses ``angle_deg`` away from one c2w (4, 4): orbited about the point it looks at, at the
        object's distance, in ``directions`` directions across the view, then rolled both ways.
        Returns (directions + 2, 4, 4)."""
        angle = math.radians(angle_deg)
        looked_at = c2w[:3, 3] - float((c2w[:3, 3] - self.centre.to(c2w)).norm()) * c2w[:3, 2]
        turns = [2.0 * math.pi * k / directions for k in range(directions)]
        axes = [math.cos(t) * c2w[:3, 0] + math.sin(t) * c2w[:3, 1] for t in turns]
        orbits = [turn_about(c2w, so3_exp(axis * angle), looked_at) for axis in axes]
        return torch.stack(orbits + [roll_camera(c2w, angle), roll_camera(c2w, -angle)])

    def view_name(self, view: int) -> str:
        """'view 12' for a training view, 'gap render 3' for a render added at a gap."""
        count = len(self.train_c2w)
        return f"view {view}" if view < count else f"gap render {view - count}"

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> dict:
        return self.model.render_rays(rays_o.to(self.device), rays_d.to(self.device))

    def render_views(self, c2ws: torch.Tensor, desc: str, progress: bool = False) -> torch.Tensor:
        """Renders of the field at c2ws (N, 4, 4) at the model's size: (N, H, W, 3) on the CPU."""
        images = []
        with torch.no_grad():
            for c2w in tqdm(c2ws, desc=desc, disable=not progress, leave=False):
                out = self.model.render_image(c2w.to(self.device), self.K.to(self.device), self.height, self.width)
                images.append(out["rgb"].float().cpu().clamp(0, 1))
        return torch.stack(images) if images else torch.zeros(0, self.height, self.width, 3)

    def frozen(self):
        """While poses are optimised, the field's parameters need no gradient."""
        return frozen(self.model) if isinstance(self.model, torch.nn.Module) else nullcontext()


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")

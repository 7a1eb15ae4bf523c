"""Training a radiance field on posed views of a defect-free object, with resume.

``train_model`` fits an NGP ``RadianceModel`` to ``PosedImages``: every step draws random rays
from all training views (a random point inside each pixel), renders them and takes an Adam step
on the squared colour error. The ray count adapts so that a step costs about
``target_samples`` network evaluations (Instant-NGP's rule), the occupancy grid is refreshed
every ``occupancy_every`` steps, and once (``shrink_box_at``) the scene box shrinks around the
occupied cells so that the grid spends its cells on the object.

Checkpoints (``checkpoint.py``) are written every ``checkpoint_every_steps`` steps or
``checkpoint_every_seconds`` seconds, at the end, and when the run is interrupted (Ctrl-C), so an
interrupted run loses at most the steps since the last checkpoint; running again with
``resume=True`` continues from it. With the same seed and a step budget (no time budget)
training on CPU is reproducible.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.config import (
    Config,
    fraction,
    non_negative,
    optional_positive,
    positive,
    require,
)
from omnipose.core.device import pick_device
from omnipose.core.errors import CheckpointError, DataError
from omnipose.core.files import remove_stale_temporaries
from omnipose.core.geometry import rigid_pose_problem
from omnipose.data import PosedImages
from omnipose.nerf.bounds import resolve_aabb
from omnipose.nerf.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    CheckpointInfo,
    load_checkpoint,
    load_torch_file,
    save_checkpoint,
)
from omnipose.nerf.field import NGPField, NGPFieldConfig
from omnipose.nerf.hash_grid import HashGridConfig, grid_levels
from omnipose.nerf.models import RadianceModel, RenderConfig
from omnipose.nerf.pose_refinement import PoseCorrections
from omnipose.nerf.quality import evaluate_views, object_psnrs, unexplained_views
from omnipose.nerf.sampling import random_uniform


# ----------------------------------------------------------------------------- configuration
def default_field_config(device: torch.device | str | None = None) -> NGPFieldConfig:
    """The field used when none is given.

    CUDA: Instant-NGP's hash grid (16 levels, 2 features, 2^19 entries per level, 16 -> 2048).
    CPU: two dense levels (64^3 and 128^3, 8 features each; a ``HashGridConfig`` whose levels all
    fit the table, so no hashing). On a CPU a point then costs 16 table rows instead of 128, with one
    index offset per level instead of a hash per corner: encoding forward + backward is about 4x
    cheaper than the 16-level hash grid, and training reaches a given PSNR sooner
    (``scripts/bench_field.py --encoding hash`` compares them).
    """
    if pick_device(device).type == "cuda":
        return NGPFieldConfig(grid=HashGridConfig())
    return NGPFieldConfig(grid=HashGridConfig(n_levels=2, features_per_level=8, log2_table_size=21, base_resolution=64, max_resolution=128))


def _all_levels_dense(field_config: NGPFieldConfig) -> bool:
    return field_config.encoding != "hash" or all(level.dense for level in grid_levels(field_config.grid))


@dataclass
class TrainConfig(Config):
    """Training settings; the defaults train a usable model of a MAD / Blender object on a CPU."""

    field: NGPFieldConfig | None = None
    """The field (None: ``default_field_config`` for the device)."""
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    """How the model marches rays, during training and after."""
    steps: int = 5000
    """Optimisation steps; training stops at whichever of steps / minutes comes first."""
    minutes: float | None = None
    """Time budget of the optimisation (None: none). The learning-rate schedule follows the
    progress, max(step / steps, elapsed / minutes)."""
    target_samples: int | None = None
    """Network evaluations per step; rays per step adapt to it within [min_rays, max_rays]
    (None: 2^14 on CPU, 2^18 on CUDA)."""
    min_rays: int = 256
    """Fewest rays per step."""
    max_rays: int | None = None
    """Most rays per step (None: 4096 on CPU, 65536 on CUDA)."""
    initial_rays: int = 1024
    """Rays of the first step, before the samples per ray are known."""
    lr: float | None = None
    """Adam learning rate of the grid (None: 5e-2 for dense grids and tri-planes, which need large
    steps to move millions of independent cells, 1e-2 for hash grids as in Instant-NGP)."""
    network_lr: float = 1e-2
    """Adam learning rate of the MLPs (larger makes training diverge now and then)."""
    lr_warmup_steps: int = 50
    """Steps of the linear learning-rate warm-up."""
    lr_milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    """Fractions of the progress at which the learning rate is multiplied by lr_gamma."""
    lr_gamma: float = 0.33
    """Learning-rate factor at each milestone."""
    weight_decay: float = 1e-6
    """Adam weight decay of the MLPs (the grid has none)."""
    occupancy_every: int = 16
    """Steps between occupancy-grid refreshes."""
    occupancy_warmup: int = 256
    """Until this step every cell is re-measured at each refresh."""
    occupancy_fraction: float = 0.25
    """After the warm-up, the share of cells re-measured at random at each refresh (plus every occupied one)."""
    shrink_box_at: int = 320
    """At this step the scene box shrinks around the occupied cells and the dense grid levels are
    resampled onto it, so the object gets finer cells (0: never)."""
    eval_every: int = 1000
    """Steps between held-out evaluations during training (0: only at the end)."""
    eval_views: int = 2
    """Held-out views scored at each evaluation during training (all of them at the end)."""
    checkpoint_every_steps: int = 1000
    """A checkpoint is written after this many steps ..."""
    checkpoint_every_seconds: float = 120.0
    """... or after this many seconds, whichever comes first."""
    refine_poses: bool = False
    """Refine the training poses with the field (``pose_refinement.py``), for poses from a
    reconstruction; the refined poses go into the checkpoint and serve from then on."""
    refine_focal: bool = False
    """With ``refine_poses``, also refine the focal length the training views share (a reconstruction of
    an object seen from afar leaves it about 1 % off); the refined one goes into the checkpoint's K. Off:
    on the onboarded lego views it moved the focal length further off (``docs/RESULTS.md``, onboarding)."""
    pose_lr: float = 1e-3
    """Adam learning rate of the pose corrections (radians; translations in camera distances)."""
    unexplained_check_at: float | None = 0.5
    """At this fraction of the training (of the steps, or of the minutes where those run out first), render each
    training view small and leave out of the rest of training the views the field reproduces far worse than the
    others (``quality.unexplained_views``): a pose a reconstruction got wrong, a photo of something else. They are
    named, and left out of the checkpoint's training views (and so of retrieval, references and calibration).
    None: every view trains to the end."""
    unexplained_gap_db: float = 8.0
    """How far, in dB of PSNR over the object, a view must fall below the median training view to be left out at
    ``unexplained_check_at``. There, fields on exact poses keep every view within 5.5 dB of the median (the 12
    built-in classes and the lego at 200 px), and photos an onboarding registered 28 - 101 deg off fall 9 - 15 dB
    below it (``docs/RESULTS.md``)."""
    distortion_weight: float = 0.0
    """Weight of Mip-NeRF 360's distortion loss (``compositing.distortion``, in scene units) beside the
    colour loss: it draws each ray's weight into one short stretch, so surfaces are solid and depth
    sharp (0: off)."""
    seed: int = 0
    """Seed of the initial weights and of every random draw (rays, jitter, occupancy cells)."""
    device: str | None = None
    """'cpu', 'cuda', 'cuda:1' (None: CUDA when present)."""
    aabb: list | None = None
    """Scene box [[xmin, ymin, zmin], [xmax, ymax, zmax]]; None: from the cameras' frustums (or the default box),
    shrunk at ``shrink_box_at``. A box as tight as the object trains a worse field than that coarse start
    (2-4 dB held-out PSNR on built-in classes): give one only where the frustums miss the object."""
    dataset: str = "custom"
    """Dataset name, recorded in the checkpoint (and checked when resuming)."""
    class_name: str = "object"
    """Object name, recorded in the checkpoint (and checked when resuming)."""

    def check(self) -> None:
        require(self, "field", self.field is None or isinstance(self.field, NGPFieldConfig), "must be None or an NGPFieldConfig")
        require(self, "render", isinstance(self.render, RenderConfig), "must be a RenderConfig")
        positive(self, "steps", "min_rays", "initial_rays", "network_lr", "lr_gamma", "occupancy_every", "pose_lr")
        require(self, "refine_poses", isinstance(self.refine_poses, bool), "must be True or False")
        require(self, "refine_focal", isinstance(self.refine_focal, bool) and (self.refine_poses or not self.refine_focal),
                "must be True or False, and True only with refine_poses")  # fmt: skip
        positive(self, "checkpoint_every_steps", "checkpoint_every_seconds", "unexplained_gap_db")
        optional_positive(self, "minutes", "target_samples", "max_rays", "lr")
        non_negative(self, "lr_warmup_steps", "weight_decay", "occupancy_warmup", "shrink_box_at", "eval_every",
                     "eval_views", "distortion_weight")
        fraction(self, "occupancy_fraction", open_low=True)
        require(self, "unexplained_check_at", self.unexplained_check_at is None or (
            isinstance(self.unexplained_check_at, (int, float)) and 0 < self.unexplained_check_at < 1),
            "must be a fraction of the steps in (0, 1), or None for no check")  # fmt: skip
        require(self, "lr_milestones", isinstance(self.lr_milestones, (tuple, list)) and all(
            isinstance(m, (int, float)) and 0 <= m <= 1 for m in self.lr_milestones), "must be fractions of the progress in [0, 1]")  # fmt: skip
        require(self, "seed", isinstance(self.seed, int) and not isinstance(self.seed, bool), "must be an integer")
        for name in ("dataset", "class_name"):
            require(self, name, isinstance(getattr(self, name), str) and getattr(self, name) != "", "must be a non-empty name")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], drop_unknown: bool = True) -> "TrainConfig":
        """The config from a dict; keys it does not know (such as the ``aabb_source`` a checkpoint's
        ``info.config`` records, or settings an older version had) are dropped."""
        return super().from_dict(data, drop_unknown)

    def resolved(self, device: torch.device | str | None = None) -> "TrainConfig":
        """A copy with every automatic (None) setting filled in for ``device``."""
        device = pick_device(device if device is not None else self.device)
        field_config = self.field if self.field is not None else default_field_config(device)
        cuda = device.type == "cuda"
        return dataclasses.replace(
            self,
            field=field_config,
            lr=self.lr if self.lr is not None else (5e-2 if _all_levels_dense(field_config) else 1e-2),
            target_samples=self.target_samples if self.target_samples is not None else (2**18 if cuda else 2**14),
            max_rays=self.max_rays if self.max_rays is not None else (2**16 if cuda else 4096),
        )


# ----------------------------------------------------------------------------- model building
def build_model(config: TrainConfig, aabb: torch.Tensor, background=(1.0, 1.0, 1.0), device=None) -> RadianceModel:
    """A fresh NGP RadianceModel for ``config`` inside ``aabb`` (2, 3)."""
    device = pick_device(device)
    field_ = NGPField(config.field, aabb=aabb, device=device)
    return RadianceModel(field_, aabb=aabb, background=background, config=config.render).to(device)


def make_optimizer(model: RadianceModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam as Instant-NGP uses it: eps 1e-15 (tiny grid gradients still move), betas (0.9, 0.99),
    weight decay on the MLPs only. Fused on CPU and CUDA: one pass over the multi-million-entry table."""
    groups = [
        {"params": model.field.grid_parameters(), "weight_decay": 0.0, "lr": config.lr, "base_lr": config.lr},
        {"params": model.field.network_parameters(), "weight_decay": config.weight_decay,
         "lr": config.network_lr, "base_lr": config.network_lr},  # fmt: skip
    ]
    try:
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-15, fused=True)
    except (RuntimeError, TypeError):  # fused Adam unavailable on this device/build
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-15)


def learning_rate_factor(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warm-up over lr_warmup_steps, then a step decay by lr_gamma at each milestone of progress."""
    warmup = min(1.0, (step + 1) / max(1, config.lr_warmup_steps))
    decay = config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
    return warmup * decay


# ----------------------------------------------------------------------------- data
def check_views(views: PosedImages, name: str = "training views") -> None:
    """DataError for views that cannot train a field: none, unposed, non-finite or badly shaped."""
    if views is None or len(views) == 0:
        raise DataError(f"no {name}: training needs posed images (a transforms.json with frames).")
    if views.images.dim() != 4 or views.images.shape[-1] != 3:
        raise DataError(f"{name}: images must be (N, H, W, 3), got {tuple(views.images.shape)}; all views must share one size.")
    if views.c2w is None or tuple(views.c2w.shape) != (len(views), 4, 4):
        raise DataError(f"{name} have no poses (expected c2w of shape ({len(views)}, 4, 4)); export camera poses in transforms.json.")
    if not torch.isfinite(views.c2w).all() or not torch.isfinite(views.images).all():
        raise DataError(f"{name} contain non-finite poses or pixels; re-export the dataset.")
    for index, c2w in enumerate(views.c2w):
        problem = rigid_pose_problem(c2w)
        if problem is not None:
            where = views.paths[index] if index < len(views.paths) else f"view {index}"
            raise DataError(f"the pose of {name} {where} {problem}; each view needs a camera-to-world pose.")


def split_holdout(views: PosedImages, every: int) -> tuple[PosedImages, PosedImages | None]:
    """(training, held-out) views: every ``every``-th view (0, K, 2K, ...) is held out (every <= 1: none)."""
    if every is None or every <= 1:
        return views, None
    held = [i for i in range(len(views)) if i % every == 0]
    kept = [i for i in range(len(views)) if i % every != 0]
    return views.subset(kept), views.subset(held)


class RayBatcher:
    """Random rays through random training pixels, a random point inside each pixel.

    Holds all pixels as one (N * H * W, 3) tensor on the training device.
    """

    def __init__(self, views: PosedImages, device: torch.device):
        self.device = device
        self.colors = views.images.reshape(-1, 3).to(device)
        self.c2w = views.c2w.to(device, torch.float32)
        self.K = views.K.to(device, torch.float32)
        self.height, self.width = views.height, views.width
        self.pixels_per_view = self.height * self.width
        self.kept_views: torch.Tensor | None = None

    def leave_out(self, views: list[int]) -> None:
        """Draw no more rays from the training views at these indices."""
        kept = torch.ones(self.c2w.shape[0], dtype=torch.bool)
        kept[list(views)] = False
        self.kept_views = None if kept.all() else torch.nonzero(kept)[:, 0].to(self.device)

    def sample(self, n_rays: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns rays_o, rays_d (unit): (n, 3), target colours (n, 3) and the rays' views (n,)."""
        if self.kept_views is None:
            index = torch.randint(0, self.colors.shape[0], (n_rays,), generator=generator, device=generator.device).to(self.device)
        else:
            pick = torch.randint(0, len(self.kept_views), (n_rays,), generator=generator, device=generator.device)
            pixel = torch.randint(0, self.pixels_per_view, (n_rays,), generator=generator, device=generator.device)
            index = self.kept_views[pick.to(self.device)] * self.pixels_per_view + pixel.to(self.device)
        offset = random_uniform((n_rays, 2), generator, self.device)
        view = index // self.pixels_per_view
        pixel = index % self.pixels_per_view
        u = (pixel % self.width).float() + offset[:, 0]
        v = (pixel // self.width).float() + offset[:, 1]
        x = (u - self.K[0, 2]) / self.K[0, 0]
        y = (v - self.K[1, 2]) / self.K[1, 1]
        directions = torch.stack([x, -y, -torch.ones_like(x)], -1)  # OpenGL camera frame
        pose = self.c2w[view]
        rays_d = (pose[:, :3, :3] @ directions[:, :, None])[:, :, 0]
        rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
        return pose[:, :3, 3], rays_d, self.colors[index], view


# ----------------------------------------------------------------------------- training
def leave_out_unexplained(model: RadianceModel, views: PosedImages, c2w: torch.Tensor, K: torch.Tensor,
                          batcher: RayBatcher, gap_db: float) -> list[int]:
    """The training views the field cannot explain (``quality.unexplained_views`` at poses c2w and intrinsics K),
    named on the console and left out of ``batcher``'s rays from now on."""
    model.eval()
    psnrs = object_psnrs(model, views.images, c2w, K, views.background)
    found = unexplained_views(psnrs, gap_db)
    if found:
        if len(found) > len(views) // 4:
            tqdm.write(f"warning: the field reproduces {len(found)} of the {len(views)} training views far worse than the "
                       "others; their poses disagree with one another (a reconstruction folded?). Every view trains on.")
            return []
        median = float(np.median(psnrs))
        named = ", ".join(f"{Path(views.paths[i]).name} ({psnrs[i] - median:+.1f} dB)" for i in found)
        tqdm.write(f"warning: {len(found)} training view(s) left out, rendered far worse than the median view: {named}. "
                   "Their poses disagree with the other views' (a reconstruction's mistake), or they show something the "
                   "others do not. Check them; TrainConfig.unexplained_check_at=None trains on every view.")
        batcher.leave_out(found)
    return found


def _restore(out_dir: Path, model: RadianceModel, optimizer, config: TrainConfig, device) -> tuple[int, dict]:
    """Load model (and, when consistent, optimiser) state from out_dir. Returns (step, trainer state)."""
    loaded, info = load_checkpoint(out_dir, device=device)
    if info.field_type != model.field_type or info.dataset != config.dataset or info.class_name != config.class_name:
        raise CheckpointError(
            f"{out_dir} holds a {info.field_type} model of {info.dataset}/{info.class_name}, not "
            f"{model.field_type} of {config.dataset}/{config.class_name}; use another --out or --no-resume."
        )
    try:
        model.load_state_dict(loaded.state_dict())
    except RuntimeError as error:
        raise CheckpointError(f"{out_dir} holds a model of another size ({error}); use another --out or --no-resume.") from error
    trainer: dict = {}
    state_file = out_dir / STATE_FILE
    if state_file.is_file():
        state = load_torch_file(state_file)
        if isinstance(state, dict) and state.get("step") == info.step:
            optimizer.load_state_dict(state["optimizer"])
            trainer = state.get("trainer", {})
        else:
            tqdm.write(f"note: {state_file} does not match {MODEL_FILE} (step {info.step}); the optimiser restarts.")
    return info.step, trainer


def train_model(
    views: PosedImages,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    holdout: PosedImages | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> RadianceModel:
    """Train an NGP radiance field on ``views``; returns the model in eval mode.

    out_dir: where checkpoints go (None: no checkpoints, no resume). holdout: views for PSNR/SSIM.
    resume: continue from out_dir's checkpoint when there is one. callback(step, stats) runs after
    every step (stats: loss, psnr, rays, samples, elapsed seconds of training); it may raise
    KeyboardInterrupt to stop the run the way Ctrl-C does.
    The model gets ``history`` (curve points) and ``metrics`` (final held-out scores) attributes.
    """
    config = (config or TrainConfig()).resolved()
    check_views(views)
    if holdout is not None and len(holdout):
        check_views(holdout, "held-out views")
        if (holdout.height, holdout.width) != (views.height, views.width):
            raise DataError(
                f"held-out views are {holdout.width}x{holdout.height} but training views are "
                f"{views.width}x{views.height}; load both at one --size."
            )
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    aabb, aabb_source = resolve_aabb(config.aabb, views.c2w, views.K, views.width, views.height)
    model = build_model(config, aabb, views.background, device).train()
    optimizer = make_optimizer(model, config)
    corrections = None
    if config.refine_poses:
        corrections = PoseCorrections.for_cameras(views.c2w.to(device), model.aabb, focal=config.refine_focal)
        optimizer.add_param_group({"params": list(corrections.parameters()), "weight_decay": 0.0,
                                   "lr": config.pose_lr, "base_lr": config.pose_lr})  # fmt: skip
    out_dir = Path(out_dir) if out_dir is not None else None

    step, trainer = 0, {}
    if out_dir is not None:
        for leftover in remove_stale_temporaries(out_dir):
            tqdm.write(f"note: removed {leftover.name}, left in {out_dir} by a run killed while writing it.")
        if resume and not (out_dir / MODEL_FILE).is_file() and (out_dir / STATE_FILE).is_file():
            tqdm.write(f"note: {out_dir} holds {STATE_FILE} but no {MODEL_FILE} (a run was killed while writing "
                       "its first checkpoint); training starts over.")
    if out_dir is not None and resume and (out_dir / MODEL_FILE).is_file():
        step, trainer = _restore(out_dir, model, optimizer, config, device)
        if "rng" in trainer:
            generator.set_state(trainer["rng"])
        if corrections is not None and "pose_corrections" in trainer:
            corrections.twists.data.copy_(trainer["pose_corrections"].to(device))
            if corrections.log_focal is not None and "focal_correction" in trainer:
                corrections.log_focal.data.copy_(trainer["focal_correction"].to(device))
        model.train()
    history: list[dict] = list(trainer.get("history", []))
    elapsed = float(trainer.get("elapsed", 0.0))
    n_rays = int(trainer.get("n_rays", config.initial_rays))
    samples_per_ray = float(trainer.get("samples_per_ray", 0.0))
    # Views the field could not explain, once checked (None: not yet): left out of training and of the checkpoint.
    left_out: list[int] | None = trainer.get("left_out")

    def current_poses() -> tuple[torch.Tensor, torch.Tensor]:
        if corrections is None:
            return views.c2w.clone().float(), views.K.clone().float()
        return corrections.poses(views.c2w).cpu(), corrections.intrinsics(views.K).cpu()

    def make_info(metrics: dict | None = None) -> CheckpointInfo:
        dropped = set(left_out or [])
        kept = [i for i in range(len(views)) if i not in dropped]
        c2w, K = current_poses()
        return CheckpointInfo(
            dataset=config.dataset, class_name=config.class_name, field_type=model.field_type,
            width=views.width, height=views.height, background=tuple(views.background), K=K,
            train_c2w=c2w[kept], train_image_paths=[str(views.paths[i]) for i in kept],
            aabb=model.aabb.detach().cpu().clone(), config={**config.to_dict(), "aabb_source": aabb_source},
            step=step, metrics=metrics or {}, backdrop=views.backdrop,
            left_out_paths=[str(views.paths[i]) for i in left_out or []],
        )  # fmt: skip

    def checkpoint(metrics: dict | None = None) -> None:
        if out_dir is None:
            return
        trainer_state = {"rng": generator.get_state(), "elapsed": elapsed, "n_rays": n_rays,
                         "samples_per_ray": samples_per_ray, "history": history}  # fmt: skip
        if left_out is not None:
            trainer_state["left_out"] = list(left_out)
        if corrections is not None:
            trainer_state["pose_corrections"] = corrections.twists.detach().cpu().clone()
            if corrections.log_focal is not None:
                trainer_state["focal_correction"] = corrections.log_focal.detach().cpu().clone()
        save_checkpoint(out_dir, model, make_info(metrics), optimizer, trainer_state)

    batcher = RayBatcher(views, device)
    if left_out:
        batcher.leave_out(left_out)
    budget = None if config.minutes is None else 60.0 * config.minutes
    last_save_time, last_save_step = time.perf_counter(), step
    bar = tqdm(total=config.steps, initial=step, desc=f"training {config.class_name}", disable=not progress, dynamic_ncols=True)
    try:
        while step < config.steps and (budget is None or elapsed < budget):
            start = time.perf_counter()
            progress_fraction = max(step / config.steps, elapsed / budget if budget else 0.0)
            factor = learning_rate_factor(step, progress_fraction, config)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            if step > 0 and step % config.occupancy_every == 0:
                fraction = 1.0 if step <= config.occupancy_warmup else config.occupancy_fraction
                model.update_occupancy(fraction, generator=generator)
            if step > 0 and step == config.shrink_box_at and model.shrink_box(generator=generator):
                # Moments of the old cells mean nothing for the resampled ones.
                for parameter in model.field.grid_parameters():
                    optimizer.state.pop(parameter, None)
                tqdm.write(f"step {step}: scene box shrunk to {[[round(v, 3) for v in row] for row in model.aabb.tolist()]}")
            rays_o, rays_d, target, view = batcher.sample(n_rays, generator)
            if corrections is not None:
                rays_o, rays_d = corrections.rays(rays_o, rays_d, view)
            distorting = config.distortion_weight > 0
            out = model.render_rays(rays_o, rays_d, generator=generator, with_distortion=distorting)
            colour_loss = torch.mean((out["rgb"] - target) ** 2)
            loss = colour_loss + config.distortion_weight * out["distortion"].mean() if distorting else colour_loss
            # Gradients are zeroed in place: the grid's buffer is reused (see encoding.interpolate_rows).
            optimizer.zero_grad(set_to_none=False)
            if out["samples"] > 0:
                loss.backward()
                optimizer.step()
                if corrections is not None:
                    corrections.remove_drift()
            step += 1
            # Adapt the ray count so a step costs about target_samples evaluations.
            measured = out["samples"] / n_rays
            samples_per_ray = measured if samples_per_ray == 0 else 0.9 * samples_per_ray + 0.1 * measured
            n_rays = int(min(config.max_rays, max(config.min_rays, config.target_samples / max(samples_per_ray, 1.0))))
            elapsed += time.perf_counter() - start
            loss_value = float(colour_loss.detach())
            stats = {"loss": loss_value, "psnr": -10 * math.log10(max(loss_value, 1e-10)), "rays": int(rays_o.shape[0]),
                     "samples": out["samples"], "candidates": out.get("candidates", 0), "elapsed": elapsed,
                     "occupied": model.occupancy.occupied_fraction}  # fmt: skip
            bar.update(1)
            if step % 10 == 0 or step == 1:
                bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{stats['psnr']:.2f}", rays=n_rays, spr=f"{samples_per_ray:.1f}")
            checking = config.unexplained_check_at is not None and progress_fraction >= config.unexplained_check_at
            if left_out is None and checking:
                left_out = leave_out_unexplained(model, views, *current_poses(), batcher, config.unexplained_gap_db)
                model.train()
            if holdout is not None and len(holdout) and config.eval_every and step % config.eval_every == 0:
                scores = evaluate_views(model, holdout, config.eval_views)
                history.append({"step": step, "elapsed": elapsed, "train_psnr": stats["psnr"],
                                "psnr": scores["psnr"], "ssim": scores["ssim"]})  # fmt: skip
                tqdm.write(f"step {step}: held-out PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} ({elapsed:.0f} s)")
            if callback is not None:
                callback(step, stats)
            now = time.perf_counter()
            if out_dir is not None and (
                step - last_save_step >= config.checkpoint_every_steps or now - last_save_time >= config.checkpoint_every_seconds
            ):
                checkpoint()
                last_save_time, last_save_step = now, step
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        if out_dir is not None:
            tqdm.write(f"interrupted at step {step}: checkpoint saved in {out_dir}; run again to resume.")
        raise
    bar.close()
    model.eval()
    metrics: dict = {"steps": step, "train_seconds": elapsed}
    if left_out:
        metrics["views_left_out"] = [str(views.paths[i]) for i in left_out]
    if holdout is not None and len(holdout):
        scores = evaluate_views(model, holdout, progress=progress)
        metrics.update({"psnr": scores["psnr"], "ssim": scores["ssim"], "seconds_per_image": scores["seconds_per_image"]})
        history.append({"step": step, "elapsed": elapsed, "psnr": scores["psnr"], "ssim": scores["ssim"], "final": True})
    checkpoint(metrics)
    model.history = history
    model.metrics = metrics
    return model

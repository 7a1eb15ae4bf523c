"""Training a radiance field on posed views of a defect-free object; checkpoints and resume.

``train_model`` fits an NGP ``RadianceModel`` to ``PosedImages``: every step draws random rays
from all training views (a random point inside each pixel), renders them and takes an Adam step
on the squared colour error. The ray count adapts so that a step costs about
``target_samples`` network evaluations (Instant-NGP's rule), the occupancy grid is refreshed
every ``occupancy_every`` steps, and once (``shrink_box_at``) the scene box shrinks around the
occupied cells so that the grid spends its cells on the object.

Checkpoints (``<out>/model.pt`` + ``<out>/config.json``, resume state in ``<out>/train_state.pt``)
are written atomically every ``checkpoint_every_steps`` steps or ``checkpoint_every_seconds``
seconds, at the end, and when the run is interrupted (Ctrl-C), so an interrupted run loses at most
the steps since the last checkpoint; running again with ``resume=True`` continues from it.
With the same seed and a step budget (no time budget) training on CPU is reproducible.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.core.device import pick_device
from omnipose.core.errors import CheckpointError, DataError
from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.data import PosedImages
from omnipose.nerf.encoding import HashGridConfig
from omnipose.nerf.field import NGPField, NGPFieldConfig, load_nerf_mlp
from omnipose.nerf.render import RadianceModel, RenderConfig, VanillaNeRFModel, random_uniform, resolve_aabb

CHECKPOINT_FORMAT = "omnipose.radiance_field"
CHECKPOINT_VERSION = 1
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"


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
    from omnipose.nerf.encoding import grid_levels

    return field_config.encoding != "hash" or all(level.dense for level in grid_levels(field_config.grid))


@dataclass
class TrainConfig:
    """Training settings; the defaults train a usable model of a MAD / Blender object on a CPU.

    field: the field (None: ``default_field_config`` for the device).
    steps / minutes: stop at whichever comes first (minutes=None: no time budget). The learning
    rate schedule follows the progress, max(step / steps, elapsed / minutes).
    target_samples: network evaluations per step; rays per step adapt to it within
    [min_rays, max_rays] (None: 2^14 samples / 4096 rays on CPU, 2^18 / 65536 on CUDA).
    lr: Adam learning rate of the grid (None: 5e-2 for dense grids and tri-planes, which need
    large steps to move millions of independent cells, 1e-2 for hash grids as in Instant-NGP);
    network_lr: of the MLPs (1e-2; larger makes training diverge now and then). Adam eps 1e-15.
    occupancy_every / occupancy_warmup / occupancy_fraction: grid refresh period, the steps during
    which every cell is re-measured, and the share re-measured after that.
    shrink_box_at: at this step the scene box shrinks around the occupied cells and the dense grid
    levels are resampled onto it (finer cells for the object; 0: never).
    holdout evaluation: every eval_every steps on up to eval_views held-out views; all at the end.
    aabb: scene box [[min], [max]]; None: from the cameras' frustums (or the default box).
    """

    field: NGPFieldConfig | None = None
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    steps: int = 5000
    minutes: float | None = None
    target_samples: int | None = None
    min_rays: int = 256
    max_rays: int | None = None
    initial_rays: int = 1024
    lr: float | None = None
    network_lr: float = 1e-2
    lr_warmup_steps: int = 50
    lr_milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    lr_gamma: float = 0.33
    weight_decay: float = 1e-6
    occupancy_every: int = 16
    occupancy_warmup: int = 256
    occupancy_fraction: float = 0.25
    shrink_box_at: int = 320
    eval_every: int = 1000
    eval_views: int = 2
    checkpoint_every_steps: int = 1000
    checkpoint_every_seconds: float = 120.0
    seed: int = 0
    device: str | None = None
    aabb: list | None = None
    dataset: str = "custom"
    class_name: str = "object"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = {k: v for k, v in values.items() if k in {f.name for f in fields(cls)}}
        values.pop("aabb_source", None)
        if isinstance(values.get("field"), dict):
            values["field"] = NGPFieldConfig.from_dict(values["field"])
        if isinstance(values.get("render"), dict):
            values["render"] = RenderConfig.from_dict(values["render"])
        if values.get("lr_milestones") is not None:
            values["lr_milestones"] = tuple(values["lr_milestones"])
        return cls(**values)

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


@dataclass
class CheckpointInfo:
    """What later stages need to know about a trained model.

    K: (3, 3) intrinsics at width x height (None for nerf-pytorch checkpoints, which store no
    camera); train_c2w: (N, 4, 4) training poses (empty for nerf-pytorch checkpoints);
    aabb: (2, 3) scene box; config: the training config as a dict; step: optimisation steps done.
    """

    dataset: str
    class_name: str
    field_type: str
    width: int
    height: int
    K: torch.Tensor | None
    background: tuple
    train_c2w: torch.Tensor
    train_image_paths: list[str]
    aabb: torch.Tensor
    config: dict
    step: int
    metrics: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-safe summary (poses as nested lists)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "dataset": self.dataset, "class_name": self.class_name, "field_type": self.field_type,
            "width": self.width, "height": self.height,
            "K": None if self.K is None else self.K.tolist(), "background": list(self.background),
            "train_c2w": self.train_c2w.tolist(), "train_image_paths": list(self.train_image_paths),
            "aabb": self.aabb.tolist(), "config": self.config, "step": self.step, "metrics": self.metrics,
        }  # fmt: skip

    def to_state(self) -> dict:
        state = self.to_json()
        state["K"] = None if self.K is None else self.K.clone()
        state["train_c2w"] = self.train_c2w.clone()
        state["aabb"] = self.aabb.clone()
        return state

    @classmethod
    def from_state(cls, state: dict) -> "CheckpointInfo":
        return cls(
            dataset=state["dataset"], class_name=state["class_name"], field_type=state["field_type"],
            width=int(state["width"]), height=int(state["height"]),
            K=None if state["K"] is None else torch.as_tensor(state["K"], dtype=torch.float32),
            background=tuple(state["background"]), train_c2w=torch.as_tensor(state["train_c2w"], dtype=torch.float32),
            train_image_paths=list(state["train_image_paths"]), aabb=torch.as_tensor(state["aabb"], dtype=torch.float32),
            config=state["config"], step=int(state["step"]), metrics=dict(state.get("metrics", {})),
        )  # fmt: skip


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


# ----------------------------------------------------------------------------- checks
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


# ----------------------------------------------------------------------------- evaluation
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]. a, b: same shape."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5) of (H, W, 3) images in [0, 1]."""
    from kornia.metrics import ssim as kornia_ssim

    to_batch = lambda image: image.permute(2, 0, 1)[None].float().cpu()  # noqa: E731
    return float(kornia_ssim(to_batch(a).clamp(0, 1), to_batch(b).clamp(0, 1), 11).mean())


@torch.no_grad()
def evaluate_views(model: RadianceModel, views: PosedImages, max_views: int | None = None, progress: bool = False) -> dict:
    """PSNR / SSIM of renders against posed images.

    Returns {'psnr', 'ssim', 'per_view': [{'path', 'psnr', 'ssim'}], 'seconds_per_image'}.
    """
    was_training = model.training
    model.eval()
    count = len(views) if max_views is None else min(max_views, len(views))
    per_view, elapsed = [], 0.0
    for i in tqdm(range(count), desc="evaluating", disable=not progress, leave=False):
        start = time.perf_counter()
        render = model.render_image(views.c2w[i], views.K, views.height, views.width)["rgb"].cpu()
        elapsed += time.perf_counter() - start
        target = views.images[i]
        per_view.append({"path": str(views.paths[i]), "psnr": psnr(render, target), "ssim": ssim(render, target)})
    model.train(was_training)
    if not per_view:
        return {"psnr": float("nan"), "ssim": float("nan"), "per_view": [], "seconds_per_image": float("nan")}
    return {
        "psnr": float(np.mean([v["psnr"] for v in per_view])),
        "ssim": float(np.mean([v["ssim"] for v in per_view])),
        "per_view": per_view,
        "seconds_per_image": elapsed / len(per_view),
    }


# ----------------------------------------------------------------------------- ray batches
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

    def sample(self, n_rays: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns rays_o, rays_d (unit): (n, 3) and target colours (n, 3)."""
        index = torch.randint(0, self.colors.shape[0], (n_rays,), generator=generator, device=generator.device).to(self.device)
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
        return pose[:, :3, 3], rays_d, self.colors[index]


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    out_dir: Path, model: RadianceModel, info: CheckpointInfo, optimizer: torch.optim.Optimizer | None = None, trainer: dict | None = None
) -> None:
    """Write train_state.pt (resume state), then model.pt and config.json, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if optimizer is not None:
        with atomic_path(out_dir / STATE_FILE) as tmp:
            torch.save({"step": info.step, "optimizer": optimizer.state_dict(), "trainer": trainer or {}}, tmp)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "field_type": model.field_type,
        "info": info.to_state(),
        "settings": model.settings(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        torch.save(payload, tmp)
    summary = {k: v for k, v in info.to_json().items() if k != "train_c2w"}
    summary["n_train_views"] = int(info.train_c2w.shape[0])
    atomic_write_json(out_dir / CONFIG_FILE, summary)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 (pickle, zip and EOF errors all mean: unreadable)
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(error).__name__}: {error}. The file is corrupt or was "
            "cut short; delete it and train again (omnipose train), or restore it from a backup."
        ) from error


def _resolve_checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        candidate = path / MODEL_FILE
        if candidate.is_file():
            return candidate
        tars = sorted(path.glob("*.tar"))
        if len(tars) == 1:
            return tars[0]
        raise CheckpointError(f"no checkpoint in {path}: expected {MODEL_FILE} (omnipose train --out {path}) or one nerf-pytorch .tar.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Train one with `omnipose train`, or check the path.")
    return path


def load_checkpoint(
    path: str | Path,
    device: str | torch.device | None = None,
    *,
    field_type: str | None = None,
    dataset: str | None = None,
    class_name: str | None = None,
) -> tuple[RadianceModel, CheckpointInfo]:
    """Load a trained model in eval mode.

    path: a checkpoint folder (ckpts/<dataset>/<class>/), its model.pt, or a nerf-pytorch / PAD
    ``.tar`` (e.g. ckpts/LEGO-3D/01Gorilla.tar). field_type / dataset / class_name, when given,
    must match the checkpoint (CheckpointError otherwise, naming both).
    """
    file = _resolve_checkpoint_path(path)
    device = pick_device(device)
    payload = _torch_load(file)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{file} holds a {type(payload).__name__}, not an omnipose or nerf-pytorch checkpoint.")
    if "network_fn_state_dict" in payload:
        model, info = _load_nerf_pytorch(payload, file)
    elif payload.get("format") == CHECKPOINT_FORMAT:
        model, info = _load_omnipose(payload, file, device)
    else:
        raise CheckpointError(
            f"{file} is neither an omnipose checkpoint (format '{CHECKPOINT_FORMAT}') nor a nerf-pytorch .tar "
            "(with 'network_fn_state_dict'); keys found: " + ", ".join(sorted(map(str, payload))[:8])
        )
    expectations = {"field type": (field_type, info.field_type), "dataset": (dataset, info.dataset), "class": (class_name, info.class_name)}
    for what, (wanted, found) in expectations.items():
        if wanted is not None and wanted != found:
            raise CheckpointError(
                f"{file} is a checkpoint for {what} '{found}', not '{wanted}'. Point to the checkpoint of "
                f"'{wanted}' (ckpts/<dataset>/<class>/) or train it with `omnipose train`."
            )
    return model.to(device).eval(), info


def _load_omnipose(payload: dict, file: Path, device) -> tuple[RadianceModel, CheckpointInfo]:
    try:
        info = CheckpointInfo.from_state(payload["info"])
        settings = payload["settings"]
        state = payload["model"]
        if payload.get("version", 0) > CHECKPOINT_VERSION:
            raise CheckpointError(f"{file} was written by a newer omnipose (version {payload['version']}); upgrade omnipose.")
        if payload["field_type"] != "ngp":
            raise CheckpointError(f"{file} holds a '{payload['field_type']}' field, which this version cannot rebuild.")
        field_config = NGPFieldConfig.from_dict(settings["field"])
        field_config.encoding_backend = "torch" if pick_device(device).type == "cpu" else field_config.encoding_backend
        render_config = RenderConfig.from_dict(settings["render"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{file} is an incomplete omnipose checkpoint ({type(error).__name__}: {error}); train it again.") from error
    aabb = torch.as_tensor(settings["aabb"], dtype=torch.float32)
    field_ = NGPField(field_config, aabb=aabb)
    model = RadianceModel(field_, aabb=aabb, background=settings["background"], config=render_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{file}: the weights do not fit the model its settings describe ({error}).") from error
    return model, info


def _load_nerf_pytorch(payload: dict, file: Path) -> tuple[VanillaNeRFModel, CheckpointInfo]:
    coarse = load_nerf_mlp(payload["network_fn_state_dict"], f"{file.name}: network_fn_state_dict")
    fine_state = payload.get("network_fine_state_dict")
    fine = load_nerf_mlp(fine_state, f"{file.name}: network_fine_state_dict") if fine_state is not None else None
    model = VanillaNeRFModel(coarse, fine, n_importance=64 if fine is not None else 0)
    # PAD ships ckpts/<dataset>/<class>.tar: the folder names the dataset, the stem the class.
    info = CheckpointInfo(
        dataset=file.parent.name, class_name=file.stem, field_type="nerf", width=0, height=0, K=None,
        background=(1.0, 1.0, 1.0), train_c2w=torch.zeros(0, 4, 4), train_image_paths=[],
        aabb=torch.tensor([[-model.far] * 3, [model.far] * 3]), config={"near": model.near, "far": model.far},
        step=int(payload.get("global_step", 0)),
    )  # fmt: skip
    return model, info


# ----------------------------------------------------------------------------- training
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
        state = _torch_load(state_file)
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
    out_dir = Path(out_dir) if out_dir is not None else None

    step, trainer = 0, {}
    if out_dir is not None and resume and (out_dir / MODEL_FILE).is_file():
        step, trainer = _restore(out_dir, model, optimizer, config, device)
        if "rng" in trainer:
            generator.set_state(trainer["rng"])
        model.train()
    history: list[dict] = list(trainer.get("history", []))
    elapsed = float(trainer.get("elapsed", 0.0))
    n_rays = int(trainer.get("n_rays", config.initial_rays))
    samples_per_ray = float(trainer.get("samples_per_ray", 0.0))

    def make_info(metrics: dict | None = None) -> CheckpointInfo:
        return CheckpointInfo(
            dataset=config.dataset, class_name=config.class_name, field_type=model.field_type,
            width=views.width, height=views.height, K=views.K.clone().float(), background=tuple(views.background),
            train_c2w=views.c2w.clone().float(), train_image_paths=[str(p) for p in views.paths],
            aabb=model.aabb.detach().cpu().clone(), config={**config.to_dict(), "aabb_source": aabb_source},
            step=step, metrics=metrics or {},
        )  # fmt: skip

    def checkpoint(metrics: dict | None = None) -> None:
        if out_dir is None:
            return
        trainer_state = {"rng": generator.get_state(), "elapsed": elapsed, "n_rays": n_rays,
                         "samples_per_ray": samples_per_ray, "history": history}  # fmt: skip
        save_checkpoint(out_dir, model, make_info(metrics), optimizer, trainer_state)

    batcher = RayBatcher(views, device)
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
            rays_o, rays_d, target = batcher.sample(n_rays, generator)
            out = model.render_rays(rays_o, rays_d, generator=generator)
            loss = torch.mean((out["rgb"] - target) ** 2)
            # Gradients are zeroed in place: the grid's buffer is reused (see encoding.interpolate_rows).
            optimizer.zero_grad(set_to_none=False)
            if out["samples"] > 0:
                loss.backward()
                optimizer.step()
            step += 1
            # Adapt the ray count so a step costs about target_samples evaluations.
            measured = out["samples"] / n_rays
            samples_per_ray = measured if samples_per_ray == 0 else 0.9 * samples_per_ray + 0.1 * measured
            n_rays = int(min(config.max_rays, max(config.min_rays, config.target_samples / max(samples_per_ray, 1.0))))
            elapsed += time.perf_counter() - start
            loss_value = float(loss.detach())
            stats = {"loss": loss_value, "psnr": -10 * math.log10(max(loss_value, 1e-10)), "rays": int(rays_o.shape[0]),
                     "samples": out["samples"], "candidates": out.get("candidates", 0), "elapsed": elapsed,
                     "occupied": model.occupancy.occupied_fraction}  # fmt: skip
            bar.update(1)
            if step % 10 == 0 or step == 1:
                bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{stats['psnr']:.2f}", rays=n_rays, spr=f"{samples_per_ray:.1f}")
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
    if holdout is not None and len(holdout):
        scores = evaluate_views(model, holdout, progress=progress)
        metrics.update({"psnr": scores["psnr"], "ssim": scores["ssim"], "seconds_per_image": scores["seconds_per_image"]})
        history.append({"step": step, "elapsed": elapsed, "psnr": scores["psnr"], "ssim": scores["ssim"], "final": True})
    checkpoint(metrics)
    model.history = history
    model.metrics = metrics
    return model


# ----------------------------------------------------------------------------- command line
def add_train_arguments(parser) -> None:
    """Options of `omnipose train`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="root of a MAD-format dataset (use with --class)")
    source.add_argument("--transforms", type=Path, help="a Blender/NeRF transforms.json (e.g. nerf_synthetic/lego/transforms_train.json)")
    parser.add_argument("--class", dest="class_name", help="class folder under --data (e.g. 01Gorilla)")
    parser.add_argument("--size", type=int, default=200, help="training image width in pixels (default 200)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help=f"optimisation steps (default {TrainConfig.steps})")
    parser.add_argument("--minutes", type=float, default=None, help="time budget; stops at whichever of --steps / --minutes comes first")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default ckpts/<dataset>/<class>)")
    parser.add_argument("--holdout", type=int, default=0, metavar="K", help="hold out every K-th view for PSNR/SSIM (0: none)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from a checkpoint in --out (default on)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def split_holdout(views: PosedImages, every: int) -> tuple[PosedImages, PosedImages | None]:
    """(training, held-out) views: every ``every``-th view (0, K, 2K, ...) is held out (every <= 1: none)."""
    if every is None or every <= 1:
        return views, None
    held = [i for i in range(len(views)) if i % every == 0]
    kept = [i for i in range(len(views)) if i % every != 0]
    return views.subset(kept), views.subset(held)


def load_training_data(args) -> tuple[PosedImages, str, str, list | None]:
    """Views, dataset name, class name and scene box (or None) for `omnipose train`'s arguments."""
    from omnipose.data import load_transforms, open_mad_class

    if args.data is not None:
        if not args.class_name:
            raise DataError("--data needs --class NAME (a class folder under the dataset root).")
        mad = open_mad_class(args.data, args.class_name, require_masks=False)
        views = mad.load_train_views(size=args.size, progress=not args.quiet)
        transforms_path, dataset, class_name = mad.transforms_path, Path(args.data).resolve().name, args.class_name
    else:
        transforms_path = Path(args.transforms)
        views = load_transforms(transforms_path, size=args.size, progress=not args.quiet)
        dataset = transforms_path.resolve().parent.parent.name or "custom"
        class_name = args.class_name or transforms_path.resolve().parent.name
    aabb = None
    try:
        aabb = json.loads(Path(transforms_path).read_text()).get("aabb")
    except (OSError, json.JSONDecodeError):
        pass
    return views, dataset, class_name, aabb


def run_train(args) -> int:
    """`omnipose train`: returns 0 on success, 130 when interrupted (checkpoint saved)."""
    views, dataset, class_name, aabb = load_training_data(args)
    train_views, holdout = split_holdout(views, args.holdout)
    config = TrainConfig(steps=args.steps, minutes=args.minutes, seed=args.seed, device=args.device,
                         dataset=dataset, class_name=class_name, aabb=aabb)  # fmt: skip
    out_dir = args.out if args.out is not None else Path("ckpts") / dataset / class_name
    try:
        model = train_model(train_views, config, out_dir, holdout=holdout, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        return 130
    metrics = getattr(model, "metrics", {})
    summary = f"trained {dataset}/{class_name}: {metrics.get('steps')} steps in {metrics.get('train_seconds', 0):.0f} s"
    if "psnr" in metrics:
        summary += f", held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
    print(f"{summary}; checkpoint: {out_dir}")
    return 0

"""Checkpoints of trained fields: the omnipose format, and nerf-pytorch / PAD ``.tar`` files.

An omnipose checkpoint is a folder: ``model.pt`` (format ``omnipose.radiance_field``: the weights,
what rebuilds the model, and a ``CheckpointInfo`` of the data it was trained on), a readable
``config.json`` summary, and ``train_state.pt`` (optimiser and trainer state, for resuming).
Each is written atomically. Files written by older versions of omnipose load: settings a config
no longer has are dropped when reading.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from omnipose.core.config import Config
from omnipose.core.device import pick_device
from omnipose.core.errors import CheckpointError
from omnipose.core.files import atomic_path, atomic_write_json
from omnipose.nerf.field import NGPField, NGPFieldConfig
from omnipose.nerf.models import RadianceModel, RenderConfig, VanillaNeRFModel
from omnipose.nerf.nerf_mlp import load_nerf_mlp

CHECKPOINT_FORMAT = "omnipose.radiance_field"
CHECKPOINT_VERSION = 1
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"

C = TypeVar("C", bound=Config)


@dataclass
class CheckpointInfo:
    """What later stages need to know about a trained model.

    K: (3, 3) intrinsics at width x height (None for nerf-pytorch checkpoints, which store no
    camera); train_c2w: (N, 4, 4) training poses (empty for nerf-pytorch checkpoints);
    aabb: (2, 3) scene box; config: the training config as a dict; step: optimisation steps done;
    backdrop: whether the training views had a plain backdrop replaced by the background colour
    (``PosedImages.backdrop``), which queries then follow; left_out_paths: training views the field
    stopped learning from as it could not explain them (``TrainConfig.unexplained_check_at``), which
    train_c2w and train_image_paths do not list.
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
    backdrop: bool = True
    left_out_paths: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        """JSON-safe summary (poses as nested lists)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "dataset": self.dataset, "class_name": self.class_name, "field_type": self.field_type,
            "width": self.width, "height": self.height,
            "K": None if self.K is None else self.K.tolist(), "background": list(self.background),
            "train_c2w": self.train_c2w.tolist(), "train_image_paths": list(self.train_image_paths),
            "aabb": self.aabb.tolist(), "config": self.config, "step": self.step, "metrics": self.metrics,
            "backdrop": self.backdrop, "left_out_paths": list(self.left_out_paths),
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
            backdrop=bool(state.get("backdrop", True)), left_out_paths=list(state.get("left_out_paths", [])),
        )  # fmt: skip


def save_checkpoint(
    out_dir: Path, model: RadianceModel, info: CheckpointInfo, optimizer: torch.optim.Optimizer | None = None, trainer: dict | None = None
) -> None:
    """Write model.pt, then train_state.pt (resume state) and config.json, each atomically.

    The model goes first: a run killed between the two leaves the newer model with the older
    optimiser state, which resumes (the optimiser restarts, ``train._restore``), never an optimiser
    state that claims steps whose weights were lost.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    if optimizer is not None:
        with atomic_path(out_dir / STATE_FILE) as tmp:
            torch.save({"step": info.step, "optimizer": optimizer.state_dict(), "trainer": trainer or {}}, tmp)
    summary = {k: v for k, v in info.to_json().items() if k != "train_c2w"}
    summary["n_train_views"] = int(info.train_c2w.shape[0])
    atomic_write_json(out_dir / CONFIG_FILE, summary)


def load_torch_file(path: Path) -> object:
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
    payload = load_torch_file(file)
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
        field_config = NGPFieldConfig.from_dict(settings["field"], drop_unknown=True)
        field_config.encoding_backend = "torch" if pick_device(device).type == "cpu" else field_config.encoding_backend
        render_config = RenderConfig.from_dict(settings["render"], drop_unknown=True)
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

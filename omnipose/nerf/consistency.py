"""Whether posed views hold together: a short field trained on them, and how well it draws them back.

Views whose cameras are right agree with one another, and a field learns to draw each of them. A
reconstruction that folded (a plain or symmetric object's sides matched onto each other, cameras put on
the wrong side) asks one field for views that contradict each other, and it draws them poorly however long
it trains. ``omnipose onboard`` asks this where keypoints alone cannot tell a bundle adjustment that
corrected cameras from one that moved them across a fold (``FieldCheck``, passed to ``data.onboard``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnipose.core.config import Config, positive
from omnipose.data import open_mad_class
from omnipose.nerf.quality import object_psnrs, unexplained_views
from omnipose.nerf.train import TrainConfig, train_model


@dataclass
class FieldCheckConfig(Config):
    """How a class folder's training views are checked with a short field."""

    steps: int = 1000
    """Training steps of the field. At 300, consistent views of a finely detailed object (09Rocket, true poses)
    were drawn no better than folded reconstructions' (16.4 dB against 12.2 - 15.7); at 1000 the consistent sets
    measured drew theirs at 23.8 - 28.3 dB and the folded ones at 13.2 - 18.5 (``docs/RESULTS.md``)."""
    width: int = 100
    """Width in pixels the views are trained and drawn at."""
    min_psnr_db: float = 21.0
    """Median PSNR over the object (``quality.object_psnrs``) of the training views, drawn by the field, under
    which the views are said not to hold together: between the folded reconstructions and the consistent view
    sets measured."""
    seed: int = 0
    """Seed of the field's weights and rays."""
    device: str | None = None
    """'cpu', 'cuda' (None: CUDA when present)."""

    def check(self) -> None:
        positive(self, "steps", "width", "min_psnr_db")


@dataclass
class FieldCheck:
    """Trains a short field on a class folder's training views and says whether it draws them back well
    (``FieldCheckConfig``). Called with the folder; returns {'held', 'median_object_psnr_db',
    'min_psnr_db', 'unexplained', 'unexplained_gap_db', 'steps', 'width', 'seconds'}. 'unexplained': the views
    drawn more than ``TrainConfig.unexplained_gap_db`` under the median view (``quality.unexplained_views``),
    by photo name, with how many dB under it: where the views hold together as a whole, these few do not."""

    config: FieldCheckConfig = field(default_factory=FieldCheckConfig)
    progress: bool = True

    def __call__(self, class_dir: str | Path) -> dict:
        cfg, class_dir = self.config, Path(class_dir)
        start = time.perf_counter()
        views = open_mad_class(class_dir.parent, class_dir.name).load_train_views(size=cfg.width, progress=False)
        train = TrainConfig(steps=cfg.steps, minutes=None, unexplained_check_at=None, eval_every=0, seed=cfg.seed,
                            device=cfg.device, dataset="field_check", class_name=class_dir.name)  # fmt: skip
        model = train_model(views, train, None, progress=self.progress)
        device = next(model.parameters()).device
        psnrs = object_psnrs(model, views.images, views.c2w.to(device), views.K.to(device), views.background)
        median = float(np.median(psnrs))
        below = {views.paths[i].name: round(median - float(psnrs[i]), 1)
                 for i in unexplained_views(psnrs, train.unexplained_gap_db)}  # fmt: skip
        return {"held": median >= cfg.min_psnr_db, "median_object_psnr_db": round(median, 2),
                "min_psnr_db": cfg.min_psnr_db, "unexplained": below, "unexplained_gap_db": train.unexplained_gap_db,
                "steps": cfg.steps, "width": cfg.width,
                "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip

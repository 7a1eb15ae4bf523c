"""Figures of an evaluation: ROC and PR curves per class, and qualitative panels like PAD's
(image | reference | ground truth | heat-map overlay | predicted mask).

Every figure is drawn on its own Agg canvas (no pyplot state, no display) and written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from omnipose.core.files import atomic_path
from omnipose.core.image import read_image_rgb
from omnipose.evaluation.inputs import resize_bilinear
from omnipose.evaluation.metrics import is_defined
from omnipose.evaluation.results import ClassResult


def _new_figure(width: float, height: float):
    # An explicit Agg canvas: no pyplot global state, no display needed, safe in threads/notebooks.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def save_curves(result: ClassResult, out_dir: str | Path) -> list[Path]:
    """``<class>_roc.png`` and ``<class>_pr.png``: one line per level (image, pixel, view, ...)."""
    out_dir = Path(out_dir)
    written = []
    for kind, (x, y, xlabel, ylabel) in {
        "roc": ("fpr", "tpr", "false positive rate", "true positive rate"),
        "pr": ("recall", "precision", "recall", "precision"),
    }.items():
        figure = _new_figure(5, 5)
        axes = figure.add_subplot(1, 1, 1)
        for level, points in result.curves.items():
            if points[x].size:
                axes.plot(points[x], points[y], label=level)
        if kind == "roc":
            axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
        axes.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=f"{result.class_name} {kind.upper()} ({result.protocol})")
        if axes.lines:
            axes.legend(loc="lower right" if kind == "roc" else "lower left")
        written.append(_save_figure(figure, out_dir / f"{result.class_name or 'class'}_{kind}.png"))
    return written


def save_panel(path: str | Path, image: np.ndarray | None, reference: np.ndarray | None, mask: np.ndarray,
               anomaly_map: np.ndarray, threshold: float) -> Path:
    """A qualitative panel like PAD's figures: image | reference | ground truth | heat-map overlay |
    predicted mask (anomaly_map > threshold).

    image, reference: (H, W, 3) float in [0, 1], or None (the column says 'not available').
    mask: (h, w) bool. anomaly_map: (h', w') float (resized to the image for the overlay).
    """
    figure = _new_figure(15, 3.3)
    axes = figure.subplots(1, 5)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float64)
    columns = [("image", image), ("reference", reference)]
    for ax, (title, picture) in zip(axes[:2], columns):
        if picture is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(np.clip(picture, 0, 1))
        ax.set_title(title)
    axes[2].imshow(np.asarray(mask, dtype=float), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("ground truth")
    background = image if image is not None else np.zeros(anomaly_map.shape + (3,))
    overlay_map = anomaly_map if anomaly_map.shape == background.shape[:2] else resize_bilinear(anomaly_map, background.shape[:2])
    axes[3].imshow(np.clip(background, 0, 1))
    heat = axes[3].imshow(overlay_map, cmap="jet", alpha=0.5, vmin=float(anomaly_map.min()), vmax=float(anomaly_map.max()))
    axes[3].set_title("heat map")
    figure.colorbar(heat, ax=axes[3], fraction=0.046, pad=0.04)
    axes[4].imshow(anomaly_map > threshold, cmap="gray", vmin=0, vmax=1)
    axes[4].set_title(f"predicted mask (> {threshold:.3g})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    return _save_figure(figure, path)


def save_example_panels(result: ClassResult, out_dir: Path) -> list[Path]:
    """``<out_dir>/panels/<class>_<key>.png`` for each example the evaluation kept (``save_panel``),
    the predicted mask drawn at the class's best pixel-F1 threshold."""
    if not result.examples or not is_defined(result.pixel_threshold):
        return []
    written = []
    for example in result.examples:
        image = read_image_rgb(example.image_path) if example.image_path else None
        reference = read_image_rgb(example.reference_path) if example.reference_path else None
        name = example.key.replace("/", "_")
        written.append(save_panel(out_dir / "panels" / f"{result.class_name}_{name}.png", image, reference,
                                  example.mask, example.anomaly_map, result.pixel_threshold))
    return written


def save_side_by_side(path: str | Path, rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray | None]]]]) -> Path:
    """Rows of pictures side by side, each row labelled: ``rows`` = [(label, [(title, picture), ...])].

    A picture (H, W, 3) in [0, 1] is drawn as it is; an (h, w) array is an anomaly map, drawn as a heat
    map over the row's first picture (resized to it), each map on its own colour scale; None says
    'not available'. Titles are set on the first row only, so every row should have the same columns.
    """
    columns = max(len(row) for _, row in rows)
    figure = _new_figure(2.6 * columns, 2.7 * len(rows) + 0.3)
    axes = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
    for r, (label, row) in enumerate(rows):
        base = next((picture for _, picture in row if picture is not None and picture.ndim == 3), None)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            title, picture = row[c]
            if picture is None:
                ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            elif picture.ndim == 3:
                ax.imshow(np.clip(picture, 0, 1))
            elif picture.dtype == bool:
                ax.imshow(picture.astype(float), cmap="gray", vmin=0, vmax=1)
            else:
                heat = np.asarray(picture, np.float64)
                if base is not None:
                    ax.imshow(np.clip(base, 0, 1))
                    heat = heat if heat.shape == base.shape[:2] else resize_bilinear(heat, base.shape[:2])
                ax.imshow(heat, cmap="jet", alpha=0.5 if base is not None else 1.0, vmin=float(heat.min()), vmax=float(heat.max()))
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    figure.tight_layout()
    return _save_figure(figure, path)

"""Reports on disk: the metrics files and figures of an evaluation, and the demo's report.md."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omnipose.core.files import atomic_write_json, atomic_write_text
from omnipose.evaluation.config import EvaluationConfig
from omnipose.evaluation.figures import save_curves, save_example_panels
from omnipose.evaluation.results import ClassResult, class_means
from omnipose.evaluation.tables import csv_text, markdown_table, results_to_dict


def write_report(results: Sequence[ClassResult], out_dir: str | Path, config: EvaluationConfig | None = None) -> dict[str, Path]:
    """Write metrics.json, metrics.csv, metrics.md, ROC/PR curves and panels, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    means = class_means(results)
    written = {
        "json": out_dir / "metrics.json",
        "csv": out_dir / "metrics.csv",
        "markdown": out_dir / "metrics.md",
    }
    atomic_write_json(written["json"], results_to_dict(results, config))
    atomic_write_text(written["csv"], csv_text(results, means))
    atomic_write_text(written["markdown"], markdown_table(results, means))
    for r in results:
        roc, pr = save_curves(r, out_dir)
        written[f"{r.class_name}_roc"], written[f"{r.class_name}_pr"] = roc, pr
        for i, panel in enumerate(save_example_panels(r, out_dir)):
            written[f"{r.class_name}_panel_{i}"] = panel
    return written


def write_demo_report(out_dir: Path, results: list, timings: dict, evaluation: EvaluationConfig) -> Path:
    """report.md: the metrics table, the timings and links to every figure.

    timings: {class: {'fit_seconds', 'detect_seconds', 'queries'}} (``ClassRun.timings``).
    """
    written = write_report(results, out_dir / "report", evaluation)
    lines = ["# omnipose demo report", "", "## Metrics (%)", "", (out_dir / "report" / "metrics.md").read_text(), ""]
    lines += ["## Time (2 CPU cores unless stated)", "", "| class | fit (s) | detect (s) | queries | s / query |", "|---|---|---|---|---|"]
    for name, t in timings.items():
        per_query = t["detect_seconds"] / max(t["queries"], 1)
        lines.append(f"| {name} | {t['fit_seconds']} | {t['detect_seconds']} | {t['queries']} | {per_query:.1f} |")
    lines += ["", "## Figures", ""]
    for key, path in written.items():
        if path.suffix == ".png":
            lines.append(f"![{key}]({path.relative_to(out_dir).as_posix()})")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report

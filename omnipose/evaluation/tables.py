"""The metrics as tables: a terminal table, Markdown, CSV and the JSON summary (metrics.json).

Tables show percent with two decimals; CSV and JSON keep fractions in [0, 1] at full precision.
An undefined metric prints as 'undefined' (null in JSON, with its reason); a class mean over only
some classes is marked and its footnote names the classes left out.
"""
from __future__ import annotations

import csv
import io
from typing import Sequence

from omnipose.evaluation.config import EvaluationConfig
from omnipose.evaluation.metrics import UNDEFINED_TEXT, MetricValue, Undefined, format_metric, is_defined
from omnipose.evaluation.results import ClassMean, ClassResult, class_means, metric_names


def _table_rows(results: Sequence[ClassResult], means: dict[str, ClassMean], percent: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (classes, then the mean when there are several classes) and footnotes."""
    names = metric_names(results)
    header = ["class"] + names
    rows = [[r.class_name] + [format_metric(r.metrics.get(n, Undefined("not computed")), 2 if percent else 4, percent) for n in names]
            for r in results]
    notes = []
    if len(results) > 1:
        mean_row = ["mean"]
        for n in names:
            mean = means[f"m{n}"]
            text = format_metric(mean.value, 2 if percent else 4, percent)
            if mean.undefined_in and is_defined(mean.value):
                text += "*"
                notes.append(f"* m{n}: mean over {len(mean.defined_in)} of {len(mean.defined_in) + len(mean.undefined_in)} "
                             f"classes; undefined in {', '.join(mean.undefined_in)}")
            mean_row.append(text)
        rows.append(mean_row)
    return header, rows, notes


def format_table(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """A fixed-width terminal table of the metrics in percent, with a mean row for several classes."""
    means = means if means is not None else class_means(results)
    header, rows, notes = _table_rows(results, means, percent=True)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    protocol = results[0].protocol if results else ""
    text = [f"{protocol} (values in %)", line(header), "  ".join("-" * w for w in widths)]
    text += [line(row) for row in rows] + notes
    return "\n".join(text)


def markdown_table(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """The metrics in percent as a Markdown table, with footnotes for partial means."""
    means = means if means is not None else class_means(results)
    header, rows, notes = _table_rows(results, means, percent=True)
    text = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    text += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        text += [""] + notes
    return "\n".join(text) + "\n"


def csv_text(results: Sequence[ClassResult], means: dict[str, ClassMean] | None = None) -> str:
    """The metrics as CSV, fractions in [0, 1] at full precision, 'undefined' where undefined."""
    means = means if means is not None else class_means(results)
    names = metric_names(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class"] + names + ["note"])
    for r in results:
        writer.writerow([r.class_name] + [_csv_cell(r.metrics.get(n, Undefined("not computed"))) for n in names] + ["; ".join(r.notes)])
    if len(results) > 1:
        partial = [f"m{n} undefined in {', '.join(means[f'm{n}'].undefined_in)}" for n in names if means[f"m{n}"].undefined_in]
        writer.writerow(["mean"] + [_csv_cell(means[f"m{n}"].value) for n in names]
                        + [("mean over defined classes; " + "; ".join(partial)) if partial else ""])
    return buffer.getvalue()


def _csv_cell(value: MetricValue) -> str:
    return repr(float(value)) if is_defined(value) else UNDEFINED_TEXT


def _json_value(value: MetricValue) -> float | None:
    return float(value) if is_defined(value) else None


def results_to_dict(results: Sequence[ClassResult], config: EvaluationConfig | None = None) -> dict:
    """A JSON-ready summary: undefined metrics are null with their reason under 'undefined'."""
    means = class_means(results)
    return {
        "protocol": results[0].protocol if results else None,
        "config": config.to_dict() if config is not None else None,
        "classes": {
            r.class_name: {
                "metrics": {k: _json_value(v) for k, v in r.metrics.items()},
                "undefined": {k: v.reason for k, v in r.metrics.items() if not is_defined(v)},
                "counts": r.counts,
                "pixel_threshold": _json_value(r.pixel_threshold),
                "notes": r.notes,
            }
            for r in results
        },
        "means": {
            k: {"value": _json_value(m.value), "defined_in": list(m.defined_in), "undefined_in": list(m.undefined_in)}
            for k, m in means.items()
        },
    }

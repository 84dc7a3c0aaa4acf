"""The result tables as CSV files (UTF-8, header row, IoUs and APs with 6 decimals, empty where undefined)."""
from __future__ import annotations

import csv
import io
import os
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import InputError
from ..path_safety import check_output_paths
from ..transaction import write_text_files
from .results import EvaluationResult, MetricsRow
from .sources import EvaluationPair

METRICS_COLUMNS = ("class", "instances", "mean_iou", "weighted_iou", "ap", "ap50", "ap75", "unmatched_produced")
INSTANCE_COLUMNS = ("key", "class", "iou", "intersection_px", "union_px", "produced_px", "reference_px", "image")
COMPARISON_COLUMNS = ("name",) + METRICS_COLUMNS[1:]


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_csv_atomic(path: str, header: Sequence[str], rows: Iterable[Sequence], role: str) -> str:
    """Write a CSV table (csv module's default dialect, CRLF line ends) under a temporary name in the
    destination's folder, then move it into place, so a reader never sees a half-written table and an
    earlier table survives a failure. Returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise InputError(f"The {role} '{path}' is a folder; give a file name.")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in rows:
        writer.writerow([_number(v) for v in r])
    write_text_files([(path, buffer.getvalue())], role)
    return path


def _metric_values(r: MetricsRow) -> list:
    return [r.instances, r.mean_iou, r.weighted_iou, r.ap, r.ap50, r.ap75, r.unmatched_produced]


def write_metrics_csv(result: EvaluationResult, path: str) -> str:
    """The metrics table: one row per class (sorted), then the overall row (class ``(all)``).

    Columns :data:`METRICS_COLUMNS`; IoUs and APs as fractions with 6 decimals, empty where undefined.
    """
    return _write_csv_atomic(path, METRICS_COLUMNS, ([r.class_name] + _metric_values(r) for r in result.rows()),
                             "metrics table")


def write_instances_csv(result: EvaluationResult, path: str) -> str:
    """One row per scored reference instance: columns :data:`INSTANCE_COLUMNS` (pixel counts on the grid;
    ``image`` tells the images of a dataset apart)."""
    rows = ([i.key, i.class_name, i.iou, i.intersection_px, i.union_px, i.produced_px, i.reference_px, i.image]
            for i in result.instances)
    return _write_csv_atomic(path, INSTANCE_COLUMNS, rows, "per-instance table")


def write_comparison_csv(results: Mapping[str, EvaluationResult], path: str) -> str:
    """A prompt-ablation table: one row per named result (e.g. ``{"box": r1, "point": r2}``, in the
    mapping's order) with its overall measures; columns :data:`COMPARISON_COLUMNS`."""
    if not results:
        raise InputError("No results to compare. Give at least one named evaluation result.")
    rows = ([name] + _metric_values(result.overall) for name, result in results.items())
    return _write_csv_atomic(path, COMPARISON_COLUMNS, rows, "comparison table")


def check_table_outputs(pairs: Sequence, tables: Mapping[str, Optional[str]]) -> None:
    """Refuse tables (role -> path or None) that would replace a produced, reference or grid file of ``pairs``
    (as evaluate_dataset takes them: tuples or EvaluationPairs of paths or mask sources) or each other;
    before any work."""
    inputs = {}
    for n, pair in enumerate(pairs):
        items = (pair.produced, pair.reference, pair.grid_raster) if isinstance(pair, EvaluationPair) else pair[:3]
        for role, item in zip(("produced masks", "reference masks", "grid raster"), items):
            path = getattr(item, "path", item)
            if path:
                inputs[f"{role} {n + 1}" if len(pairs) > 1 else role] = str(path)
    check_output_paths(tables, inputs)

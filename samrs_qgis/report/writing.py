"""Writing a report: the HTML page and, optionally, the CSV files, all or nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from ..errors import InputError
from ..transaction import write_text_files
from .html_page import render_html
from .statistics import Statistics
from .tables import csv_tables, csv_text


@dataclass
class ReportFiles:
    """Paths written by :func:`write_report`: the HTML file and CSV name -> path (empty without a folder)."""

    html: str
    csv: Dict[str, str] = field(default_factory=dict)


def write_report(subsets: Mapping[str, Statistics], html_path, csv_folder=None,
                 title: str = "SAMRS dataset statistics") -> ReportFiles:
    """Write the report of ``subsets`` (subset name -> :class:`Statistics`, shown in this order).

    ``html_path``: one self-contained HTML file (plots as embedded PNGs; text escaped): generation
    parameters, a summary, boxes by status, instances per class, pixels per class (log scale), mask size
    distribution (overall and per class), score histogram, each plot with its table of numbers.

    ``csv_folder`` (optional): CSV files (UTF-8, header row, one row per subset and item):

    * ``instances_per_class.csv``: subset, class_id, class_name, instances, percent (of the subset's instances)
    * ``pixels_per_class.csv``: subset, class_id, class_name, pixels, percent (of the subset's class pixels),
      pixel_source (``class rasters``/``area_px``/``mixed``), area_px_sum (sum of the instances' area_px)
    * ``mask_sizes.csv``: subset, class_id (empty for all classes), class_name (``all`` for all classes), bin k,
      area_px_min = 2^k, area_px_below = 2^(k+1), instances with area_px_min ≤ area_px < area_px_below;
      every bin up to the largest of all subsets, for all classes and for each class with instances
    * ``scores.csv``: subset, bin (0–19, or ``no_score``), score_min, score_below (last bin includes 1.0),
      instances
    * ``status.csv``: subset, status, boxes
    * ``summary.csv``: subset, images, layers, rasters, boxes, instances, class_pixels, background_pixels,
      pixel_source, no_score, scores_out_of_range, source

    Every file is written under a temporary name in its folder and moved into place (``os.replace``)
    only once all files are written.
    """
    if not subsets:
        raise InputError("The report has no subsets. Give at least one subset's statistics.")
    html_path = os.path.abspath(os.fspath(html_path))
    if os.path.isdir(html_path):
        raise InputError(f"The report output '{html_path}' is a folder; give an HTML file name.")
    contents: List[Tuple[str, str]] = [(html_path, render_html(subsets, title))]
    csv_paths: Dict[str, str] = {}
    if csv_folder is not None:
        csv_folder = os.path.abspath(os.fspath(csv_folder))
        if os.path.exists(csv_folder) and not os.path.isdir(csv_folder):
            raise InputError(f"The CSV folder '{csv_folder}' is a file. Give a folder.")
        for name, (header, rows) in csv_tables(subsets).items():
            path = os.path.join(csv_folder, name)
            csv_paths[name] = path
            contents.append((path, csv_text(header, rows)))
    write_text_files(contents, "report output")
    return ReportFiles(html=html_path, csv=csv_paths)

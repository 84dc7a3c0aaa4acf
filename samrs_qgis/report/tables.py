"""The report's tables as rows, shared by the CSV files and the HTML page."""
from __future__ import annotations

import csv
import io
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from .statistics import Statistics, score_bin_edges, size_bin_edges

CSV_FILES = ("instances_per_class.csv", "pixels_per_class.csv", "mask_sizes.csv", "scores.csv", "status.csv",
             "summary.csv")


def class_rows(subsets: Mapping[str, Statistics]) -> List[Tuple[int, str]]:
    """(class id, name) over all subsets, by id then name (subsets numbered apart stay apart)."""
    rows = {(i, n) for s in subsets.values() for i, n in s.class_names.items()}
    return sorted(rows)


def size_bins(subsets: Mapping[str, Statistics]) -> List[int]:
    top = max((k for s in subsets.values() for k in s.size_histogram), default=-1)
    return list(range(top + 1))


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}" if whole else ""


def csv_tables(subsets: Mapping[str, Statistics]) -> Dict[str, Tuple[List[str], List[List]]]:
    tables: Dict[str, Tuple[List[str], List[List]]] = {}
    rows = []
    for name, s in subsets.items():
        for i, cname in s.class_names.items():
            rows.append([name, i, cname, s.instances_per_class.get(i, 0), percent(s.instances_per_class.get(i, 0),
                                                                                  s.instances)])
    tables["instances_per_class.csv"] = (["subset", "class_id", "class_name", "instances", "percent"], rows)
    rows = []
    for name, s in subsets.items():
        for i, cname in s.class_names.items():
            rows.append([name, i, cname, s.pixels_per_class.get(i, 0), percent(s.pixels_per_class.get(i, 0),
                                                                               s.class_pixels),
                         s.pixel_source, s.area_px_per_class.get(i, 0)])
    tables["pixels_per_class.csv"] = (["subset", "class_id", "class_name", "pixels", "percent", "pixel_source",
                                       "area_px_sum"], rows)
    rows = []
    bins = size_bins(subsets)
    for name, s in subsets.items():
        groups = [("", "all", s.size_histogram)] + [(i, s.class_names[i], s.size_histogram_per_class.get(i, {}))
                                                    for i in s.class_names]
        for class_id, cname, hist in groups:
            if class_id != "" and not hist:
                continue
            for k in bins:
                low, high = size_bin_edges(k)
                rows.append([name, class_id, cname, k, low, high, hist.get(k, 0)])
    tables["mask_sizes.csv"] = (["subset", "class_id", "class_name", "bin", "area_px_min", "area_px_below", "instances"],
                                rows)
    rows = []
    for name, s in subsets.items():
        for i, count in enumerate(s.score_histogram):
            low, high = score_bin_edges(i)
            rows.append([name, i, f"{low:.2f}", f"{high:.2f}", count])
        rows.append([name, "no_score", "", "", s.no_score])
    tables["scores.csv"] = (["subset", "bin", "score_min", "score_below", "instances"], rows)
    rows = []
    for name, s in subsets.items():
        for status, count in s.status_counts.items():
            rows.append([name, status, count])
    tables["status.csv"] = (["subset", "status", "boxes"], rows)
    rows = []
    for name, s in subsets.items():
        rows.append([name, s.images, s.layers, s.rasters, s.boxes, s.instances, s.class_pixels, s.background_pixels,
                     s.pixel_source, s.no_score, s.scores_out_of_range, s.source])
    tables["summary.csv"] = (["subset", "images", "layers", "rasters", "boxes", "instances", "class_pixels",
                              "background_pixels", "pixel_source", "no_score", "scores_out_of_range", "source"], rows)
    return tables


def csv_text(header: Sequence, rows: Iterable[Sequence]) -> str:
    """A CSV table as text: header row, then ``rows``; ``\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()

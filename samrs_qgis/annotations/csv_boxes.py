"""CSV boxes as labelling and detection tools export them, e.g. DeepForest's
``image_path,xmin,ymin,xmax,ymax,label``: one horizontal box per row, pixel-corner coordinates as given.

Columns are found by name, case-insensitively, under common aliases (see :data:`COLUMNS`); other columns
are kept as attributes (numbers become numbers). Rows can be restricted to one image: a row belongs to
the image when its image column names the same file name (or the same name without extension).
"""
from __future__ import annotations

import csv
import os
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Set

from .model import FileAnnotations, Problem, RawBox, Record, RecordError, collect, number, optional_int, rectangle

COLUMNS = {
    "xmin": ("xmin", "x_min", "left", "x1"),
    "ymin": ("ymin", "y_min", "top", "y1"),
    "xmax": ("xmax", "x_max", "right", "x2"),
    "ymax": ("ymax", "y_max", "bottom", "y2"),
    "label": ("label", "class", "category", "name", "class_name"),
    "image": ("image_path", "image", "filename", "file_name", "image_name", "img"),
    "difficult": ("difficult",),
}
REQUIRED = ("xmin", "ymin", "xmax", "ymax", "label")


def find_columns(header: List[str]) -> Dict[str, str]:
    """Role -> column name for the roles whose alias is in ``header``."""
    by_lower = {h.strip().lower(): h for h in header}
    found = {}
    for role, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in by_lower:
                found[role] = by_lower[alias]
                break
    return found


def _auto(value: Optional[str]) -> Any:
    """A CSV cell as int, float or text (None when empty)."""
    if value is None or not value.strip():
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value.strip()


def same_image(a: str, b: str) -> bool:
    """True when two image references name the same file (by file name, or by name without extension)."""
    a, b = os.path.basename(a.strip()), os.path.basename(b.strip())
    return a == b or os.path.splitext(a)[0] == os.path.splitext(b)[0]


def _box(row: Dict[str, str], columns: Dict[str, str]) -> RawBox:
    x0, y0, x1, y1 = (number(row.get(columns[k]), k) for k in ("xmin", "ymin", "xmax", "ymax"))
    difficult = optional_int(row.get(columns["difficult"]), "difficult") if "difficult" in columns else None
    used = {columns[k] for k in ("xmin", "ymin", "xmax", "ymax", "label", "difficult") if k in columns}
    attributes = {k: _auto(v) for k, v in row.items() if k is not None and k not in used}
    return RawBox(rectangle(x0, y0, x1, y1), row.get(columns["label"]), difficult, attributes)


def read_csv_boxes(path: str, image_name: Optional[str] = None) -> FileAnnotations:
    """Read one CSV of horizontal boxes (pixel coordinates), only the rows of ``image_name`` when given."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = f.readline()
        f.seek(0)
        try:  # exports from European spreadsheets use ';', some tools tabs
            dialect = csv.Sniffer().sniff(header, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(f, dialect=dialect)
        if reader.fieldnames is None:  # an empty file: no objects (for a dataset, an image without boxes)
            return FileAnnotations(path, "csv")
        columns = find_columns(reader.fieldnames)
        missing = [k for k in REQUIRED if k not in columns]
        if missing:
            raise RecordError(f"no column for {', '.join(missing)}; the header is {reader.fieldnames}. Name the "
                              "columns e.g. xmin,ymin,xmax,ymax,label", line=1)
        skipped: Set[str] = set()  # image names of the rows left out

        def records() -> Iterator[Record]:
            n = 0
            for row in reader:
                if image_name and "image" in columns and not same_image(row.get(columns["image"]) or "", image_name):
                    skipped.add(row.get(columns["image"]) or "")
                    continue
                n += 1
                yield reader.line_num, n, partial(_box, row, columns)

        result = collect(path, "csv", records())
    if image_name and skipped and not result.annotations and not result.problems:
        names = ", ".join(sorted(skipped)[:5])
        result.problems.append(Problem(path, None, None, f"no row is for image '{os.path.basename(image_name)}'; "
                                                         f"the rows name: {names}"))
    return result

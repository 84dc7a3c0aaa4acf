"""FAIR1M 1.0 / 2.0 XML: ``<annotation><objects><object>`` with ``<possibleresult><name>`` and ``<points>``.

Each ``<point>`` is ``"x,y"`` in pixel coordinates. FAIR1M lists five points, the last repeating the first
to close the ring; four points are accepted too. An object whose ``<coordinate>`` is not ``pixel`` is
reported, since only pixel coordinates are defined for the image.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Iterator

import numpy as np

from . import xmlfile
from .model import FileAnnotations, RawBox, Record, RecordError, collect, number


def _point(text: str, i: int):
    parts = (text or "").split(",")
    if len(parts) != 2:
        raise RecordError(f"point {i} is {text!r}, expected 'x,y'")
    return [number(parts[0], f"x of point {i}"), number(parts[1], f"y of point {i}")]


def _box(obj: Any) -> RawBox:
    coordinate = xmlfile.text(obj, "coordinate")
    if coordinate is not None and coordinate.lower() != "pixel":
        raise RecordError(f"coordinates are '{coordinate}'; only pixel coordinates are supported")
    points = np.array([_point(p.text, i) for i, p in enumerate(obj.findall("points/point"), 1)], dtype=float)
    if len(points) == 5 and np.allclose(points[0], points[4]):
        points = points[:4]  # the closing point
    if len(points) != 4:
        raise RecordError(f"{len(points)} points; a FAIR1M box has 4 corners (5 points with the closing one)")
    return RawBox(points, xmlfile.text(obj, "possibleresult/name"))


def read_fair1m(path: str) -> FileAnnotations:
    """Read one FAIR1M XML file (pixel coordinates)."""
    root = xmlfile.parse_root(path)
    if root.find("objects") is None:
        raise RecordError(f"no <objects> element under <{root.tag}>; this is not a FAIR1M file")

    def records() -> Iterator[Record]:
        for n, obj in enumerate(root.findall("objects/object"), 1):
            yield xmlfile.line_of(obj), n, partial(_box, obj)

    return collect(path, "fair1m", records(), {"filename": xmlfile.text(root, "source/filename"),
                                                "origin": xmlfile.text(root, "source/origin")})

"""What an imported annotation is, what a problem is, and the helpers every format reader shares.

Coordinates are pixel coordinates of the annotated image: x = column to the right, y = row downwards,
in the pixel-corner convention (pixel (c, r) covers [c, c+1) x [r, r+1), so a box (0, 0)-(1, 1) is exactly
the first pixel). A box is always four corners, whatever the format gave: horizontal boxes become the
rectangle's corners, rotated boxes keep their own four corners.

A reader turns one file into :class:`FileAnnotations`. It yields one *record* per object (its line,
its position and a callable that builds the box); :func:`collect` builds every record, checks it, and
turns a :class:`RecordError` into a :class:`Problem` for that record only, so one bad line never stops
the rest of the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
from shapely.geometry import Polygon


class RecordError(ValueError):
    """A record (or a whole file, when raised outside a record) cannot be read; the message says why."""

    def __init__(self, message: str, line: Optional[int] = None):
        super().__init__(message)
        self.line = line


@dataclass
class Annotation:
    """One annotated object.

    ``corners`` is a float64 array of shape (4, 2): the box's corners as (x, y) pixel coordinates, in
    the order the file gave them (horizontal boxes: top-left, top-right, bottom-right, bottom-left).
    """

    corners: np.ndarray
    class_name: str
    difficult: Optional[int]
    source: str  # path of the annotation file
    line: Optional[int]  # 1-based line where the object starts (None when the XML parser gives no lines)
    number: int  # 1-based position of the object in its file
    attributes: Dict[str, Any] = field(default_factory=dict)  # extra values of the format (truncated, gsd, …)


@dataclass(frozen=True)
class Problem:
    """Something in an annotation file that was not imported, and why."""

    source: str
    line: Optional[int]
    number: Optional[int]  # 1-based object position, None for a problem with the whole file
    message: str

    def __str__(self) -> str:
        where = self.source + (f":{self.line}" if self.line is not None else "")
        what = f"object {self.number}: " if self.number is not None else ""
        return f"{where}: {what}{self.message}"


@dataclass
class FileAnnotations:
    """The annotations read from one file, the problems found in it, and file-level metadata."""

    path: str
    format: str
    annotations: List[Annotation] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RawBox:
    """What a format reader extracts from one record, before the shared checks."""

    corners: Any  # anything numpy turns into shape (4, 2)
    class_name: Optional[str]
    difficult: Optional[int] = None
    attributes: Dict[str, Any] = field(default_factory=dict)


Record = Tuple[Optional[int], int, Callable[[], RawBox]]  # (line, number, build)


def number(text: Optional[str], what: str) -> float:
    """A finite float from a text value; RecordError naming ``what`` otherwise."""
    if text is None or not str(text).strip():
        raise RecordError(f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise RecordError(f"{what} {str(text).strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise RecordError(f"{what} is {value}")
    return value


def optional_int(text: Optional[str], what: str) -> Optional[int]:
    """An integer flag such as ``difficult`` ("1", "1.0"), None when absent or empty."""
    if text is None or not str(text).strip():
        return None
    value = number(text, what)
    if not value.is_integer():
        raise RecordError(f"{what} {str(text).strip()!r} is not an integer")
    return int(value)


def rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Corners (4, 2) of the horizontal box [x0, x1] x [y0, y1]: top-left, top-right, bottom-right, bottom-left."""
    if x1 <= x0 or y1 <= y0:
        raise RecordError(f"the box ({x0:g}, {y0:g})-({x1:g}, {y1:g}) has zero or negative width or height")
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def rotated_rectangle(cx: float, cy: float, width: float, height: float, angle: float) -> np.ndarray:
    """Corners (4, 2) of a rotated box in pixel space (y down).

    The ``width`` side points along (cos angle, sin angle), ``angle`` in radians: with y pointing down a
    positive angle turns the box clockwise on screen (OpenCV's ``boxPoints`` convention, used by HRSC2016).
    Order: the corners that are top-left, top-right, bottom-right, bottom-left at angle 0.
    """
    u = np.array([math.cos(angle), math.sin(angle)]) * width / 2
    v = np.array([-math.sin(angle), math.cos(angle)]) * height / 2
    c = np.array([cx, cy])
    return np.array([c - u - v, c + u - v, c + u + v, c - u + v], dtype=float)


def checked_corners(points: Any) -> np.ndarray:
    """The corners as a float (4, 2) array, or RecordError if they do not make a usable box."""
    corners = np.asarray(points, dtype=float)
    if corners.shape != (4, 2):
        raise RecordError(f"a box has 4 corners, {corners.size // 2 if corners.ndim else 0} were given")
    if not np.isfinite(corners).all():
        raise RecordError("a corner coordinate is not finite")
    polygon = Polygon(corners)
    if polygon.area <= 0:
        raise RecordError("the box has zero area (its corners are on one line or repeated)")
    if not polygon.is_valid:
        raise RecordError("the box's edges cross (corners out of order)")
    return corners


def collect(path: str, fmt: str, records: Iterable[Record],
            metadata: Optional[Dict[str, Any]] = None) -> FileAnnotations:
    """Build every record of one file; a record that fails becomes a Problem, the others Annotations."""
    result = FileAnnotations(path=path, format=fmt, metadata=dict(metadata or {}))
    for line, n, build in records:
        try:
            raw = build()
            name = (raw.class_name or "").strip()
            if not name:
                raise RecordError("the object has no class name")
            corners = checked_corners(raw.corners)
        except RecordError as exc:
            result.problems.append(Problem(path, line, n, str(exc)))
            continue
        result.annotations.append(Annotation(corners, name, raw.difficult, path, line, n, dict(raw.attributes)))
    return result

"""Pascal VOC XML, as used by DIOR (``<bndbox>``) and DIOR-R (``<robndbox>``).

``<annotation><object><name>`` holds the class, ``<difficult>``, ``<truncated>`` and ``<pose>`` are kept when
present. Coordinate convention: ``<bndbox>`` xmin/ymin/xmax/ymax are taken as pixel-corner coordinates as
given, so the box is [xmin, xmax] x [ymin, ymax] in pixel space. This is what DIOR's tools and SAMRS did
(SAMRS prompted SAM with these four numbers directly). Original Pascal VOC meant 1-based inclusive pixel
indices; read that way a box would lie up to one pixel up-left of what it covers here and be one pixel
narrower, which is within annotation noise for SAM prompts.

DIOR-R's ``<robndbox>`` lists the corners ``x_left_top, y_left_top, x_right_top, y_right_top,
x_right_bottom, y_right_bottom, x_left_bottom, y_left_bottom`` (kept in that order) and ``angle``
(degrees, kept as the attribute ``angle``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator

from . import xmlfile
from .model import FileAnnotations, RawBox, Record, RecordError, collect, number, optional_int, rectangle

ROBNDBOX_CORNERS = ("left_top", "right_top", "right_bottom", "left_bottom")


def _value(element: Any, path: str) -> float:
    return number(xmlfile.text(element, path), f"<{path}>")


def _box(obj: Any) -> RawBox:
    attributes: Dict[str, Any] = {}
    if xmlfile.text(obj, "truncated") is not None:
        attributes["truncated"] = optional_int(xmlfile.text(obj, "truncated"), "<truncated>")
    if xmlfile.text(obj, "pose") is not None:
        attributes["pose"] = xmlfile.text(obj, "pose")
    if obj.find("robndbox") is not None:
        corners = [[_value(obj, f"robndbox/x_{c}"), _value(obj, f"robndbox/y_{c}")] for c in ROBNDBOX_CORNERS]
        if xmlfile.text(obj, "robndbox/angle") is not None:
            attributes["angle"] = _value(obj, "robndbox/angle")
    elif obj.find("bndbox") is not None:
        corners = rectangle(*(_value(obj, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")))
    else:
        raise RecordError("the object has neither <bndbox> nor <robndbox>")
    difficult = optional_int(xmlfile.text(obj, "difficult"), "<difficult>")
    return RawBox(corners, xmlfile.text(obj, "name"), difficult, attributes)


def read_voc(path: str) -> FileAnnotations:
    """Read one VOC / DIOR / DIOR-R XML file (pixel coordinates)."""
    root = xmlfile.parse_root(path)
    if root.tag != "annotation":
        raise RecordError(f"the root element is <{root.tag}>, a VOC file has <annotation>")

    def records() -> Iterator[Record]:
        for n, obj in enumerate(root.findall("object"), 1):
            yield xmlfile.line_of(obj), n, partial(_box, obj)

    return collect(path, "voc", records(), {"filename": xmlfile.text(root, "filename")})

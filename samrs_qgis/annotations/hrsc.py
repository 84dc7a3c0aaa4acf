"""HRSC2016 XML: ``<HRSC_Image><HRSC_Objects><HRSC_Object>`` with a rotated box ``mbox_cx, mbox_cy, mbox_w,
mbox_h, mbox_ang`` (pixels, radians).

The corners follow OpenCV's ``boxPoints`` convention, as HRSC2016's tools and mmrotate do: the ``mbox_w``
side points along (cos mbox_ang, sin mbox_ang) in pixel space (y down). The class is the ``Class_ID``
as text (e.g. ``100000013``); the ``hrsc2016`` class list maps every ship class id to ``ship``.
``difficult`` and ``truncated`` are kept, and ``mbox_ang`` (radians) as an attribute.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator

from . import xmlfile
from .model import FileAnnotations, RawBox, Record, RecordError, collect, number, optional_int, rotated_rectangle

MBOX = ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")


def _box(obj: Any) -> RawBox:
    cx, cy, w, h, angle = (number(xmlfile.text(obj, k), f"<{k}>") for k in MBOX)
    if w <= 0 or h <= 0:
        raise RecordError(f"the rotated box is {w:g} x {h:g} pixels; width and height must be positive")
    attributes: Dict[str, Any] = {"mbox_ang": angle}
    if xmlfile.text(obj, "truncated") is not None:
        attributes["truncated"] = optional_int(xmlfile.text(obj, "truncated"), "<truncated>")
    difficult = optional_int(xmlfile.text(obj, "difficult"), "<difficult>")
    return RawBox(rotated_rectangle(cx, cy, w, h, angle), xmlfile.text(obj, "Class_ID"), difficult, attributes)


def read_hrsc(path: str) -> FileAnnotations:
    """Read one HRSC2016 XML file (pixel coordinates)."""
    root = xmlfile.parse_root(path)
    if root.tag != "HRSC_Image":
        raise RecordError(f"the root element is <{root.tag}>, an HRSC2016 file has <HRSC_Image>")

    def records() -> Iterator[Record]:
        for n, obj in enumerate(root.findall("HRSC_Objects/HRSC_Object"), 1):
            yield xmlfile.line_of(obj), n, partial(_box, obj)

    return collect(path, "hrsc2016", records(), {"filename": xmlfile.text(root, "Img_FileName")})

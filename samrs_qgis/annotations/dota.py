"""DOTA ``labelTxt`` (v1.0, v1.5, v2.0): one object per line, ``x1 y1 x2 y2 x3 y3 x4 y4 category difficult``.

Optional header lines ``imagesource:GoogleEarth`` and ``gsd:0.146`` come first; their values are kept as
the file's metadata and as the attributes ``imagesource`` (text) and ``gsd`` (metres per pixel, null when
the file says ``null``) of every object. Corners are pixel coordinates as given (DOTA lists them
clockwise on screen). ``difficult`` may be missing (null).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator, List

from .model import FileAnnotations, RawBox, Record, RecordError, collect, number, optional_int

HEADER_KEYS = ("imagesource", "gsd")


def header_entry(line: str):
    """(key, value) of a header line such as ``gsd:0.5``, None for any other line."""
    key, sep, value = line.partition(":")
    key = key.strip().lower()
    return (key, value.strip()) if sep and key in HEADER_KEYS else None


def looks_like_dota(lines: List[str]) -> bool:
    """True when the first object line has 8 numbers then a category (or when there is no object line)."""
    for line in lines:
        tokens = line.split()
        if not tokens or header_entry(line):
            continue
        if len(tokens) not in (9, 10):
            return False
        try:
            [float(t) for t in tokens[:8]]
        except ValueError:
            return False
        return True
    return True


def _header_attributes(header: Dict[str, str]) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    if "imagesource" in header:
        attributes["imagesource"] = header["imagesource"] or None
    if "gsd" in header:
        try:
            attributes["gsd"] = float(header["gsd"])
        except ValueError:  # DOTA writes ``gsd:null`` when unknown
            attributes["gsd"] = None
    return attributes


def _box(tokens: List[str], attributes: Dict[str, Any]) -> RawBox:
    if len(tokens) == 8:
        raise RecordError("8 values but no category; a DOTA line is 8 corner coordinates, a category and "
                          "a difficulty flag")
    if len(tokens) not in (9, 10):
        raise RecordError(f"{len(tokens)} values; a DOTA line is 8 corner coordinates, a category and "
                          "a difficulty flag")
    coords = [number(t, f"coordinate {i + 1}") for i, t in enumerate(tokens[:8])]
    difficult = optional_int(tokens[9], "difficult") if len(tokens) == 10 else None
    return RawBox([coords[0:2], coords[2:4], coords[4:6], coords[6:8]], tokens[8], difficult, attributes)


def read_dota(path: str) -> FileAnnotations:
    """Read one DOTA labelTxt file (pixel coordinates)."""
    header: Dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()

    def records() -> Iterator[Record]:
        n = 0
        for line_no, line in enumerate(lines, 1):
            entry = header_entry(line)
            if entry:
                header[entry[0]] = entry[1]
            elif line.strip():
                n += 1
                yield line_no, n, partial(_box, line.split(), _header_attributes(header))

    result = collect(path, "dota", records())
    result.metadata.update(_header_attributes(header))
    return result

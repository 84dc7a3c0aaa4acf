"""DOTA ``labelTxt`` (v1.0, v1.5, v2.0): one object per line, ``x1 y1 x2 y2 x3 y3 x4 y4 category difficult``.

Optional header lines ``imagesource:GoogleEarth`` and ``gsd:0.146`` come first; their values are kept as
the file's metadata and as the attributes ``imagesource`` (text) and ``gsd`` (metres per pixel, null when
the file says ``null``) of every object. Corners are pixel coordinates as given (DOTA lists them
clockwise on screen). ``difficult`` may be missing (null).

Class names with spaces: DOTA's published class lists have none, but users' files may
(``… small vehicle 1``). Such a line is read without ambiguity, so it is accepted: the first 8 tokens are
the corners, the last token is the difficulty flag when it is a number, and the tokens in between, joined
by single spaces, are the class name (``small vehicle``). A line whose last token is not a number has no
difficulty flag and all tokens after the corners are the class name. A class name whose last word is a
number cannot be told from a difficulty flag; it is read as the flag (``… Boeing 737`` is class
``Boeing`` with difficulty 737, visible in the class summary).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator, List

from .model import FileAnnotations, RawBox, Record, RecordError, collect, number, optional_int

HEADER_KEYS = ("imagesource", "gsd")
DOTA_LINE = "8 corner coordinates, a category and a difficulty flag (x1 y1 x2 y2 x3 y3 x4 y4 category difficult)"


def header_entry(line: str):
    """(key, value) of a header line such as ``gsd:0.5``, None for any other line."""
    key, sep, value = line.partition(":")
    key = key.strip().lower()
    return (key, value.strip()) if sep and key in HEADER_KEYS else None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def is_dota_line(line: str) -> bool:
    """True for a DOTA object line: 8 numbers, then a category (maybe of several words) and maybe a flag."""
    tokens = line.split()
    return len(tokens) >= 9 and all(_is_number(t) for t in tokens[:8])


def object_lines(lines: List[str]) -> List[str]:
    """The lines that stand for objects: neither blank nor a header line."""
    return [line for line in lines if line.strip() and not header_entry(line)]


def looks_like_dota(lines: List[str]) -> bool:
    """True when at least half of the object lines are DOTA lines (or when there is no object line).

    Tolerant on purpose: a file whose lines are mostly DOTA lines is DOTA, and its odd lines are reported
    with their line numbers while the rest is imported.
    """
    candidates = object_lines(lines)
    return 2 * sum(map(is_dota_line, candidates)) >= len(candidates)


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


def _looks_like_yolo(tokens: List[str]) -> bool:
    """``class cx cy w h`` with an integer class and the rest normalised to 0 … 1."""
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return False
    return values[0].is_integer() and all(0 <= v <= 1 for v in values[1:])


def _box(tokens: List[str], attributes: Dict[str, Any]) -> RawBox:
    if len(tokens) == 8:
        raise RecordError(f"8 values but no category; a DOTA line is {DOTA_LINE}")
    if len(tokens) < 8:
        hint = (" (this looks like a YOLO line 'class cx cy w h', which is not read here: convert it to DOTA, "
                "VOC or CSV boxes in pixels)" if len(tokens) == 5 and _looks_like_yolo(tokens) else "")
        raise RecordError(f"{len(tokens)} values; a DOTA line is {DOTA_LINE}{hint}")
    coords = [number(t, f"coordinate {i + 1}") for i, t in enumerate(tokens[:8])]
    rest = tokens[8:]
    difficult = None
    if len(rest) > 1 and _is_number(rest[-1]):
        difficult = optional_int(rest[-1], "difficult")
        rest = rest[:-1]
    return RawBox([coords[0:2], coords[2:4], coords[4:6], coords[6:8]], " ".join(rest), difficult, attributes)


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

"""Which reader reads a file: the format names, detection by extension and content, and finding the
annotation file of an image."""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import InputError
from . import xmlfile
from .csv_boxes import REQUIRED, find_columns, read_csv_boxes
from .dota import DOTA_LINE, is_dota_line, looks_like_dota, object_lines, read_dota
from .fair1m import read_fair1m
from .hrsc import read_hrsc
from .model import FileAnnotations, Problem, RecordError
from .voc import read_voc

READERS: Dict[str, Callable[[str], FileAnnotations]] = {
    "dota": read_dota,
    "voc": read_voc,
    "fair1m": read_fair1m,
    "hrsc2016": read_hrsc,
    "csv": read_csv_boxes,
}
ALIASES = {"labeltxt": "dota", "dior": "voc", "dior-r": "voc", "hrsc": "hrsc2016", "fair1m2.0": "fair1m",
           "fair1m1.0": "fair1m"}
FORMATS = ("auto",) + tuple(READERS)
EXTENSIONS: Dict[str, Tuple[str, ...]] = {"dota": (".txt",), "voc": (".xml",), "fair1m": (".xml",),
                                          "hrsc2016": (".xml",), "csv": (".csv",)}
# Errors that make a whole file unreadable: reported as one problem for that file.
FILE_ERRORS = (OSError, UnicodeDecodeError, RecordError)
BINARY_SAMPLE = 8192  # bytes looked at to tell a text file from a binary one
TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # UTF-8, UTF-16 (LE, BE): text even with NUL bytes
CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\v") + b"\x7f"
NOT_TEXT = ("is not a text annotation file (it holds binary data, e.g. an image); give the image's DOTA .txt, "
            "VOC/DIOR/FAIR1M/HRSC2016 .xml or CSV annotation file")


class UnrecognisedText(RecordError):
    """A text file that is neither annotation XML, a CSV with a header, nor mostly DOTA lines."""


def is_binary(path: str) -> bool:
    """True when the file's first bytes are not text: a NUL byte, or more than 10 % control characters."""
    with open(path, "rb") as f:
        head = f.read(BINARY_SAMPLE)
    if head.startswith(TEXT_BOMS):
        return False
    if b"\x00" in head:
        return True
    return len(head) > 0 and sum(head.count(bytes([b])) for b in CONTROL_BYTES) > len(head) / 10


def format_name(fmt: Optional[str]) -> str:
    """The canonical name of a format argument (``"auto"``, ``"dota"``, ``"DIOR-R"`` -> ``"voc"``, …)."""
    name = (fmt or "auto").strip().lower()
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise InputError(f"Unknown annotation format '{fmt}'. Choose one of: {', '.join(FORMATS)} "
                         f"(also accepted: {', '.join(ALIASES)}).")
    return name


def detect_format(path: str) -> str:
    """The format of an annotation file, from its extension and its content (XML root element, DOTA lines)."""
    if path.lower().endswith(".csv"):
        return "csv"
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = f.read(65536)
    if head.lstrip().startswith("<"):
        root = xmlfile.parse_root(path)
        if root.tag == "HRSC_Image":
            return "hrsc2016"
        if root.find("objects") is not None:
            return "fair1m"
        if root.tag == "annotation":
            return "voc"
        raise RecordError(f"XML with root element <{root.tag}> is none of VOC/DIOR, FAIR1M or HRSC2016")
    lines = head.splitlines()
    if lines and all(k in find_columns(re.split(r"[,;\t]", lines[0])) for k in REQUIRED):
        return "csv"
    if looks_like_dota(lines):
        return "dota"
    candidates = object_lines(lines)
    dota = sum(map(is_dota_line, candidates))
    raise UnrecognisedText(f"the format cannot be recognised: {dota} of {len(candidates)} object line(s) are DOTA "
                           "lines (x1 y1 … x4 y4 category difficult), and it is no CSV with a header nor annotation "
                           f"XML; fix the lines, or give the format ({', '.join(READERS)})")


def _undecodable(path: str) -> str:
    """Where a file stops being UTF-8: ``line N (byte 0x..)``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        return f"line {line} (byte 0x{exc.object[exc.start]:02x})"
    return "a byte"


def read_annotation_file(path: str, fmt: str = "auto", image_name: Optional[str] = None) -> FileAnnotations:
    """Read one annotation file. A file that cannot be read at all gives a result with a problem for the whole
    file (``number`` None), and nothing from it is imported:

    * a binary file (an image given by mistake): "is not a text annotation file";
    * a text file that is not UTF-8: the line of the first byte that is not;
    * in ``auto`` format, a text file that is neither XML, a CSV with a header, nor mostly DOTA lines: "the
      format cannot be recognised", followed by a problem for every line that is not a DOTA line, with its
      line number (so a wholly malformed file has each of its lines reported).

    An empty file (or one with only a DOTA header, or a CSV header) gives no annotation and no problem: for a
    dataset it is an image without boxes. ``image_name`` restricts a CSV (which may list boxes of many
    images) to the rows of that image.
    """
    fmt = format_name(fmt)
    try:
        if is_binary(path):
            return FileAnnotations(path, fmt, problems=[Problem(path, None, None, NOT_TEXT)])
        if fmt == "auto":
            fmt = detect_format(path)
        return read_csv_boxes(path, image_name) if fmt == "csv" else READERS[fmt](path)
    except FILE_ERRORS as exc:
        line = getattr(exc, "line", None)
        if isinstance(exc, UnicodeDecodeError):
            message = (f"it is not UTF-8 text from {_undecodable(path)}; save it as UTF-8 (a text editor's "
                       "'Save with encoding')")
        else:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems = [Problem(path, line, None, f"cannot be read: {message}")]
        if isinstance(exc, UnrecognisedText):
            problems += _line_problems(path)
        return FileAnnotations(path, fmt, problems=problems)


def _line_problems(path: str) -> List[Problem]:
    """Every line of a text file that is not a DOTA object line, as a problem with its line number."""
    try:
        return read_dota(path).problems
    except FILE_ERRORS:
        return []


def find_annotation_file(image_path: str, folder: str, fmt: str = "auto") -> Optional[str]:
    """The annotation file of an image in ``folder``: same name without extension (``P0001.png`` ->
    ``P0001.txt`` or ``P0001.xml``), None when there is none.

    With ``fmt="auto"`` any of .txt, .xml and .csv is looked for; two candidates are an InputError.
    """
    fmt = format_name(fmt)
    extensions = sorted({e for f, exts in EXTENSIONS.items() if fmt in ("auto", f) for e in exts})
    stem = os.path.splitext(os.path.basename(image_path))[0]
    found: Dict[Tuple[int, int], str] = {}  # by file identity: on case-blind disks .txt and .TXT are one file
    for ext in extensions:
        for candidate in (os.path.join(folder, stem + ext), os.path.join(folder, stem + ext.upper())):
            if os.path.isfile(candidate):
                st = os.stat(candidate)
                found.setdefault((st.st_dev, st.st_ino), candidate)
    paths = sorted(found.values())
    if len(paths) > 1:
        raise InputError(f"Image '{image_path}' has several annotation files in '{folder}': {', '.join(paths)}. "
                         "Give the annotation format to choose one.")
    return paths[0] if paths else None

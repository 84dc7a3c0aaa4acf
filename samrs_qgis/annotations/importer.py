"""Importing detection annotations as a box layer: read the files, check the classes, write the GeoPackage."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

from ..classes import ClassCatalog
from ..errors import InputError
from .dataset_classes import ClassList, dataset_classes
from .formats import EXTENSIONS, format_name, read_annotation_file
from ..georef import PIXEL_SPACE, image_frame
from ..path_safety import check_output_paths
from .layer import write_box_layer
from .model import Annotation, Problem
from ..progress import Progress

READ_SHARE = 0.9  # of the progress: reading the files; the rest is writing the layer
NO_OBJECTS = "has no objects (an empty annotation file, or only a header); nothing was imported from it"
FILES_NAMED = 3  # files named in the message of an import that imported nothing; the rest are counted


class NothingImported(InputError):
    """No object could be imported from any of the files; nothing was written. ``problems`` says why, per file."""

    def __init__(self, message: str, problems: List[Problem]):
        super().__init__(message)
        self.problems = problems


def _named(files: Sequence[str]) -> str:
    names = ", ".join(f"'{f}'" for f in files[:FILES_NAMED])
    return names + (f" and {len(files) - FILES_NAMED} more file(s)" if len(files) > FILES_NAMED else "")


def nothing_imported(files: Sequence[str], problems: List[Problem]) -> NothingImported:
    """The error of an import that read no object at all: one line naming the files and the first reason."""
    if all(p.message == NO_OBJECTS for p in problems):
        return NothingImported(f"Nothing to import: the annotation file(s) {_named(files)} have no objects. Give "
                               "annotation files that list objects; no box layer was written.", problems)
    first = next(p for p in problems if p.message != NO_OBJECTS)
    where = f"line {first.line}: " if first.line is not None else ""
    what = f"object {first.number}: " if first.number is not None else ""
    reason = str(first) if len(files) > 1 else f"{where}{what}{first.message}"  # one file: named once
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return NothingImported(f"No object could be imported from {_named(files)}: {reason}{more}. No box layer was "
                           "written.", problems)


@dataclass
class ImportSummary:
    """What an import did. ``classes`` is (class_id, class_name, count) of the imported annotations."""

    output: str
    layer: str
    files: int
    annotations: int
    problems: List[Problem] = field(default_factory=list)
    classes: List[Tuple[int, str, int]] = field(default_factory=list)
    crs_wkt: str = ""
    georeferenced: bool = False

    def describe(self, max_problems: int = 20) -> str:
        place = "map coordinates of the image" if self.georeferenced else "pixel space (x = column, y = -row)"
        lines = [f"Imported {self.annotations} box(es) from {self.files} file(s) into {self.output} "
                 f"(layer '{self.layer}', {place}); {len(self.problems)} problem(s)."]
        lines += [f"  class {i} {name}: {count}" for i, name, count in self.classes]
        lines += [f"  {p}" for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"  … and {len(self.problems) - max_problems} more problem(s)")
        return "\n".join(lines)


def annotation_files(paths: Union[str, Sequence[str]], fmt: str = "auto") -> List[str]:
    """The files to read: the given files, and the annotation files (by extension) of given folders."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    fmt = format_name(fmt)
    extensions = tuple({e for f, exts in EXTENSIONS.items() if fmt in ("auto", f) for e in exts})
    files: List[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if n.lower().endswith(extensions) and os.path.isfile(os.path.join(path, n)))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"Annotation file '{path}' does not exist. Give existing annotation files or folders.")
    if not files:
        raise InputError(f"No annotation files in {', '.join(map(str, paths)) or '(nothing given)'}. Give DOTA "
                         ".txt, VOC/DIOR/FAIR1M/HRSC2016 .xml or .csv files, or folders holding them.")
    return files


def classify(annotations: List[Annotation],
             class_list: Optional[ClassList]) -> Tuple[List[Annotation], List[Problem]]:
    """Put each annotation's class in the list's spelling (in place, keeping the file's spelling as the
    attribute ``source_class``); an annotation whose class is not in the list becomes a problem."""
    if class_list is None:
        return annotations, []
    kept, problems = [], []
    for a in annotations:
        name = class_list.resolve(a.class_name)
        if name is None:
            problems.append(Problem(a.source, a.line, a.number, f"class '{a.class_name}' is not in the "
                                    f"{class_list.key} class list; the object is left out (choose another dataset "
                                    "list, or none)"))
            continue
        a.attributes["source_class"], a.class_name = a.class_name, name
        kept.append(a)
    return kept, problems


def import_annotations(annotation_paths: Union[str, Sequence[str]], output_gpkg: str,
                       image_path: Optional[str] = None, fmt: str = "auto", dataset: Optional[str] = None,
                       layer: str = "boxes", progress: Optional[Progress] = None) -> ImportSummary:
    """Read detection annotations and write them as one box layer (GeoPackage, Polygon per object).

    ``annotation_paths``: files or folders. ``image_path``: the image they annotate; its geotransform and
    CRS place the boxes on the map, and a CSV is restricted to its rows. Without an image, or with one
    that is not georeferenced, the layer is in pixel space: map = (column, -row), no CRS (GeoPackage's
    undefined Cartesian SRS), which is where QGIS shows an ungeoreferenced image (see
    :func:`.georef.pixel_to_map_transform`). ``fmt``: ``auto`` or a name of :data:`.formats.FORMATS`.
    ``dataset``: a class list of :data:`.dataset_classes.DATASET_CLASSES` giving stable class ids and
    spellings (the file's spelling is kept in ``source_class``; objects of other classes are reported);
    without it ids follow sorted names.

    Malformed objects and unreadable files are reported in the summary's ``problems``; the rest is written.
    A file without any object (empty, or only a header) is a problem too ("has no objects"). When not a
    single object is imported from any file, :class:`NothingImported` (an ``InputError`` holding the
    problems) is raised and no layer is written: an empty box layer is never the silent result of bad input.

    ``progress``: told the fraction done after each file (reading is 90 %, writing the layer the rest) and
    asked before each file and before writing whether to stop; a cancelled import raises
    :class:`..errors.Cancelled` and writes nothing.
    """
    progress = progress or Progress()
    fmt = format_name(fmt)
    class_list = dataset_classes(dataset) if dataset else None
    files = annotation_files(annotation_paths, fmt)
    check_output_paths({"box layer": output_gpkg},
                       dict({f"annotation file {n + 1}": f for n, f in enumerate(files)}, image=image_path))
    frame = image_frame(image_path) if image_path else None
    annotations: List[Annotation] = []
    problems: List[Problem] = []
    for number, path in enumerate(files):
        progress.check_cancelled()
        result = read_annotation_file(path, fmt, image_name=image_path)
        kept, class_problems = classify(result.annotations, class_list)
        annotations += kept
        problems += sorted(result.problems + class_problems, key=lambda p: (p.number or 0, p.line or 0))
        if not result.annotations and not result.problems:
            problems.append(Problem(path, None, None, NO_OBJECTS))
        progress.set_fraction(READ_SHARE * (number + 1) / len(files))
    if class_list is not None:
        class_ids = {name: class_list.index(name) for name in {a.class_name for a in annotations}}
    else:
        catalog = ClassCatalog.build([a.class_name for a in annotations], "str")
        class_ids = {name: i for i, name in catalog.as_list()}
    if not annotations:
        raise nothing_imported(files, problems)
    transform, crs_wkt = (frame.transform, frame.crs_wkt) if frame else (PIXEL_SPACE, "")
    progress.check_cancelled()  # the last moment to stop: nothing is written before this line
    write_box_layer(output_gpkg, annotations, class_ids, transform, crs_wkt, layer)
    progress.set_fraction(1.0)
    counts = Counter(a.class_name for a in annotations)
    classes = sorted((class_ids[name], name, n) for name, n in counts.items())
    return ImportSummary(output_gpkg, layer, len(files), len(annotations), problems, classes, crs_wkt,
                         bool(frame and frame.georeferenced))

"""One image of a dataset segmented and written: the work a local run and a cluster's worker do alike.

:class:`ImageWork` holds everything that work needs (folders, classes, options) and nothing of the run's state,
so it can be sent to another process; the run that owns the manifest (:class:`.dataset.DatasetJob`) records the
entry it returns.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .annotations import ClassList, image_frame, read_annotation_file, write_box_layer
from .annotations.importer import classify
from .annotations.model import Annotation, Problem
from .boxes import read_box_file
from .errors import Cancelled, InputError, SamrsError
from .pipeline import OutputPaths, SegmentJob
from .polygon_shaping import PolygonShaping
from .progress import Progress
from .samrs_format import instance_records, write_json_atomic, write_pngs
from .settings import SegmentOptions
from .transaction import OutputTransaction, remove_with_sidecars

BOX_LAYER = "boxes"
CLASS_FIELD = "class_name"
DONE, FAILED, NO_BOXES, NO_ANNOTATIONS, PENDING = "done", "failed", "no_boxes", "no_annotations", "pending"
MAX_PROBLEMS = 20  # annotation problems listed per image in the manifest (all are counted)


@dataclass(frozen=True)
class DatasetImage:
    """One image of the dataset: ``stem`` (its key and output name), ``path``, ``relative`` (path relative
    to the image folder, ``/``-separated) and its annotation file (None when it has none)."""

    stem: str
    path: str
    relative: str
    annotation: Optional[str] = None
    error: Optional[str] = None  # why its annotation file cannot be chosen (several candidates)


@dataclass(frozen=True)
class ImageOutputs:
    """Every file written for one image."""

    boxes: str
    instances: str
    semantic: str
    polygons: str
    class_index: str
    colour: str
    instance_file: str

    @classmethod
    def of(cls, output_dir: str, stem: str) -> "ImageOutputs":
        stem = stem.replace("/", os.sep)
        join = os.path.join
        return cls(join(output_dir, "boxes", stem + ".gpkg"), join(output_dir, "geo", stem + "_instances.tif"),
                   join(output_dir, "geo", stem + "_semantic.tif"), join(output_dir, "geo", stem + ".gpkg"),
                   join(output_dir, "class_index", stem + ".png"), join(output_dir, "colour", stem + ".png"),
                   join(output_dir, "instances", stem + ".json"))

    def all(self) -> List[str]:
        return list(asdict(self).values())

    def results(self) -> List[str]:
        """The files of a done image except the box layer (which failed images keep, for diagnosis)."""
        return [p for p in self.all() if p != self.boxes]

    @classmethod
    def folders(cls, output_dir: str) -> List[str]:
        """The folders of ``output_dir`` that hold the images' files (``boxes``, ``geo``, …)."""
        return sorted({os.path.dirname(p) for p in cls.of(output_dir, "image").all()})


@dataclass(frozen=True)
class ImageWork:
    """What segmenting any image of one dataset run needs: ``output_dir`` and ``annotations_dir`` (absolute),
    the annotation format, the dataset's classes (names by id) and class list, and ``options`` (the run's
    SegmentOptions with the dataset's class field and names set)."""

    output_dir: str
    annotations_dir: str
    annotation_format: str
    classes: Tuple[str, ...]
    class_list: Optional[ClassList]
    options: SegmentOptions

    def process(self, image: DatasetImage, progress: Progress, backend: Callable[[], object]) -> Dict:
        """Segment one image and write its files; returns its manifest entry. Per-image errors become a
        ``failed`` entry; cancellation and errors loading the backend stop the run. ``backend()`` gives the
        loaded backend (made on the first image with boxes and kept by the caller)."""
        started = time.perf_counter()
        outputs = ImageOutputs.of(self.output_dir, image.stem)
        for path in outputs.all():  # a clean slate: no stale file may outlive this image's new status
            remove_with_sidecars(path)
        entry: Dict = {}
        try:
            entry, annotations, frame = self._import(image, outputs)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a bad image or annotation file must not stop the dataset
            return self.failed(entry, exc, started)
        if entry["status"] != PENDING:
            entry["seconds"] = round(time.perf_counter() - started, 3)
            return entry
        progress.info(f"{len(annotations)} boxes")
        loaded = backend()  # outside the try: a model that cannot be loaded stops the run
        try:
            job = SegmentJob(image.path, read_box_file(outputs.boxes, BOX_LAYER),
                             OutputPaths(outputs.instances, outputs.semantic, outputs.polygons),
                             self.options, progress, backend=loaded)
            job.prepare()
            summary = job.run()
            self._write_samrs_files(outputs, frame, [a.corners for a in annotations])
        except (Cancelled, KeyboardInterrupt):
            for path in outputs.results():
                remove_with_sidecars(path)
            raise
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on with the next image
            for path in outputs.results():
                remove_with_sidecars(path)
            return self.failed(entry, exc, started)
        entry.update(status=DONE, boxes=summary.boxes, status_counts=dict(sorted(summary.status_counts.items())),
                     seconds=round(time.perf_counter() - started, 3))
        return entry

    def failed(self, entry: Dict, exc: BaseException, started: float) -> Dict:
        message = str(exc) if isinstance(exc, SamrsError) else f"{type(exc).__name__}: {exc}"
        message = message.replace(self.output_dir + os.sep, "")  # our files by their place in the output folder
        entry = dict(entry, status=FAILED, error=message, seconds=round(time.perf_counter() - started, 3))
        entry.setdefault("boxes", 0)
        return entry

    def _import(self, image: DatasetImage, outputs: ImageOutputs):
        """Read the image's annotations and write its box layer. Returns ``(entry, annotations, frame)``; the
        entry's status is ``pending`` when there are boxes to segment."""
        if image.error:
            raise InputError(image.error)
        frame = image_frame(image.path)  # InputError for an image GDAL cannot open
        entry: Dict = {"status": PENDING, "boxes": 0, "width": frame.width, "height": frame.height}
        if image.annotation is None:
            return dict(entry, status=NO_ANNOTATIONS), [], frame
        entry["annotation_file"] = os.path.relpath(image.annotation, self.annotations_dir).replace(os.sep, "/")
        result = read_annotation_file(image.annotation, self.annotation_format, image_name=image.path)
        whole_file = [p for p in result.problems if p.number is None]
        if whole_file and not result.annotations:
            raise InputError(f"The annotation file {whole_file[0]}")
        annotations, problems = self._classify(result.annotations)
        problems = sorted(result.problems + problems, key=lambda p: (p.number or 0, p.line or 0))
        if problems:
            entry["problem_count"] = len(problems)
            entry["problems"] = [str(p) for p in problems[:MAX_PROBLEMS]]
        if not annotations:
            if problems:
                raise InputError(f"No usable box in '{image.annotation}': {problems[0]}"
                                 + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
            return dict(entry, status=NO_BOXES), [], frame
        class_ids = {name: self.classes.index(name) for name in {a.class_name for a in annotations}}
        write_box_layer(outputs.boxes, annotations, class_ids, frame.transform, frame.crs_wkt, BOX_LAYER)
        entry["boxes"] = len(annotations)
        return entry, annotations, frame

    def _classify(self, annotations: List[Annotation]) -> Tuple[List[Annotation], List[Problem]]:
        """Classes spelled as the dataset list does; objects of classes outside it are problems (see
        :func:`.annotations.importer.classify`). Without a list every class is in ``self.classes``."""
        return classify(annotations, self.class_list)

    def _write_samrs_files(self, outputs: ImageOutputs, frame, rboxes) -> None:
        """The class-index and colour PNGs and the instance file, committed together."""
        # The pipeline places the polygons with the transform the annotation layer used (georef.py's rule).
        records = instance_records(outputs.polygons, frame.transform, frame.width, frame.height, rboxes,
                                   self.classes, exact=not PolygonShaping.of(self.options).active)
        with OutputTransaction() as transaction:
            class_index = transaction.stage(outputs.class_index, "class index PNG")
            colour = transaction.stage(outputs.colour, "colour PNG")
            instance_file = transaction.stage(outputs.instance_file, "instance file")
            write_pngs(outputs.semantic, class_index, colour)
            write_json_atomic(instance_file, records, compact=True)


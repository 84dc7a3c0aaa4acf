"""A reviewed dataset: the output folder of :func:`.dataset.segment_dataset` rewritten as its review says.

The review dock (``gui/review.py``) records its decisions in each image's polygon layer
(``geo/<stem>.gpkg``, layer ``masks``): field ``review`` = ``accepted`` / ``rejected`` / ``relabelled``; a
relabel also changes ``class_name`` / ``class_id`` and keeps the previous class in ``class_orig``.
:func:`export_reviewed` writes a new dataset folder with the same layout (so :func:`.report.result_set_from_folder`,
the evaluation and a COCO reader take it as they take the original):

* **rejected** masks are dropped everywhere: the polygon layer, the instance and semantic rasters, the
  class-index and colour PNGs, the instance file and the COCO file. The polygon layer holds no rejected
  feature (every feature of an exported layer is meant to be used; the review fields of the kept ones stay);
* **relabelled** masks take their new class. Classes are matched **by name**: a name of the manifest's class
  list keeps that id, a name outside it is appended to the list with the next id (in the order the images
  and features first use it), and the manifest's ``classes`` are extended; the exported layer's ``class_id``
  is the resolved id (the review dock numbers a new class within one layer only, which may clash with a
  class of another image);
* **accepted** and **unreviewed** masks are kept as they are; instance ids are never renumbered.

The rasters and PNGs are rebuilt from the kept polygons. Polygons trace pixel edges, so rasterizing pixel
centres returns each mask exactly; each mask is rasterized over its own bounding window only and painted
with the pipeline's ownership rule (:class:`.raster_output.InstanceCanvas`: the smaller mask owns a contested
pixel, equal areas -> the later instance), so a pixel a rejected mask owned goes back to the mask under it.
Grid, georeferencing, nodata, provenance tags and QGIS styles are those of the original outputs.
The instance files are rebuilt with :func:`.samrs_format.instance_records` (each box's ``rbox`` taken from the
original instance file), the COCO file with :func:`.samrs_format.coco_dataset` (image ids and file names
from the original COCO file). ``boxes/<stem>.gpkg`` (the imported annotations the instance ids refer to) is
copied unchanged.

``manifest.json`` is the original one with the extended ``classes``, ``exported_from`` (the source folder)
and, in each exported image's entry, ``review``: ``kept`` (features in the exported layer), ``dropped``
(rejected), ``relabelled``, ``accepted``, ``unreviewed``. Images that are not ``done`` keep their entry and
get no files.

Every file is written under a temporary name beside its destination and moved into place only when the
whole export succeeded (the manifest last); a cancelled or failed export leaves the output folder as it was.
The output folder must not be the source folder, and must be new, empty, or an earlier export.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .dataset import COCO_FILE, DONE, MANIFEST, NO_ANNOTATIONS, NO_BOXES, ImageOutputs
from .errors import InputError, SamrsError
from .georef import UNDEFINED_CARTESIAN_WKT
from .masks import MaskCrop
from .progress import Progress
from .raster_output import InstanceCanvas, write_rasters
from .review_fields import ACCEPTED, REJECTED, RELABELLED, REVIEW_FIELD, review_decision
from .samrs_format import MASK_LAYER, coco_dataset, instance_records, write_json_atomic, write_pngs
from .styles import write_output_styles
from .transaction import OutputTransaction, remove_with_sidecars
from .polygon_shaping import PolygonShaping
from .window_masks import feature_window_mask

EXPORTED_FROM = "exported_from"
CANCEL_CHECK_EVERY = 64  # features between cancellation checks
# Raster tags the export writes itself (write_rasters) rather than copying from the original rasters.
OWN_TAGS = ("SAMRS_CLASSES", "SAMRS_BACKGROUND", "SAMRS_REVIEW")


@dataclass
class ImageReview:
    """The review of one image's layer, as read in the first pass."""

    stem: str
    counts: Counter = field(default_factory=Counter)  # kept, dropped, relabelled, accepted, unreviewed
    unknown: Counter = field(default_factory=Counter)  # review values that are none of ours -> kept

    def entry(self) -> Dict[str, int]:
        return {k: int(self.counts[k]) for k in ("kept", "dropped", "relabelled", "accepted", "unreviewed")}


@dataclass
class ExportSummary:
    """What :func:`export_reviewed` wrote. ``images``: entries of the manifest; ``exported``: done images
    written; ``carried``: other images (entry kept, no files). Counts are over the exported images'
    features; ``new_classes``: class names appended to the class list (their ids follow the original ones)."""

    images: int
    exported: int
    carried: int
    kept: int
    dropped: int
    relabelled: int
    accepted: int
    unreviewed: int
    classes: List[str]
    new_classes: List[str]
    per_image: Dict[str, Dict[str, int]]
    source_dir: str
    output_dir: str
    manifest: str
    coco: str
    seconds: float

    def describe(self) -> str:
        lines = [f"Images: {self.images} — {self.exported} exported, {self.carried} carried over without files",
                 f"Masks: {self.kept} kept ({self.accepted} accepted, {self.relabelled} relabelled, "
                 f"{self.unreviewed} unreviewed), {self.dropped} rejected and dropped",
                 f"Classes: {len(self.classes)}"
                 + (f" (new: {', '.join(self.new_classes)})" if self.new_classes else ""),
                 f"From: {self.source_dir}", f"Output folder: {self.output_dir}",
                 f"Manifest: {self.manifest}", f"COCO: {self.coco}"]
        return "\n".join(lines)


def _load_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"The {what} '{path}' cannot be read ({exc}).") from exc


def _check_folders(dataset_dir: str, output_dir: str) -> Tuple[Dict, List[str]]:
    """The source manifest and the images of an earlier export in ``output_dir``, once both folders are fit
    for an export."""
    if not os.path.isdir(dataset_dir):
        raise InputError(f"The dataset folder '{dataset_dir}' does not exist or is not a folder. Give the output "
                         "folder of 'segmentdataset'.")
    manifest_path = os.path.join(dataset_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise InputError(f"The dataset folder '{dataset_dir}' has no {MANIFEST}: it is not an output folder of "
                         "'segmentdataset'.")
    manifest = _load_json(manifest_path, "manifest")
    if (not isinstance(manifest, dict) or not isinstance(manifest.get("images"), dict)
            or not isinstance(manifest.get("classes"), list)):
        raise InputError(f"The manifest '{manifest_path}' is not a segmentdataset manifest (an object with "
                         "'classes' and 'images').")
    if os.path.realpath(output_dir) == os.path.realpath(dataset_dir):
        raise InputError(f"The output folder '{output_dir}' is the dataset folder itself. The reviewed dataset "
                         "is written as a new dataset: give another (new or empty) folder.")
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise InputError(f"The output folder '{output_dir}' is a file. Give a folder.")
        if os.listdir(output_dir):
            earlier = os.path.join(output_dir, MANIFEST)
            previous = None
            if os.path.isfile(earlier):
                try:
                    previous = _load_json(earlier, "manifest")
                except InputError:
                    previous = None
            if not (isinstance(previous, dict) and EXPORTED_FROM in previous):
                raise InputError(f"The output folder '{output_dir}' is not empty and holds no earlier review export. "
                                 "Give a new or empty folder (an earlier export is replaced).")
            if isinstance(previous.get("images"), dict):
                return manifest, list(previous["images"])
    return manifest, []


def _source_files(dataset_dir: str, stem: str) -> ImageOutputs:
    files = ImageOutputs.of(dataset_dir, stem)
    missing = [p for p in files.all() if not os.path.isfile(p)]
    if missing:
        raise InputError(f"The manifest of '{dataset_dir}' lists image '{stem}' as done but its file "
                         f"'{missing[0]}' is missing. Re-run 'segmentdataset' into that folder first.")
    return files


def _scan_review(polygons: str, stem: str, classes: List[str]) -> ImageReview:
    """First pass over a layer (attributes only): the review counts; class names of kept masks that are not
    in ``classes`` are appended to it."""
    import fiona

    review = ImageReview(stem)
    with fiona.open(polygons, layer=MASK_LAYER, ignore_geometry=True) as layer:
        for feature in layer:
            p = feature["properties"]
            decision = review_decision(p.get(REVIEW_FIELD))
            if decision == REJECTED:
                review.counts["dropped"] += 1
                continue
            review.counts["kept"] += 1
            if decision in (ACCEPTED, RELABELLED):
                review.counts[decision] += 1
            else:
                review.counts["unreviewed"] += 1
                if decision is not None:
                    review.unknown[decision] += 1
            name = p.get("class_name")
            if name is not None and str(name) not in classes:
                classes.append(str(name))
    return review


def _class_id(properties: Dict, ids: Dict[str, int]) -> int:
    name = properties.get("class_name")
    if name is not None:
        return ids[str(name)]
    if properties.get("class_id") is None:
        raise SamrsError(f"Instance {properties.get('instance_id')} has neither a class name nor a class id.")
    return int(properties["class_id"])


def _raster_grid(path: str):
    import rasterio

    with rasterio.open(path) as ds:
        profile = {"width": ds.width, "height": ds.height, "crs": ds.crs, "transform": ds.transform}
        tags = {k: v for k, v in ds.tags().items() if k.startswith("SAMRS_") and k not in OWN_TAGS}
    return profile, tags


class _ReviewExport:
    def __init__(self, dataset_dir: str, output_dir: str, progress: Optional[Progress]):
        self.source_dir = os.path.abspath(os.fspath(dataset_dir))
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.progress = progress or Progress()
        self.manifest, self.previous_stems = _check_folders(self.source_dir, self.output_dir)
        self.background = self.manifest.get("background", 255)
        # polygons shaped by the run are not their masks' exact outlines (see window_masks.feature_window_mask)
        self.exact = not PolygonShaping.of(self.manifest.get("settings") or {}).active
        if not isinstance(self.background, int) or isinstance(self.background, bool) or self.background < 0:
            raise InputError(f"The manifest of '{self.source_dir}' has the background value {self.background!r}; "
                             "it must be an integer ≥ 0.")
        self.classes: List[str] = [str(c) for c in self.manifest["classes"]]
        self.original_classes = list(self.classes)
        self.done = [stem for stem, entry in self.manifest["images"].items()
                     if isinstance(entry, dict) and entry.get("status") == DONE]

    # -- work -------------------------------------------------------------------------------------
    def run(self) -> ExportSummary:
        started = time.perf_counter()
        sources = {stem: _source_files(self.source_dir, stem) for stem in self.done}
        reviews: Dict[str, ImageReview] = {}
        for stem in self.done:  # the classes must be known before any image is written
            self.progress.check_cancelled()
            reviews[stem] = _scan_review(sources[stem].polygons, stem, self.classes)
        new_classes = self.classes[len(self.original_classes):]
        if len(self.classes) > self.background:
            raise InputError(f"With the new class(es) {', '.join(new_classes)} the dataset has {len(self.classes)} "
                             f"classes; class id {self.background} would be the background value. Relabel into "
                             "fewer new classes.")
        if new_classes:
            self.progress.info(f"New classes from the review: {', '.join(new_classes)} "
                               f"(ids {len(self.original_classes)}–{len(self.classes) - 1})")
        ids = {name: i for i, name in reversed(list(enumerate(self.classes)))}  # first id of a repeated name

        created = not os.path.exists(self.output_dir)
        try:
            with OutputTransaction() as transaction:
                self._export_images(reviews, sources, ids, transaction)
        except BaseException:
            if created:
                _remove_empty_folders(self.output_dir)
            raise
        self._remove_stale(self.previous_stems)
        self.progress.set_fraction(1.0)
        total = Counter()
        for review in reviews.values():
            total.update(review.counts)
        return ExportSummary(
            images=len(self.manifest["images"]), exported=len(self.done),
            carried=len(self.manifest["images"]) - len(self.done), kept=total["kept"], dropped=total["dropped"],
            relabelled=total["relabelled"], accepted=total["accepted"], unreviewed=total["unreviewed"],
            classes=list(self.classes), new_classes=list(new_classes),
            per_image={stem: reviews[stem].entry() for stem in self.done}, source_dir=self.source_dir,
            output_dir=self.output_dir, manifest=os.path.join(self.output_dir, MANIFEST),
            coco=os.path.join(self.output_dir, COCO_FILE), seconds=time.perf_counter() - started)

    def _export_images(self, reviews: Dict[str, ImageReview], sources: Dict[str, ImageOutputs],
                       ids: Dict[str, int], transaction: OutputTransaction) -> None:
        """Stage every file of the export: each done image's, then the COCO file and the manifest."""
        instance_files: Dict[str, str] = {}
        n = len(self.done)
        for k, stem in enumerate(self.done, 1):
            self.progress.check_cancelled()
            prefix = f"image {k}/{n}: {stem}: "
            review = reviews[stem]
            for value, count in sorted(review.unknown.items()):
                self.progress.warning(f"{prefix}{count} mask(s) with the review value '{value}' (not "
                                      f"{ACCEPTED}, {REJECTED} or {RELABELLED}) are kept as unreviewed")
            instance_files[stem] = self._export_image(stem, sources[stem], ids, transaction, k)
            counts = review.entry()
            self.progress.info(f"{prefix}{counts['kept']} kept ({counts['relabelled']} relabelled), "
                               f"{counts['dropped']} dropped")
            self.progress.set_fraction(0.98 * k / max(n, 1))
        self.progress.check_cancelled()
        coco = transaction.stage(os.path.join(self.output_dir, COCO_FILE), "COCO file")
        write_json_atomic(coco, coco_dataset(self._coco_images(instance_files), self.classes), compact=True)
        manifest = transaction.stage(os.path.join(self.output_dir, MANIFEST), "manifest")
        write_json_atomic(manifest, self._manifest(reviews))
        self.progress.check_cancelled()

    def _export_image(self, stem: str, source: ImageOutputs, ids: Dict[str, int], transaction: OutputTransaction,
                      number: int) -> str:
        """Stage every file of one image; returns the staged instance file's path."""
        target = ImageOutputs.of(self.output_dir, stem)
        staged = ImageOutputs(**{role: transaction.stage(getattr(target, role), role.replace("_", " "))
                                 for role in ("boxes", "instances", "semantic", "polygons", "class_index",
                                              "colour", "instance_file")})
        shutil.copyfile(source.boxes, staged.boxes)
        profile, tags = _raster_grid(source.instances)
        records = _load_json(source.instance_file, "instance file")
        rboxes = {int(r["instance_id"]) - 1: r["rbox"] for r in records}  # instance_records looks up id - 1
        canvas_path = transaction.scratch_path(f"canvas-{number}.tif")
        kept_ids = self._write_layer_and_canvas(source, staged, ids, profile, canvas_path, tags, stem, rboxes)
        class_names = dict(enumerate(self.classes))
        write_output_styles(staged.instances, staged.semantic, staged.polygons, class_names, kept_ids,
                            polygon_layer=MASK_LAYER)
        write_pngs(staged.semantic, staged.class_index, staged.colour)
        rebuilt = instance_records(staged.polygons, profile["transform"], profile["width"], profile["height"],
                                   rboxes, self.classes, exact=self.exact)
        write_json_atomic(staged.instance_file, rebuilt, compact=True)
        return staged.instance_file

    def _write_layer_and_canvas(self, source: ImageOutputs, staged: ImageOutputs, ids: Dict[str, int],
                                profile: Dict, canvas_path: str, tags: Dict[str, str], stem: str,
                                rboxes: Dict[int, list]) -> List[int]:
        """Copy the kept features into the new layer and paint their masks; write the rasters. Returns the
        instance ids of the kept ``ok`` features (for the instance raster's style)."""
        import fiona

        source_path, layer_path = source.polygons, staged.polygons
        width, height, transform = profile["width"], profile["height"], profile["transform"]
        with fiona.open(source_path, layer=MASK_LAYER, ignore_geometry=True) as layer:
            all_ids = sorted(int(f["properties"]["instance_id"]) for f in layer)
        if len(set(all_ids)) != len(all_ids):
            raise SamrsError(f"The layer '{source_path}' has repeated instance ids; it is not a segmentdataset layer.")
        run_index = {instance_id: i for i, instance_id in enumerate(all_ids, 1)}  # instance order, as the pipeline
        instance_lut = np.zeros(len(all_ids) + 1, dtype=np.uint32)
        class_lut = np.full(len(all_ids) + 1, self.background, dtype=np.int64)
        kept_ok: List[int] = []
        canvas = InstanceCanvas(canvas_path, width, height, len(all_ids), transform)
        try:
            with fiona.open(source_path, layer=MASK_LAYER) as src:
                crs_wkt = src.crs_wkt or (None if profile["crs"] else UNDEFINED_CARTESIAN_WKT)
                layer_tags = src.tags()
                with fiona.open(layer_path, "w", driver="GPKG", layer=MASK_LAYER, schema=src.schema,
                                crs_wkt=crs_wkt) as out:
                    if layer_tags:
                        out.update_tags(layer_tags)
                    for count, feature in enumerate(src):
                        if count % CANCEL_CHECK_EVERY == 0:
                            self.progress.check_cancelled()
                        p = dict(feature["properties"])
                        if review_decision(p.get(REVIEW_FIELD)) == REJECTED:
                            continue
                        instance_id = int(p["instance_id"])
                        if instance_id - 1 not in rboxes:
                            raise SamrsError(f"Instance {instance_id} of '{source_path}' has no record in "
                                             f"'{source.instance_file}'; the dataset folder is inconsistent.")
                        class_id = _class_id(p, ids)
                        p["class_id"] = class_id
                        out.write({"geometry": feature["geometry"], "properties": p})
                        index = run_index[instance_id]
                        instance_lut[index], class_lut[index] = instance_id, class_id
                        if p.get("status") == "ok":
                            kept_ok.append(instance_id)
                        if feature["geometry"] is None:
                            continue
                        mask, row, col = feature_window_mask(feature, transform, width, height, source_path,
                                                             self.exact)
                        if mask.size:
                            canvas.paint(MaskCrop(col=col, row=row, mask=mask), index)
            self.progress.check_cancelled()
            review_tag = json.dumps({"exported_from": self.source_dir, "image": stem})
            write_rasters(canvas, profile, staged.instances, staged.semantic, instance_lut, class_lut,
                          dict(enumerate(self.classes)), self.background, dict(tags, SAMRS_REVIEW=review_tag))
        finally:
            canvas.close()
            if os.path.exists(canvas_path):
                os.remove(canvas_path)
        return kept_ok

    # -- dataset files ----------------------------------------------------------------------------
    def _coco_images(self, instance_files: Dict[str, str]):
        """The COCO images of the export: ids and file names as in the original COCO file (else position in
        the manifest and the source raster's extension), instances from the staged instance files."""
        listed = self._original_coco_images()
        for position, (stem, entry) in enumerate(self.manifest["images"].items(), 1):
            if not isinstance(entry, dict) or entry.get("status") not in (DONE, NO_BOXES, NO_ANNOTATIONS) \
                    or "width" not in entry:
                continue
            image = listed.get(stem) or {"id": position, "file_name": self._file_name(stem),
                                         "width": entry["width"], "height": entry["height"]}
            instances = []
            if stem in instance_files:
                instances = _load_json(instance_files[stem], "instance file")
            yield dict(image, instances=instances)

    def _original_coco_images(self) -> Dict[str, Dict]:
        path = os.path.join(self.source_dir, COCO_FILE)
        if not os.path.isfile(path):
            self.progress.warning(f"'{path}' is missing (the segmentation run did not finish); COCO image ids are "
                                  "positions in the manifest and file names are guessed from the source rasters.")
            return {}
        coco = _load_json(path, "COCO file")
        return {os.path.splitext(image["file_name"])[0]: {k: image[k] for k in ("id", "file_name", "width", "height")}
                for image in coco.get("images", [])}

    def _file_name(self, stem: str) -> str:
        instances = ImageOutputs.of(self.source_dir, stem).instances
        if os.path.isfile(instances):
            _, tags = _raster_grid(instances)
            source = tags.get("SAMRS_SOURCE_RASTER")
            if source:
                return stem + os.path.splitext(source)[1]
        return stem

    def _manifest(self, reviews: Dict[str, ImageReview]) -> Dict:
        manifest = json.loads(json.dumps(self.manifest))
        manifest["classes"] = list(self.classes)
        manifest[EXPORTED_FROM] = self.source_dir
        for stem, review in reviews.items():
            manifest["images"][stem]["review"] = review.entry()
        return manifest

    def _remove_stale(self, previous_stems) -> None:
        """Files of an earlier export (into the same folder) for images that are not exported now."""
        stems = set(self.manifest["images"]) | set(previous_stems)
        for stem in sorted(stems - set(self.done)):
            for path in ImageOutputs.of(self.output_dir, stem).all():
                remove_with_sidecars(path)


def _remove_empty_folders(output_dir: str) -> None:
    """After a failed first export: the folders it made, when they hold nothing (never a file)."""
    for root, _, _ in sorted(os.walk(output_dir), key=lambda item: -len(item[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


def export_reviewed(dataset_dir, output_dir, progress: Optional[Progress] = None) -> ExportSummary:
    """Write the dataset in ``dataset_dir`` (an output folder of :func:`.dataset.segment_dataset`) into
    ``output_dir`` as its review says: see the module's description. Raises :class:`InputError` for an unfit
    folder (``output_dir`` = ``dataset_dir``, a non-empty folder that is not an earlier export, a done image
    with missing files) and :class:`.errors.Cancelled` when ``progress`` asks to stop (nothing is written)."""
    return _ReviewExport(dataset_dir, output_dir, progress).run()

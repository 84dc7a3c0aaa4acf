"""Segmenting a whole detection dataset: a folder of images plus a folder of annotation files in, SAM masks
for every annotated box out, in the SAMRS layout, resumable.

Output folder (``<stem>`` = the image's file name without extension; with ``recursive`` its path relative
to the image folder, with ``/``):

* ``boxes/<stem>.gpkg`` — the image's annotations as a box layer (layer ``boxes``, field ``class_name``),
  placed on the map by the image's geotransform (pixel space for images without one; see
  :mod:`.annotations.georef`);
* ``geo/<stem>_instances.tif``, ``geo/<stem>_semantic.tif``, ``geo/<stem>.gpkg`` (layer ``masks``) — the
  pipeline's outputs on the image's grid (see README "Outputs");
* ``class_index/<stem>.png``, ``colour/<stem>.png``, ``instances/<stem>.json`` — SAMRS's per-image files
  (see :mod:`.samrs_format`);
* ``coco_instances.json`` — COCO instances of the whole dataset, built at the end of a completed run from
  the instance files (so it is whole after a resume too);
* ``manifest.json`` — ``classes`` (names, index = class id), ``background``, ``dataset`` (class list name or
  null), ``settings`` (the SegmentOptions used) and ``images``: ``<stem>`` -> ``status`` (``done``, ``failed``,
  ``no_boxes``, ``no_annotations``; ``pending`` while not yet processed), ``boxes``, ``status_counts``,
  ``error``, ``seconds``, ``width``/``height`` (pixels), annotation ``problems`` and ``inputs`` (what the
  result was made from, see below).

Class ids are fixed for the whole dataset before any image is segmented: by position in a dataset class
list (``dataset="dota2.0"``), else by sorted class name over all annotation files (every file is read first).

Resume: an image is skipped when its manifest entry is ``done``, its files all exist and its inputs are the
ones the entry records; every other image is (re)done, its old files removed first. The entry's ``inputs``
record the image (``file`` relative to the image folder, ``size``, ``mtime_ns``) and the annotation file
(``file`` relative to the annotation folder, ``size``, ``mtime_ns``, ``sha256`` of its bytes; null when
the image has none), taken just before the image is read. An image counts as changed when its file, size
or modification time differ (images are big: they are not hashed, so a replacement with the same size and
the same modification time goes unnoticed); an annotation file counts as changed when its name, size or
bytes differ (a file saved again with the same bytes is not a change). A changed image is segmented again
and the run says why; so is one whose annotation file was removed (it becomes ``no_annotations``: its old
masks leave the folder and the COCO file). A ``done`` entry without ``inputs`` (written by a version before
they were recorded) is segmented again once, since nothing tells its result still fits; the summary counts
these apart. When the classes or the result-deciding settings differ from the manifest's, every image is
done again. Outputs are written under temporary names and moved into place, and the manifest is updated
after each image, so an interrupted run followed by a rerun gives the outputs of one uninterrupted run.

The output folder is never input: its result folders (``boxes/``, ``geo/``, ``class_index/``, ``colour/``,
``instances/``) and, when it lies inside the image folder, the output folder itself are left out of the
image scan (compared as resolved folders, through symbolic links), and an image or annotation folder inside
one of its result folders is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Tuple, Union

from .annotations import ClassList, dataset_classes, find_annotation_file, read_annotation_file
from .backends import make_backend
from .classes import ClassCatalog
from .cluster import ClusterSpec
from .dataset_image import (CLASS_FIELD, DONE, FAILED, NO_ANNOTATIONS, NO_BOXES, PENDING, DatasetImage,
                            ImageOutputs, ImageWork)
from .errors import InputError, SamrsError
from .window_segmenter import maybe_compile_decoder
from .settings import SegmentOptions
from .progress import Progress, ProgressSlice
from .samrs_format import coco_dataset, write_json_atomic
from .path_safety import file_identity

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MANIFEST = "manifest.json"
COCO_FILE = "coco_instances.json"
# Settings that change speed or caching but not masks: a resume with other values keeps the done images.
POLL_S = 0.2  # how often a cluster run looks for finished images and for cancellation
NON_RESULT_SETTINGS = ("batch_size", "embedding_cache", "cache_dir", "cache_limit_mb", "compile_decoder")
MANIFEST_OVERHEAD = 0.05  # the manifest is rewritten at most this fraction of the run time (big datasets)
UNRECORDED = "the earlier run did not record its inputs (an older version wrote the manifest)"


def file_record(path: str, relative: str, digest: bool = False) -> Dict:
    """What the manifest records of an input file: ``file`` (``relative``), ``size``, ``mtime_ns`` and with
    ``digest`` the SHA-256 of its bytes. OSError when it cannot be read."""
    st = os.stat(path)
    record = {"file": relative, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if digest:
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        record["sha256"] = sha.hexdigest()
    return record


def input_change(recorded, current: Dict) -> Optional[str]:
    """Why an image done with the inputs ``recorded`` (its manifest entry's ``inputs``) must be segmented
    again with the inputs ``current`` (see :meth:`DatasetJob.input_record`); None when they are the same."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("image"), dict):
        return UNRECORDED
    image, earlier = current["image"], recorded["image"]
    if earlier.get("file") != image["file"]:
        return f"image is now '{image['file']}' (was '{earlier.get('file')}')"
    if (earlier.get("size"), earlier.get("mtime_ns")) != (image["size"], image["mtime_ns"]):
        return "image changed since the earlier run"
    annotation, earlier = current["annotation"], recorded.get("annotation")
    if annotation is None:
        return "annotation file removed since the earlier run" if earlier else None
    if not isinstance(earlier, dict):
        return f"annotation file '{annotation['file']}' added since the earlier run"
    if earlier.get("file") != annotation["file"]:
        return f"annotation file is now '{annotation['file']}' (was '{earlier.get('file')}')"
    if (earlier.get("size"), earlier.get("sha256")) != (annotation["size"], annotation["sha256"]):
        return "annotation file changed since the earlier run"
    return None


def _folder_inside(path: str, folders: Iterable[str]) -> Optional[str]:
    """The folder of ``folders`` that ``path`` is or lies inside (resolved, through symbolic links), or None."""
    wanted = {file_identity(f): f for f in folders}
    current = os.path.realpath(path)
    while True:
        found = wanted.get(file_identity(current))
        if found:
            return found
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


@dataclass
class DatasetSummary:
    """What a dataset run did. ``done``: images segmented in this run; ``skipped``: done in an earlier run
    and kept; ``redone``: done in an earlier run but processed again because their inputs changed or (the
    ``unrecorded`` of them) were not recorded (each also counted under its new status); ``boxes`` and
    ``status_counts``: boxes of the images segmented in this run."""

    images: int
    done: int
    skipped: int
    failed: int
    no_boxes: int
    no_annotations: int
    boxes: int
    status_counts: Dict[str, int]
    classes: List[str]
    backend: str
    seconds: float
    output_dir: str
    manifest: str
    coco: str
    failures: Dict[str, str] = field(default_factory=dict)
    redone: int = 0
    unrecorded: int = 0

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "none"
        redone = ""
        if self.redone > self.unrecorded:
            redone += f"; {self.redone - self.unrecorded} redone because their inputs changed"
        if self.unrecorded:
            redone += (f"; {self.unrecorded} redone because the earlier run did not record their inputs "
                       "(its manifest was written by an older version)")
        lines = [f"Images: {self.images} — {self.done} segmented, {self.skipped} already done, {self.failed} failed, "
                 f"{self.no_boxes} without boxes, {self.no_annotations} without annotation file{redone}",
                 f"Boxes segmented: {self.boxes} ({counts}) in {self.seconds:.1f} s; backend: {self.backend or 'not loaded'}",
                 f"Classes: {len(self.classes)}", f"Output folder: {self.output_dir}",
                 f"Manifest: {self.manifest}", f"COCO: {self.coco}"]
        lines += [f"  failed {stem}: {error}" for stem, error in sorted(self.failures.items())]
        return "\n".join(lines)


def list_images(folder: str, recursive: bool = False,
                exclude: Union[None, str, Iterable[str]] = None) -> List[Tuple[str, str]]:
    """``(path, relative)`` of the images in ``folder`` (by extension, case-insensitive, hidden files left
    out), sorted by relative path; ``exclude``: folders (one or several) whose contents are never listed (the
    output folder), compared with the subfolders as the folders they are (resolved, through symbolic links)."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"The image folder '{folder}' does not exist or is not a folder. Give the folder "
                         "holding the dataset's images.")
    excluded = {file_identity(f) for f in ([exclude] if isinstance(exclude, str) else exclude or ())}
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (excluded and file_identity(os.path.join(root, d)) in excluded))
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                path = os.path.join(root, name)
                found.append((path, os.path.relpath(path, folder).replace(os.sep, "/")))
        if not recursive:
            break
    return sorted(found, key=lambda item: item[1])


class DatasetJob:
    """One run over a dataset. ``prepare()`` lists the images, reads every annotation file for the classes
    and checks the options (no model is loaded); ``run()`` segments the images not done yet.

    ``options`` is shared by all images; its ``class_field``/``class_names``/``id_field`` are set by the job
    (``class_name``, the dataset's classes, none). ``dataset``: a class list name of
    :data:`.annotations.DATASET_CLASSES`. ``backend``: a loaded backend to use; by default one is made with
    :func:`.backends.make_backend` on the first image that has boxes and used for every image.
    """

    def __init__(self, images_dir: str, annotations_dir: str, output_dir: str,
                 options: SegmentOptions = SegmentOptions(), dataset: Optional[str] = None,
                 progress: Optional[Progress] = None, annotation_format: str = "auto", recursive: bool = False,
                 backend=None, cluster: Optional[ClusterSpec] = None):
        self.images_dir = os.path.abspath(images_dir)
        self.annotations_dir = os.path.abspath(annotations_dir)
        self.output_dir = os.path.abspath(output_dir)
        self.options = options
        self.dataset = dataset
        self.progress = progress or Progress()
        self.annotation_format = annotation_format
        self.recursive = recursive
        self.backend = backend
        self._owns_backend = backend is None  # made here on the first image with boxes, closed at the end
        self.images: List[DatasetImage] = []
        self.classes: List[str] = []
        self.class_list: Optional[ClassList] = None
        self.weights: Dict[str, int] = {}  # stem -> annotated objects (progress weight)
        self.manifest: Dict = {}
        self._prepared = False
        self._last_save = self._save_cost = 0.0
        self.cluster = cluster or ClusterSpec()
        self._cluster_backend = ""

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.output_dir, MANIFEST)

    @property
    def coco_path(self) -> str:
        return os.path.join(self.output_dir, COCO_FILE)

    # -- checks -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not os.path.isdir(self.annotations_dir):
            raise InputError(f"The annotation folder '{self.annotations_dir}' does not exist or is not a folder. "
                             "Give the folder holding the annotation files (DOTA .txt, VOC/FAIR1M/HRSC .xml, .csv).")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise InputError(f"The output folder '{self.output_dir}' is a file. Give a folder.")
        result_folders = ImageOutputs.folders(self.output_dir)
        for role, folder in (("image", self.images_dir), ("annotation", self.annotations_dir)):
            inside = _folder_inside(folder, result_folders)
            if inside:
                raise InputError(f"The {role} folder '{folder}' is inside the output folder's "
                                 f"'{os.path.basename(inside)}/' folder, where this run writes (and replaces) its "
                                 f"results. Give the folder of the dataset's own {role}s, or another output folder.")
        self.class_list = dataset_classes(self.dataset) if self.dataset else None
        listed = list_images(self.images_dir, self.recursive, exclude=[self.output_dir] + result_folders)
        if not listed:
            raise InputError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in '{self.images_dir}'"
                             f"{' or its subfolders' if self.recursive else ''}.")
        stems = Counter(os.path.splitext(rel)[0] for _, rel in listed)
        clashes = sorted(s for s, n in stems.items() if n > 1)
        if clashes:
            raise InputError(f"Several images share the name {clashes[0]!r} (different extensions) in "
                             f"'{self.images_dir}'; their outputs would collide. Keep one image per name.")
        self.images = [self._find_annotation(path, rel) for path, rel in listed]
        self.classes = self._scan_classes()
        background = self.options.background
        if background < len(self.classes):
            raise InputError(f"The background value {background} is the id of class '{self.classes[background]}'; "
                             f"choose a background value of {len(self.classes)} or more (255 by default).")
        self.job_options = replace(self.options, class_field=CLASS_FIELD, id_field=None,
                                   class_names=list(self.classes) or None)
        self.work = ImageWork(self.output_dir, self.annotations_dir, self.annotation_format, tuple(self.classes),
                              self.class_list, self.job_options)
        self.manifest = self._start_manifest()
        self._prepared = True

    def _find_annotation(self, path: str, relative: str) -> DatasetImage:
        stem = os.path.splitext(relative)[0]
        folders = [os.path.normpath(os.path.join(self.annotations_dir, os.path.dirname(relative))),
                   self.annotations_dir]
        try:
            for folder in dict.fromkeys(folders):  # the mirrored subfolder first, then the top folder
                found = find_annotation_file(path, folder, self.annotation_format) if os.path.isdir(folder) else None
                if found:
                    return DatasetImage(stem, path, relative, found)
        except InputError as exc:
            return DatasetImage(stem, path, relative, error=str(exc))
        return DatasetImage(stem, path, relative)

    def _scan_classes(self) -> List[str]:
        """Read every annotation file once: the dataset's classes (names by id) and each image's weight."""
        annotated = [image for image in self.images if image.annotation]
        self.progress.info(f"{len(self.images)} images, {len(annotated)} with an annotation file; reading them "
                           "for the classes")
        self.weights = {image.stem: 0 for image in self.images}
        found = set()
        for image in annotated:
            self.progress.check_cancelled()
            result = read_annotation_file(image.annotation, self.annotation_format, image_name=image.path)
            self.weights[image.stem] = len(result.annotations)
            found.update(a.class_name for a in result.annotations)
        if self.class_list is not None:
            return list(self.class_list.names)
        return [name for _, name in ClassCatalog.build(found, "str").as_list()] if found else []

    def _settings(self) -> Dict:
        settings = {k: v for k, v in asdict(self.job_options).items() if k != "class_names"}
        return json.loads(json.dumps(settings, default=str))  # as the manifest holds them (tuples -> lists)

    def _start_manifest(self) -> Dict:
        """The manifest to continue: the earlier run's entries when its classes and result settings match
        this run's, else every image pending."""
        manifest = {"classes": list(self.classes), "background": self.options.background,
                    "dataset": self.class_list.key if self.class_list else None, "settings": self._settings(),
                    "images": {image.stem: {"status": PENDING} for image in self.images}}
        try:
            with open(self.manifest_path, encoding="utf-8") as fh:
                earlier = json.load(fh)
        except FileNotFoundError:
            return manifest
        except (OSError, ValueError) as exc:
            self.progress.warning(f"The manifest '{self.manifest_path}' cannot be read ({exc}); every image is "
                                  "segmented again.")
            return manifest

        def result_settings(settings) -> Dict:
            return {k: v for k, v in (settings or {}).items() if k not in NON_RESULT_SETTINGS}

        same = (isinstance(earlier, dict) and earlier.get("classes") == manifest["classes"]
                and earlier.get("background") == manifest["background"]
                and result_settings(earlier.get("settings")) == result_settings(manifest["settings"]))
        if not same:
            self.progress.info("The classes or settings differ from the earlier run in this folder; "
                               "every image is segmented again.")
            return manifest
        for stem, entry in (earlier.get("images") or {}).items():
            if stem in manifest["images"] and isinstance(entry, dict):
                manifest["images"][stem] = entry
        return manifest

    def input_record(self, image: DatasetImage) -> Optional[Dict]:
        """The ``inputs`` of ``image`` as the manifest records them (see the module's "Resume"); None when they
        cannot be read (the image then fails when segmented)."""
        try:
            annotation = None
            if image.annotation:
                relative = os.path.relpath(image.annotation, self.annotations_dir).replace(os.sep, "/")
                annotation = file_record(image.annotation, relative, digest=True)
            return {"image": file_record(image.path, image.relative), "annotation": annotation}
        except OSError:
            return None

    def resume_state(self, image: DatasetImage, inputs: Optional[Dict]) -> Tuple[bool, Optional[str]]:
        """``(done, why)``: whether ``image`` was done in an earlier run with all its files in place and the
        inputs ``inputs`` (see :meth:`input_record`), and when it was done but must be segmented again, why."""
        entry = self.manifest["images"].get(image.stem, {})
        if entry.get("status") != DONE:
            return False, None
        if not all(os.path.isfile(p) for p in ImageOutputs.of(self.output_dir, image.stem).all()):
            return False, None  # a lost file: done again, as before inputs were recorded
        if image.error:
            return False, "its annotation file cannot be chosen any more"
        if inputs is None:
            return False, "its inputs cannot be read any more"
        why = input_change(entry.get("inputs"), inputs)
        return why is None, why

    # -- work -------------------------------------------------------------------------------------
    def run(self) -> DatasetSummary:
        if not self._prepared:
            self.prepare()
        started = time.perf_counter()
        self._position, self._total = 0.0, float(sum(max(1, w) for w in self.weights.values()))
        self._tally, self._box_counts, self._failures = Counter(), Counter(), {}
        os.makedirs(self.output_dir, exist_ok=True)
        self._save_manifest(force=True)
        try:
            queued = []  # (position in the dataset, image, inputs) for the cluster
            for k, image in enumerate(self.images, 1):
                self.progress.check_cancelled()
                inputs = self.input_record(image)  # before the image is read: a later change is seen next time
                done, why = self.resume_state(image, inputs)
                if done:
                    self._tally["skipped"] += 1
                    self.progress.info(self._prefix(k, image) + "done in an earlier run, kept")
                    self._advance(image)
                    continue
                if why:
                    self._tally["redone"] += 1
                    self._tally["unrecorded"] += why == UNRECORDED
                    self.progress.info(self._prefix(k, image) + why + "; segmenting it again")
                self.manifest["images"][image.stem] = {"status": PENDING}
                if self.cluster.enabled:
                    queued.append((k, image, inputs))
                    continue
                sub = self._slice(k, image)
                self._record(image, self.work.process(image, sub, self._backend), inputs, sub)
            if queued:
                self._run_on_cluster(queued)
            self.progress.check_cancelled()
            self._write_coco()
        finally:
            self._save_manifest(force=True)  # also after a cancellation or an error: it lists finished work
            if self._owns_backend and self.backend is not None:
                self.backend.close()
        tally = self._tally
        backend = self.backend.describe() if self.backend else self._cluster_backend
        return DatasetSummary(images=len(self.images), done=tally[DONE], skipped=tally["skipped"],
                              failed=tally[FAILED], no_boxes=tally[NO_BOXES], no_annotations=tally[NO_ANNOTATIONS],
                              boxes=sum(self._box_counts.values()), status_counts=dict(self._box_counts),
                              classes=list(self.classes), backend=backend,
                              seconds=time.perf_counter() - started, output_dir=self.output_dir,
                              manifest=self.manifest_path, coco=self.coco_path, failures=self._failures,
                              redone=tally["redone"], unrecorded=tally["unrecorded"])

    def _prefix(self, k: int, image: DatasetImage) -> str:
        return f"image {k}/{len(self.images)}: {image.stem}: "

    def _slice(self, k: int, image: DatasetImage) -> Progress:
        """The image's share of the run's progress (by its boxes)."""
        weight = max(1, self.weights[image.stem])
        return ProgressSlice(self.progress, self._position / self._total,
                             min(1.0, (self._position + weight) / self._total), self._prefix(k, image))

    def _advance(self, image: DatasetImage) -> None:
        self._position += max(1, self.weights[image.stem])
        self.progress.set_fraction(min(1.0, self._position / self._total))

    def _record(self, image: DatasetImage, entry: Dict, inputs: Optional[Dict], progress: Progress) -> None:
        """Keep an image's entry (with its ``inputs``) in the manifest, count it and say how it went."""
        if inputs is not None:
            entry["inputs"] = inputs
        self.manifest["images"][image.stem] = entry
        self._save_manifest()
        self._tally[entry["status"]] += 1
        if entry["status"] == DONE:
            self._box_counts.update(entry["status_counts"])
            progress.info(f"done, {entry['boxes']} boxes ({_counts(entry['status_counts'])}), "
                          f"{entry['seconds']:.1f} s")
        elif entry["status"] == FAILED:
            self._failures[image.stem] = entry["error"]
            progress.warning(f"failed: {entry['error']}")
        else:
            progress.info("no annotation file" if entry["status"] == NO_ANNOTATIONS else "no boxes")
        self._advance(image)

    def _run_on_cluster(self, queued: List[Tuple[int, DatasetImage, Optional[Dict]]]) -> None:
        """The images of ``queued`` as tasks of the cluster :attr:`cluster` names, their entries recorded as they
        come back; cancelling cancels the tasks not finished."""
        from . import cluster as dask_cluster

        distributed = dask_cluster.import_distributed()
        with dask_cluster.connect(self.cluster, self.progress) as client:
            dask_cluster.check_shared_folder(client, self.output_dir)
            run_id = uuid.uuid4().hex[:8]
            tasks = {}
            for k, image, inputs in queued:
                future = client.submit(dask_cluster.segment_image, self.work, image, pure=False,
                                       key=f"samrs-image-{run_id}-{k}", priority=len(self.images) - k)
                tasks[future] = (k, image, inputs, time.perf_counter())
            self.progress.info(f"{len(tasks)} image(s) sent to the cluster")
            answers = distributed.as_completed(list(tasks))
            try:
                while not answers.is_empty():
                    self.progress.check_cancelled()
                    finished = answers.next_batch(block=False)
                    if not finished:
                        time.sleep(POLL_S)
                        continue
                    for future in sorted(finished, key=lambda f: tasks[f][0]):
                        k, image, inputs, submitted = tasks[future]
                        try:
                            entry, described = future.result()
                            self._cluster_backend = self._cluster_backend or described
                        except Exception as exc:  # noqa: BLE001 - the cluster's failures are the image's
                            reason = dask_cluster.failure_reason(exc)
                            if reason is None:
                                raise
                            entry = self.work.failed({"boxes": 0}, SamrsError(reason), submitted)
                        self._record(image, entry, inputs, ProgressSlice(self.progress, 0, 1, self._prefix(k, image)))
            except BaseException:
                client.cancel([f for f in tasks if not f.done()])
                raise

    def _backend(self):
        """The run's backend, made on the first image with boxes and kept for every image."""
        if self.backend is None:
            self.backend = make_backend(self.options, self.progress)  # once for the dataset: the model stays loaded
            # whether compiling the decoder pays off is a question of the whole dataset, not of one image
            maybe_compile_decoder(self.backend, sum(self.weights.values()), self.options.compile_decoder,
                                  self.progress)
        return self.backend

    def _write_coco(self) -> None:
        """``coco_instances.json`` from the instance files of every done image; images without boxes are
        listed too (without annotations), failed ones left out. Image ids: 1-based position in the dataset."""
        def images():
            for image_id, image in enumerate(self.images, 1):
                entry = self.manifest["images"].get(image.stem, {})
                if entry.get("status") not in (DONE, NO_BOXES, NO_ANNOTATIONS) or "width" not in entry:
                    continue
                instances = []
                if entry["status"] == DONE:
                    with open(ImageOutputs.of(self.output_dir, image.stem).instance_file, encoding="utf-8") as fh:
                        instances = json.load(fh)
                yield {"id": image_id, "file_name": image.relative, "width": entry["width"],
                       "height": entry["height"], "instances": instances}

        write_json_atomic(self.coco_path, coco_dataset(images(), self.classes), compact=True)

    def _save_manifest(self, force: bool = False) -> None:
        """Write the manifest atomically. On big datasets rewriting it after every image would cost more than
        the images (its size grows with them), so unless forced it is skipped while the time since the last
        write is under 1/MANIFEST_OVERHEAD of what that write took; a crash then loses only recent entries,
        whose images are simply done again. Writes taking under 10 ms (a few thousand images) always happen."""
        now = time.perf_counter()
        if not force and self._save_cost > 0.01 and now - self._last_save < self._save_cost / MANIFEST_OVERHEAD:
            return
        images = self.manifest["images"]
        self.manifest["images"] = {image.stem: images[image.stem] for image in self.images}
        write_json_atomic(self.manifest_path, self.manifest)
        self._last_save = time.perf_counter()
        self._save_cost = self._last_save - now


def _counts(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def segment_dataset(images_dir: str, annotations_dir: str, output_dir: str,
                    options: SegmentOptions = SegmentOptions(), dataset: Optional[str] = None,
                    progress: Optional[Progress] = None, annotation_format: str = "auto",
                    recursive: bool = False, backend=None, cluster: Optional[ClusterSpec] = None) -> DatasetSummary:
    """Segment every annotated box of every image in ``images_dir`` (see :class:`DatasetJob`); ``cluster``: on
    Dask workers (see :mod:`.cluster`)."""
    job = DatasetJob(images_dir, annotations_dir, output_dir, options, dataset, progress, annotation_format,
                     recursive, backend, cluster)
    job.prepare()
    return job.run()

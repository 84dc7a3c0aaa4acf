"""The main job, window by window: a prepared run's boxes in, per-box masks out as an instance raster, a
semantic raster and a polygon layer with one feature per box.

:func:`.run_inputs.prepare_run` checks every input and loads the backend (no heavy work, clear errors);
:class:`WindowRunner` then plans windows, has each window segmented (:mod:`samrs_qgis.window_segmenter`:
encoded once or taken from the cache, its boxes decoded in batches, each mask post-processed) and streams
the results into the outputs, which appear only when the whole run succeeded.
:class:`SegmentJob` and :func:`segment_boxes` tie the two together for callers.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from .backends.base import Backend
from .boxes import STATUS_EMPTY, STATUS_FAILED, STATUS_OK, BoxSource, PixelBox
from .cluster import ClusterSpec
from .georef import UNDEFINED_CARTESIAN_WKT
from .progress import Progress
from .raster_output import InstanceCanvas, write_rasters
from .run_inputs import OutputPaths, PreparedRun, prepare_run
from .settings import SegmentOptions
from .styles import write_output_styles
from .transaction import OutputTransaction
from .vector_output import PolygonWriter
from .window_segmenter import BoxMask, WindowSegmenter
from .windows import WindowPlan, plan_windows

WINDOW_COST_IN_BOXES = 100  # progress weight of encoding a window, relative to decoding one box
NO_OBJECT = "no object pixels were found in the box"  # the detail of a box whose mask came out empty


@dataclass
class RunSummary:
    backend: str
    boxes: int
    status_counts: Dict[str, int]
    windows: int
    classes: Dict[int, str]
    outputs: OutputPaths
    seconds: float
    stretch: str = ""
    timings: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items()))
        lines = [f"Backend: {self.backend}",
                 f"Boxes: {self.boxes} ({counts}) in {self.windows} window(s), {self.seconds:.1f} s"]
        for role, path in asdict(self.outputs).items():
            if path:
                lines.append(f"{role}: {path}")
        return "\n".join(lines)


class WindowRunner:
    """One run of a :class:`.run_inputs.PreparedRun`: windows read ahead and segmented here
    (:class:`.window_segmenter.WindowSegmenter`), each box's mask painted on the instance canvas and written to
    the polygon layer as it comes, in window order; the rasters and styles at the end, all through one
    :class:`.transaction.OutputTransaction`. (:class:`.cluster_windows.ClusterWindowRunner` has the windows
    segmented by a cluster's workers instead.)

    Use once: ``WindowRunner(prepared, progress).run()``. A run leaves the prepared boxes as they were; what
    it finds out about a box (its mask came out empty) is in :meth:`status_of`.
    """

    def __init__(self, prepared: PreparedRun, progress: Progress):
        options, backend, raster = prepared.options, prepared.backend, prepared.raster
        self.started = time.perf_counter()
        self.prepared = prepared
        self.progress = progress
        self.plans: List[WindowPlan] = plan_windows(list(prepared.boxes), (raster.width, raster.height),
                                                    options.window_size, backend.input_size)
        self.run_index = {id(b): i + 1 for i, b in enumerate(prepared.boxes)}  # canvas values: 1..n, input order
        self.empty: Set[int] = set()  # run indices of the boxes whose mask came out empty
        self.failed: Dict[int, str] = {}  # run index -> why no mask could be computed for the box
        self.timings: Counter = Counter()
        self.total_work = len(self.plans) * WINDOW_COST_IN_BOXES + sum(len(p.boxes) for p in self.plans)
        self.done_work = 0

    def status_of(self, box: PixelBox) -> Tuple[str, str]:
        """The box's status and detail after this run (``empty`` when its mask came out empty)."""
        index = self.run_index[id(box)]
        if index in self.failed:
            return STATUS_FAILED, self.failed[index]
        if index in self.empty:
            return STATUS_EMPTY, NO_OBJECT
        return box.status, box.detail

    def indices(self, plan: WindowPlan) -> List[int]:
        """The run indices of the plan's boxes, in its order."""
        return [self.run_index[id(b)] for b in plan.boxes]

    def run(self) -> RunSummary:
        prepared, backend, raster = self.prepared, self.prepared.backend, self.prepared.raster
        self.progress.info(f"{prepared.usable_boxes} boxes in {len(self.plans)} window(s); "
                           f"backend {backend.describe()}; stretch {raster.stretch.describe()}")
        with OutputTransaction() as transaction:
            staged = OutputPaths(**{role: transaction.stage(path, role) if path else None
                                    for role, path in asdict(prepared.outputs).items()})
            self._write_outputs(staged, transaction)
            self.progress.check_cancelled()
        counts = Counter(self.status_of(b)[0] for b in prepared.boxes)
        return RunSummary(backend=backend.describe(), boxes=len(prepared.boxes), status_counts=dict(counts),
                          windows=len(self.plans), classes=dict(prepared.catalog.names), outputs=prepared.outputs,
                          seconds=time.perf_counter() - self.started, stretch=raster.stretch.describe(),
                          timings=dict(self.timings))

    # -- the window loop ----------------------------------------------------------------------------
    def _write_outputs(self, staged: OutputPaths, transaction: OutputTransaction) -> None:
        import rasterio

        prepared, raster = self.prepared, self.prepared.raster
        canvas = InstanceCanvas(transaction.scratch_path("canvas.tif"), raster.width, raster.height,
                                len(prepared.boxes), raster.transform)
        writer = None
        try:
            if staged.polygons:
                crs_wkt = raster.crs.to_wkt() if raster.crs else UNDEFINED_CARTESIAN_WKT
                writer = PolygonWriter(staged.polygons, transaction.scratch_path("polygons.gpkg"),
                                       prepared.layer_fields, crs_wkt, layer_name="masks",
                                       tags=prepared.provenance())
            with rasterio.Env(GDAL_CACHEMAX=256):
                if writer:  # boxes with no mask to compute are accounted for first
                    self._write_without_masks(writer, [b for b in prepared.boxes if not b.is_usable])
                for result in self._box_masks(polygons=writer is not None):
                    self._record(result, canvas, writer)
                if writer:  # boxes whose masks could not be computed (see ``failed``)
                    self._write_without_masks(writer, [prepared.boxes[i - 1] for i in sorted(self.failed)])
                self.progress.check_cancelled()
                if writer:
                    t0 = time.perf_counter()
                    writer.close()  # the layer in input order
                    writer = None
                    self.timings["postprocess"] += time.perf_counter() - t0
                self.progress.check_cancelled()
                self._write_rasters(canvas, staged)
                self._write_styles(staged)
                self.progress.set_fraction(1.0)
        finally:
            if writer:
                writer.abandon()
            canvas.close()

    def _box_masks(self, polygons: bool) -> Iterator[BoxMask]:
        """Every usable box's mask (and polygon when ``polygons``), window by window in plan order."""
        prepared = self.prepared
        segmenter = WindowSegmenter(prepared.backend, prepared.options, self.progress, prepared.raster.transform,
                                    prepared.usable_boxes, polygons)
        segmenter.timings = self.timings
        for plan, frame, valid in self._read_ahead():
            self.done_work += WINDOW_COST_IN_BOXES
            yield from segmenter.segment(plan, frame, valid, self.indices(plan))

    def _record(self, result: BoxMask, canvas: InstanceCanvas, writer: Optional[PolygonWriter]) -> None:
        """Paint a box's mask on the canvas and write its feature."""
        t0 = time.perf_counter()
        canvas.paint(result.crop, result.index)
        area = result.crop.area
        if not area:
            self.empty.add(result.index)
        if writer:
            box = self.prepared.boxes[result.index - 1]
            writer.write(result.index, box.feature.attributes,
                         self._result_fields(box, result.score, area, result.note), result.polygon)
        self.timings["postprocess"] += time.perf_counter() - t0
        self.done_work += 1
        self.progress.set_fraction(0.95 * self.done_work / max(self.total_work, 1))

    def _write_without_masks(self, writer: PolygonWriter, boxes: List[PixelBox]) -> None:
        """The features of ``boxes``, which have no mask: no geometry, their status and detail."""
        for box in boxes:
            writer.write(self.run_index[id(box)], box.feature.attributes, self._result_fields(box, None, 0), None)

    def _read_ahead(self) -> Iterator[Tuple[WindowPlan, np.ndarray, Optional[np.ndarray]]]:
        """Yield ``(plan, frame, valid)`` per window while the next window is read in a background thread,
        so reading and stretching overlap with encoding. Only that thread touches the input raster."""
        raster, timings = self.prepared.raster, self.timings

        def read(plan: WindowPlan):
            t0 = time.perf_counter()
            frame = raster.read_frame(plan.window, plan.frame_shape)
            valid = raster.read_valid(plan.window)
            timings["read"] += time.perf_counter() - t0
            return frame, valid

        plans = self.plans
        if not plans:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="samrs-read") as pool:
            pending = pool.submit(read, plans[0])
            for i, plan in enumerate(plans):
                t0 = time.perf_counter()
                frame, valid = pending.result()
                timings["read_wait"] += time.perf_counter() - t0
                if i + 1 < len(plans):
                    pending = pool.submit(read, plans[i + 1])
                yield plan, frame, valid

    # -- results --------------------------------------------------------------------------------------
    def _result_fields(self, box: PixelBox, score: Optional[float], area: int, note: str = "") -> Dict:
        """The feature's result fields; ``note``: what the polygon shaping could not do, the detail of an ok box."""
        status, detail = self.status_of(box)
        if status == STATUS_OK and note:
            detail = f"{detail}; {note}" if detail else note
        return {"instance_id": box.instance_id, "class_name": box.class_name, "class_id": box.class_id,
                "score": score, "area_px": area, "status": status, "detail": detail}

    def _write_styles(self, staged: OutputPaths) -> None:
        """QGIS styles beside (and, for a GeoPackage, inside) the outputs; see :mod:`samrs_qgis.styles`."""
        stem = lambda path: os.path.splitext(path)[0] if path else None  # noqa: E731
        # one <stem>.qml cannot serve two layers: a raster sharing the polygon layer's stem keeps it
        beside = stem(staged.polygons) not in {stem(staged.instances), stem(staged.semantic)}
        write_output_styles(staged.instances, staged.semantic, staged.polygons, self.prepared.catalog.names,
                            (b.instance_id for b in self.prepared.boxes if self.status_of(b)[0] == STATUS_OK),
                            qml_beside_polygons=beside)

    def _write_rasters(self, canvas: InstanceCanvas, staged: OutputPaths) -> None:
        if not (staged.instances or staged.semantic):
            return
        prepared = self.prepared
        n = len(prepared.boxes)
        instance_ids = np.zeros(n + 1, dtype=np.uint32)
        classes = np.full(n + 1, prepared.options.background, dtype=np.int64)
        for box in prepared.boxes:
            i = self.run_index[id(box)]
            instance_ids[i] = box.instance_id
            classes[i] = box.class_id
        ds = prepared.raster.dataset
        tags = dict(prepared.provenance(), SAMRS_OVERLAP_RULE="smaller mask owns the pixel; equal areas: later box wins")
        write_rasters(canvas, {"width": ds.width, "height": ds.height, "crs": ds.crs,
                               "transform": prepared.raster.transform},
                      staged.instances, staged.semantic, instance_ids, classes, prepared.catalog.names,
                      prepared.options.background, tags, cog=prepared.options.cog)


def run_prepared(prepared: PreparedRun, progress: Optional[Progress] = None) -> RunSummary:
    """Segment the boxes of a prepared run and write its outputs; the run's raster is closed afterwards."""
    try:
        return WindowRunner(prepared, progress or Progress()).run()
    finally:
        prepared.raster.close()


class SegmentJob:
    """One run over one raster. ``prepare()`` validates everything (:func:`.run_inputs.prepare_run`),
    ``run()`` does the work (:class:`WindowRunner`). After ``prepare()``, ``boxes`` are the boxes on the
    raster's pixel grid and ``backend`` the loaded backend."""

    def __init__(self, raster_path: str, boxes: BoxSource, outputs: OutputPaths,
                 options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None,
                 backend: Optional[Backend] = None):
        self.raster_path = raster_path
        self.source = boxes
        self.outputs = outputs
        self.options = options
        self.progress = progress or Progress()
        self.prepared: Optional[PreparedRun] = None
        self._backend = backend

    @property
    def backend(self) -> Optional[Backend]:
        return self.prepared.backend if self.prepared else self._backend

    @property
    def boxes(self) -> List[PixelBox]:
        return list(self.prepared.boxes) if self.prepared else []

    def prepare(self) -> None:
        """Check all inputs and load the backend; raises :class:`InputError` naming the input at fault."""
        self.prepared = prepare_run(self.raster_path, self.source, self.outputs, self.options, self._backend,
                                    self.progress)

    def run(self) -> RunSummary:
        """Segment and write the outputs; a backend the job loaded itself is closed at the end."""
        try:
            if self.prepared is None:
                self.prepare()
            return run_prepared(self.prepared, self.progress)
        finally:
            if self._backend is None and self.prepared is not None:
                self.prepared.backend.close()


def segment_boxes(raster_path: str, boxes: BoxSource, outputs: OutputPaths,
                  options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None,
                  cluster: Optional[ClusterSpec] = None) -> RunSummary:
    """Check inputs, then segment every box of ``boxes`` over ``raster_path`` and write ``outputs``; ``cluster``:
    with the windows segmented by Dask workers (see :mod:`.cluster_windows`), into the same files."""
    if cluster is not None and cluster.enabled:
        from .cluster_windows import segment_on_cluster

        return segment_on_cluster(raster_path, boxes, outputs, cluster, options, progress)
    job = SegmentJob(raster_path, boxes, outputs, options, progress)
    job.prepare()
    return job.run()

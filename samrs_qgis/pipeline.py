"""The main job, window by window: a prepared run's boxes in, per-box masks out as an instance raster, a
semantic raster and a polygon layer with one feature per box.

:func:`.run_inputs.prepare_run` checks every input and loads the backend (no heavy work, clear errors);
:class:`WindowRunner` then plans windows, encodes each window once (or takes its embedding from the
cache), decodes its boxes in batches (halving them when the device runs out of memory), post-processes
each mask and streams the results into the outputs, which appear only when the whole run succeeded.
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

from .backends.base import Backend, BoxLogits, PendingLogits
from .backends.compile_verdict import MEASURE_BATCHES, MEASURE_MIN_BOXES
from .boxes import STATUS_EMPTY, STATUS_OK, BoxSource, PixelBox
from .embedding_cache import EmbeddingCache
from .errors import InputError
from .georef import UNDEFINED_CARTESIAN_WKT
from .logits import sample_region
from .masks import MASK_THRESHOLD, MaskCrop, neighbourhood, polygon_mask, polygonize
from .postprocess import PostProcessing, clean_mask
from .progress import Progress
from .prompts import build_prompts
from .raster_output import InstanceCanvas, write_rasters
from .run_inputs import OutputPaths, PreparedRun, prepare_run
from .settings import COMPILE_CHOICES, SegmentOptions
from .styles import write_output_styles
from .transaction import OutputTransaction
from .vector_output import PolygonWriter
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


def maybe_compile_decoder(backend: Backend, boxes: int, choice: str, progress: Progress,
                          plan: Optional[WindowPlan] = None) -> None:
    """Compile the backend's decoder when asked (``on``); or (``auto``, on a CPU) where a measurement on this
    machine found the compiled decoder faster and ``boxes`` boxes are enough to pay for compiling. With no
    measurement yet and a run big enough for measuring to pay off, measure: on ``plan``'s boxes, the window
    just encoded; without a plan (no embedding yet, e.g. before a dataset's first image) the run's size is
    kept on the backend for its first window. A decoder already compiled, or one the backend cannot compile,
    stays as it is."""
    if choice not in COMPILE_CHOICES:
        raise InputError(f"Unknown compile_decoder '{choice}'. Choose {', '.join(COMPILE_CHOICES)}.")
    if choice == "off" or not backend.compilable or backend.compiled:
        return
    if choice == "on":
        progress.info(f"Compiling the mask decoder for {boxes} boxes (once per run).")
        backend.compile_decoder()
        return
    if backend.device != "cpu":
        return
    announced = max(boxes, backend.compile_run_boxes)  # a dataset's total counts for its images' runs
    verdict = backend.compile_verdict()
    if verdict is None:
        if announced < MEASURE_MIN_BOXES:
            return
        if plan is None:
            backend.compile_run_boxes = announced
            return
        sample = plan.boxes[:(MEASURE_BATCHES + 1) * backend.preferred_batch]
        backend.measure_compile(frame_boxes(plan, [b.bounds for b in sample]),
                                frame_boxes(plan, [sample_area(plan, b) for b in sample]), progress)
        return
    if verdict.compile and announced >= backend.compile_threshold():
        progress.info(f"Compiling the mask decoder for {announced} boxes (measured on this machine: {verdict.reason}).")
        backend.compile_decoder()
    elif not verdict.compile and boxes >= MEASURE_MIN_BOXES:
        progress.info(f"Mask decoder not compiled: measured on this machine, {verdict.reason}.")


class WindowRunner:
    """One run of a :class:`.run_inputs.PreparedRun`: windows read ahead, encoded, their boxes decoded in
    batches, each mask painted on the instance canvas and written to the polygon layer; the rasters and
    styles at the end, all through one :class:`.transaction.OutputTransaction`.

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
        self.post_processing = PostProcessing(options.fill_holes, options.min_island_px, options.keep_largest)
        self.batch_size = options.batch_size or backend.preferred_batch  # halved for good on out-of-memory
        self.cache: Optional[EmbeddingCache] = None
        if options.embedding_cache and backend.identity():
            self.cache = EmbeddingCache(options.cache_dir, options.cache_limit_mb)
        self.run_index = {id(b): i + 1 for i, b in enumerate(prepared.boxes)}  # canvas values: 1..n, input order
        self.empty: Set[int] = set()  # run indices of the boxes whose mask came out empty
        self.timings: Counter = Counter()
        self.total_work = len(self.plans) * WINDOW_COST_IN_BOXES + sum(len(p.boxes) for p in self.plans)
        self.done_work = 0

    def status_of(self, box: PixelBox) -> Tuple[str, str]:
        """The box's status and detail after this run (``empty`` when its mask came out empty)."""
        if self.run_index[id(box)] in self.empty:
            return STATUS_EMPTY, NO_OBJECT
        return box.status, box.detail

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
                if writer:
                    for box in prepared.boxes:  # boxes with no mask to compute are accounted for first
                        if not box.is_usable:
                            writer.write(self.run_index[id(box)], box.feature.attributes,
                                         self._result_fields(box, None, 0), None)
                for plan, frame, valid in self._read_ahead():
                    self._segment_window(plan, frame, valid, canvas, writer)
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

    def _segment_window(self, plan: WindowPlan, frame: np.ndarray, valid: Optional[np.ndarray],
                        canvas: InstanceCanvas, writer: Optional[PolygonWriter]) -> None:
        """Encode one window, then decode, paint and write its boxes batch by batch."""
        self.progress.check_cancelled()
        t0 = time.perf_counter()
        self._encode(frame)
        self.timings["encode"] += time.perf_counter() - t0
        if plan is self.plans[0]:  # whether compiling the decoder pays off is measured on an embedding
            maybe_compile_decoder(self.prepared.backend, self.prepared.usable_boxes,
                                  self.prepared.options.compile_decoder, self.progress, plan)
        self.done_work += WINDOW_COST_IN_BOXES
        # Batch k+1 is started on the device before batch k's masks are made on the host (a GPU decodes
        # meanwhile; on a CPU decoding is done when it is started).
        pending: Optional[Tuple[List[PixelBox], PendingLogits]] = None
        start = 0
        while start < len(plan.boxes):
            self.progress.check_cancelled()
            batch = plan.boxes[start:start + self.batch_size]
            t0 = time.perf_counter()
            started = (batch, self._decode(plan, batch))
            self.timings["decode"] += time.perf_counter() - t0
            if pending:
                self._finish_batch(plan, *pending, valid, canvas, writer)
            pending = started
            start += len(batch)
        if pending:
            self._finish_batch(plan, *pending, valid, canvas, writer)

    def _finish_batch(self, plan: WindowPlan, batch: List[PixelBox], pending: PendingLogits,
                      valid: Optional[np.ndarray], canvas: InstanceCanvas, writer: Optional[PolygonWriter]) -> None:
        """Wait for a batch's logits, then paint and write its boxes' masks."""
        t0 = time.perf_counter()
        logits = pending.result()
        t1 = time.perf_counter()
        self.timings["decode"] += t1 - t0
        transform = self.prepared.raster.transform
        for box, box_logits in zip(batch, logits):
            index = self.run_index[id(box)]
            crop = self._mask_crop(plan, box, box_logits, valid)
            canvas.paint(crop, index)
            if not crop.area:
                self.empty.add(index)
            if writer:
                writer.write(index, box.feature.attributes, self._result_fields(box, box_logits.score, crop.area),
                             polygonize(crop, transform))
        self.timings["postprocess"] += time.perf_counter() - t1
        self.done_work += len(batch)
        self.progress.set_fraction(0.95 * self.done_work / max(self.total_work, 1))

    def _encode(self, frame: np.ndarray) -> None:
        """Encode the window's frame, or take its embedding from the cache."""
        backend = self.prepared.backend
        if self.cache is None:
            self._on_device(frame.shape, backend.encode, frame)
            return
        key = self.cache.key(frame, backend.identity())
        embedding = self.cache.get(key)
        if embedding is not None:
            self._on_device(frame.shape, backend.load_embedding, embedding, frame.shape[:2])
            self.timings["cached_windows"] += 1
            return
        self._on_device(frame.shape, backend.encode, frame)
        self.cache.put(key, backend.embedding)

    def _on_device(self, frame_shape, step, *args) -> None:
        """Run an encoding step; out of memory, free the device's cache and try once more (another process
        may have let go), then stop with what to do. Retried outside the except block, whose traceback holds
        the failed attempt's tensors."""
        backend = self.prepared.backend
        for attempt in (1, 2):
            try:
                step(*args)
                return
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
                if not backend.is_out_of_memory(exc):
                    raise
                if attempt == 2:
                    raise InputError(
                        f"The {backend.describe()} ran out of memory encoding a {frame_shape[1]} x "
                        f"{frame_shape[0]} window ({str(exc).splitlines()[0]}). Close other programs using the "
                        "device, choose a smaller model (vit_b), or run on the CPU (device cpu).") from None
            backend.free_cached_memory()
            self.progress.warning("Out of memory encoding a window; freed the device's cache, trying once more.")

    def _decode(self, plan: WindowPlan, batch: List[PixelBox]) -> PendingLogits:
        """Start decoding a batch; when the device runs out of memory, halve the batch (for the rest of the run
        too) and decode the halves one after the other."""
        backend, prompt = self.prepared.backend, self.prepared.options.prompt
        try:
            boxes = frame_boxes(plan, [b.bounds for b in batch])
            regions = frame_boxes(plan, [sample_area(plan, b) for b in batch])
            prompts = None
            if prompt != "box":
                prompts = build_prompts(prompt, boxes, [frame_ring(plan, b) for b in batch])
            return backend.decode_async(boxes, regions, prompts)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if len(batch) == 1 or not backend.is_out_of_memory(exc):
                raise
        half = len(batch) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        backend.free_cached_memory()
        if self.prepared.options.batch_size is None:  # learned for the backend's later runs (a dataset's images)
            backend.preferred_batch = min(backend.preferred_batch, self.batch_size)
        self.progress.warning(f"Out of memory decoding {len(batch)} boxes; going on with batches of {self.batch_size}.")
        return PendingLogits.ready(self._decode(plan, batch[:half]).result() + self._decode(plan, batch[half:]).result())

    def _mask_crop(self, plan: WindowPlan, box: PixelBox, logits: BoxLogits, valid: Optional[np.ndarray]) -> MaskCrop:
        """The box's native-resolution mask over its neighbourhood, with nodata and the optional clip applied."""
        c0, r0, c1, r1 = neighbourhood(box.bounds, plan.window)
        mask = sample_region(logits, plan.scale, (c0, r0, c1, r1)) > MASK_THRESHOLD
        valid_crop = None if valid is None else valid[r0:r1, c0:c1]
        if valid_crop is not None:
            mask &= valid_crop
        col, row = plan.window.col + c0, plan.window.row + r0
        if self.prepared.options.clip_to_box:
            mask &= polygon_mask(box.polygon, col, row, mask.shape)
        if self.post_processing.active:
            mask = clean_mask(mask, self.post_processing)
            if valid_crop is not None:  # filling holes must not bring nodata pixels back
                mask &= valid_crop
        return MaskCrop(col=col, row=row, mask=mask)

    # -- results --------------------------------------------------------------------------------------
    def _result_fields(self, box: PixelBox, score: Optional[float], area: int) -> Dict:
        status, detail = self.status_of(box)
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
                      prepared.options.background, tags)


# -- from pixel space to a window's frame -------------------------------------------------------------
def sample_area(plan: WindowPlan, box: PixelBox) -> Tuple[int, int, int, int]:
    """Pixel-space (x0, y0, x1, y1) area over which the box's mask is sampled: its neighbourhood."""
    c0, r0, c1, r1 = neighbourhood(box.bounds, plan.window)
    return plan.window.col + c0, plan.window.row + r0, plan.window.col + c1, plan.window.row + r1


def frame_ring(plan: WindowPlan, box: PixelBox) -> np.ndarray:
    """The box polygon's exterior ring in frame pixels, (k, 2)."""
    ring = np.asarray(box.polygon.exterior.coords, dtype=np.float64)
    return (ring - [plan.window.col, plan.window.row]) * plan.scale


def frame_boxes(plan: WindowPlan, rectangles) -> np.ndarray:
    """Pixel-space (x0, y0, x1, y1) rectangles -> frame-space (n, 4) pixel-corner coordinates of this window's frame."""
    sx, sy = plan.scale
    bounds = np.array(rectangles, dtype=np.float64).reshape(-1, 4)
    bounds[:, [0, 2]] = (bounds[:, [0, 2]] - plan.window.col) * sx
    bounds[:, [1, 3]] = (bounds[:, [1, 3]] - plan.window.row) * sy
    return bounds


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
                  options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None) -> RunSummary:
    """Check inputs, then segment every box of ``boxes`` over ``raster_path`` and write ``outputs``."""
    job = SegmentJob(raster_path, boxes, outputs, options, progress)
    job.prepare()
    return job.run()

"""The main job: boxes over a raster in, per-box masks out as an instance raster, a semantic raster
and a polygon layer with one feature per box.

Stages: ``prepare`` checks every input and opens the backend (no heavy work, clear errors), then
``run`` plans windows, encodes each window once, decodes its boxes in batches and streams the
results into the outputs, which appear only when the whole run succeeded.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends.base import Backend
from .boxes import (STATUS_EMPTY, STATUS_OK, STATUS_OUTSIDE, BoxSource, PixelBox, PixelProjector,
                    check_layer, project_box)
from .classes import ClassCatalog
from .embedding_cache import EmbeddingCache
from .errors import InputError
from .logits import sample_region
from .masks import MASK_THRESHOLD, MaskCrop, neighbourhood, polygon_mask, polygonize
from .postprocess import PostProcessing, clean_mask
from .georef import UNDEFINED_CARTESIAN_WKT
from .progress import Progress
from .settings import BACKENDS, SegmentOptions
from .prompts import build_prompts, check_prompt_mode
from .raster_input import RasterInput
from .raster_output import InstanceCanvas, write_rasters
from .styles import write_output_styles
from .transaction import OutputTransaction
from .vector_output import PolygonWriter, vector_driver
from .windows import WindowPlan, plan_windows

WINDOW_COST_IN_BOXES = 100  # progress weight of encoding a window, relative to decoding one box


@dataclass
class OutputPaths:
    instances: Optional[str] = None
    semantic: Optional[str] = None
    polygons: Optional[str] = None


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


def make_backend(options: SegmentOptions) -> Backend:
    """The backend the options name, loaded and ready (checkpoint errors surface here)."""
    if options.backend == "sam":
        from .backends.sam import SamBackend

        return SamBackend(options.checkpoint, options.model_type, options.device, options.multimask,
                          options.precision)
    if options.backend == "grabcut":
        from .backends.grabcut import GrabCutBackend

        return GrabCutBackend()
    raise InputError(f"Unknown backend '{options.backend}'. Choose one of: {', '.join(BACKENDS)}.")


class SegmentJob:
    """One run over one raster. ``prepare()`` validates everything, ``run()`` does the work."""

    def __init__(self, raster_path: str, boxes: BoxSource, outputs: OutputPaths,
                 options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None,
                 backend: Optional[Backend] = None):
        self.raster_path = raster_path
        self.source = boxes
        self.outputs = outputs
        self.options = options
        self.post_processing = PostProcessing(options.fill_holes, options.min_island_px, options.keep_largest)
        self.progress = progress or Progress()
        self.backend = backend
        self.raster: Optional[RasterInput] = None
        self.boxes: List[PixelBox] = []
        self.catalog: Optional[ClassCatalog] = None
        self._prepared = False

    # -- checks -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check all inputs and load the backend; raises :class:`InputError` naming the input at fault."""
        opts = self.options
        if not any(asdict(self.outputs).values()):
            raise InputError("No output was asked for: give at least one of the instance raster, "
                             "semantic raster or polygon layer.")
        for role, path in (("instance raster", self.outputs.instances), ("semantic raster", self.outputs.semantic)):
            if path and not path.lower().endswith((".tif", ".tiff")):
                raise InputError(f"The {role} output '{path}' must be a GeoTIFF (.tif).")
        if self.outputs.polygons:
            vector_driver(self.outputs.polygons)
        if (opts.batch_size is not None and opts.batch_size < 1) or opts.window_size < 64:
            raise InputError("Batch size must be ≥ 1 and window size ≥ 64 pixels.")
        if not 0 <= opts.background <= 65535:
            raise InputError(f"Background value {opts.background} must be between 0 and 65535.")
        check_prompt_mode(opts.prompt)
        if opts.min_island_px < 0:
            raise InputError(f"The minimum island area {opts.min_island_px} px must be 0 (off) or more.")
        self.raster = RasterInput(self.raster_path, opts.bands, opts.stretch)
        check_layer(self.source, opts.class_field, opts.id_field)
        projector = PixelProjector(self.source.crs_wkt, self.raster.crs, self.raster.transform,
                                   (self.raster.width, self.raster.height), self.source.name)
        features = list(self.source.features)
        if not features:
            raise InputError(f"Box layer '{self.source.name}' has no features; there is nothing to segment.")
        class_values = [f.attributes.get(opts.class_field) for f in features] if opts.class_field else [None] * len(features)
        self.catalog = ClassCatalog.build(class_values, self.source.fields.get(opts.class_field) if opts.class_field else None,
                                          opts.class_names, opts.class_field or "class")
        if opts.background in self.catalog.names:
            raise InputError(f"Class id {opts.background} ('{self.catalog.names[opts.background]}') equals the "
                             "background value; choose another background value.")
        ids = self._instance_ids(features)
        self.boxes = [project_box(f, projector, instance_id, *self.catalog.lookup(value))
                      for f, instance_id, value in zip(features, ids, class_values)]
        for feature in features:
            feature.geometry = None  # only the pixel-space polygon is used from here on
        counts = Counter(b.status for b in self.boxes)
        if not counts[STATUS_OK]:
            raise InputError(
                f"None of the {len(self.boxes)} boxes of '{self.source.name}' overlaps raster '{self.raster_path}' "
                f"({counts[STATUS_OUTSIDE]} outside, {len(self.boxes) - counts[STATUS_OUTSIDE]} invalid). "
                "Check that the box layer's CRS is set correctly and that the boxes belong to this raster.")
        if self.backend is None:
            self.backend = make_backend(opts)
        if opts.prompt not in self.backend.prompt_modes:
            raise InputError(f"The {self.backend.name} backend takes the prompt modes {', '.join(self.backend.prompt_modes)}, "
                             f"not '{opts.prompt}'. Choose one of those or another backend.")
        self._prepared = True

    def _instance_ids(self, features) -> List[int]:
        """1-based input order, or the values of the id field (unique integers ≥ 1)."""
        field_name = self.options.id_field
        if not field_name:
            return [f.index + 1 for f in features]
        values = [f.attributes.get(field_name) for f in features]
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < 2 ** 32]
        if bad:
            raise InputError(f"The id field '{field_name}' must hold integers from 1 to 4294967295 "
                             f"(they become instance raster values); found {bad[0]!r}.")
        if len(set(values)) != len(values):
            dup = Counter(values).most_common(1)[0][0]
            raise InputError(f"The id field '{field_name}' must be unique; {dup} appears more than once.")
        return values

    # -- work -------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        if not self._prepared:
            self.prepare()
        started = time.perf_counter()
        raster, opts, backend = self.raster, self.options, self.backend
        plans = plan_windows(self.boxes, (raster.width, raster.height), opts.window_size, backend.input_size)
        self.progress.info(f"{sum(b.is_usable for b in self.boxes)} boxes in {len(plans)} window(s); "
                           f"backend {backend.describe()}; stretch {raster.stretch.describe()}")
        transaction = OutputTransaction()
        staged = OutputPaths(**{role: transaction.stage(path, role) if path else None
                                for role, path in asdict(self.outputs).items()})
        try:
            timings = self._process(plans, staged, transaction)
            self.progress.check_cancelled()
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
        finally:
            raster.close()
        counts = Counter(b.status for b in self.boxes)
        return RunSummary(backend=backend.describe(), boxes=len(self.boxes), status_counts=dict(counts),
                          windows=len(plans), classes=dict(self.catalog.names), outputs=self.outputs,
                          seconds=time.perf_counter() - started, stretch=raster.stretch.describe(),
                          timings=timings)

    def _process(self, plans: List[WindowPlan], staged: OutputPaths, transaction: OutputTransaction) -> Dict[str, float]:
        import rasterio

        raster, opts, backend = self.raster, self.options, self.backend
        run_index = {id(b): i + 1 for i, b in enumerate(self.boxes)}  # canvas values: 1..n in input order
        canvas = InstanceCanvas(transaction.scratch_path("canvas.tif"), raster.width, raster.height, len(self.boxes),
                               raster.transform)
        writer = None
        if staged.polygons:
            crs_wkt = raster.crs.to_wkt() if raster.crs else UNDEFINED_CARTESIAN_WKT
            writer = PolygonWriter(staged.polygons, transaction.scratch_path("polygons.gpkg"), self.source.fields,
                                   crs_wkt, layer_name="masks", tags=self.provenance())
        timings = Counter()
        self.batch_size = opts.batch_size or backend.preferred_batch
        self._maybe_compile_decoder()
        self.cache = None
        if opts.embedding_cache and backend.identity():
            self.cache = EmbeddingCache(opts.cache_dir, opts.cache_limit_mb)
        total_work = len(plans) * WINDOW_COST_IN_BOXES + sum(len(p.boxes) for p in plans)
        done = 0
        with rasterio.Env(GDAL_CACHEMAX=256):
            try:
                for box in self.boxes:  # boxes with no mask to compute are accounted for first
                    if not box.is_usable and writer:
                        writer.write(run_index[id(box)], box.feature.attributes, self._result_fields(box, None, 0),
                                     None)
                for plan, frame, valid in self._read_ahead(plans, timings):
                    self.progress.check_cancelled()
                    t1 = time.perf_counter()
                    self._encode(frame, timings)
                    timings["encode"] += time.perf_counter() - t1
                    done += WINDOW_COST_IN_BOXES
                    start = 0
                    while start < len(plan.boxes):
                        self.progress.check_cancelled()
                        batch = plan.boxes[start:start + self.batch_size]
                        t3 = time.perf_counter()
                        logits = self._decode(plan, batch)
                        t4 = time.perf_counter()
                        timings["decode"] += t4 - t3
                        for box, box_logits in zip(batch, logits):
                            crop = self._mask_crop(plan, box, box_logits, valid)
                            canvas.paint(crop, run_index[id(box)])
                            geometry = polygonize(crop, raster.transform) if writer else None
                            if not crop.area:
                                box.status = STATUS_EMPTY
                                box.detail = "no object pixels were found in the box"
                            if writer:
                                writer.write(run_index[id(box)], box.feature.attributes,
                                             self._result_fields(box, box_logits.score, crop.area), geometry)
                        timings["postprocess"] += time.perf_counter() - t4
                        start += len(batch)
                        done += len(batch)
                        self.progress.set_fraction(0.95 * done / max(total_work, 1))
                self.progress.check_cancelled()
                if writer:
                    t5 = time.perf_counter()
                    writer.close()  # the layer in input order
                    writer = None
                    timings["postprocess"] += time.perf_counter() - t5
                self.progress.check_cancelled()
                self._write_rasters(canvas, staged, run_index)
                self._write_styles(staged)
                self.progress.set_fraction(1.0)
            finally:
                if writer:
                    writer.abandon()
                canvas.close()
        return dict(timings)

    def provenance(self) -> Dict[str, str]:
        """Metadata written into every output so that a result can be traced to its inputs and settings."""
        settings = {k: v for k, v in asdict(self.options).items() if k not in ("class_names",)}
        return {"SAMRS_BACKEND": self.backend.describe(), "SAMRS_SETTINGS": json.dumps(settings, default=str),
                "SAMRS_SOURCE_RASTER": self.raster_path}

    def _maybe_compile_decoder(self) -> None:
        maybe_compile_decoder(self.backend, sum(b.is_usable for b in self.boxes), self.options.compile_decoder,
                              self.progress)

    def _read_ahead(self, plans: List[WindowPlan], timings: Counter):
        """Yield ``(plan, frame, valid)`` per window while the next window is read in a background thread,
        so reading and stretching overlap with encoding. Only that thread touches the input raster."""
        def read(plan: WindowPlan):
            t0 = time.perf_counter()
            frame = self.raster.read_frame(plan.window, plan.frame_shape)
            valid = self.raster.read_valid(plan.window)
            timings["read"] += time.perf_counter() - t0
            return frame, valid

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

    def _encode(self, frame: np.ndarray, timings: Counter) -> None:
        """Encode the window's frame, or take its embedding from the cache."""
        if self.cache is None:
            self.backend.encode(frame)
            return
        key = self.cache.key(frame, self.backend.identity())
        embedding = self.cache.get(key)
        if embedding is not None:
            self.backend.load_embedding(embedding, frame.shape[:2])
            timings["cached_windows"] += 1
            return
        self.backend.encode(frame)
        self.cache.put(key, self.backend.embedding)

    def _decode(self, plan: WindowPlan, batch: List[PixelBox]) -> list:
        """Decode a batch; when the device runs out of memory, halve the batch (for the rest of the run too)."""
        try:
            boxes = self._frame_boxes(plan, [b.bounds for b in batch])
            regions = self._frame_boxes(plan, [self._region(plan, b) for b in batch])
            prompts = None
            if self.options.prompt != "box":
                prompts = build_prompts(self.options.prompt, boxes, [self._frame_ring(plan, b) for b in batch])
            return self.backend.decode(boxes, regions, prompts)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if len(batch) == 1 or not self.backend.is_out_of_memory(exc):
                raise
        half = len(batch) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        self.progress.warning(f"Out of memory decoding {len(batch)} boxes; going on with batches of {self.batch_size}.")
        return self._decode(plan, batch[:half]) + self._decode(plan, batch[half:])

    @staticmethod
    def _region(plan: WindowPlan, box: PixelBox) -> Tuple[int, int, int, int]:
        """Pixel-space (x0, y0, x1, y1) area over which the box's mask is sampled: its neighbourhood."""
        c0, r0, c1, r1 = neighbourhood(box.bounds, plan.window)
        return plan.window.col + c0, plan.window.row + r0, plan.window.col + c1, plan.window.row + r1

    @staticmethod
    def _frame_ring(plan: WindowPlan, box: PixelBox) -> np.ndarray:
        """The box polygon's exterior ring in frame pixels, (k, 2)."""
        ring = np.asarray(box.polygon.exterior.coords, dtype=np.float64)
        return (ring - [plan.window.col, plan.window.row]) * plan.scale

    @staticmethod
    def _frame_boxes(plan: WindowPlan, rectangles) -> np.ndarray:
        """Pixel-space (x0, y0, x1, y1) rectangles -> frame-space (n, 4) pixel-corner coordinates of this window's frame."""
        sx, sy = plan.scale
        bounds = np.array(rectangles, dtype=np.float64).reshape(-1, 4)
        bounds[:, [0, 2]] = (bounds[:, [0, 2]] - plan.window.col) * sx
        bounds[:, [1, 3]] = (bounds[:, [1, 3]] - plan.window.row) * sy
        return bounds

    def _mask_crop(self, plan: WindowPlan, box: PixelBox, logits, valid: Optional[np.ndarray]) -> MaskCrop:
        """The box's native-resolution mask over its neighbourhood, with nodata and the optional clip applied."""
        c0, r0, c1, r1 = neighbourhood(box.bounds, plan.window)
        mask = sample_region(logits, plan.scale, (c0, r0, c1, r1)) > MASK_THRESHOLD
        valid_crop = None if valid is None else valid[r0:r1, c0:c1]
        if valid_crop is not None:
            mask &= valid_crop
        col, row = plan.window.col + c0, plan.window.row + r0
        if self.options.clip_to_box:
            mask &= polygon_mask(box.polygon, col, row, mask.shape)
        if self.post_processing.active:
            mask = clean_mask(mask, self.post_processing)
            if valid_crop is not None:  # filling holes must not bring nodata pixels back
                mask &= valid_crop
        return MaskCrop(col=col, row=row, mask=mask)


    @staticmethod
    def _result_fields(box: PixelBox, score: Optional[float], area: int) -> Dict:
        return {"instance_id": box.instance_id, "class_name": box.class_name, "class_id": box.class_id,
                "score": score, "area_px": area, "status": box.status, "detail": box.detail}

    def _write_styles(self, staged: OutputPaths) -> None:
        """QGIS styles beside (and, for a GeoPackage, inside) the outputs; see :mod:`samrs_qgis.styles`."""
        stem = lambda path: os.path.splitext(path)[0] if path else None  # noqa: E731
        # one <stem>.qml cannot serve two layers: a raster sharing the polygon layer's stem keeps it
        beside = stem(staged.polygons) not in {stem(staged.instances), stem(staged.semantic)}
        write_output_styles(staged.instances, staged.semantic, staged.polygons, self.catalog.names,
                            (b.instance_id for b in self.boxes if b.is_usable), qml_beside_polygons=beside)

    def _write_rasters(self, canvas: InstanceCanvas, staged: OutputPaths, run_index: Dict[int, int]) -> None:
        if not (staged.instances or staged.semantic):
            return
        n = len(self.boxes)
        instance_ids = np.zeros(n + 1, dtype=np.uint32)
        classes = np.full(n + 1, self.options.background, dtype=np.int64)
        for box in self.boxes:
            i = run_index[id(box)]
            instance_ids[i] = box.instance_id
            classes[i] = box.class_id
        ds = self.raster.dataset
        tags = dict(self.provenance(), SAMRS_OVERLAP_RULE="smaller mask owns the pixel; equal areas: later box wins")
        write_rasters(canvas, {"width": ds.width, "height": ds.height, "crs": ds.crs, "transform": self.raster.transform},
                      staged.instances, staged.semantic, instance_ids, classes, self.catalog.names,
                      self.options.background, tags)


def maybe_compile_decoder(backend: Backend, boxes: int, choice: str, progress: Progress) -> None:
    """Compile the backend's decoder when asked (``on``), or (``auto``) on a CPU when ``boxes`` boxes are
    enough to pay for compiling; a decoder already compiled stays as it is."""
    if choice not in ("auto", "on", "off"):
        raise InputError(f"Unknown compile_decoder '{choice}'. Choose auto, on or off.")
    if not hasattr(backend, "compile_decoder") or choice == "off" or getattr(backend, "compiled", False):
        return
    if choice == "on" or (getattr(backend, "device", "") == "cpu" and boxes >= backend.compile_threshold()):
        progress.info(f"Compiling the mask decoder for {boxes} boxes (once per run).")
        backend.compile_decoder()


def segment_boxes(raster_path: str, boxes: BoxSource, outputs: OutputPaths,
                  options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None) -> RunSummary:
    """Check inputs, then segment every box of ``boxes`` over ``raster_path`` and write ``outputs``."""
    job = SegmentJob(raster_path, boxes, outputs, options, progress)
    job.prepare()
    return job.run()

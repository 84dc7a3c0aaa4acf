"""The compute side of a run: one window's frame in, its boxes' masks out.

:class:`WindowSegmenter` encodes a window (or takes its embedding from the cache), decodes its boxes in
batches (halving them when the device runs out of memory), post-processes each mask at native resolution and
polygonizes it. It writes nothing: a local run (:class:`.pipeline.WindowRunner`) records its
:class:`BoxMask` results as they come; on a cluster a worker runs it over a group of windows and sends them
back (:mod:`samrs_qgis.cluster_windows`).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine

from .backends.base import Backend, BoxLogits, PendingLogits
from .backends.compile_verdict import MEASURE_BATCHES, MEASURE_MIN_BOXES
from .boxes import PixelBox
from .embedding_cache import EmbeddingCache
from .errors import InputError
from .logits import sample_region
from .masks import MASK_THRESHOLD, MaskCrop, neighbourhood, polygon_mask, polygonize
from .polygon_shaping import PolygonShaping, shape_in_map
from .postprocess import PostProcessing, clean_mask
from .progress import Progress
from .prompts import build_prompts
from .settings import COMPILE_CHOICES, SegmentOptions
from .windows import WindowPlan


@dataclass
class BoxMask:
    """One box's result. ``index``: its run index (1..n, input order; the instance canvas's value);
    ``score``: the backend's quality estimate or None; ``crop``: the native-resolution mask over the box's
    neighbourhood; ``polygon``: that mask as a MultiPolygon in the raster's map coordinates (None when it is
    empty or polygons were not asked for), shaped as the options say; ``note``: what the shaping could not do
    (for the box's ``detail``; "" when all went as asked)."""

    index: int
    score: Optional[float]
    crop: MaskCrop
    polygon: object = None
    note: str = ""


class WindowSegmenter:
    """Masks for the boxes of windows, one window at a time, with ``backend`` and ``options``.

    ``transform`` maps raster pixels to map coordinates; ``polygons``: whether each mask's polygon is made (and
    shaped as the options say, :mod:`samrs_qgis.polygon_shaping`). ``run_boxes``: the usable boxes of the whole
    run, for deciding whether compiling the decoder pays off. Timings (seconds by
    stage: encode, decode, postprocess; ``cached_windows``) add up in ``timings``.
    """

    def __init__(self, backend: Backend, options: SegmentOptions, progress: Progress, transform: Affine,
                 run_boxes: int, polygons: bool = True):
        self.backend = backend
        self.options = options
        self.progress = progress
        self.transform = transform
        self.polygons = polygons
        self.run_boxes = run_boxes
        self.post_processing = PostProcessing.of(options, abs(transform.determinant))
        self.shaping = PolygonShaping.of(options)
        self.batch_size = options.batch_size or backend.preferred_batch  # halved for good on out-of-memory
        self.cache: Optional[EmbeddingCache] = None
        if options.embedding_cache and backend.identity():
            self.cache = EmbeddingCache(options.cache_dir, options.cache_limit_mb)
        self.timings: Counter = Counter()
        self._compile_checked = False

    def segment(self, plan: WindowPlan, frame: np.ndarray, valid: Optional[np.ndarray],
                indices: Sequence[int]) -> Iterator[BoxMask]:
        """Encode ``frame`` (the window's image, uint8 (rows, cols, 3) of ``plan.frame_shape``), then yield the
        mask of each of ``plan.boxes`` in order, batch by batch. ``valid``: bool (height, width) of the window's
        native pixels, None when all are valid; ``indices``: the boxes' run indices."""
        self.progress.check_cancelled()
        t0 = time.perf_counter()
        self._encode(frame)
        self.timings["encode"] += time.perf_counter() - t0
        if not self._compile_checked:  # whether compiling the decoder pays off is measured on an embedding
            self._compile_checked = True
            maybe_compile_decoder(self.backend, self.run_boxes, self.options.compile_decoder, self.progress, plan)
        index_of = dict(zip(map(id, plan.boxes), indices))
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
                yield from self._finish_batch(plan, *pending, valid, index_of)
            pending = started
            start += len(batch)
        if pending:
            yield from self._finish_batch(plan, *pending, valid, index_of)

    def _finish_batch(self, plan: WindowPlan, batch: List[PixelBox], pending: PendingLogits,
                      valid: Optional[np.ndarray], index_of) -> Iterator[BoxMask]:
        """Wait for a batch's logits, then make its boxes' masks and polygons."""
        t0 = time.perf_counter()
        logits = pending.result()
        self.timings["decode"] += time.perf_counter() - t0
        for box, box_logits in zip(batch, logits):
            t1 = time.perf_counter()
            crop = self._mask_crop(plan, box, box_logits, valid)
            polygon, note = (polygonize(crop, self.transform) if self.polygons else None), ""
            if polygon is not None and self.shaping.active:
                polygon, note = shape_in_map(polygon, self.shaping, self.transform, crop, box.polygon)
            self.timings["postprocess"] += time.perf_counter() - t1
            yield BoxMask(index_of[id(box)], box_logits.score, crop, polygon, note)

    def _encode(self, frame: np.ndarray) -> None:
        """Encode the window's frame, or take its embedding from the cache."""
        backend = self.backend
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
        backend = self.backend
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
        backend, prompt = self.backend, self.options.prompt
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
        if self.options.batch_size is None:  # learned for the backend's later runs (a dataset's images)
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
        if self.options.clip_to_box:
            mask &= polygon_mask(box.polygon, col, row, mask.shape)
        if self.post_processing.active:
            mask = clean_mask(mask, self.post_processing)
            if valid_crop is not None:  # filling holes must not bring nodata pixels back
                mask &= valid_crop
        return MaskCrop(col=col, row=row, mask=mask)


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

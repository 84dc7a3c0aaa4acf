"""One large raster on a Dask cluster: the client plans the windows once, sends groups of neighbouring windows to
the workers as tasks, and writes what comes back, in window order, into the same instance raster, semantic
raster and polygon layer as a local run.

A worker reads its windows from the raster itself (the raster must be at the same path for every worker), runs
the model it keeps loaded (:func:`.cluster.worker_backend`) and returns each box's mask crop and polygon
(:class:`.window_segmenter.BoxMask`); it writes nothing. The client keeps a bounded number of groups in flight
and holds one group's results at a time, so its memory is bounded by a window group, not by the raster. The
outputs are written through the same transaction as a local run: a failed or cancelled run leaves none.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import cluster as dask_cluster
from .boxes import BoxSource
from .errors import InputError
from .pipeline import WINDOW_COST_IN_BOXES, RunSummary, WindowRunner
from .progress import Progress
from .raster_input import RasterInput
from .run_inputs import OutputPaths, PreparedRun, prepare_run
from .settings import SegmentOptions
from .window_segmenter import BoxMask, WindowSegmenter
from .windows import WindowPlan

MAX_GROUP_WINDOWS = 4  # windows per task at most: a task is seconds of work, its results a few MB
GROUPS_PER_WORKER = 4  # fewer, larger groups when there are many windows, but this many per worker at least
IN_FLIGHT_PER_WORKER = 2  # groups sent ahead per worker, so none waits while the client writes
POLL_S = 0.2  # how often the client looks for cancellation while it waits for the next group


@dataclass
class GroupResult:
    """What a worker sends back for a window group: its boxes' masks in window order, the seconds it spent by
    stage, and what it would have told the user (messages, each once)."""

    masks: List[BoxMask]
    timings: Dict[str, float]
    messages: List[Tuple[str, str]] = field(default_factory=list)  # (level: "info" | "warning", text)


class _Recorder(Progress):
    """The worker's progress: its messages kept for the client."""

    def __init__(self):
        self.messages: List[Tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def warning(self, message: str) -> None:
        self.messages.append(("warning", message))


def window_groups(plans: Sequence[WindowPlan], workers: int) -> List[List[WindowPlan]]:
    """Consecutive windows of the plan (which is in raster row order, so neighbours) in groups: at most
    :data:`MAX_GROUP_WINDOWS`, and small enough for every worker to get :data:`GROUPS_PER_WORKER` of them."""
    size = max(1, min(MAX_GROUP_WINDOWS, len(plans) // max(1, workers * GROUPS_PER_WORKER)))
    return [list(plans[i:i + size]) for i in range(0, len(plans), size)]


def segment_window_group(raster: RasterInput, options: SegmentOptions, group: List[Tuple[WindowPlan, List[int]]],
                         run_boxes: int, polygons: bool) -> GroupResult:
    """The task of one window group, on a worker: ``group`` is (plan, the run indices of its boxes) per window;
    ``raster`` arrives reopened here (:meth:`.raster_input.RasterInput.__setstate__`)."""
    recorder = _Recorder()
    segmenter = WindowSegmenter(dask_cluster.worker_backend(options), options, recorder, raster.transform,
                                run_boxes, polygons)
    masks: List[BoxMask] = []
    try:
        for plan, indices in group:
            t0 = time.perf_counter()
            frame, valid = raster.read_frame(plan.window, plan.frame_shape), raster.read_valid(plan.window)
            segmenter.timings["read"] += time.perf_counter() - t0
            masks.extend(segmenter.segment(plan, frame, valid, indices))
    finally:
        raster.close()
    return GroupResult(masks, dict(segmenter.timings), list(dict.fromkeys(recorder.messages)))


class ClusterWindowRunner(WindowRunner):
    """A :class:`.pipeline.WindowRunner` whose windows are segmented by the workers of ``client``'s cluster."""

    def __init__(self, prepared: PreparedRun, progress: Progress, client):
        super().__init__(prepared, progress)
        self.client = client
        self.said: set = set()  # the workers' messages already passed on

    def _box_masks(self, polygons: bool) -> Iterator[BoxMask]:
        """The groups' masks in window order. Groups are sent ahead (a bounded number); the client waits for the
        oldest, so later groups finished early wait on their worker. A group whose workers died each time
        (:func:`.cluster.failure_reason`) leaves its boxes ``failed``; any other error of a task ends the run."""
        prepared, client = self.prepared, self.client
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        groups = window_groups(self.plans, workers)
        run_id = uuid.uuid4().hex[:8]

        def submit(k: int):
            work = [(plan, self.indices(plan)) for plan in groups[k]]
            return client.submit(segment_window_group, prepared.raster, prepared.options, work,
                                 prepared.usable_boxes, polygons, pure=False, key=f"samrs-windows-{run_id}-{k}",
                                 priority=len(groups) - k)

        self.progress.info(f"{len(self.plans)} window(s) sent to the cluster in {len(groups)} group(s) of up to "
                           f"{len(groups[0]) if groups else 0}")
        in_flight = deque()
        sent = 0
        try:
            while sent < len(groups) or in_flight:
                while sent < len(groups) and len(in_flight) < IN_FLIGHT_PER_WORKER * workers:
                    in_flight.append((sent, submit(sent)))
                    sent += 1
                k, future = in_flight[0]
                while not future.done():
                    self.progress.check_cancelled()
                    time.sleep(POLL_S)
                in_flight.popleft()
                result = self._collect(future, groups[k])
                self.done_work += WINDOW_COST_IN_BOXES * len(groups[k])
                if result is not None:
                    yield from result.masks
        finally:
            if in_flight:
                client.cancel([f for _, f in in_flight])

    def _collect(self, future, group: List[WindowPlan]) -> Optional[GroupResult]:
        """A finished group's result (its timings and messages taken in), or None when the cluster gave it up."""
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - the cluster's failures are the boxes'; the task's own, the run's
            reason = dask_cluster.failure_reason(exc, "window group")
            if reason is None:
                raise
            boxes = [i for plan in group for i in self.indices(plan)]
            self.failed.update({i: reason for i in boxes})
            self.progress.warning(f"{len(boxes)} box(es) of {len(group)} window(s) failed: {reason}")
            self.done_work += len(boxes)
            return None
        for stage, seconds in result.timings.items():
            self.timings[stage] += seconds
        for level, text in result.messages:
            if (level, text) not in self.said:
                self.said.add((level, text))
                (self.progress.warning if level == "warning" else self.progress.info)(text)
        return result


def segment_on_cluster(raster_path: str, boxes: BoxSource, outputs: OutputPaths, spec: dask_cluster.ClusterSpec,
                       options: SegmentOptions = SegmentOptions(), progress: Optional[Progress] = None) -> RunSummary:
    """:func:`.pipeline.segment_boxes` with the windows segmented by the workers of the cluster ``spec`` names.
    The inputs are checked before the cluster is started or reached; the model is loaded by the workers only."""
    progress = progress or Progress()
    spec.check()
    with contextlib.ExitStack() as stack:
        clients = []

        def load_on_workers(resolved: SegmentOptions, _progress) -> dask_cluster.ClusterBackend:
            clients.append(stack.enter_context(dask_cluster.connect(spec, progress)))
            check_workers_read(clients[0], raster_path)
            facts = clients[0].submit(dask_cluster.backend_facts, resolved, pure=False).result()
            backend = dask_cluster.ClusterBackend(facts)
            for note in backend.notes:
                progress.warning(note)
            for remark in backend.remarks:
                progress.info(remark)
            return backend

        prepared = prepare_run(raster_path, boxes, outputs, options, progress=progress, load_backend=load_on_workers)
        try:
            return ClusterWindowRunner(prepared, progress, clients[0]).run()
        finally:
            prepared.raster.close()


def check_workers_read(client, raster_path: str) -> None:
    """Raise an InputError naming the workers that cannot open ``raster_path`` (they read their windows
    themselves: it must be at the same path for all of them)."""
    seen = client.run(_opens, raster_path)
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        raise InputError(f"The raster '{raster_path}' cannot be opened by {len(blind)} of {len(seen)} Dask worker(s) "
                         f"({', '.join(blind[:3])}). Each worker reads its windows itself: give a raster on a file "
                         "system that the client and every worker share, at the same path.")


def _opens(path: str) -> bool:
    import rasterio

    from .georef import open_raster

    try:
        with open_raster(path):
            return True
    except rasterio.errors.RasterioIOError:
        return False

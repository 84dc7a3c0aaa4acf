"""One large raster on a Dask cluster (a real ``LocalCluster`` of 2 worker processes, 1 thread each): its windows
planned once, segmented in groups by the workers and written by the client give the same instance raster,
semantic raster and polygon layer as a local ``segment``; a window group that kills every worker it reaches
leaves its boxes ``failed`` and the rest of the run done; a raster the workers cannot open is reported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import cluster_tasks
import support
from samrs.samrs_qgis import cluster_windows
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.cluster import ClusterSpec
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions

pytest.importorskip("distributed")
TWO_WORKERS = ClusterSpec(workers=2, threads=1)
TILES = 3  # the scene is TILES x TILES synthetic scenes of 512 pixels
WINDOW = 256  # small windows: many of them, in several groups per worker
GRABCUT = SegmentOptions(backend="grabcut", embedding_cache=False, window_size=WINDOW)
TRANSFORM = Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 4200000.0)
NODATA_COLUMNS = slice(700, 716)  # a strip of nodata across the scene, through some objects


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 1536 x 1536 raster (nodata 0 in a strip) and its 81 boxes: (folder, raster, boxes)."""
    root = tmp_path_factory.mktemp("cluster-raster")
    image = np.zeros((3, 512 * TILES, 512 * TILES), dtype=np.uint8)
    polygons, rows = [], []
    for k in range(TILES * TILES):
        tile, objects = support.synthetic_scene(512, seed=k)
        r, c = divmod(k, TILES)
        image[:, r * 512:(r + 1) * 512, c * 512:(c + 1) * 512] = np.maximum(tile, 1)  # 0 is nodata
        for cls, _, (c0, r0, c1, r1) in objects:
            polygons.append(support.pixel_box(TRANSFORM, c0 + c * 512, r0 + r * 512, c1 + c * 512, r1 + r * 512))
            rows.append({"class_name": cls, "source": f"tile {k}"})
    image[:, :, NODATA_COLUMNS] = 0
    raster = support.write_raster(root / "scene.tif", image, TRANSFORM, nodata=0)
    boxes = support.write_boxes(root / "boxes.gpkg", polygons, properties=rows)
    return root, raster, boxes


def outputs_in(folder: Path) -> OutputPaths:
    folder.mkdir()
    return OutputPaths(str(folder / "instances.tif"), str(folder / "semantic.tif"), str(folder / "masks.gpkg"))


def same_outputs(a: OutputPaths, b: OutputPaths) -> None:
    """The rasters byte for byte; the polygon layers feature by feature (a GeoPackage records when it was
    written)."""
    for one, other in ((a.instances, b.instances), (a.semantic, b.semantic)):
        assert Path(one).read_bytes() == Path(other).read_bytes(), one
    assert support.read_features(a.polygons) == support.read_features(b.polygons)


def test_window_groups_keep_the_plan_order_and_give_every_worker_several():
    plans = list(range(50))
    groups = cluster_windows.window_groups(plans, workers=2)
    assert [p for g in groups for p in g] == plans
    assert max(map(len, groups)) == cluster_windows.MAX_GROUP_WINDOWS
    assert len(cluster_windows.window_groups(plans[:6], workers=2)) == 6  # few windows: one per group
    assert cluster_windows.window_groups([], workers=3) == []


def test_two_workers_write_the_files_of_a_local_run(scene):
    root, raster, boxes = scene
    local = outputs_in(root / "local")
    summary = segment_boxes(raster, read_box_file(boxes), local, GRABCUT)
    assert summary.windows >= 16 and summary.status_counts["ok"] >= 70
    progress = support.RecordingProgress()
    on_cluster = outputs_in(root / "two")
    clustered = segment_boxes(raster, read_box_file(boxes), on_cluster, GRABCUT, progress, cluster=TWO_WORKERS)
    assert (clustered.windows, clustered.status_counts) == (summary.windows, summary.status_counts)
    assert clustered.backend == summary.backend == "grabcut"
    assert any(m.startswith("Dask cluster: 2 worker(s)") for m in progress.messages)
    assert any(" window(s) sent to the cluster in " in m for m in progress.messages)
    assert progress.fractions[-1] == 1.0 and progress.fractions == sorted(progress.fractions)
    same_outputs(local, on_cluster)


def test_qgis_process_runs_the_windows_on_local_workers(scene, qgis_process):
    """Inside QGIS ``sys.executable`` is not the interpreter QGIS runs (here: the first ``python3`` on PATH); the
    workers are started with the right one all the same, and the outputs are those of a local run."""
    import json

    root, raster, boxes = scene
    runs = {}
    for name, workers in (("qgis-local", 0), ("qgis-two", 2)):
        out = outputs_in(root / name)
        proc = qgis_process("--json", "run", "samrs:segmentboxes", "--", f"INPUT={raster}", f"BOXES={boxes}",
                            "BACKEND=1", f"WINDOW_SIZE={WINDOW}", "EMBEDDING_CACHE=false", f"WORKERS={workers}",
                            f"OUTPUT_INSTANCES={out.instances}", f"OUTPUT_SEMANTIC={out.semantic}",
                            f"OUTPUT_POLYGONS={out.polygons}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = (out, json.loads(proc.stdout[proc.stdout.find("{"):])["results"])
    (local, local_results), (two, two_results) = runs["qgis-local"], runs["qgis-two"]
    assert two_results["OK_COUNT"] == local_results["OK_COUNT"] >= 70 and two_results["FAILED_COUNT"] == 0
    same_outputs(local, two)


def test_the_tiny_sam_on_two_workers_from_the_command_line(scene, tiny_sam_checkpoint):
    """The CLI's ``segment --workers 2`` with a real SAM checkpoint, loaded once by each worker."""
    from conftest import PLUGINS_DIR

    root, raster, boxes = scene
    runs = {}
    for name, extra in (("sam-local", []), ("sam-two", ["--workers", "2", "--threads-per-worker", "1"])):
        out = root / name
        command = [sys.executable, "-m", "samrs.samrs_qgis", "segment", raster, boxes, "--out-dir", str(out),
                   "--checkpoint", tiny_sam_checkpoint, "--device", "cpu", "--window-size", str(WINDOW),
                   "--no-embedding-cache", "--quiet", *extra]
        result = subprocess.run(command, cwd=str(root), capture_output=True, text=True, timeout=600,
                                env=dict(os.environ, PYTHONPATH=str(PLUGINS_DIR)))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
        runs[name] = OutputPaths(*(str(out / f"scene_{role}") for role in ("instances.tif", "semantic.tif",
                                                                           "masks.gpkg")))
    same_outputs(runs["sam-local"], runs["sam-two"])
    with rasterio.open(runs["sam-two"].instances) as ds:
        assert ds.tags()["SAMRS_BACKEND"].startswith("SAM") and ds.transform == TRANSFORM
        assert (ds.read(1)[:, NODATA_COLUMNS] == 0).all()  # no mask on nodata


def test_a_window_group_that_kills_every_worker_fails_its_boxes_and_the_run_goes_on(scene, monkeypatch):
    import dask

    root, raster, boxes = scene
    monkeypatch.setattr(cluster_windows, "segment_window_group", cluster_tasks.deadly_window_group)
    progress = support.RecordingProgress()
    out = outputs_in(root / "deadly")
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        summary = segment_boxes(raster, read_box_file(boxes), out, GRABCUT, progress, cluster=TWO_WORKERS)
    failed = [f for f in support.read_features(out.polygons) if f["status"] == "failed"]
    assert summary.status_counts["failed"] == len(failed) >= 1
    assert failed[0]["instance_id"] == cluster_tasks.DEADLY_BOX and failed[0]["geometry"] is None
    assert "died each time it was tried" in failed[0]["detail"] and "window group was given up" in failed[0]["detail"]
    assert summary.status_counts["ok"] >= 60 and sum(summary.status_counts.values()) == 81  # every box accounted for
    assert any("failed: the Dask worker" in w for w in progress.warnings)
    with rasterio.open(out.instances) as ds:
        assert cluster_tasks.DEADLY_BOX not in np.unique(ds.read(1))


def test_a_raster_the_workers_cannot_open_is_reported(scene, tmp_path):
    root, raster, boxes = scene

    class Client:  # the answer of a cluster whose workers see another file system
        def run(self, function, path):
            return {"tcp://10.0.0.7:4000": False, "tcp://10.0.0.8:4000": function(path)}

    with pytest.raises(InputError, match=r"cannot be opened by 1 of 2 Dask worker\(s\) \(tcp://10.0.0.7:4000\)"):
        cluster_windows.check_workers_read(Client(), raster)
    with pytest.raises(InputError, match="either a number of local workers"):
        segment_boxes(raster, read_box_file(boxes), outputs_in(tmp_path / "o"), GRABCUT,
                      cluster=ClusterSpec(workers=2, scheduler="tcp://127.0.0.1:9"))
    assert not (tmp_path / "o" / "instances.tif").exists()


def test_cancelling_stops_the_workers_and_leaves_no_output(scene, tmp_path):
    import time

    from samrs.samrs_qgis.errors import Cancelled

    root, raster, boxes = scene
    out = outputs_in(tmp_path / "cancelled")
    progress = support.RecordingProgress(cancel_after=3)  # a few boxes written: mid-run
    started = time.time()
    with pytest.raises(Cancelled):
        segment_boxes(raster, read_box_file(boxes), out, GRABCUT, progress, cluster=TWO_WORKERS)
    assert time.time() - started < 120
    assert 3 <= len(progress.fractions) < 81  # stopped well before the end
    assert list((tmp_path / "cancelled").iterdir()) == []  # no output, no scratch file

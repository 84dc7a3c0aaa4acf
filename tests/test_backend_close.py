"""A backend frees its model when the job that made it ends: a second toolbox run in the same QGIS must not
find the first model still on the device. Proved with weak references while the garbage collector is off,
so only reference counting can free it (a reference cycle would keep it)."""
import gc
import weakref

import tools_data as td
from samrs.samrs_qgis.backends import make_backend
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.pipeline import OutputPaths, SegmentJob
from samrs.samrs_qgis.settings import SegmentOptions


def test_the_job_that_loaded_the_model_frees_it(tmp_path, tiny_sam_checkpoint):
    raster = td.scene_raster(tmp_path / "scene.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    options = SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu", embedding_cache=False)
    gc.collect()
    gc.disable()
    try:
        job = SegmentJob(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "m.gpkg")), options)
        job.prepare()
        model = weakref.ref(job.backend.model)
        description = job.backend.describe()
        summary = job.run()
        assert summary.status_counts.get("ok", 0) + summary.status_counts.get("empty", 0) == len(td.DISCS)
        assert model() is None  # freed by reference counting alone
        assert job.backend.describe() == description == summary.backend
    finally:
        gc.enable()


def test_a_backend_given_to_a_job_stays_open_for_the_caller(tmp_path, tiny_sam_checkpoint):
    raster = td.scene_raster(tmp_path / "scene.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    options = SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu", embedding_cache=False)
    backend = make_backend(options)
    for n in range(2):
        SegmentJob(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / f"m{n}.gpkg")), options,
                   backend=backend).run()
    assert backend.model is not None
    gc.collect()
    gc.disable()
    try:
        model = weakref.ref(backend.model)
        backend.close()
        assert model() is None
    finally:
        gc.enable()

"""Compiling the mask decoder only where a measurement on this machine found it faster: the verdict is
measured once (eager against compiled, on the run's boxes), kept per machine and settings, and decided from
afterwards. One real compile in this file; elsewhere ``torch.compile`` is replaced by a stand-in."""
import json
import os

import numpy as np
import pytest
import torch

from samrs.samrs_qgis import window_segmenter
from samrs.samrs_qgis.backends import compile_verdict as verdicts
from samrs.samrs_qgis.backends.sam import SamBackend
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import Cancelled
from samrs.samrs_qgis.pipeline import OutputPaths, SegmentJob
from samrs.samrs_qgis.window_segmenter import maybe_compile_decoder
from samrs.samrs_qgis.settings import SegmentOptions
from support import RecordingProgress, pixel_box, synthetic_scene, write_boxes, write_raster

from affine import Affine

T = Affine(1.0, 0, 300000, 0, -1.0, 5000000)
MEASURING = "Measuring whether the compiled mask decoder is faster"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache folder of its own (verdicts, compile markers) for every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "samrs" / "compiled"))


@pytest.fixture()
def scene(tmp_path):
    image, objects = synthetic_scene(256, seed=5)
    raster = write_raster(tmp_path / "scene.tif", image, T)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(T, *o[2]) for o in objects])
    return raster, boxes


@pytest.fixture()
def small_runs_measure(monkeypatch):
    """Measuring pays off from 2000 boxes; the scene has a few."""
    monkeypatch.setattr(window_segmenter, "MEASURE_MIN_BOXES", 3)


@pytest.fixture()
def stand_in_compile(monkeypatch):
    """``torch.compile`` returning the function itself: 'compiled' at once, decoding as eager does."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)


def run(raster, boxes, out, backend, progress, compile_decoder="auto"):
    options = SegmentOptions(checkpoint=backend.checkpoint, device="cpu", precision=backend.precision,
                             embedding_cache=False, compile_decoder=compile_decoder)
    return SegmentJob(raster, read_box_file(boxes), OutputPaths(None, None, str(out)), options, progress,
                      backend=backend).run()


def backend_of(checkpoint, precision="fp32"):
    return SamBackend(checkpoint, device="cpu", precision=precision)


def test_a_big_run_measures_once_then_later_runs_decide_from_the_stored_verdict(
        scene, tmp_path, tiny_sam_checkpoint, small_runs_measure, monkeypatch):
    raster, boxes = scene
    first, progress = backend_of(tiny_sam_checkpoint), RecordingProgress()
    summary = run(raster, boxes, tmp_path / "a.gpkg", first, progress)  # compiles for real, once
    measuring = [m for m in progress.messages if m.startswith(MEASURING)]
    assert len(measuring) == 1
    verdict = first.compile_verdict()
    assert verdict is not None and verdict.compiled_ms and verdict.eager_ms and verdict.compile_seconds > 0
    assert verdict.compile == (verdict.eager_ms / verdict.compiled_ms >= verdicts.MIN_SPEEDUP)
    assert first.compiled == verdict.compile and ("compiled decoder" in summary.backend) == verdict.compile
    assert any(m.startswith("Measured on this machine") and verdict.reason in m for m in progress.messages)
    stored = json.load(open(verdicts.verdict_path(first.compile_verdict_key())))
    assert stored["key"] == first.compile_verdict_key() and stored["verdict"]["compile"] == verdict.compile
    assert os.path.dirname(verdicts.verdict_path({})) == os.path.join(str(tmp_path / "cache"), "samrs",
                                                                      "compile-verdicts")

    # the next run (a new backend, same machine and settings) decides from the file, without measuring
    monkeypatch.setattr(SamBackend, "measure_compile", lambda *a: pytest.fail("measured twice"))
    monkeypatch.setattr(SamBackend, "compile_threshold", lambda self: 3)  # the scene's boxes pay for compiling
    second, progress = backend_of(tiny_sam_checkpoint), RecordingProgress()
    second.compile_decoder = lambda: setattr(second, "compile_asked", True)
    run(raster, boxes, tmp_path / "b.gpkg", second, progress)
    assert not any(m.startswith(MEASURING) for m in progress.messages)
    assert getattr(second, "compile_asked", False) == verdict.compile
    assert any("measured on this machine" in m and verdict.reason in m for m in progress.messages)


def test_the_verdict_key_names_machine_torch_device_precision_model_and_batch(tiny_sam_checkpoint):
    fp32, bf16 = backend_of(tiny_sam_checkpoint), backend_of(tiny_sam_checkpoint, "bf16")
    key = fp32.compile_verdict_key()
    assert (key["torch"], key["device"], key["precision"], key["model_type"], key["batch"]) == (
        torch.__version__, "cpu", "fp32", fp32.model_type, fp32.preferred_batch)
    assert key["machine"]["cpu"] or key["machine"]["host"]
    assert key["machine"]["isa"] == torch.backends.cpu.get_cpu_capability()
    assert key["machine"]["cores"] == os.cpu_count()
    assert bf16.compile_verdict_key()["precision"] == "bf16"
    faster = verdicts.decide(eager_ms=20.0, compiled_ms=10.0, compile_seconds=1.5, boxes=24)
    verdicts.save(key, faster)
    assert fp32.compile_verdict() == faster and "2.00x faster" in faster.reason
    assert bf16.compile_verdict() is None  # another precision: not measured yet
    for field, other in (("torch", "1.0.0"), ("device", "cuda"), ("batch", 64), ("model_type", "vit_h")):
        assert verdicts.load(dict(key, **{field: other})) is None
    assert verdicts.load(dict(key, machine=dict(key["machine"], isa="AVX2"))) is None


def test_an_eager_verdict_is_not_compiled_under_auto_a_faster_one_is_and_on_always_compiles(
        tiny_sam_checkpoint, stand_in_compile, monkeypatch):
    backend = backend_of(tiny_sam_checkpoint)
    monkeypatch.setattr(SamBackend, "measure_compile", lambda *a: pytest.fail("a stored verdict is not measured again"))
    verdicts.save(backend.compile_verdict_key(), verdicts.decide(eager_ms=100.0, compiled_ms=350.0,
                                                                 compile_seconds=41.0, boxes=24))
    progress = RecordingProgress()
    maybe_compile_decoder(backend, 10 ** 6, "auto", progress)
    assert not backend.compiled and "3.50x slower" in progress.messages[-1]
    maybe_compile_decoder(backend, 10 ** 6, "on", progress)  # forced, whatever was measured
    assert backend.compiled and progress.messages[-1].startswith("Compiling the mask decoder")

    faster = backend_of(tiny_sam_checkpoint)
    verdicts.save(faster.compile_verdict_key(), verdicts.decide(eager_ms=15.0, compiled_ms=8.0,
                                                                compile_seconds=18.0, boxes=24))
    maybe_compile_decoder(faster, faster.compile_threshold() - 1, "auto", progress)  # too few boxes to pay off
    assert not faster.compiled
    maybe_compile_decoder(faster, faster.compile_threshold(), "off", progress)
    assert not faster.compiled
    maybe_compile_decoder(faster, faster.compile_threshold(), "auto", progress)
    assert faster.compiled and "measured on this machine" in progress.messages[-1]


@pytest.mark.parametrize("when", ["compile", "first call"])
def test_a_failed_compile_is_an_eager_verdict_with_its_reason(tiny_sam_checkpoint, monkeypatch, when):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    if when == "compile":
        monkeypatch.setattr(torch, "compile", no_compiler)
    else:  # torch.compile compiles at the first call of what it returns
        monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: no_compiler)
    backend = backend_of(tiny_sam_checkpoint)
    backend.encode(np.random.default_rng(2).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    boxes = np.array([[10, 10, 60, 50], [100, 120, 180, 200], [30, 140, 90, 230]], dtype=float)
    progress = RecordingProgress()
    verdict = backend.measure_compile(boxes, boxes, progress)
    assert not verdict.compile and not backend.compiled and verdict.compiled_ms is None
    assert verdict.reason == "compiling failed: RuntimeError: InvalidCxxCompiler: No working C++ compiler found"
    assert verdict.eager_ms > 0 and backend.compile_verdict() == verdict
    assert progress.messages[0].startswith(MEASURING) and verdict.reason in progress.messages[-1]
    assert len(backend.decode(boxes)) == 3  # the eager decoder goes on


def test_cancelling_while_measuring_cancels_the_run_and_keeps_no_verdict(
        scene, tmp_path, tiny_sam_checkpoint, small_runs_measure, stand_in_compile):
    raster, boxes = scene
    backend = backend_of(tiny_sam_checkpoint)
    progress = RecordingProgress(cancel_at=MEASURING)
    with pytest.raises(Cancelled):
        run(raster, boxes, tmp_path / "a.gpkg", backend, progress)
    assert not backend.compiled and backend.compile_verdict() is None
    assert not os.path.exists(tmp_path / "a.gpkg")


def test_a_dataset_announces_its_total_and_its_first_image_measures(tiny_sam_checkpoint, stand_in_compile):
    """A dataset asks before any image is encoded, with its total: the first window of its first image measures,
    though that image alone has too few boxes."""
    backend = backend_of(tiny_sam_checkpoint)
    progress = RecordingProgress()
    maybe_compile_decoder(backend, 5000, "auto", progress)  # no embedding yet: nothing measured
    assert backend.compile_run_boxes == 5000 and not progress.messages and backend.compile_verdict() is None
    from samrs.samrs_qgis.boxes import BoxFeature, PixelBox
    from samrs.samrs_qgis.windows import plan_windows
    from shapely.geometry import box as shapely_box

    rects = [(10, 10, 60, 50), (100, 120, 180, 200)]
    pixel_boxes = [PixelBox(BoxFeature(i, i, {}, None), i + 1, None, None, "ok", polygon=shapely_box(*r), bounds=r)
                   for i, r in enumerate(rects)]
    plan = plan_windows(pixel_boxes, (256, 256), 1024, backend.input_size)[0]
    backend.encode(np.random.default_rng(2).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    maybe_compile_decoder(backend, 2, "auto", progress, plan)
    assert progress.messages[0].startswith(MEASURING)
    verdict = backend.compile_verdict()
    assert verdict is not None and verdict.boxes == verdicts.MEASURE_BATCHES * backend.preferred_batch
    assert backend.compiled == verdict.compile

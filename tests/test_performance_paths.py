"""The paths that make runs cheap must not change results: embedding cache, out-of-memory back-off,
streaming raster writes."""
import os

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio import features

from samrs.samrs_qgis.backends.sam import SamBackend
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.embedding_cache import EmbeddingCache
from samrs.samrs_qgis.pipeline import OutputPaths, SegmentJob
from samrs.samrs_qgis.settings import SegmentOptions
from conftest import TINY_SAM
from support import pixel_box, read_features, synthetic_scene, write_boxes, write_raster

T = Affine(1.0, 0, 300000, 0, -1.0, 5000000)


@pytest.fixture()
def scene(tmp_path):
    image, objects = synthetic_scene(256, seed=7)
    four = np.concatenate([image, image[:1] // 2])  # a fourth band to choose instead
    raster = write_raster(tmp_path / "scene.tif", four, T)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(T, *o[2]) for o in objects],
                        properties=[{"kind": o[0]} for o in objects])
    return raster, boxes, objects


def run(raster, boxes, out_dir, backend=None, **options):
    outputs = OutputPaths(str(out_dir / "i.tif"), None, str(out_dir / "m.gpkg"))
    job = SegmentJob(raster, read_box_file(boxes), outputs, SegmentOptions(**options), backend=backend)
    job.prepare()
    return job.run(), outputs


def test_cache_hits_on_a_second_run_and_misses_when_what_the_encoder_sees_changes(scene, tmp_path,
                                                                                   tiny_sam_checkpoint):
    raster, boxes, _ = scene
    cache_dir = tmp_path / "cache"
    sam = dict(checkpoint=tiny_sam_checkpoint, device="cpu", precision="fp32", cache_dir=str(cache_dir))
    first, out1 = run(raster, boxes, tmp_path / "a", **sam)
    assert first.timings.get("cached_windows", 0) == 0 and len(list(cache_dir.glob("*.npz"))) == first.windows
    second, out2 = run(raster, boxes, tmp_path / "b", clip_to_box=True, **sam)  # other post-processing
    assert second.timings["cached_windows"] == second.windows
    third, out3 = run(raster, boxes, tmp_path / "c", **sam)
    with rasterio.open(out1.instances) as a, rasterio.open(out3.instances) as c:
        assert np.array_equal(a.read(1), c.read(1))  # a cached embedding gives the same masks

    # Other bands, other raster content, other model, other precision: the encoder must run again.
    assert run(raster, boxes, tmp_path / "d", bands=[4, 2, 1], **sam)[0].timings.get("cached_windows", 0) == 0
    with rasterio.open(raster, "r+") as ds:
        ds.write(ds.read(1) // 2 + 1, 1)
    assert run(raster, boxes, tmp_path / "e", **sam)[0].timings.get("cached_windows", 0) == 0
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save(_build_sam(**TINY_SAM).state_dict(), other)
    assert run(raster, boxes, tmp_path / "f", **dict(sam, checkpoint=str(other)))[0].timings.get("cached_windows", 0) == 0
    assert run(raster, boxes, tmp_path / "g", **dict(sam, precision="bf16"))[0].timings.get("cached_windows", 0) == 0
    assert run(raster, boxes, tmp_path / "h", **dict(sam, embedding_cache=False))[0].timings.get("cached_windows", 0) == 0


def test_cache_respects_its_size_limit(tmp_path):
    cache = EmbeddingCache(str(tmp_path), limit_mb=1.5)
    arrays = [np.full((256, 1024), i, np.float32) for i in range(3)]  # 1 MiB each
    keys = [cache.key(a.astype(np.uint8), "model") for a in arrays]
    for key, a in zip(keys, arrays):
        cache.put(key, {"image_embeddings": a})
    assert cache.get(keys[0]) is None and np.array_equal(cache.get(keys[2])["image_embeddings"], arrays[2])
    assert sum(p.stat().st_size for p in tmp_path.glob("*.npz")) <= 1.5 * 1024 * 1024


def test_cache_entries_hold_named_arrays_and_damaged_or_old_entries_are_misses(tmp_path):
    cache = EmbeddingCache(str(tmp_path), limit_mb=4)
    embedding = {"image_embeddings": np.ones((1, 4, 8, 8), np.float32), "early": np.zeros((2, 3), np.float32)}
    cache.put("k", embedding)
    back = cache.get("k")
    assert sorted(back) == ["early", "image_embeddings"] and all(np.array_equal(back[n], embedding[n]) for n in back)
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 cut short")  # a file cut short (full disk)
    assert cache.get("d") is None and cache.misses == 1
    old = tmp_path / "old.npy"  # an entry of an earlier version: never read, trimmed first
    np.save(old, np.zeros((256, 1024), np.float32))
    os.utime(old, (2e9, 2e9))  # even when used last
    cache.limit_bytes = 1024 * 1024
    cache.trim()
    assert not old.exists() and (tmp_path / "k.npz").exists()


class OutOfMemoryAbove(SamBackend):
    """The real tiny SAM, but decoding more than ``limit`` boxes at once fails as a full GPU would."""

    limit = 2

    def decode_async(self, boxes, regions=None, prompts=None):
        if len(boxes) > self.limit:
            self.refused = getattr(self, "refused", 0) + 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().decode_async(boxes, regions, prompts)


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(scene, tmp_path, tiny_sam_checkpoint):
    raster, boxes, objects = scene
    options = dict(checkpoint=tiny_sam_checkpoint, device="cpu", precision="fp32", embedding_cache=False)
    backend = OutOfMemoryAbove(tiny_sam_checkpoint, device="cpu", precision="fp32")
    summary, out = run(raster, boxes, tmp_path / "oom", backend=backend, batch_size=8, **options)
    assert backend.refused >= 2 and summary.boxes == len(objects)
    reference_summary, reference = run(raster, boxes, tmp_path / "ref", batch_size=1, **options)
    with rasterio.open(out.instances) as a, rasterio.open(reference.instances) as b:
        agreement = (a.read(1) == b.read(1)).mean()
    assert agreement > 0.999
    assert [f["status"] for f in read_features(out.polygons)] == [f["status"] for f in read_features(reference.polygons)]
    with pytest.raises(RuntimeError, match="not memory"):  # other errors are not swallowed
        class Broken(SamBackend):
            def decode_async(self, boxes, regions=None, prompts=None):
                raise RuntimeError("not memory related")

        run(raster, boxes, tmp_path / "broken", backend=Broken(tiny_sam_checkpoint, device="cpu"), **options)


def test_streamed_instance_raster_equals_painting_all_masks_in_memory(tmp_path):
    """Many small windows, masks written to disk as they come, equal one in-memory painting of the same
    masks with the documented rule (smaller mask on top, equal areas: later box)."""
    image, objects = synthetic_scene(512, seed=11)
    raster = write_raster(tmp_path / "scene.tif", image, T)
    extra = [(o[2][0] - 10, o[2][1] - 10, o[2][2] + 25, o[2][3] + 25) for o in objects[:4]]  # overlapping boxes
    rects = [o[2] for o in objects] + extra
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(T, *r) for r in rects],
                        properties=[{"n": i} for i in range(len(rects))])
    outputs = OutputPaths(str(tmp_path / "i.tif"), None, str(tmp_path / "m.gpkg"))
    job = SegmentJob(raster, read_box_file(boxes), outputs, SegmentOptions(backend="grabcut", window_size=192))
    job.prepare()
    summary = job.run()
    assert summary.windows > 4
    expected = np.zeros((512, 512), np.uint32)
    owner_area = np.zeros((512, 512), np.int64)
    for f in sorted(read_features(outputs.polygons), key=lambda f: f["instance_id"]):
        if f["geometry"] is None:
            continue
        mask = features.rasterize([(f["geometry"], 1)], out_shape=(512, 512), transform=T).astype(bool)
        take = mask & ((expected == 0) | (f["area_px"] <= owner_area))
        expected[take] = f["instance_id"]
        owner_area[take] = f["area_px"]
    with rasterio.open(outputs.instances) as ds:
        assert np.array_equal(ds.read(1), expected)


def test_a_batch_size_learned_from_out_of_memory_is_kept_for_the_next_images(scene, tmp_path, tiny_sam_checkpoint):
    """A dataset runs one job per image on one backend: the second image starts with the batch that fit."""
    from support import RecordingProgress

    raster, boxes, objects = scene
    backend = OutOfMemoryAbove(tiny_sam_checkpoint, device="cpu", precision="fp32")
    backend.preferred_batch = 8
    warned = []
    for n in range(2):
        progress = RecordingProgress()
        outputs = OutputPaths(None, None, str(tmp_path / f"m{n}.gpkg"))
        SegmentJob(raster, read_box_file(boxes), outputs, SegmentOptions(checkpoint=tiny_sam_checkpoint,
                   device="cpu", precision="fp32", embedding_cache=False), progress, backend=backend).run()
        warned.append(sum("Out of memory" in w for w in progress.warnings))
    assert backend.preferred_batch == backend.limit
    assert warned[0] >= 2 and warned[1] == 0  # 8 -> 4 -> 2 on the first image; the second starts at 2
    assert len(read_features(tmp_path / "m1.gpkg")) == len(objects)


def test_out_of_memory_in_a_compiled_decoder_is_not_a_failed_compilation(tiny_sam_checkpoint):
    """Stand-ins for what a compiled transformer may raise (compiling itself takes tens of seconds): out of
    memory goes to the caller and the decoder stays compiled; any other error falls back to eager."""
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    backend.encode(np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    boxes = np.array([[10, 10, 60, 50], [100, 120, 180, 200]], dtype=float)
    eager = backend.decode(boxes)

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    backend.decoder._compiled_transformer = out_of_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        backend.decode(boxes)
    assert backend.compiled

    def broken(*args):
        raise RuntimeError("an inductor failure")

    backend.decoder._compiled_transformer = broken
    fallback = backend.decode(boxes)
    assert not backend.compiled
    assert all(np.allclose(a.grid, b.grid, atol=1e-5) and a.score == pytest.approx(b.score)
               for a, b in zip(eager, fallback))


class EncoderOutOfMemory(SamBackend):
    """The real tiny SAM whose encoder runs out of memory ``failures`` times, as a full GPU would."""

    def __init__(self, *args, failures=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures, self.freed = failures, 0

    def encode(self, frame):
        if self.failures:
            self.failures -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        super().encode(frame)

    def free_cached_memory(self):
        self.freed += 1


def test_the_encoder_out_of_memory_is_retried_once_then_explained(scene, tmp_path, tiny_sam_checkpoint):
    raster, boxes, objects = scene
    options = dict(checkpoint=tiny_sam_checkpoint, device="cpu", precision="fp32", embedding_cache=False)
    once = EncoderOutOfMemory(tiny_sam_checkpoint, device="cpu", precision="fp32", failures=1)
    summary, out = run(raster, boxes, tmp_path / "once", backend=once, **options)
    assert once.freed == 1 and summary.boxes == len(objects) and len(read_features(out.polygons)) == len(objects)
    always = EncoderOutOfMemory(tiny_sam_checkpoint, device="cpu", precision="fp32", failures=99)
    from samrs.samrs_qgis.errors import InputError

    with pytest.raises(InputError, match=r"ran out of memory encoding a 1024 x 1024 window.*smaller model \(vit_b\)"):
        run(raster, boxes, tmp_path / "always", backend=always, **options)
    assert always.failures == 97 and not (tmp_path / "always" / "m.gpkg").exists()

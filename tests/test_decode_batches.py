"""A batch of boxes is decoded with a fixed amount of device work and one transfer to the host, whatever the
number of boxes: what a GPU needs to stay busy, checked on the CPU by counting the operations torch dispatches
(each one a kernel launch on a GPU; ``_local_scalar_dense``, or ``item`` under inference mode, is a host
synchronisation such as ``int()`` or ``float()`` of a device value). The pipeline starts batch k+1 before it post-processes batch k."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samrs.samrs_qgis.backends import sam_decoder
from samrs.samrs_qgis.backends.base import Backend, BoxLogits, PendingLogits
from samrs.samrs_qgis.backends.sam import SamBackend, sam_box_prompt
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.pipeline import OutputPaths, SegmentJob
from samrs.samrs_qgis.settings import SegmentOptions
from support import read_features
import tools_data as td

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gpu_path import eager_counts  # noqa: E402 - the counting that `make bench` figure 7f reports


def same_shape_boxes(n):
    """``n`` boxes of one size along a row, so all their logit crops have one shape."""
    x = 40.0 + 20.0 * np.arange(n)
    return np.stack([x, np.full(n, 300.0), x + 60.0, np.full(n, 380.0)], axis=1)


def counted_decode(backend, boxes, regions):
    """(operations, host synchronisations, copies) dispatched by decoding ``boxes``."""
    return eager_counts(backend, boxes, regions)


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def encoded(request, tiny_sam_checkpoint):
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision=request.param)
    backend.encode(np.random.default_rng(5).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    yield backend
    backend.close()


@pytest.mark.parametrize("multimask", [False, True])
def test_device_work_and_host_transfers_do_not_grow_with_the_boxes_of_a_batch(encoded, multimask):
    encoded.multimask = multimask
    try:
        counts = {}
        for n in (2, 8, 32):
            boxes = same_shape_boxes(n)
            counts[n] = counted_decode(encoded, boxes, boxes + [-16, -16, 16, 16])
    finally:
        encoded.multimask = False
    assert counts[2][1] == counts[8][1] == counts[32][1] == 0  # no host synchronisation
    assert counts[2][2] == counts[8][2] == counts[32][2]  # copies
    assert counts[2][0] == counts[8][0] == counts[32][0]  # no operation per box


def test_each_crop_shape_costs_one_group_however_many_boxes_share_it(encoded):
    """Boxes of three sizes: the work is that of three groups, for 3 boxes as for 30."""
    sizes = (30.0, 100.0, 300.0)

    def boxes(per_size):
        rows = [[40.0 + 9 * i, 200.0 + 9 * i, 40.0 + 9 * i + s, 200.0 + 9 * i + s] for s in sizes
                for i in range(per_size)]
        return np.array(rows)

    few, many = boxes(1), boxes(10)
    shapes = {tuple(np.subtract(c[2:], c[:2])) for c in (sam_decoder.crop_cells(r, (64, 64)) for r in many)}
    assert len(shapes) == 3
    assert counted_decode(encoded, few, few)[0] == counted_decode(encoded, many, many)[0]


def test_a_batch_gives_what_its_boxes_give_one_at_a_time(encoded):
    rng = np.random.default_rng(2)
    x0, y0 = rng.uniform(0, 900, 12), rng.uniform(0, 900, 12)
    side = rng.uniform(5, 500, 12)
    boxes = np.stack([x0, y0, np.minimum(x0 + side, 1024), np.minimum(y0 + side * 0.7, 1024)], axis=1)
    regions = np.clip(boxes + [-20, -20, 20, 20], 0, 1024)
    for multimask in (False, True):
        encoded.multimask = multimask
        try:
            batch = encoded.decode(boxes, regions)
            single = [encoded.decode(boxes[i:i + 1], regions[i:i + 1])[0] for i in range(len(boxes))]
        finally:
            encoded.multimask = False
        for a, b in zip(batch, single):
            assert (a.origin_x, a.origin_y, a.grid.shape) == (b.origin_x, b.origin_y, b.grid.shape)
            tolerance = 1e-4 if encoded.precision == "fp32" else 0.05 * np.abs(b.grid).max()
            assert np.allclose(a.grid, b.grid, atol=tolerance)
            assert a.score == pytest.approx(b.score, abs=1e-4 if encoded.precision == "fp32" else 0.02)


def test_groups_are_split_to_bound_the_decoders_memory(encoded, monkeypatch):
    boxes = same_shape_boxes(9)
    whole = encoded.decode(boxes)  # whole-window logits: 2 M values a box
    monkeypatch.setattr(sam_decoder, "GROUP_VALUES", 4 * 1024 * 1024)  # two boxes a group
    assert [len(m) for _, m in sam_decoder.crop_groups([(0, 0, 64, 64)] * 9, 32)] == [2, 2, 2, 2, 1]
    for a, b in zip(encoded.decode(boxes), whole):
        assert np.array_equal(a.grid, b.grid) and a.score == b.score


def test_the_fp16_path_agrees_with_fp32(tiny_sam_checkpoint):
    """fp16 autocast (a GPU's default precision) runs on the CPU too: the decoder's fp16 path, exercised."""
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    backend.encode(np.random.default_rng(5).integers(0, 255, (512, 512, 3), dtype=np.uint8))
    boxes = np.array([[10, 20, 200, 220], [300, 300, 500, 420], [0, 0, 1024, 1024]], dtype=float)
    reference = backend.decode(boxes, boxes)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        half = backend.decoder.decode(torch.as_tensor(sam_box_prompt(boxes)), boxes, False)
    for (grid, row, col, score), ref in zip(half, reference):
        assert grid.dtype == np.float32 and grid.shape == ref.grid.shape
        confident = np.abs(ref.grid) > 0.05 * np.abs(ref.grid).max()
        assert ((grid > 0) == (ref.grid > 0))[confident].mean() > 0.99
        assert score == pytest.approx(ref.score, abs=0.02)
    backend.close()


class Recording(Backend):
    """Squares where the boxes are; records when each batch's decoding starts and when its result is taken."""

    name = "recording"
    preferred_batch = 1

    def __init__(self):
        self.events = []
        self.batches = 0

    def encode(self, frame):
        self.shape = frame.shape[:2]

    def decode_async(self, boxes, regions=None, prompts=None):
        k = self.batches = self.batches + 1
        self.events.append(("start", k, len(boxes)))
        logits = [BoxLogits(grid=np.full((1, 1), 5.0, np.float32), origin_x=b[0], origin_y=b[1],
                            cell=float(max(b[2] - b[0], b[3] - b[1])), score=float(k)) for b in boxes]

        def finish():
            self.events.append(("result", k, len(boxes)))
            return logits

        return PendingLogits(finish)


def test_the_next_batch_starts_before_the_previous_one_is_post_processed(tmp_path):
    backend = Recording()
    outputs = OutputPaths(polygons=str(tmp_path / "m.gpkg"))
    job = SegmentJob(td.scene_raster(tmp_path / "s.tif"), read_box_file(td.scene_boxes(tmp_path / "b.gpkg")),
                     outputs, SegmentOptions(embedding_cache=False), backend=backend)
    job.prepare()
    boxes = len(job.boxes)
    summary = job.run()
    assert summary.boxes == boxes and backend.batches >= 2
    expected = [("start", 1)]
    for k in range(2, backend.batches + 1):  # one window: start k, then the result of k - 1
        expected += [("start", k), ("result", k - 1)]
    expected.append(("result", backend.batches))
    assert [e[:2] for e in backend.events] == expected
    features = read_features(outputs.polygons)
    assert [f["instance_id"] for f in features] == sorted(f["instance_id"] for f in features)  # input order, once
    assert len(features) == boxes
    assert [f["score"] for f in features] == [float(k) for k in range(1, boxes + 1)]  # box k from batch k


def test_arrays_reach_a_cuda_device_through_pinned_memory_without_waiting(monkeypatch):
    """On CUDA a copy from pageable memory would wait for the batch being decoded; simulated: the calls made."""
    from samrs.samrs_qgis.backends.devices import to_device

    calls, real_to = [], torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or real_to(self, "cpu"))
    assert to_device(torch, np.arange(3), "cuda:1").tolist() == [0, 1, 2]
    assert calls == ["pin", (("cuda:1",), {"non_blocking": True})]
    calls.clear()
    assert to_device(torch, np.arange(3), "cpu").tolist() == [0, 1, 2] and calls == [(("cpu",), {})]

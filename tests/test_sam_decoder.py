"""The per-window mask decoder computes what segment-anything's MaskDecoder computes, over less area."""
import numpy as np
import pytest
import torch

from samrs.samrs_qgis.backends.base import BoxLogits
from samrs.samrs_qgis.backends.sam import SamBackend, sam_box_prompt
from samrs.samrs_qgis.backends.sam_decoder import region_cells
from samrs.samrs_qgis.logits import sample_region

# Boxes in a 1024x1024 frame, some touching its edges, one larger than half of it.
BOXES = np.array([[0, 0, 40, 30], [990, 1000, 1024, 1024], [300.5, 410.2, 388.9, 470.0],
                  [100, 20, 700, 900], [512, 0, 530, 1024]], dtype=float)


def reference_logits(backend, boxes, multimask):
    """segment-anything's own prompt encoder + MaskDecoder on the backend's current embedding."""
    model = backend.model
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=torch.as_tensor(sam_box_prompt(boxes)), masks=None)
        return model.mask_decoder(image_embeddings=backend.predictor.features,
                                  image_pe=model.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=multimask)


def regions_for(boxes, margin=0.25):
    pad = np.maximum(4.0, margin * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    return np.clip(boxes + np.stack([-pad, -pad, pad, pad], axis=1), 0, 1024)


@pytest.fixture(scope="module")
def encoded(tiny_sam_checkpoint):
    frame = np.random.default_rng(7).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    backend.encode(frame)
    return backend


@pytest.mark.parametrize("multimask", [False, True])
def test_whole_window_logits_equal_segment_anythings_decoder(encoded, multimask):
    encoded.multimask = multimask
    try:
        ours = encoded.decode(BOXES)
    finally:
        encoded.multimask = False
    low_res, iou = reference_logits(encoded, BOXES, multimask)
    for i, logits in enumerate(ours):
        k = int(iou[i].argmax()) if multimask else 0
        assert (logits.origin_x, logits.origin_y, logits.cell) == (0.0, 0.0, 4.0)
        assert np.allclose(logits.grid, low_res[i, k].numpy(), atol=1e-5)
        assert logits.score == pytest.approx(float(iou[i, k]), abs=1e-6)


def test_region_logits_are_the_same_cells_of_the_whole_window(encoded):
    regions = regions_for(BOXES)
    cropped = encoded.decode(BOXES, regions)
    whole = encoded.decode(BOXES)
    for crop, full in zip(cropped, whole):
        row, col = int(crop.origin_y // crop.cell), int(crop.origin_x // crop.cell)
        rows, cols = crop.grid.shape
        assert rows * cols < 256 * 256 or (rows, cols) == (256, 256)
        assert np.allclose(crop.grid, full.grid[row:row + rows, col:col + cols], atol=1e-5)
        assert crop.score == pytest.approx(full.score, abs=1e-6)
    assert cropped[0].grid.shape[0] * cropped[0].grid.shape[1] <= 16 * 16  # a 40x30 box: a few cells only


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_sampling_a_region_reads_the_same_values_from_the_crop_as_from_the_whole_grid(encoded, scale):
    """Native pixels sampled over each region (bilinear, edges clamped) agree whether the backend
    returned the region's cells or the whole 256x256 grid, also for a window shrunk to the frame."""
    boxes_native = BOXES / scale
    regions_native = regions_for(boxes_native)
    regions_native = np.stack([np.floor(regions_native[:, 0]), np.floor(regions_native[:, 1]),
                               np.ceil(regions_native[:, 2]), np.ceil(regions_native[:, 3])], axis=1)
    regions_native = np.clip(regions_native, 0, 1024 / scale).astype(int)
    cropped = encoded.decode(BOXES, regions_native * scale)
    whole = encoded.decode(BOXES)
    for crop, full, region in zip(cropped, whole, regions_native):
        a = sample_region(crop, (scale, scale), tuple(region))
        b = sample_region(full, (scale, scale), tuple(region))
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_region_cells_cover_the_cells_bilinear_sampling_reads():
    grid = (64, 64)
    rng = np.random.default_rng(3)
    for _ in range(500):
        x0, y0 = rng.uniform(0, 1000, 2)
        x1, y1 = x0 + rng.uniform(1, 400), y0 + rng.uniform(1, 400)
        r0, c0, r1, c1 = region_cells(np.array([x0, y0, min(x1, 1024), min(y1, 1024)]), grid)
        assert 0 <= r0 < r1 <= 64 and 0 <= c0 < c1 <= 64
        # every pixel centre in the region reads logit cells floor(p/4 - 0.5) and the next, clamped
        for lo, hi, a0, a1 in ((c0, c1, x0, min(x1, 1024)), (r0, r1, y0, min(y1, 1024))):
            first = min(max(np.floor(a0 / 4 - 0.5), 0), 255)
            last = min(max(np.floor(a1 / 4 - 0.5) + 1, 0), 255)
            assert lo * 4 <= first and last < hi * 4
    assert region_cells(None, grid) == (0, 0, 64, 64)


def test_a_cropped_grid_is_read_at_its_frame_offset():
    logits = BoxLogits(grid=np.arange(16, dtype=np.float32).reshape(4, 4), origin_x=8.0, origin_y=4.0, cell=4.0,
                       score=None)
    # a crop placed at (8, 4) in frame space: the centre of pixel (10, 6) lies 1/8 cell past the
    # centre of its first cell in x and y: 0.875 * (0.875 * 0 + 0.125 * 1) + 0.125 * (0.875 * 4 + 0.125 * 5)
    assert sample_region(logits, (1.0, 1.0), (10, 6, 11, 7))[0, 0] == pytest.approx(0.625)


def test_bfloat16_decoder_agrees_with_fp32(tiny_sam_checkpoint):
    """The bf16 decoder (its own bf16 weights, no autocast) against fp32 on the same embedding: the same
    masks but for pixels where the logit is near 0 (random weights give many such pixels)."""
    frame = np.random.default_rng(7).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    fp32 = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    bf16 = SamBackend(tiny_sam_checkpoint, device="cpu", precision="bf16")
    fp32.encode(frame)
    bf16.load_embedding(fp32.embedding, frame.shape[:2])  # the same image embedding: only the decoder differs
    assert bf16.decoder.decoder.iou_token.weight.dtype == torch.bfloat16
    regions = regions_for(BOXES)
    for a, b in zip(fp32.decode(BOXES, regions), bf16.decode(BOXES, regions)):
        assert a.grid.shape == b.grid.shape and b.grid.dtype == np.float32
        confident = np.abs(a.grid) > 0.05 * np.abs(a.grid).max()
        assert ((a.grid > 0) == (b.grid > 0))[confident].mean() > 0.99
        assert b.score == pytest.approx(a.score, abs=0.02)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_prompt_encoder_runs_in_fp32_under_reduced_precision(tiny_sam_checkpoint, precision, dtype):
    """The positional encoding of box corners (and of the image grid) stays fp32 under the backend's autocast,
    bf16 on the CPU as run today, and fp16 as on CUDA (autocast runs fp16 on the CPU too)."""
    frame = np.random.default_rng(7).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="bf16")
    pe_layer, seen = backend.model.prompt_encoder.pe_layer, []
    encoding = pe_layer._pe_encoding  # what both the image grid's and the box corners' encodings go through

    def recording(coords):  # like a forward hook, for the method forward() and forward_with_coords() share
        out = encoding(coords)
        seen.append(out.dtype)
        return out

    pe_layer._pe_encoding = recording
    try:
        backend.encode(frame)
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            backend.decoder.decode(torch.as_tensor(sam_box_prompt(BOXES)), None, False)
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            assert encoding(torch.rand(1, 4, 2)).dtype == dtype  # what it would be, left under autocast
    finally:
        del pe_layer._pe_encoding
    assert len(seen) >= 2 and set(seen) == {torch.float32}  # the image grid's and the boxes' encodings

"""SAM 2 without torch: ``export-onnx`` writes an encoder/decoder pair from the tiny SAM 2.1 (conftest's random-weight
hiera_t), ONNX Runtime runs it (:class:`samrs_qgis.backends.onnx_sam2.OnnxSam2Backend`) in a Python whose
``import torch`` fails, with the torch backend's (:class:`samrs_qgis.backends.sam2_backend.Sam2Backend`) embedding,
logits and masks on a real image (the demo's aerial 400 x 400 and a 400 x 260 crop of it), and a whole run works.

Measured here (2 cores shared with other work; the file takes about 40 s): exporting 6-7 s per pair, the torch-free
process (three 1024 x 1024 encodes) about 10 s, the torch backend's one encode 2-5 s. Against the torch backend, all
prompt modes: fp32, the embedding within 1.2e-6 of torch's (largest error over the largest value), logits within
5e-7, masks' IoU >= 0.9996; the int8 encoder, the embedding within 3 %, logits within 0.012, masks' IoU >= 0.97
(0.99 on average). The thresholds below leave room for other CPUs' kernels.
"""
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

import tools_data
from support import iou, read_features
from test_onnx_backend import BLOCK_TORCH, PLUGINS_DIR, onnx_files, run_without_torch

from samrs.samrs_qgis.backends import family_class, identify_model
from samrs.samrs_qgis.backends.base import BoxLogits
from samrs.samrs_qgis.backends.model_files import check_onnx_pair, identify
from samrs.samrs_qgis.backends.onnx_sam2 import OnnxSam2Backend
from samrs.samrs_qgis.backends.sam2_backend import WINDOW_TENSORS
from samrs.samrs_qgis.backends.sam2_frames import input_image
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.logits import sample_region
from samrs.samrs_qgis.prompts import build_prompts

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
WIDE_ROWS = 260  # the non-square frame: the image's first 260 rows (400 wide)
MODES = ("box", "point", "box+point", "rbox-mask")


def demo_frame():
    with rasterio.open(DEMO / "OSBS_029.tif") as src:
        return np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))


def demo_boxes(rows=400):
    """Tree-crown boxes of the demo (pixel corners) inside the first ``rows`` rows, and regions 12 px around them."""
    table = np.loadtxt(DEMO / "OSBS_029.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    boxes = table[table[:, 3] <= rows][:12]
    regions = np.clip(boxes + [-12, -12, 12, 12], 0, [400, rows, 400, rows])
    return boxes, regions


def rings_of(boxes):
    """Each box's polygon, its corners cut (a rotated box's look): the mask prompts."""
    return [np.array([[x0 + 4, y0], [x1, y0 + 4], [x1 - 4, y1], [x0, y1 - 4], [x0 + 4, y0]], float)
            for x0, y0, x1, y1 in boxes]


CASES = [(mode, False) for mode in MODES] + [("box", True)]  # (prompt mode, multimask) on the square frame


@pytest.fixture(scope="module")
def pairs(tiny_sam2_checkpoint, tmp_path_factory):
    """The tiny SAM 2.1 exported once as fp32 (by the CLI) and int8: {"fp32": folder, "int8": folder}."""
    from samrs.samrs_qgis.cli import main
    from samrs.samrs_qgis.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx_sam2")
    assert main(["export-onnx", tiny_sam2_checkpoint, "--out", str(root / "fp32")]) == 0
    pair = export_onnx(tiny_sam2_checkpoint, str(root / "int8"), quantize="int8")
    assert pair.family == "sam2" and pair.size == "hiera_t" and pair.quantization == "int8"
    return {"fp32": root / "fp32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def torch_free(pairs, tmp_path_factory):
    """The ONNX backend's answers, computed in a Python where ``import torch`` fails: per pair, the embedding of
    the square and the wide frame and, per case, (grid, origin_x, origin_y, cell, score) of each box."""
    work = tmp_path_factory.mktemp("answers")
    frame, (boxes, regions), wide = demo_frame(), demo_boxes(), demo_boxes(WIDE_ROWS)
    with open(work / "inputs.pkl", "wb") as f:
        pickle.dump(dict(frame=frame, wide_frame=frame[:WIDE_ROWS], boxes=boxes, regions=regions,
                         rings=rings_of(boxes), wide_boxes=wide[0], wide_regions=wide[1], cases=CASES,
                         pairs={kind: str(folder) for kind, folder in pairs.items()}), f)
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import pickle
        sys.path.insert(0, {str(PLUGINS_DIR)!r})
        from samrs.samrs_qgis.backends.onnx_sam2 import OnnxSam2Backend
        from samrs.samrs_qgis.prompts import build_prompts

        def answers(logits):
            return [(item.grid, item.origin_x, item.origin_y, item.cell, item.score) for item in logits]

        with open({str(work / "inputs.pkl")!r}, "rb") as f:
            given = pickle.load(f)
        boxes, regions = given["boxes"], given["regions"]
        found = {{}}
        for kind in ("fp32", "int8"):
            backend = OnnxSam2Backend(given["pairs"][kind], device="cpu")
            backend.encode(given["frame"])
            found[kind] = dict(describe=backend.describe(), identity=backend.identity(), square=backend.embedding)
            for mode, multimask in given["cases"] if kind == "fp32" else [("box", False)]:
                backend.multimask = multimask
                prompts = build_prompts(mode, boxes, given["rings"])
                found[kind][mode, multimask] = answers(backend.decode(boxes, regions, prompts))
            if kind == "fp32":
                backend.multimask = False
                backend.batched = False  # a decoder of batch 1: one run per box
                found[kind]["one_by_one"] = answers(backend.decode(boxes, regions))
                backend.batched = True
                backend.encode(given["wide_frame"])
                found[kind]["wide"] = backend.embedding
                found[kind]["wide", "box"] = answers(backend.decode(given["wide_boxes"], given["wide_regions"]))
            backend.close()
        found["torch_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")
                                        and sys.modules[m] is not None)
        with open({str(work / "answers.pkl")!r}, "wb") as f:
            pickle.dump(found, f)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(work / "answers.pkl", "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def torch_backend(tiny_sam2_checkpoint):
    from samrs.samrs_qgis.backends.sam2_backend import Sam2Backend

    backend = Sam2Backend(tiny_sam2_checkpoint, device="cpu", precision="fp32")
    backend.encode(demo_frame())
    yield backend
    backend.close()


def compare(mine, theirs, regions):
    """(largest logit difference, smallest mask IoU, largest score difference) of two backends' answers, sampled
    at the frame pixels of each box's region."""
    differences, ious, scores = [], [], []
    for a, b, (x0, y0, x1, y1) in zip(mine, theirs, regions):
        a = a if isinstance(a, BoxLogits) else BoxLogits(*a)  # an answer of the torch-free process
        pixels = (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
        ours, reference = sample_region(a, (1.0, 1.0), pixels), sample_region(b, (1.0, 1.0), pixels)
        differences.append(float(np.abs(ours - reference).max()))
        ious.append(iou(ours > 0, reference > 0))
        scores.append(abs(a.score - b.score))
    return max(differences), min(ious), max(scores)


def relative_error(mine, theirs):
    """Per window tensor, the largest error over the largest value."""
    return {name: float(np.abs(mine[name] - theirs[name]).max() / np.abs(theirs[name]).max())
            for name in WINDOW_TENSORS}


def test_export_writes_a_recognised_sam2_pair(pairs):
    for kind, folder in pairs.items():
        decoder, encoder = onnx_files(folder)
        assert encoder.endswith("_encoder.onnx") and decoder.endswith("_decoder.onnx")
        enc, dec = identify(encoder), identify(decoder)
        assert check_onnx_pair(enc, dec) == "onnx_sam2"
        assert [n for n, _ in enc.inputs] == ["image"] and dict(enc.inputs)["image"] == (1, 3, 1024, 1024)
        assert [n for n, _ in enc.outputs] == ["high_res_feats_0", "high_res_feats_1", "image_embed"]
        assert [n for n, _ in dec.inputs] == ["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords",
                                              "point_labels", "mask_input", "has_mask_input"]
        assert dict(dec.inputs)["point_coords"] == ("prompts", "points", 2)  # a batch of prompts per run
        assert [n for n, _ in dec.outputs] == ["masks", "iou_predictions", "low_res_masks", "low_res_iou_predictions"]
        assert dict(dec.outputs)["iou_predictions"] == ("prompts", 3)
        assert dict(dec.outputs)["low_res_iou_predictions"] == ("prompts", 4)
        assert identify_model(str(folder)).family == "onnx_sam2"
    assert family_class("onnx_sam2") is OnnxSam2Backend
    assert os.path.getsize(onnx_files(pairs["int8"])[1]) < 0.4 * os.path.getsize(onnx_files(pairs["fp32"])[1])


def test_the_preprocessing_is_sam2_transforms_without_torch(torch_backend):
    frame = demo_frame()
    for image in (frame, frame[:WIDE_ROWS], np.repeat(np.repeat(frame, 3, axis=0), 3, axis=1)[:1100, :900]):
        reference = torch_backend.input_tensor(image).numpy()
        assert np.abs(input_image(image, 1024) - reference).max() < 1e-5  # enlarged, stretched, reduced


def test_onnx_pair_without_torch_gives_the_torch_backends_masks(torch_free, torch_backend):
    assert torch_free["torch_modules"] == []
    fp32 = torch_free["fp32"]
    assert fp32["describe"].startswith("SAM 2.1 hiera_t ONNX") and "ONNX Runtime" in fp32["describe"]
    assert {name: array.shape for name, array in fp32["square"].items()} == {
        "image_embed": (1, 256, 64, 64), "high_res_feats_0": (1, 32, 256, 256), "high_res_feats_1": (1, 64, 128, 128)}
    errors = relative_error(fp32["square"], torch_backend.embedding)
    assert max(errors.values()) < 1e-4, errors
    boxes, regions = demo_boxes()
    torch_backend.load_embedding(fp32["square"], (400, 400))  # the same window: the decoders compared alone
    try:
        for mode, multimask in CASES:
            torch_backend.multimask = multimask
            theirs = torch_backend.decode(boxes, regions, build_prompts(mode, boxes, rings_of(boxes)))
            difference, agreement, score = compare(fp32[mode, multimask], theirs, regions)
            assert difference < 1e-4 and agreement >= 0.99 and score < 1e-4, (mode, multimask, difference,
                                                                                agreement, score)
    finally:
        torch_backend.multimask = False
    for a, b in zip(fp32["box", False], fp32["one_by_one"]):  # one run per box: the same answers
        assert np.allclose(a[0], b[0], atol=1e-5) and a[4] == pytest.approx(b[4], abs=1e-5)
    for grid, origin_x, origin_y, cell, _ in fp32["box", False]:  # a square frame keeps SAM 2's grid
        assert cell == pytest.approx(4 * 400 / 1024) and grid.shape[0] * grid.shape[1] < 256 * 256


def test_a_non_square_frame_is_placed_as_the_torch_backend_places_it(torch_free, torch_backend):
    fp32 = torch_free["fp32"]
    boxes, regions = demo_boxes(WIDE_ROWS)
    torch_backend.load_embedding(fp32["wide"], (WIDE_ROWS, 400))
    try:
        theirs = torch_backend.decode(boxes, regions)
    finally:
        torch_backend.load_embedding(fp32["square"], (400, 400))
    assert all(answer[3] == 1.0 for answer in fp32["wide", "box"])  # one cell per frame pixel
    difference, agreement, score = compare(fp32["wide", "box"], theirs, regions)
    assert difference < 1e-4 and agreement >= 0.99 and score < 1e-4


def test_the_int8_encoder_stays_close(torch_free, torch_backend):
    int8 = torch_free["int8"]
    assert "int8 encoder" in int8["describe"] and int8["identity"] != torch_free["fp32"]["identity"]
    errors = relative_error(int8["square"], torch_backend.embedding)
    assert max(errors.values()) < 0.06, errors
    boxes, regions = demo_boxes()
    _, agreement, _ = compare(int8["box", False], torch_backend.decode(boxes, regions), regions)
    assert agreement >= 0.95


def strip_outputs(decoder: str, folder: Path, encoder: str, keep) -> Path:
    """A pair in ``folder``: the encoder linked, the decoder with only the outputs ``keep``."""
    import onnx

    folder.mkdir()
    os.symlink(encoder, folder / "model.encoder.onnx")
    graph = onnx.load(decoder)
    kept = [o for o in graph.graph.output if o.name in keep]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, folder / "model.decoder.onnx")
    return folder


def test_a_samexporter_decoder_gives_the_best_candidate(pairs, torch_free, torch_backend, tmp_path):
    """samexporter's SAM 2 decoder has masks and iou_predictions (the three candidates) only."""
    decoder, encoder = onnx_files(pairs["fp32"])
    folder = strip_outputs(decoder, tmp_path / "samexporter", encoder, ("masks", "iou_predictions"))
    backend = OnnxSam2Backend(str(folder), device="cpu")
    assert not backend.single_mask and any("three multimask candidates" in note for note in backend.notes)
    assert "the best of three candidate masks" in backend.describe()
    boxes, regions = demo_boxes()
    backend.load_embedding(torch_free["fp32"]["square"], (400, 400))
    torch_backend.load_embedding(torch_free["fp32"]["square"], (400, 400))
    torch_backend.multimask = True
    try:
        theirs = torch_backend.decode(boxes, regions)
    finally:
        torch_backend.multimask = False
    difference, agreement, score = compare(backend.decode(boxes, regions), theirs, regions)
    assert difference < 1e-4 and agreement >= 0.99 and score < 1e-4
    assert not OnnxSam2Backend(str(folder), device="cpu", multimask=True).notes  # what was asked for
    lacking = strip_outputs(decoder, tmp_path / "lacking", encoder, ("masks", "low_res_masks"))
    with pytest.raises(InputError, match=r"model.decoder.onnx' has neither .*`python -m samrs_qgis export-onnx`"):
        OnnxSam2Backend(str(lacking), device="cpu")


def test_a_sam1_pair_is_not_run_as_sam2(pairs):
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend

    with pytest.raises(InputError, match="SAM 2 ONNX pair; this backend runs SAM and MobileSAM"):
        OnnxSamBackend(str(pairs["fp32"]), device="cpu")
    with pytest.raises(InputError, match=r"Model type mismatch: .* exported from a sam2.1_hiera_t model, not vit_b"):
        OnnxSam2Backend(str(pairs["fp32"]), device="cpu", model_type="vit_b")


def test_segment_boxes_runs_a_sam2_pair_where_torch_cannot_be_imported(pairs, tmp_path):
    raster = tools_data.scene_raster(tmp_path / "scene.tif")
    boxes = tools_data.scene_boxes(tmp_path / "boxes.gpkg")
    out = tmp_path / "out"
    report = run_without_torch(f"""
        options = SegmentOptions(backend="sam", checkpoint={onnx_files(pairs['fp32'])[1]!r}, device="cpu",
                                 class_field="label", cache_dir={str(tmp_path / 'cache')!r})
        runs = [segment_boxes({str(raster)!r}, read_box_file({str(boxes)!r}),
                              OutputPaths(polygons={str(out)!r} + f"/masks{{i}}.gpkg"), options) for i in range(2)]
        print(json.dumps(dict(backend=runs[0].backend, counts=[r.status_counts for r in runs],
                              cached=[r.timings.get("cached_windows") for r in runs], modules=torch_modules())))
    """)
    assert not report["modules"]
    assert report["backend"].startswith("SAM 2.1 hiera_t ONNX") and "ONNX Runtime" in report["backend"]
    first, second = report["counts"]
    assert first.get("ok", 0) + first.get("empty", 0) == len(tools_data.DISCS) and second == first
    assert not report["cached"][0] and report["cached"][1] == 1  # the second run decoded the cached embedding
    assert len(read_features(str(out / "masks0.gpkg"), layer="masks")) == len(tools_data.DISCS)

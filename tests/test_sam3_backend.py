"""SAM 3's interactive image model as a backend, against the sam3 package's own ``Sam3Processor.set_image`` and
``predict_inst`` (``SAM3InteractiveImagePredictor``).

The model: a tiny SAM 3 built from the package's classes (a ViT trunk 64 wide with 2 blocks, the second global;
SAM 3's own neck, position encoding and tracker), random weights (torch seed 0), saved as ``sam3.pt`` is
(``{"model": ...}``, ``detector.backbone.*`` and ``tracker.*``). The reference is that model loaded back by the
package's own ``_load_checkpoint`` and run by ``Sam3Processor`` and ``Sam3Image.predict_inst``: the detector's
transformer, heads and text encoder are not built (``predict_inst`` does not use them), and, as the backend, its
single mask is the single-mask token's (no fall-back by stability) and its masks are not hole-filled (a CUDA
post-processing step that sam3 skips on a CPU anyway). The sam3 package is not optional here: CI installs it
(scripts/setup.sh), so a missing package fails this file rather than skipping it.

Measured here (2 cores shared with other work): building the tiny model 2-5 s, an encode of a 1008 x 1008 frame
1.2-4 s, decoding 100 ms/box (predict_inst 250); on 32 random boxes the backend's logits within 3e-7 of
predict_inst's and its scores within 6e-8, masks agreeing on >= 0.9998 of the pixels (single mask and multimask);
the file 20-120 s.
"""
import contextlib
import gc
import io
import unittest.mock
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sam3.model_builder as builder  # not importorskip: CI installs it
from test_sam2_backend import assert_masks_agree, frame, native_masks  # the same frames and masks
from samrs.samrs_qgis.backends import FAMILY_CLASSES, family_class, identify_model, make_backend
from samrs.samrs_qgis.backends import sam3_backend
from samrs.samrs_qgis.backends.model_files import (SAM3_NECK, SAM3_OFFICIAL_TRUNK, SAM3_TRACKER, SAM3_TRUNK,
                                                   Sam3TrunkConfig, identify, identify_state, model_type_name)
from samrs.samrs_qgis.backends.sam import sam_box_prompt, sam_mask_prompt, sam_point_prompt
from samrs.samrs_qgis.backends.sam2_backend import WINDOW_TENSORS
from samrs.samrs_qgis.backends.sam3_backend import Sam3Backend
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.prompts import build_prompts
from samrs.samrs_qgis.settings import SegmentOptions

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:.*CUDA is not available.*:UserWarning")]

TINY = Sam3TrunkConfig(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, global_blocks=(1,), window_size=24)
SQUARE = (1008, 1008)  # rows, cols: the model's input, a window of the engine
WIDE = (600, 1008)  # a non-square frame
# frame-space pixel-corner boxes, and the regions their logits are sampled over (a margin around each)
BOXES = np.array([[200, 100, 400, 300], [10, 20, 80, 90], [500, 300, 900, 580], [700, 40, 1000, 200]], float)
REGIONS = BOXES + [-24, -24, 24, 24]
LOGIT_CELL = 1008 / 288  # input pixels per low-resolution logit (3.5)
DEMO = Path(__file__).resolve().parent.parent / "demo"


class Reference(torch.nn.Module):
    """What ``Sam3Processor`` and ``predict_inst`` use of ``Sam3Image``: the backbone (here without a text
    encoder) and the interactive predictor."""

    from sam3.model.sam3_image import Sam3Image
    predict_inst = Sam3Image.predict_inst

    def __init__(self, backbone, predictor):
        super().__init__()
        self.backbone = backbone
        self.inst_interactive_predictor = predictor


def build_reference():
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
    from sam3.model.vl_combiner import SAM3VLBackbone

    with sam3_backend.cuda_made_on_cpu(torch):
        position = builder._create_position_encoding(precompute_resolution=1008)
    neck = builder._create_vit_neck(position, sam3_backend.build_trunk(TINY), enable_inst_interactivity=True)
    tracker = sam3_backend.build_tracker(torch, builder)
    predictor = SAM3InteractiveImagePredictor(tracker)
    tracker.sam_mask_decoder.dynamic_multimask_via_stability = False  # the single mask is the single-mask token's
    predictor._transforms.max_hole_area = 0  # no hole filling: masks are the logits brought to the image's size
    return Reference(SAM3VLBackbone(visual=neck, text=None, scalp=1), predictor).eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(the tiny SAM 3 saved as sam3.pt is, the reference: the same model loaded back by sam3's own loader)."""
    torch.manual_seed(0)
    reference = build_reference()
    state = {f"detector.backbone.{k}": v for k, v in reference.backbone.state_dict().items()}
    state.update({f"tracker.{k}": v for k, v in reference.inst_interactive_predictor.model.state_dict().items()})
    path = tmp_path_factory.mktemp("sam3") / "sam3.pt"
    torch.save({"model": state}, path)
    told = io.StringIO()
    with contextlib.redirect_stdout(told):  # it prints the names it misses
        builder._load_checkpoint(reference, str(path))
    assert told.getvalue() == ""
    return str(path), reference


@pytest.fixture(scope="module")
def sam3_file(model):
    return model[0]


@pytest.fixture(scope="module")
def backend(sam3_file):
    """Made as a run makes it: the file's family picks the class."""
    backend = make_backend(SegmentOptions(checkpoint=sam3_file, device="cpu", precision="fp32"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(model):
    """``Sam3Processor.set_image``'s state of each frame shape, and predict_inst on it."""
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(model[1], device="cpu")
    states = {}

    def predict(shape, **kwargs):
        """(masks (n, C, rows, cols), scores (n, C), low-res logits (n, C, 288, 288), the features decoded)."""
        if shape not in states:
            states[shape] = processor.set_image(Image.fromarray(frame(shape)))
        predictor = model[1].inst_interactive_predictor
        seen = {}
        own = predictor.predict

        def predict_and_keep(**arguments):
            seen.update(predictor._features)
            return own(**arguments)

        predictor.predict = predict_and_keep
        try:
            with torch.inference_mode():
                masks, scores, low = model[1].predict_inst(states[shape], return_logits=True, **kwargs)
        finally:
            del predictor.predict
        features = dict(zip(WINDOW_TENSORS, [seen["image_embed"]] + list(seen["high_res_feats"])))
        return masks.reshape(-1, *masks.shape[-3:]), scores.reshape(-1, scores.shape[-1]), \
            low.reshape(-1, *low.shape[-3:]), features

    return predict, processor


@pytest.fixture(scope="module")
def square(backend):
    """The backend's own encoding of the square frame: its embedding and its logits of BOXES right after."""
    backend.encode(frame(SQUARE))
    return backend.embedding, backend.decode(BOXES, REGIONS)


def test_a_sam3_file_is_identified_and_run_by_the_sam3_backend(sam3_file, backend):
    assert FAMILY_CLASSES["sam3"] == (".sam3_backend", "Sam3Backend")
    found = identify(sam3_file)
    assert (found.family, found.size, found.sam3_trunk) == ("sam3", "custom(dim=64,depth=2)", TINY)
    assert identify_model(sam3_file).family == "sam3" and family_class("sam3") is Sam3Backend
    assert type(backend) is Sam3Backend and backend.input_size == 1008
    assert backend.describe().startswith(f"SAM 3 custom(dim=64,depth=2) ({sam3_file}) on cpu")
    assert backend.describe().endswith("fp32") and ":sam3:custom(dim=64,depth=2):fp32:cpu" in backend.identity()
    state = torch.load(sam3_file, weights_only=True)["model"]
    loaded = {f"detector.backbone.vision_backbone.{k}": v for k, v in backend.encoder.state_dict().items()}
    loaded.update({f"tracker.{k}": v for k, v in backend.model.state_dict().items()})
    assert all(torch.equal(tensor, state[name]) for name, tensor in loaded.items())  # strictly loaded
    assert not any(k.startswith("detector.backbone.vision_backbone.convs.") for k in loaded)  # not built
    assert backend.model.maskmem_backbone is None and len(backend.encoder.sam2_convs) == 3
    with pytest.raises(InputError, match="Model type mismatch.*SAM 3 custom"):
        Sam3Backend(sam3_file, model_type="sam3", device="cpu")


def test_the_published_model_is_told_and_built_as_sam3_builds_it():
    """sam3.pt's trunk (1024 wide, 32 blocks) is size ``sam3`` and gets sam3's own ViT arguments."""
    with unittest.mock.patch.object(builder, "ViT", lambda **kwargs: kwargs):
        official = builder._create_vit_backbone()
    with unittest.mock.patch("sam3.model.vitdet.ViT", lambda **kwargs: kwargs):
        ours = sam3_backend.build_trunk(SAM3_OFFICIAL_TRUNK)
    assert {k: v for k, v in official.items() if k != "compile_mode"} == ours
    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731 (shapes only)
    state = {f"{SAM3_TRUNK}patch_embed.proj.weight": meta(1024, 3, 14, 14),
             f"{SAM3_TRUNK}blocks.0.mlp.fc1.weight": meta(4736, 1024),
             f"{SAM3_NECK}0.conv_1x1.weight": meta(256, 256, 1, 1),
             f"{SAM3_TRACKER}sam_mask_decoder.iou_token.weight": meta(1, 256)}
    state.update({f"{SAM3_TRUNK}blocks.{i}.attn.freqs_cis": meta(5184 if i % 8 == 7 else 576, 32) for i in range(32)})
    found = identify_state(state, "sam3.pt")
    assert found.sam3_trunk == SAM3_OFFICIAL_TRUNK and found.size == "sam3"
    assert found.describe() == "SAM 3" and model_type_name(found) == "sam3"
    del state[f"{SAM3_NECK}0.conv_1x1.weight"]  # a detector alone: not the interactive model
    with pytest.raises(InputError, match="not a SAM checkpoint.*sam2_convs"):
        identify_state(state, "detector.pt")


def test_a_window_is_encoded_as_set_image_encodes_it(backend, reference, square):
    predict, processor = reference
    embedding, _ = square
    *_, expected = predict(SQUARE, box=BOXES[:1])
    assert {k: v.shape for k, v in embedding.items()} == {
        "image_embed": (1, 256, 72, 72), "high_res_feats_0": (1, 32, 288, 288), "high_res_feats_1": (1, 64, 144, 144)}
    for name, tensor in expected.items():
        assert embedding[name].dtype == np.float32
        np.testing.assert_allclose(embedding[name], tensor.numpy(), atol=1e-5, rtol=0)
    # a non-square frame is stretched to the square input, as Sam3Processor's transform does (resized as uint8)
    from torchvision.transforms.v2 import functional

    wide = frame(WIDE)
    theirs = processor.transform(functional.to_image(Image.fromarray(wide)))[None]
    assert torch.equal(backend.input_tensor(wide), theirs)


def test_an_embedding_loaded_back_decodes_as_the_encoded_window(backend, square):
    embedding, logits = square
    backend.load_embedding({k: v.copy() for k, v in embedding.items()}, SQUARE)
    again = backend.embedding
    assert all(np.array_equal(again[k], embedding[k]) for k in WINDOW_TENSORS)
    for a, b in zip(backend.decode(BOXES, REGIONS), logits):
        assert np.array_equal(a.grid, b.grid) and (a.origin_x, a.origin_y, a.cell, a.score) == (
            b.origin_x, b.origin_y, b.cell, b.score)


@pytest.mark.parametrize("multimask", [False, True])
def test_box_logits_and_masks_are_predict_insts(backend, reference, square, multimask):
    predict, _ = reference
    backend.load_embedding(square[0], SQUARE)
    backend.multimask = multimask
    try:
        logits = backend.decode(BOXES, REGIONS)
        whole = backend.decode(BOXES[:1])  # no region: the whole window
    finally:
        backend.multimask = False
    masks, scores, low, _ = predict(SQUARE, box=sam_box_prompt(BOXES), multimask_output=multimask)
    best = scores.argmax(axis=1) if multimask else np.zeros(len(BOXES), int)
    for i, item in enumerate(logits):
        assert item.cell == LOGIT_CELL and item.origin_x % 14 == 0 and item.origin_y % 14 == 0
        assert item.score == pytest.approx(float(scores[i, best[i]]), abs=1e-5)
        r0, c0 = round(item.origin_y / LOGIT_CELL), round(item.origin_x / LOGIT_CELL)
        rows, cols = item.grid.shape
        np.testing.assert_allclose(np.clip(item.grid, -32, 32), low[i, best[i], r0:r0 + rows, c0:c0 + cols],
                                   atol=1e-4, rtol=0)
        assert_masks_agree([item], masks[i, best[i]], REGIONS[i:i + 1], SQUARE)
    assert whole[0].grid.shape == (288, 288)
    np.testing.assert_allclose(np.clip(whole[0].grid, -32, 32), low[0, best[0]], atol=1e-4, rtol=0)


def test_a_non_square_frame_places_the_masks_on_the_predictors_pixels(backend, reference):
    predict, _ = reference
    boxes, regions = BOXES.copy(), REGIONS.copy()
    boxes[:, 1::2] = np.minimum(boxes[:, 1::2], WIDE[0])
    regions[:, 1::2] = np.clip(regions[:, 1::2], 0, WIDE[0])
    masks, scores, _, features = predict(WIDE, box=sam_box_prompt(boxes), multimask_output=False)
    backend.load_embedding({k: v.numpy() for k, v in features.items()}, WIDE)
    logits = backend.decode(boxes, regions)
    for i, item in enumerate(logits):
        assert item.cell == 1.0 and item.score == pytest.approx(float(scores[i, 0]), abs=1e-5)
        (c0, r0, c1, r1), mine = native_masks([item], WIDE, regions[i:i + 1])[0]
        np.testing.assert_allclose(mine, masks[i, 0, r0:r1, c0:c1], atol=1e-3, rtol=0)  # the same pixels
        assert_masks_agree([item], masks[i, 0], regions[i:i + 1], WIDE)


@pytest.mark.parametrize("mode", ["point", "rbox-mask"])
def test_prompt_modes_give_predict_insts_masks(backend, reference, square, mode):
    predict, _ = reference
    backend.load_embedding(square[0], SQUARE)
    rings = [np.array([[x0 + 30, y0], [x1, y0 + 30], [x1 - 30, y1], [x0, y1 - 30], [x0 + 30, y0]], float)
             for x0, y0, x1, y1 in BOXES]
    prompts = build_prompts(mode, BOXES, rings)
    logits = backend.decode(BOXES, REGIONS, prompts)
    if prompts.polygons is None:
        masks, scores, _, _ = predict(SQUARE, point_coords=sam_point_prompt(prompts.points),
                                      point_labels=np.ones((len(BOXES), 1)), multimask_output=False)
    else:  # the predictor takes one mask prompt at a time, over its 288 x 288 grid of 3.5 input pixels
        dense = sam_mask_prompt(rings, 288, LOGIT_CELL)
        found = [predict(SQUARE, mask_input=dense[i], multimask_output=False) for i in range(len(BOXES))]
        masks, scores = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    for i, item in enumerate(logits):
        assert item.score == pytest.approx(float(scores[i, 0]), abs=1e-5)
        assert_masks_agree([item], masks[i, 0], REGIONS[i:i + 1], SQUARE)


def test_bf16_decodes_as_fp32_does(sam3_file, square):
    bf16 = Sam3Backend(sam3_file, device="cpu", precision="bf16")
    try:
        assert bf16.describe().endswith("bf16") and ":bf16:" in bf16.identity()
        bf16.load_embedding(square[0], SQUARE)
        logits = bf16.decode(BOXES, REGIONS)
    finally:
        bf16.close()
    for mine, theirs in zip(logits, square[1]):
        assert (mine.origin_x, mine.origin_y, mine.grid.shape) == (theirs.origin_x, theirs.origin_y, theirs.grid.shape)
        assert mine.score == pytest.approx(theirs.score, abs=0.02)
        assert ((mine.grid > 0) == (theirs.grid > 0)).mean() >= 0.97


def test_segment_boxes_runs_a_sam3_file_on_the_demo_image(tmp_path, sam3_file):
    """The demo's aerial image (400 x 400, its tree-crown boxes): one window, then the same from the cache."""
    raster, boxes = str(DEMO / "OSBS_029.tif"), str(DEMO / "OSBS_029_boxes.gpkg")
    options = SegmentOptions(checkpoint=sam3_file, device="cpu", precision="fp32", cache_dir=str(tmp_path / "cache"))
    first = segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "a.gpkg")), options)
    assert first.backend.startswith("SAM 3 custom") and first.windows == 1
    crowns = len(np.loadtxt(DEMO / "OSBS_029.csv", delimiter=",", skiprows=1, usecols=1))
    assert sum(first.status_counts.values()) == crowns and first.status_counts.get("ok", 0) > 0
    second = segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "b.gpkg")), options)
    assert second.status_counts == first.status_counts  # decoded from the cached embedding
    assert second.timings.get("cached_windows") == 1 and not first.timings.get("cached_windows")


def test_the_tracker_leaves_no_cuda_autocast_behind():
    """sam3's tracker enters a CUDA bf16 autocast in its constructor and never leaves it; the build leaves it."""
    before = torch.is_autocast_enabled("cuda")
    sam3_backend.build_tracker(torch, builder)
    assert torch.is_autocast_enabled("cuda") == before


def test_close_frees_the_model(sam3_file):
    backend = Sam3Backend(sam3_file, device="cpu", precision="fp32")
    gc.collect()
    gc.disable()
    try:
        parts = [weakref.ref(backend.model), weakref.ref(backend.encoder)]
        description = backend.describe()
        backend.close()
        assert all(part() is None for part in parts)  # freed by reference counting alone: no reference cycles
        assert backend.describe() == description
    finally:
        gc.enable()


def test_int8_is_refused_for_sam3_rather_than_run_as_fp32(tmp_path):
    with pytest.raises(InputError, match="int8 applies to SAM, SAM-HQ and MobileSAM encoders, not to SAM 3"):
        Sam3Backend(str(tmp_path / "sam3.pt"), device="cpu", precision="int8")

"""HQ-SAM (ViT and the light TinyViT) and MobileSAM: tiny random-weight models built with each family's own
classes, saved as plain state dicts, loaded through identification, give the logits of the family's own
predictor, over the whole window and over each box's region."""
import warnings

import numpy as np
import pytest
import torch
from support import on_common_cells

from samrs.samrs_qgis.backends import FAMILY_CLASSES, family_class, lean_attention
from samrs.samrs_qgis.backends.model_files import identify
from samrs.samrs_qgis.backends.sam import SamBackend, sam_box_prompt
from samrs.samrs_qgis.backends.sam_checkpoint import load_model
from samrs.samrs_qgis.backends.sam_hq import SamHqBackend
from samrs.samrs_qgis.errors import InputError

with warnings.catch_warnings():  # its TinyViT imports timm's deprecated paths and re-registers timm's models
    warnings.simplefilter("ignore")
    import segment_anything_hq
    from segment_anything_hq import modeling as hq_modeling

# Boxes in a 1024x1024 frame: at its corners and edges (HQ's mask feature reads past a crop), small, large.
BOXES = np.array([[0, 0, 40, 30], [990, 1000, 1024, 1024], [300.5, 410.2, 388.9, 470.0],
                  [100, 20, 700, 900], [512, 0, 530, 1024], [1000, 200, 1024, 260]], dtype=float)
# A small TinyViT of MobileSAM's shape: four stages, the last at 320 wide (its patch merging keeps 64x64 there).
SMALL_TINY_VIT = dict(embed_dims=[16, 32, 40, 320], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                      window_sizes=[7, 7, 14, 7])
PROMPT = dict(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
DECODER = dict(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)


def two_way():
    return hq_modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)


def tiny_vit():
    return hq_modeling.TinyViT(img_size=1024, in_chans=3, num_classes=1000, **SMALL_TINY_VIT)


def hq_vit():
    from segment_anything_hq.build_sam import _build_sam

    return _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])


def hq_light():
    """HQ-SAM's light model as segment-anything-hq's vit_tiny builder makes it, with a small TinyViT."""
    return hq_modeling.Sam(image_encoder=tiny_vit(), prompt_encoder=hq_modeling.PromptEncoder(**PROMPT),
                           mask_decoder=hq_modeling.MaskDecoderHQ(transformer=two_way(), vit_dim=40, **DECODER))


def mobile_sam():
    """MobileSAM: a TinyViT with segment-anything's prompt encoder and mask decoder."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam

    return Sam(image_encoder=tiny_vit(), prompt_encoder=PromptEncoder(**PROMPT),
               mask_decoder=MaskDecoder(transformer=two_way(), **DECODER))


class EmbeddingOnly(torch.nn.Module):
    """MobileSAM's encoder answer (the embedding alone) from segment-anything-hq's TinyViT, for the reference."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.img_size = encoder, encoder.img_size

    def forward(self, x):
        return self.encoder(x)[0]


MODELS = {"hq_vit": (hq_vit, "sam_hq", "SAM-HQ custom(dim=32,depth=2,heads=2)"),
          "hq_light": (hq_light, "sam_hq", "SAM-HQ tiny_vit(dims=16,32,40,320,depths=1,1,1,1)"),
          "mobile_sam": (mobile_sam, "mobile_sam", "MobileSAM tiny_vit(dims=16,32,40,320,depths=1,1,1,1)")}
FRAME = np.random.default_rng(11).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=list(MODELS))
def case(request, tmp_path_factory):
    """(model file, the model as built, the backend that loaded the file and encoded FRAME, reference predictor
    with FRAME set)."""
    build, _, _ = MODELS[request.param]
    torch.manual_seed(0)
    model = build().eval()
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.pth"
    torch.save(model.state_dict(), path)
    found = identify(str(path))
    backend = family_class(found.family)(str(path), device="cpu", precision="fp32")
    backend.encode(FRAME)
    if found.family == "mobile_sam":
        import segment_anything

        model.image_encoder = EmbeddingOnly(model.image_encoder)
        reference = segment_anything.SamPredictor(model)
    else:
        reference = segment_anything_hq.SamPredictor(model)
    with torch.inference_mode():
        reference.set_image(FRAME)
    return request.param, str(path), backend, reference


def _reference_logits(reference, boxes, multimask):
    """The family's own predictor: low-resolution logits (B, 256, 256) and scores (B,); HQ-SAM with its
    predictor's default, hq_token_only=False."""
    extra = {"hq_token_only": False} if isinstance(reference, segment_anything_hq.SamPredictor) else {}
    with torch.inference_mode():
        _, iou, low_res = reference.predict_torch(None, None, torch.as_tensor(sam_box_prompt(boxes)),
                                                  multimask_output=multimask, return_logits=True, **extra)
    if multimask and not extra:  # segment-anything gives all three candidates: the best one
        best = iou.argmax(dim=1)
        return low_res[torch.arange(len(boxes)), best].numpy(), iou.max(dim=1).values.numpy()
    return low_res[:, 0].numpy(), iou[:, 0].numpy()


def regions_for(boxes, margin=0.25):
    pad = np.maximum(4.0, margin * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    return np.clip(boxes + np.stack([-pad, -pad, pad, pad], axis=1), 0, 1024)


_DECODED = {}


def region_logits(case):
    """The case's fp32 backend's logits of BOXES over their regions, decoded once (several tests read them)."""
    name, _, backend, _ = case
    if name not in _DECODED:
        _DECODED[name] = backend.decode(BOXES, regions_for(BOXES))
    return _DECODED[name]


def test_files_are_identified_and_run_by_their_familys_class(case):
    name, path, backend, _ = case
    _, family, description = MODELS[name]
    assert identify(path).family == family == backend.family
    assert type(backend) is (SamHqBackend if family == "sam_hq" else SamBackend)
    assert FAMILY_CLASSES[family] == ((".sam_hq", "SamHqBackend") if family == "sam_hq" else (".sam", "SamBackend"))
    assert backend.describe().startswith(f"{description} ({path}) on cpu")
    assert f":{family}:" in backend.identity()
    # the ViT encoder's attention computed in bands as SAM's (TinyViT's windowed attention is another class)
    assert lean_attention.is_lean(backend.model) == (name == "hq_vit")


def test_whole_window_logits_equal_the_familys_predictor_with_multimask(case):
    """The best of three candidates by predicted IoU, over the whole window (single masks: the next test,
    whose two largest boxes' regions are the whole window)."""
    _, _, backend, reference = case
    boxes = BOXES[[0, 2, 5]]
    backend.multimask = True
    try:
        ours = backend.decode(boxes)
    finally:
        backend.multimask = False
    low_res, scores = _reference_logits(reference, boxes, True)
    for i, logits in enumerate(ours):
        assert (logits.origin_x, logits.origin_y, logits.cell) == (0.0, 0.0, 4.0)
        assert logits.grid.shape == (256, 256)
        np.testing.assert_allclose(logits.grid, low_res[i], atol=2e-4, rtol=1e-4)
        assert logits.score == pytest.approx(float(scores[i]), abs=1e-5)


def test_region_logits_are_the_predictors_cells(case):
    _, _, backend, reference = case
    low_res, scores = _reference_logits(reference, BOXES, False)
    cropped = region_logits(case)
    for i, crop in enumerate(cropped):
        row, col = int(crop.origin_y // crop.cell), int(crop.origin_x // crop.cell)
        rows, cols = crop.grid.shape
        assert rows * cols <= 64 * 64 or (i in (3, 4) and (rows, cols) == (256, 256))  # small boxes: a few cells
        np.testing.assert_allclose(crop.grid, low_res[i, row:row + rows, col:col + cols], atol=2e-4, rtol=1e-4)
        assert crop.score == pytest.approx(float(scores[i]), abs=1e-5)


def test_the_embedding_round_trip_gives_identical_logits(case):
    name, path, backend, _ = case
    embedding = backend.embedding
    if MODELS[name][1] == "sam_hq":
        width = 32 if name == "hq_vit" else 40  # the first global block's output; the TinyViT's second stage
        assert {k: v.shape for k, v in embedding.items()} == {"image_embeddings": (1, 256, 64, 64),
                                                              "interm_embeddings": (1, 64, 64, width)}
    else:
        assert {k: v.shape for k, v in embedding.items()} == {"image_embeddings": (1, 256, 64, 64)}
    assert all(v.dtype == np.float32 for v in embedding.values())
    other = type(backend)(path, device="cpu", precision="fp32")
    other.load_embedding(embedding, FRAME.shape[:2])
    for a, b in zip(region_logits(case), other.decode(BOXES, regions_for(BOXES))):
        assert (a.origin_x, a.origin_y) == (b.origin_x, b.origin_y)
        assert np.array_equal(a.grid, b.grid) and a.score == b.score
    assert other.identity() == backend.identity()


def test_bfloat16_hq_decoder_agrees_with_fp32(case):
    """The bf16 decoder (HQ's parts too) against fp32 on the same embedding: the same masks where the logit is
    not near 0."""
    name, path, backend, _ = case
    if name == "mobile_sam":
        pytest.skip("SAM's decoder: tests/test_sam_decoder.py")
    bf16 = SamHqBackend(path, device="cpu", precision="bf16")
    bf16.load_embedding(backend.embedding, FRAME.shape[:2])
    for a, b in zip(region_logits(case), bf16.decode(BOXES, regions_for(BOXES))):
        assert a.grid.shape == b.grid.shape and b.grid.dtype == np.float32
        confident = np.abs(a.grid) > 0.05 * np.abs(a.grid).max()
        assert ((a.grid > 0) == (b.grid > 0))[confident].mean() > 0.99
        assert b.score == pytest.approx(a.score, abs=0.02)


def test_a_file_of_another_family_is_refused_by_name(case):
    name, path, _, _ = case
    family = MODELS[name][1]
    other = ("sam",) if family == "sam_hq" else ("sam_hq",)
    with pytest.raises(InputError, match=rf"holds a {MODELS[name][2].split(' (')[0][:6]}.*load it as a"):
        load_model(path, "auto", other)
    with pytest.raises(InputError, match="Model type mismatch.*not vit_b"):
        load_model(path, "vit_b", type(case[2]).families)


def test_a_run_with_an_hq_file_picks_its_class_and_reuses_its_cached_embedding(case, tmp_path):
    """The sam backend given an HQ-SAM file runs SamHqBackend; a second run decodes from the embedding cache
    (both arrays) and writes the same masks."""
    import rasterio
    from affine import Affine

    from samrs.samrs_qgis.boxes import read_box_file
    from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs.samrs_qgis.settings import SegmentOptions
    from support import pixel_box, synthetic_scene, write_boxes, write_raster

    name, path, _, _ = case
    if name != "hq_vit":
        pytest.skip("one family's run is enough: the others differ in the backend made, checked above")
    image, objects = synthetic_scene(256, seed=3)
    transform = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
    raster = write_raster(tmp_path / "scene.tif", image, transform)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(transform, *o[2]) for o in objects])
    options = SegmentOptions(checkpoint=path, device="cpu", precision="fp32", cache_dir=str(tmp_path / "cache"))
    masks = []
    for run in ("first", "second"):
        out = OutputPaths(str(tmp_path / run / "inst.tif"), None, None)
        summary = segment_boxes(raster, read_box_file(boxes), out, options)
        assert summary.boxes == len(objects) and summary.backend.startswith("SAM-HQ custom(dim=32")
        assert summary.timings.get("cached_windows", 0) == (summary.windows if run == "second" else 0)
        with rasterio.open(out.instances) as ds:
            masks.append(ds.read(1))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == summary.windows
    with np.load(next((tmp_path / "cache").glob("*.npz"))) as stored:
        assert set(stored.files) == {"image_embeddings", "interm_embeddings"}
    assert np.array_equal(masks[0], masks[1]) and masks[0].any()


def test_mobile_sam_exports_to_an_onnx_pair_fp32_and_int8(tmp_path):
    """MobileSAM through ONNX Runtime: a TinyViT whose first stage has two blocks (their folded weights start
    equal, which the exporter stores once) exports as an fp32 and an int8 pair that give the torch backend's
    embedding and masks."""
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend
    from samrs.samrs_qgis.cli import main
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam

    torch.manual_seed(0)
    encoder = hq_modeling.TinyViT(img_size=1024, in_chans=3, num_classes=1000,
                                  **dict(SMALL_TINY_VIT, depths=[2, 1, 1, 1]))
    model = Sam(image_encoder=encoder, prompt_encoder=PromptEncoder(**PROMPT),
                mask_decoder=MaskDecoder(transformer=two_way(), **DECODER)).eval()
    path = tmp_path / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    reference = SamBackend(str(path), device="cpu", precision="fp32")
    reference.encode(FRAME)
    expected_embedding = reference.embedding["image_embeddings"]
    regions = regions_for(BOXES)
    expected = reference.decode(BOXES, regions)
    for quantize, tolerance, least_agreement in ((None, 1e-4, 0.99), ("int8", 0.1, 0.95)):
        folder = tmp_path / (quantize or "fp32")
        assert main(["export-onnx", str(path), "--out", str(folder)] + (["--quantize", quantize] if quantize else [])) == 0
        backend = OnnxSamBackend(str(folder), device="cpu")
        assert "mobile_sam" in backend.describe().lower().replace("mobilesam", "mobile_sam")
        backend.encode(FRAME)
        embedding = backend.embedding["image_embeddings"]
        assert np.abs(embedding - expected_embedding).max() <= tolerance * np.abs(expected_embedding).max()
        common = [on_common_cells(a, b) for a, b in zip(expected, backend.decode(BOXES, regions))]
        agreements = [((a > 0) == (b > 0)).mean() for a, b in common]
        assert len(agreements) == len(BOXES) and min(agreements) >= least_agreement, (quantize, agreements)
        backend.close()

"""SAM 2 / 2.1 as a backend, against the sam2 package's own ``SAM2ImagePredictor``.

The model: SAM 2.1 hiera_t built by the sam2 package from its official config with random weights (torch seed 0),
saved as the official files are (``{"model": state_dict}``). The reference predictor runs a model the package
builds from that file itself (``build_sam2(config, ckpt_path=file)``). Measured here: building the model 3-5 s,
encoding a 1024 x 1024 frame 4-5 CPU seconds (10-18 s on 2 cores shared with other work); the file encodes four
frames (two by the backend, two by the predictor) and builds the model five times: about 50 CPU seconds.
"""
import gc
import sys
import weakref

import numpy as np
import pytest
import torch

import tools_data as td
from samrs.samrs_qgis.backends import FAMILY_CLASSES, family_class, identify_model
from samrs.samrs_qgis.backends.model_files import identify, read_state
from samrs.samrs_qgis.backends.sam import sam_box_prompt, sam_mask_prompt, sam_point_prompt
from samrs.samrs_qgis.backends import sam2_backend
from samrs.samrs_qgis.backends.sam2_backend import WINDOW_TENSORS, Sam2Backend
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.logits import sample_region
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.prompts import build_prompts
from samrs.samrs_qgis.settings import SegmentOptions

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # the predictor's

CONFIG = sys.modules["conftest"].TINY_SAM2_CONFIG  # the model of tiny_sam2_checkpoint
WIDE = (600, 1024)  # a non-square frame: rows, cols
# frame-space pixel-corner boxes, and the regions their logits are sampled over (a margin around each)
BOXES = np.array([[200, 100, 400, 300], [10, 20, 80, 90], [500, 300, 900, 580], [700, 40, 1000, 200]], float)
REGIONS = BOXES + [-24, -24, 24, 24]


def build_sam2(**kwargs):
    from sam2.build_sam import build_sam2 as build

    return build(CONFIG, device="cpu", apply_postprocessing=False, **kwargs)


def frame(shape):
    """Noise with bright and dark blocks, uint8 RGB."""
    rng = np.random.default_rng(5)
    image = rng.normal(110, 12, (*shape, 3))
    image[100:300, 200:400] = 230
    image[300:560, 520:880] = (30, 60, 110)
    image[40:200, 700:1000] = (200, 190, 120)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sam2_file(tiny_sam2_checkpoint):
    return tiny_sam2_checkpoint


@pytest.fixture(scope="module")
def backend(sam2_file):
    backend = Sam2Backend(sam2_file, device="cpu", precision="fp32")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(sam2_file):
    """The sam2 package's predictor on the model it loads from the file itself, per frame shape."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_sam2(ckpt_path=sam2_file)
    made = {}

    def predictor(shape):
        if shape not in made:
            made[shape] = SAM2ImagePredictor(model)
            made[shape].set_image(frame(shape))
        return made[shape]

    return predictor


@pytest.fixture(scope="module")
def square(backend):
    """The backend's own encoding of the square frame: its embedding and its logits of BOXES right after."""
    backend.encode(frame((1024, 1024)))
    return backend.embedding, backend.decode(BOXES, REGIONS)


def predictor_embedding(predictor):
    features = predictor._features
    return dict(zip(WINDOW_TENSORS, [features["image_embed"]] + list(features["high_res_feats"])))


def native_masks(logits, shape, regions, scale=(1.0, 1.0)):
    """The engine's sampling of each box's logits over its region, at native pixels of ``scale`` frame pixels."""
    out = []
    for item, region in zip(logits, regions):
        x0, y0, x1, y1 = region
        c0, r0 = max(int(x0 / scale[0]), 0), max(int(y0 / scale[1]), 0)
        c1, r1 = min(int(np.ceil(x1 / scale[0])), shape[1]), min(int(np.ceil(y1 / scale[1])), shape[0])
        out.append(((c0, r0, c1, r1), sample_region(item, scale, (c0, r0, c1, r1))))
    return out


def assert_masks_agree(logits, reference_logits, regions, shape, scale=(1.0, 1.0), at_least=0.99):
    """Masks (logits > 0) agree on at least ``at_least`` of the pixels either calls object, per box."""
    for (c0, r0, c1, r1), mine in native_masks(logits, shape, regions, scale):
        theirs = reference_logits[r0:r1, c0:c1]
        union = (mine > 0) | (theirs > 0)
        assert union.any()
        assert ((mine > 0) == (theirs > 0))[union].mean() >= at_least


def test_a_sam2_file_is_run_by_the_sam2_backend(sam2_file, backend):
    assert FAMILY_CLASSES["sam2"] == (".sam2_backend", "Sam2Backend")
    assert identify_model(sam2_file).family == "sam2" and family_class("sam2") is Sam2Backend
    assert identify(sam2_file).describe() == "SAM 2.1 hiera_t"
    assert backend.describe().startswith(f"SAM 2.1 hiera_t ({sam2_file}) on cpu") and backend.describe().endswith(
        "fp32")
    assert ":sam2:2.1-hiera_t:fp32:cpu" in backend.identity()
    state = read_state(sam2_file)
    loaded = backend.model.state_dict()
    assert loaded and all(torch.equal(tensor, state[name]) for name, tensor in loaded.items())  # strictly loaded
    with pytest.raises(InputError, match="Model type mismatch.*SAM 2.1 hiera_t"):
        Sam2Backend(sam2_file, model_type="vit_b", device="cpu")


def test_a_window_is_encoded_as_the_predictor_encodes_it(backend, reference, square):
    embedding, _ = square
    expected = predictor_embedding(reference((1024, 1024)))
    assert {k: v.shape for k, v in embedding.items()} == {
        "image_embed": (1, 256, 64, 64), "high_res_feats_0": (1, 32, 256, 256), "high_res_feats_1": (1, 64, 128, 128)}
    for name, tensor in expected.items():
        assert embedding[name].dtype == np.float32
        np.testing.assert_allclose(embedding[name], tensor.numpy(), atol=1e-5, rtol=0)
    # a non-square frame is stretched to the square input, as SAM2Transforms does
    wide = frame(WIDE)
    theirs = reference(WIDE)._transforms(wide)[None]
    np.testing.assert_allclose(backend.input_tensor(wide).numpy(), theirs.numpy(), atol=1e-5, rtol=0)


def test_an_embedding_loaded_back_decodes_as_the_encoded_window(backend, square):
    embedding, logits = square
    backend.load_embedding({k: v.copy() for k, v in embedding.items()}, (1024, 1024))
    again = backend.embedding
    assert all(np.array_equal(again[k], embedding[k]) for k in WINDOW_TENSORS)
    for a, b in zip(backend.decode(BOXES, REGIONS), logits):
        assert np.array_equal(a.grid, b.grid) and (a.origin_x, a.origin_y, a.cell, a.score) == (
            b.origin_x, b.origin_y, b.cell, b.score)


@pytest.mark.parametrize("multimask", [False, True])
def test_box_logits_and_masks_are_the_predictors(backend, reference, square, multimask):
    predictor = reference((1024, 1024))
    backend.load_embedding(square[0], (1024, 1024))
    backend.multimask = multimask
    try:
        logits = backend.decode(BOXES, REGIONS)
        whole = backend.decode(BOXES[:1])  # no region: the whole window
    finally:
        backend.multimask = False
    masks, scores, low = predictor.predict(box=sam_box_prompt(BOXES), multimask_output=multimask, return_logits=True)
    best = scores.argmax(axis=1) if multimask else np.zeros(len(BOXES), int)
    for i, item in enumerate(logits):
        assert item.cell == 4.0 and item.origin_x % 16 == 0 and item.origin_y % 16 == 0
        assert item.score == pytest.approx(float(scores[i, best[i]]), abs=1e-5)
        r0, c0 = int(item.origin_y) // 4, int(item.origin_x) // 4
        rows, cols = item.grid.shape
        np.testing.assert_allclose(np.clip(item.grid, -32, 32), low[i, best[i], r0:r0 + rows, c0:c0 + cols],
                                   atol=1e-4, rtol=0)
        assert_masks_agree([item], masks[i, best[i]], REGIONS[i:i + 1], (1024, 1024))
    assert whole[0].grid.shape == (256, 256)
    np.testing.assert_allclose(np.clip(whole[0].grid, -32, 32), low[0, best[0]], atol=1e-4, rtol=0)


def test_a_non_square_frame_places_the_masks_on_the_predictors_pixels(backend, reference):
    predictor = reference(WIDE)
    backend.load_embedding({k: v.numpy() for k, v in predictor_embedding(predictor).items()}, WIDE)
    boxes, regions = BOXES.copy(), REGIONS.copy()
    boxes[:, 1::2] = np.minimum(boxes[:, 1::2], WIDE[0])
    regions[:, 1::2] = np.clip(regions[:, 1::2], 0, WIDE[0])
    logits = backend.decode(boxes, regions)
    masks, scores, _ = predictor.predict(box=sam_box_prompt(boxes), multimask_output=False, return_logits=True)
    for i, item in enumerate(logits):
        assert item.cell == 1.0 and item.score == pytest.approx(float(scores[i, 0]), abs=1e-5)
        (c0, r0, c1, r1), mine = native_masks([item], WIDE, regions[i:i + 1])[0]
        np.testing.assert_allclose(mine, masks[i, 0, r0:r1, c0:c1], atol=1e-3, rtol=0)  # the same pixels
    # a native window of half the frame's resolution (2 frame pixels per native pixel): the predictor's logits
    # brought to that size directly
    half = (WIDE[0] // 2, WIDE[1] // 2)
    theirs = torch.nn.functional.interpolate(torch.as_tensor(masks), half, mode="bilinear", align_corners=False)
    for i, item in enumerate(logits):
        assert_masks_agree([item], theirs[i, 0].numpy(), regions[i:i + 1], half, scale=(2.0, 2.0))


@pytest.mark.parametrize("mode", ["point", "box+point", "rbox-mask"])
def test_prompt_modes_give_the_predictors_masks(backend, reference, square, mode):
    predictor = reference((1024, 1024))
    backend.load_embedding(square[0], (1024, 1024))
    rings = [np.array([[x0 + 30, y0], [x1, y0 + 30], [x1 - 30, y1], [x0, y1 - 30], [x0 + 30, y0]], float)
             for x0, y0, x1, y1 in BOXES]
    prompts = build_prompts(mode, BOXES, rings)
    logits = backend.decode(BOXES, REGIONS, prompts)
    kwargs = {}
    if prompts.boxes is not None:
        kwargs["box"] = sam_box_prompt(prompts.boxes)
    if prompts.points is not None:
        kwargs.update(point_coords=sam_point_prompt(prompts.points), point_labels=np.ones((len(BOXES), 1)))
    if prompts.polygons is None:
        masks, scores, _ = predictor.predict(multimask_output=False, return_logits=True, **kwargs)
    else:  # the predictor takes one mask prompt at a time
        dense = sam_mask_prompt(rings, 256, 4.0)
        found = [predictor.predict(mask_input=dense[i], multimask_output=False, return_logits=True)
                 for i in range(len(BOXES))]
        masks, scores = np.stack([f[0] for f in found]), np.stack([f[1] for f in found])
    for i, item in enumerate(logits):
        assert item.score == pytest.approx(float(scores[i, 0]), abs=1e-5)
        assert_masks_agree([item], masks[i, 0], REGIONS[i:i + 1], (1024, 1024))


def test_bf16_decodes_as_fp32_does(sam2_file, square):
    """The bf16 decoder (a bf16 copy of the mask decoder, see WindowMaskDecoder) on the fp32 embedding."""
    bf16 = Sam2Backend(sam2_file, device="cpu", precision="bf16")
    try:
        assert bf16.describe().endswith("bf16") and ":bf16:" in bf16.identity()
        bf16.load_embedding(square[0], (1024, 1024))
        logits = bf16.decode(BOXES, REGIONS)
    finally:
        bf16.close()
    for i, (mine, theirs) in enumerate(zip(logits, square[1])):
        assert (mine.origin_x, mine.origin_y, mine.grid.shape) == (theirs.origin_x, theirs.origin_y, theirs.grid.shape)
        assert mine.score == pytest.approx(theirs.score, abs=0.02)
        assert ((mine.grid > 0) == (theirs.grid > 0)).mean() >= 0.97


def test_the_model_is_built_when_hydra_was_set_up_for_something_else(tmp_path):
    """sam2 finds its configs through hydra, which another library in the process may have set up first."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from sam2.build_sam import build_sam2 as package_build
    from sam2.modeling.sam2_base import SAM2Base

    (tmp_path / "other.yaml").write_text("answer: 42\n")
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.2"):
            model = sam2_backend._build(CONFIG, package_build)
            assert compose("other").answer == 42  # the other set-up is given back
    finally:
        restore_gh_from_backup(backup)
    assert isinstance(model, SAM2Base) and not model.training


def test_segment_boxes_runs_a_sam2_file_end_to_end(tmp_path, sam2_file):
    raster = td.scene_raster(tmp_path / "scene.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    options = SegmentOptions(checkpoint=sam2_file, device="cpu", precision="fp32", cache_dir=str(tmp_path / "cache"))
    first = segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "a.gpkg")), options)
    assert first.backend.startswith("SAM 2.1 hiera_t") and first.windows == 1
    assert first.status_counts.get("ok", 0) + first.status_counts.get("empty", 0) == len(td.DISCS)
    second = segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "b.gpkg")), options)
    assert second.status_counts == first.status_counts  # decoded from the cached embedding
    assert second.timings.get("cached_windows") == 1 and not first.timings.get("cached_windows")


def test_close_frees_the_model(backend):
    gc.collect()
    gc.disable()
    try:
        model = weakref.ref(backend.model)
        description = backend.describe()
        backend.close()
        assert model() is None  # freed by reference counting alone: no reference cycles
        assert backend.describe() == description
    finally:
        gc.enable()


def test_int8_is_refused_for_sam2_rather_than_run_as_fp32(tmp_path):
    with pytest.raises(InputError, match="int8 applies to SAM, SAM-HQ and MobileSAM encoders, not to SAM 2"):
        Sam2Backend(str(tmp_path / "sam2.1_hiera_tiny.pt"), device="cpu", precision="int8")

"""SAM checkpoints go through the same loader as official ones: type detection, clear errors, a full run."""
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from segment_anything import sam_model_registry

from samrs.samrs_qgis.backends.sam import COMPILE_MIN_BOXES, COMPILE_MIN_BOXES_WARM, SamBackend, sam_box_prompt
from samrs.samrs_qgis.backends.sam_checkpoint import encoder_config_from_state, load_sam
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions
from support import pixel_box, read_features, synthetic_scene, write_boxes, write_raster


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_official_architectures_are_recognised_from_tensor_shapes(model_type):
    with torch.device("meta"):  # shapes only, no memory
        state = sam_model_registry[model_type]().state_dict()
    assert encoder_config_from_state(state).model_type == model_type


def test_tiny_checkpoint_loads_through_the_real_loader(tiny_sam_checkpoint):
    model, detected = load_sam(tiny_sam_checkpoint)
    assert detected.startswith("custom(dim=32,depth=2,heads=2")
    reference = torch.load(tiny_sam_checkpoint, weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_tiny_sam_decodes_boxes_into_low_resolution_logits(tiny_sam_checkpoint):
    backend = SamBackend(tiny_sam_checkpoint, device="cpu")
    frame = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    backend.encode(frame)
    out = backend.decode(np.array([[10, 20, 110, 220], [500, 500, 600, 560]], dtype=float))
    assert len(out) == 2
    assert out[0].grid.shape == (256, 256) and out[0].cell == 4.0
    assert all(isinstance(o.score, float) for o in out)


def test_box_prompt_uses_sams_inclusive_pixel_convention():
    # A box covering pixels [10, 20) x [5, 15) is given to SAM as its first and last pixel: (10, 5, 19, 14).
    assert sam_box_prompt(np.array([[10, 5, 20, 15.0]])).tolist() == [[10, 5, 19, 14]]


def test_model_type_mismatch_is_reported(tiny_sam_checkpoint):
    with pytest.raises(InputError, match="Model type mismatch.*not vit_h"):
        load_sam(tiny_sam_checkpoint, "vit_h")


def test_corrupt_and_foreign_files_are_reported(tmp_path):
    corrupt = tmp_path / "sam_vit_b_01ec64.pth"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(InputError, match="cannot be read.*corrupt"):
        load_sam(str(corrupt))
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(InputError, match="not a SAM checkpoint"):
        load_sam(str(foreign))
    with pytest.raises(InputError, match="does not exist"):
        load_sam(str(tmp_path / "missing.pth"))


def test_full_run_with_tiny_sam_writes_all_outputs(tmp_path, tiny_sam_checkpoint):
    image, objects = synthetic_scene(384, seed=3)
    transform = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
    raster = write_raster(tmp_path / "scene.tif", image, transform)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(transform, *o[2]) for o in objects],
                        properties=[{"cls": o[0], "n": i} for i, o in enumerate(objects)])
    out = OutputPaths(str(tmp_path / "out" / "inst.tif"), str(tmp_path / "out" / "sem.tif"),
                      str(tmp_path / "out" / "masks.gpkg"))
    summary = segment_boxes(raster, read_box_file(boxes), out,
                            SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu", class_field="cls"))
    assert summary.boxes == len(objects) and summary.windows == 1
    assert "custom" in summary.backend
    for path in (out.instances, out.semantic):
        with rasterio.open(path) as ds, rasterio.open(raster) as src:
            assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
    features = read_features(out.polygons)
    assert len(features) == len(objects)
    assert sorted(f["n"] for f in features) == list(range(len(objects)))
    for f in features:
        assert f["class_name"] == objects[f["n"]][0]
        assert f["status"] in ("ok", "empty")
        assert f["score"] is not None
    assert sorted({f["class_id"] for f in features}) == [0, 1, 2]  # building, pond, tank by sorted name


def test_multimask_keeps_the_candidate_with_the_best_predicted_iou(tiny_sam_checkpoint):
    frame = np.random.default_rng(2).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    boxes = np.array([[100, 100, 300, 260], [600, 650, 700, 800]], dtype=float)
    single = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    best = SamBackend(tiny_sam_checkpoint, device="cpu", multimask=True, precision="fp32")
    single.encode(frame)
    best.encode(frame)
    model = best.model
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=torch.as_tensor(sam_box_prompt(boxes)), masks=None)
        low_res, iou = model.mask_decoder(image_embeddings=best.predictor.features,
                                          image_pe=model.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=True)
    for i, out in enumerate(best.decode(boxes)):
        k = int(iou[i].argmax())
        assert out.score == pytest.approx(float(iou[i].max()))
        assert np.allclose(out.grid, low_res[i, k].numpy(), atol=1e-5)
    assert [o.grid.shape for o in single.decode(boxes)] == [(256, 256)] * 2


def test_compiled_decoder_gives_the_same_masks_as_the_eager_one(tiny_sam_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiled"))  # a compile cache of its own
    frame = np.random.default_rng(4).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    boxes = np.array([[100, 100, 300, 260], [600, 650, 700, 800], [10, 900, 200, 1010]], dtype=float)
    eager = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    compiled = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    compiled.compile_decoder()
    eager.encode(frame)
    compiled.encode(frame)
    assert compiled.compile_threshold() == COMPILE_MIN_BOXES  # nothing compiled in this cache yet
    a, b = eager.decode(boxes), compiled.decode(boxes)  # 3 boxes: padded to the compiled batch of 4
    assert compiled.compiled and len(b) == 3
    # once compiled here, later runs compile from the cache: compiling pays off from fewer boxes
    assert eager.compile_threshold() == COMPILE_MIN_BOXES_WARM < COMPILE_MIN_BOXES
    for x, y in zip(a, b):
        assert ((x.grid > 0) == (y.grid > 0)).mean() > 0.999
        assert y.score == pytest.approx(x.score, abs=1e-3)


def test_a_model_is_built_without_random_init_and_loads_every_weight(tiny_sam_checkpoint):
    """The build skips torch.nn.init's fills (every weight is loaded after); the model equals the file, its
    unsaved buffers (pixel mean and std) are as built, and init works again afterwards and in other threads."""
    import threading

    from samrs.samrs_qgis.backends.sam_checkpoint import load_sam, skipping_random_init

    model, _ = load_sam(tiny_sam_checkpoint)
    state = torch.load(tiny_sam_checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert model.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])
    seen = {}
    with skipping_random_init(torch):
        skipped = torch.nn.init.constant_(torch.zeros(3), 7.0)
        other = threading.Thread(target=lambda: seen.setdefault("other", torch.nn.init.constant_(torch.zeros(3), 7.0)))
        other.start()
        other.join()
    assert skipped.tolist() == [0.0, 0.0, 0.0]  # skipped in the building thread
    assert seen["other"].tolist() == [7.0, 7.0, 7.0]  # not in another thread
    assert torch.nn.init.constant_(torch.zeros(3), 7.0).tolist() == [7.0, 7.0, 7.0]  # and back afterwards

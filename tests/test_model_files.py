"""A model file's family and size are told from the file: random-weight models built with each family's own
package, saved as the official files are; ONNX graphs with the official input and output names."""
import warnings

import numpy as np
import pytest
import torch

from samrs.samrs_qgis.backends import model_files
from samrs.samrs_qgis.backends.model_files import (MOBILE_SAM_TINY_VIT, check_onnx_pair, identify, identify_state)
from samrs.samrs_qgis.backends.sam_checkpoint import load_sam
from samrs.samrs_qgis.errors import InputError

with warnings.catch_warnings():  # its TinyViT imports timm's deprecated paths and re-registers timm's models
    warnings.simplefilter("ignore")
    import segment_anything_hq
    from segment_anything_hq.modeling import TinyViT

SAM2_CONFIGS = {"2.0": {"hiera_t": "configs/sam2/sam2_hiera_t.yaml", "hiera_s": "configs/sam2/sam2_hiera_s.yaml",
                        "hiera_b+": "configs/sam2/sam2_hiera_b+.yaml", "hiera_l": "configs/sam2/sam2_hiera_l.yaml"},
                "2.1": {"hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml", "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
                        "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
                        "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml"}}


def build_sam2(config):
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    return build_sam2(config, ckpt_path=None, device="cpu", apply_postprocessing=False)


def mobile_sam(tiny_vit_kwargs):
    """MobileSAM's architecture: a TinyViT image encoder (segment_anything_hq's copy of MobileSAM's) with
    segment-anything's own prompt encoder and mask decoder, as MobileSAM's setup_model builds it."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    return Sam(image_encoder=TinyViT(img_size=1024, in_chans=3, num_classes=1000, **tiny_vit_kwargs),
               prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                            mask_in_chans=16),
               mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                   depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
                   iou_head_hidden_dim=256),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


OFFICIAL_TINY_VIT = dict(embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                         window_sizes=[7, 7, 14, 7])


# -- PyTorch checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["vit_b", "vit_l", "vit_h"])
def test_sam_and_sam_hq_vit_sizes_are_told_apart(size):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only
        sam = identify_state(sam_model_registry[size]().state_dict())
        hq = identify_state(segment_anything_hq.sam_model_registry[size]().state_dict())
    assert (sam.family, sam.size, sam.encoder.model_type, sam.hq_parts) == ("sam", size, size, ())
    assert (hq.family, hq.size, hq.encoder.model_type) == ("sam_hq", size, size)
    assert hq.hq_parts == model_files.HQ_DECODER_PARTS
    assert sam.describe() == f"SAM {size}" and hq.describe() == f"SAM-HQ {size}"


def test_a_sam_file_is_identified_as_load_sam_sees_it(tiny_sam_checkpoint):
    found = identify(tiny_sam_checkpoint)
    assert found.family == "sam" and found.size.startswith("custom(dim=32,depth=2,heads=2")
    assert found.encoder.global_attn_indexes == (1,)
    assert load_sam(tiny_sam_checkpoint)[1] == found.size


def test_sam_hq_files_with_a_vit_and_with_the_light_tiny_vit(tmp_path):
    from segment_anything_hq.build_sam import _build_sam

    torch.manual_seed(0)
    small = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    torch.save(small.state_dict(), tmp_path / "sam_hq_small.pth")
    found = identify(str(tmp_path / "sam_hq_small.pth"))
    assert found.family == "sam_hq" and found.size == "custom(dim=32,depth=2,heads=2)" and "hf_token" in found.hq_parts
    with pytest.raises(InputError, match=r"holds a SAM-HQ custom.*segment-anything-hq.*model file of the sam backend"):
        load_sam(str(tmp_path / "sam_hq_small.pth"))

    light = segment_anything_hq.sam_model_registry["vit_tiny"]()  # sam_hq_vit_tiny.pth's architecture
    torch.save(light.state_dict(), tmp_path / "sam_hq_vit_tiny.pth")
    found = identify(str(tmp_path / "sam_hq_vit_tiny.pth"))
    assert (found.family, found.size, found.tiny_vit, found.encoder) == ("sam_hq", "tiny_vit", MOBILE_SAM_TINY_VIT, None)
    assert found.describe() == "SAM-HQ tiny_vit"


def test_mobile_sam_is_a_tiny_vit_with_sams_decoder(tmp_path):
    torch.save(mobile_sam(OFFICIAL_TINY_VIT).state_dict(), tmp_path / "mobile_sam.pt")
    found = identify(str(tmp_path / "mobile_sam.pt"))
    assert (found.family, found.size, found.hq_parts) == ("mobile_sam", "tiny_vit", ())
    assert found.describe() == "MobileSAM tiny_vit"
    with pytest.raises(InputError, match="MobileSAM tiny_vit.*model file of the sam backend"):
        load_sam(str(tmp_path / "mobile_sam.pt"))
    other = identify_state(mobile_sam(dict(embed_dims=[16, 32, 40, 80], depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                                           window_sizes=[7, 7, 14, 7])).state_dict())
    assert other.family == "mobile_sam" and other.size == "tiny_vit(dims=16,32,40,80,depths=1,1,2,1)"
    assert other.tiny_vit.num_heads == (2, 2, 4)


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_every_official_sam2_config_is_recognised_from_its_tensors(version):
    for size, config in SAM2_CONFIGS[version].items():
        found = identify_state(build_sam2(config).state_dict())
        assert (found.family, found.version, found.size, found.sam2_config) == ("sam2", version, size, config)
        assert found.describe() == f"SAM {version} {size}"


def test_sam2_files_are_read_as_the_official_ones_are_saved(tmp_path):
    torch.save({"model": build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml").state_dict()}, tmp_path / "sam2.1_t.pt")
    found = identify(str(tmp_path / "sam2.1_t.pt"))
    assert found.describe() == "SAM 2.1 hiera_t" and found.sam2_config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    with pytest.raises(InputError, match=r"holds a SAM 2.1 hiera_t model \(sam2\).*model file of the sam backend"):
        load_sam(str(tmp_path / "sam2.1_t.pt"))


def test_foreign_and_corrupt_files_name_the_file_and_the_families(tmp_path):
    import torchvision

    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    with pytest.raises(InputError) as error:
        identify(str(resnet))
    message = str(error.value)
    assert str(resnet) in message and "not a SAM checkpoint" in message
    for family in ("SAM:", "SAM-HQ:", "SAM 2:", "MobileSAM:", "SAM ONNX:", "SAM 2 ONNX:"):
        assert family in message
    assert "sam2.1_hiera_tiny.pt" in message and "mobile_sam.pt" in message and "samexporter" in message

    garbage = tmp_path / "model.pth"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(InputError, match=r"model.pth' cannot be read.*corrupt.*Recognised: SAM:"):
        identify(str(garbage))
    garbage_onnx = tmp_path / "model.onnx"
    garbage_onnx.write_bytes(np.random.default_rng(2).bytes(4096))
    with pytest.raises(InputError, match=r"model.onnx' cannot be read as an ONNX model.*corrupt"):
        identify(str(garbage_onnx))
    with pytest.raises(InputError, match="does not exist"):
        identify(str(tmp_path / "missing.pt"))


# -- ONNX -------------------------------------------------------------------------------------------
def onnx_graph(path, inputs, outputs, initializer=None):
    """A tiny valid ONNX model with these float inputs ({name: shape}) and outputs (names): each output is
    an Identity of the first input. ``initializer``: a weight also listed among the inputs (old exporters)."""
    import onnx
    from onnx import TensorProto, helper

    first = next(iter(inputs))
    value_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    weights = []
    if initializer:
        weights = [helper.make_tensor(initializer, TensorProto.FLOAT, [2], [1.0, 2.0])]
        value_inputs.append(helper.make_tensor_value_info(initializer, TensorProto.FLOAT, [2]))
    graph = helper.make_graph([helper.make_node("Identity", [first], [o]) for o in outputs], "g", value_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, inputs[first]) for o in outputs],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


SAM_DECODER_INPUTS = {"image_embeddings": [1, 256, 64, 64], "point_coords": [1, "num_points", 2],
                      "point_labels": [1, "num_points"], "mask_input": [1, 1, 256, 256], "has_mask_input": [1],
                      "orig_im_size": [2]}
SAM2_DECODER_INPUTS = {"image_embed": [1, 256, 64, 64], "high_res_feats_0": [1, 32, 256, 256],
                       "high_res_feats_1": [1, 64, 128, 128], "point_coords": ["num_labels", "num_points", 2],
                       "point_labels": ["num_labels", "num_points"], "mask_input": ["num_labels", 1, 256, 256],
                       "has_mask_input": ["num_labels"]}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {
        "sam_encoder": onnx_graph(d / "sam_vit_b.encoder.onnx", {"input_image": [1024, 1024, 3]}, ["image_embeddings"]),
        "sam_encoder_nchw": onnx_graph(d / "mobile_sam.encoder.onnx", {"input_image": [1, 3, 1024, 1024]},
                                       ["image_embeddings"]),
        "sam_decoder": onnx_graph(d / "sam_vit_b.decoder.onnx", SAM_DECODER_INPUTS,
                                  ["masks", "iou_predictions", "low_res_masks"], initializer="w"),
        "hq_encoder": onnx_graph(d / "sam_hq.encoder.onnx", {"input_image": [1024, 1024, 3]},
                                 ["image_embeddings", "interm_embeddings"]),
        "hq_decoder": onnx_graph(d / "sam_hq.decoder.onnx", {**SAM_DECODER_INPUTS,
                                                            "interm_embeddings": [1, 1, 64, 64, 768]},
                                 ["masks", "iou_predictions", "low_res_masks"]),
        "sam2_encoder": onnx_graph(d / "sam2.1_hiera_tiny.encoder", {"image": [1, 3, 1024, 1024]},  # no suffix
                                   ["high_res_feats_0", "high_res_feats_1", "image_embed"]),
        "sam2_decoder": onnx_graph(d / "sam2.1_hiera_tiny.decoder.onnx", SAM2_DECODER_INPUTS,
                                   ["masks", "iou_predictions"]),
        "other": onnx_graph(d / "classifier.onnx", {"data": [1, 3, 224, 224]}, ["logits"]),
    }


@pytest.mark.parametrize("reader", ["onnx", "onnxruntime"])
def test_onnx_encoders_and_decoders_are_recognised_by_their_names(onnx_files, reader, monkeypatch):
    if reader == "onnxruntime":
        monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # onnx not installed: onnxruntime reads them
    expected = {"sam_encoder": ("onnx_sam", "encoder", "SAM ONNX encoder"),
                "sam_encoder_nchw": ("onnx_sam", "encoder", "SAM ONNX encoder"),
                "sam_decoder": ("onnx_sam", "decoder", "SAM ONNX decoder"),
                "hq_encoder": ("onnx_sam_hq", "encoder", "SAM-HQ ONNX encoder"),
                "hq_decoder": ("onnx_sam_hq", "decoder", "SAM-HQ ONNX decoder"),
                "sam2_encoder": ("onnx_sam2", "encoder", "SAM 2 ONNX encoder"),
                "sam2_decoder": ("onnx_sam2", "decoder", "SAM 2 ONNX decoder")}
    found = {name: identify(onnx_files[name]) for name in expected}
    assert {name: (f.family, f.role, f.describe()) for name, f in found.items()} == expected
    assert [n for n, _ in found["sam_decoder"].inputs] == list(SAM_DECODER_INPUTS)  # the weight is no input
    assert dict(found["sam_decoder"].inputs)["point_coords"] == (1, "num_points", 2)
    assert found["sam_encoder"].in_graph_preprocessing is True
    assert found["sam_encoder_nchw"].in_graph_preprocessing is False
    assert found["sam2_decoder"].in_graph_preprocessing is None
    with pytest.raises(InputError, match=r"classifier.onnx' is an ONNX model but not a SAM encoder or decoder.*"
                                         r"inputs data; outputs logits.*Recognised"):
        identify(onnx_files["other"])


def test_onnx_pairs_are_checked(onnx_files):
    files = {name: identify(path) for name, path in onnx_files.items() if name != "other"}
    assert check_onnx_pair(files["sam_encoder"], files["sam_decoder"]) == "onnx_sam"
    assert check_onnx_pair(files["sam2_encoder"], files["sam2_decoder"]) == "onnx_sam2"
    assert check_onnx_pair(files["hq_encoder"], files["hq_decoder"]) == "onnx_sam_hq"
    with pytest.raises(InputError, match=r"different models: '.*sam_vit_b.encoder.onnx' is a SAM ONNX encoder, "
                                         r"'.*sam2.1_hiera_tiny.decoder.onnx' a SAM 2 ONNX decoder"):
        check_onnx_pair(files["sam_encoder"], files["sam2_decoder"])
    with pytest.raises(InputError, match=r"sam_vit_b.decoder.onnx' was given as the ONNX encoder but is SAM ONNX decoder"):
        check_onnx_pair(files["sam_decoder"], files["sam_encoder"])


def test_load_sam_names_an_onnx_file_and_what_it_is(onnx_files):
    with pytest.raises(InputError, match=r"holds a SAM-HQ ONNX encoder model \(onnxruntime\): recognised, but not "
                                         r"supported yet\. This version runs SAM, .*SAM 2 ONNX model files"):
        load_sam(onnx_files["hq_encoder"])
    with pytest.raises(InputError, match=r"holds a SAM 2 ONNX encoder model \(onnxruntime\), which this loader does "
                                         r"not load; give it as the model file of the sam backend"):
        load_sam(onnx_files["sam2_encoder"])

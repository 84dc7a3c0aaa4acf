"""Export a SAM checkpoint to an ONNX encoder and decoder, run later by ONNX Runtime without torch.

``export_onnx(checkpoint, out_dir)`` writes ``<name>_encoder.onnx`` and ``<name>_decoder.onnx`` with the input and
output names the ONNX SAM pairs published by samexporter and AnyLabeling use (so :mod:`.backends.model_files`
recognises them and other tools can run them):

- encoder: ``input_image`` float32 (1, 3, 1024, 1024), the frame resized (longest side 1024), normalised with SAM's
  pixel mean and std and zero-padded to 1024x1024 -> ``image_embeddings`` (1, 256, 64, 64);
- decoder: ``image_embeddings``, ``point_coords`` (B, N, 2) in the 1024 input frame, ``point_labels`` (B, N)
  (1 foreground, 0 background, 2 and 3 a box's top-left and bottom-right corners, -1 padding),
  ``mask_input`` (B, 1, 256, 256), ``has_mask_input`` (1,), ``orig_im_size`` (2,) -> ``masks`` (B, 4, H, W)
  logits at ``orig_im_size``, ``iou_predictions`` (B, 4), ``low_res_masks`` (B, 4, 256, 256) logits over the
  padded 1024 frame. Mask 0 is SAM's single-mask output, 1-3 its multimask candidates.

Unlike segment-anything's own export script, the decoder takes a batch of B prompts at once (one run for many
boxes, the image embedding shared) and its masks are cropped to the unpadded frame for any aspect ratio.

``quantize="int8"`` quantizes the encoder's weights to 8 bits (ONNX Runtime's dynamic quantization, QUInt8):
measured on an AVX2 CPU about 1.4x faster than fp32, the embedding within 2.6 % (max relative error). The pair is
then named ``<name>_int8_encoder.onnx`` / ``<name>_int8_decoder.onnx`` (the decoder stays fp32).

Families: SAM (vit_b, vit_l, vit_h or a custom size) and MobileSAM. Needs torch and segment-anything (MobileSAM:
segment-anything-hq's TinyViT), onnx and onnxruntime: exporting happens once, where torch is installed. SAM 2 / 2.1
checkpoints are exported by :mod:`.onnx_export_sam2` (samexporter's SAM 2 names).
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Optional

from .errors import InputError, missing_packages

OPSET = 17
QUANTIZATIONS = (None, "int8")
EXPORTABLE = ("sam", "mobile_sam", "sam2")
# Models above this size are written with their weights in one external file beside the graph (<name>.onnx.data):
# a protobuf file holds at most 2 GB (SAM vit_h's encoder is 2.5 GB).
EXTERNAL_DATA_BYTES = 1_800_000_000
METADATA_PREFIX = "samrs_"  # the graph's metadata_props written here: source, family, size, quantization


@dataclass(frozen=True)
class ExportedPair:
    encoder: str
    decoder: str
    family: str  # the source checkpoint's family (sam, mobile_sam)
    size: str  # vit_b, ..., tiny_vit
    quantization: Optional[str]

    def describe(self) -> str:
        precision = "int8 encoder" if self.quantization == "int8" else "fp32"
        return f"{self.family} {self.size} ({precision}): encoder {self.encoder}, decoder {self.decoder}"


def _imports():
    import importlib

    try:
        for name in ("onnx", "segment_anything"):  # used below; checked here, before any work
            importlib.import_module(name)
        import torch
    except ImportError as exc:
        raise missing_packages("Exporting to ONNX needs torch, segment-anything and onnx", exc, "full") from exc
    return torch


def _build_mobile_sam(model_file, state):
    """MobileSAM: segment-anything's prompt encoder and mask decoder with the TinyViT image encoder (from
    segment-anything-hq), sized as the checkpoint says."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    try:
        from segment_anything_hq.modeling.tiny_vit_sam import TinyViT
    except ImportError as exc:
        raise missing_packages("Exporting MobileSAM needs segment-anything-hq (its TinyViT)", exc, "full") from exc
    tiny = model_file.tiny_vit
    if len(tiny.depths) != 4:
        raise InputError(f"'{model_file.path}' holds a TinyViT of {len(tiny.depths)} stages; MobileSAM's has 4.")
    encoder = TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=list(tiny.embed_dims),
                      depths=list(tiny.depths), num_heads=[1, *tiny.num_heads], window_sizes=[7, 7, 14, 7],
                      mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                      mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    model = Sam(image_encoder=encoder,
                prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                             mask_in_chans=16),
                mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                         transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                       num_heads=8),
                                         transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
                pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    missing, _ = model.load_state_dict(state, strict=False)  # the TinyViT's classification head may be absent
    missing = [k for k in missing if not k.startswith(("image_encoder.head.", "image_encoder.norm_head."))]
    if missing:
        raise InputError(f"MobileSAM checkpoint '{model_file.path}' lacks {len(missing)} weights of the model "
                         f"(e.g. {missing[0]}).")
    return model.eval()


def load_model(checkpoint: str):
    """(model, ModelFile) of a checkpoint of an exportable family, on the CPU in eval mode."""
    from .backends.model_files import identify, read_state, unsupported_message

    found = identify(checkpoint)
    if found.role != "model":
        raise InputError(f"'{checkpoint}' is already an ONNX {found.role} ({found.describe()}); give the PyTorch "
                         "checkpoint it was exported from.")
    if found.family not in EXPORTABLE:
        raise InputError(f"'{checkpoint}' holds a {found.describe()} model; exporting to ONNX is done for SAM, "
                         f"MobileSAM and SAM 2 checkpoints. {unsupported_message(found).split(': ', 1)[0]}.")
    if found.family == "sam":
        from .backends.sam_checkpoint import load_sam

        model, _ = load_sam(checkpoint)
        return model, found
    if found.family == "sam2":
        from .backends.sam2_backend import load_sam2

        return load_sam2(checkpoint)
    return _build_mobile_sam(found, read_state(checkpoint)), found


def _encoder_module(torch, model):
    from .backends import lean_attention

    # Traced with the lean attention, the graph computes each global-attention block a band of query rows at a
    # time as the torch backend does: the same embedding (max difference 0.0 measured on vit_b), and ONNX Runtime
    # never holds a block's 12 x 4096 x 4096 scores (vit_b peak RSS 2.0 GB instead of 4.0 GB per encode).
    lean_attention.apply(model)

    class Encoder(torch.nn.Module):
        """The image encoder alone: a normalised, padded (1, 3, 1024, 1024) image -> its embedding. (TinyViT
        of segment-anything-hq also returns intermediate embeddings: only the first output is kept.)"""

        def __init__(self):
            super().__init__()
            self.image_encoder = model.image_encoder

        def forward(self, input_image):
            out = self.image_encoder(input_image)
            return out[0] if isinstance(out, (tuple, list)) else out

    return Encoder().eval()


def _decoder_module(torch, model):
    from segment_anything.utils.onnx import SamOnnxModel

    class Decoder(SamOnnxModel):
        """segment-anything's ONNX decoder model returning all four masks, whose upscaled masks are cropped to
        the unpadded frame computed from ``orig_im_size`` in the graph (segment-anything's crops to the traced
        example's shape, wrong for any other aspect ratio)."""

        def mask_postprocessing(self, masks, orig_im_size):
            masks = torch.nn.functional.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear",
                                                    align_corners=False)
            size = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks[..., :size[0], :size[1]]
            full = orig_im_size.to(torch.int64)
            return torch.nn.functional.interpolate(masks, size=(full[0], full[1]), mode="bilinear",
                                                   align_corners=False)

    return Decoder(model, return_single_mask=False).eval()


def _unshare_weights(model) -> None:
    """Give each weight reached through an ``Identity`` of another (the exporter's way of storing equal tensors
    once) its own copy, in place. ONNX Runtime's quantizer takes only stored tensors as weights (a TinyViT block
    whose batch-norm scale starts at zero has the same folded weights as its neighbour)."""
    import onnx

    stored = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in stored]:
        copy = onnx.TensorProto()
        copy.CopyFrom(stored[node.input[0]])
        copy.name = node.output[0]
        model.graph.initializer.append(copy)
        model.graph.node.remove(node)


def _save_graph(torch, module, args, path: str, input_names, output_names, dynamic_axes, metadata) -> None:
    """Trace ``module`` to ONNX at ``path`` (TorchScript exporter, opset 17), metadata added; weights beyond
    EXTERNAL_DATA_BYTES go to one ``<name>.data`` file beside it."""
    import onnx

    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as work:
        traced = os.path.join(work, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph: known, harmless
            torch.onnx.export(module, args, traced, input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        model = onnx.load(traced)  # with any external data the exporter wrote
        _unshare_weights(model)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = METADATA_PREFIX + key, str(value)
        large = model.ByteSize() > EXTERNAL_DATA_BYTES
        data = os.path.basename(path) + ".data"
        if os.path.exists(path + ".data"):
            os.remove(path + ".data")
        onnx.save_model(model, path, save_as_external_data=large, all_tensors_to_one_file=True,
                        location=data if large else None)


def quantize_encoder(fp32_path: str, out_path: str) -> None:
    """ONNX Runtime's dynamic quantization of an encoder's weights to QUInt8 (activations quantized at run time)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise missing_packages("Quantizing needs onnxruntime", exc, "full") from exc
    import logging

    large = os.path.exists(fp32_path + ".data")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process and its notes on tensors it leaves in float
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(fp32_path, out_path, weight_type=QuantType.QUInt8, use_external_data_format=large)
    finally:
        root.setLevel(level)


def write_encoder(torch, module, example, path: str, inputs, outputs, quantize: Optional[str], metadata,
                  say) -> None:
    """An image encoder's graph at ``path``: ``module`` traced in fp32 on ``example`` with ``inputs`` and ``outputs``
    named, metadata ``role`` encoder added to ``metadata``; with ``quantize`` quantized from a hidden fp32 file beside
    it, which goes (also when quantizing fails). ``say`` tells of the quantizing."""
    fp32 = path if not quantize else os.path.join(os.path.dirname(path), f".fp32_{os.path.basename(path)}")
    try:
        _save_graph(torch, module, example, fp32, inputs, outputs, None,
                    dict(metadata, quantization="fp32", role="encoder"))
        if quantize:
            say("Quantizing the image encoder's weights to int8 ...")
            quantize_encoder(fp32, path)
            _add_metadata(path, dict(metadata, role="encoder"))
    finally:
        if quantize:
            for leftover in (fp32, fp32 + ".data"):
                if os.path.exists(leftover):
                    os.remove(leftover)


def pair_paths(out_dir: str, stem: str, quantize: Optional[str]):
    suffix = f"_{quantize}" if quantize else ""
    return (os.path.join(out_dir, f"{stem}{suffix}_encoder.onnx"), os.path.join(out_dir, f"{stem}{suffix}_decoder.onnx"))


def export_onnx(checkpoint: str, out_dir: str, quantize: Optional[str] = None, progress=None) -> ExportedPair:
    """Write the encoder and decoder .onnx of ``checkpoint`` into ``out_dir`` (made if needed); see the module
    docstring. Returns their paths. An InputError for a checkpoint of another family or an unknown ``quantize``."""
    if quantize not in QUANTIZATIONS:
        raise InputError(f"Unknown quantization '{quantize}'. Choose int8, or none for fp32.")
    torch = _imports()
    model, found = load_model(checkpoint)
    if found.family == "sam2":  # SAM 2's graphs differ from SAM's: their own module
        from .onnx_export_sam2 import export_sam2

        return export_sam2(torch, model, found, checkpoint, out_dir, quantize, progress)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    encoder_path, decoder_path = pair_paths(out_dir, stem, quantize)
    metadata = dict(source=os.path.basename(checkpoint), family=found.family, size=found.size,
                    quantization=quantize or "fp32")
    say = progress.info if progress is not None else (lambda message: None)
    size = model.image_encoder.img_size
    with torch.no_grad():
        say(f"Exporting the image encoder of {found.describe()} ...")
        write_encoder(torch, _encoder_module(torch, model), (torch.zeros(1, 3, size, size),), encoder_path,
                      ["input_image"], ["image_embeddings"], quantize, metadata, say)
        say("Exporting the prompt encoder and mask decoder ...")
        grid = model.prompt_encoder.image_embedding_size
        embed = model.prompt_encoder.embed_dim
        mask_size = model.prompt_encoder.mask_input_size
        example = (torch.randn(1, embed, *grid), torch.randint(0, size, (2, 2, 2)).float(),
                   torch.tensor([[2.0, 3.0], [2.0, 3.0]]), torch.zeros(2, 1, *mask_size), torch.zeros(1),
                   torch.tensor([float(size), float(size)]))
        _save_graph(torch, _decoder_module(torch, model), example, decoder_path,
                    ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"],
                    ["masks", "iou_predictions", "low_res_masks"],
                    {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
                     "mask_input": {0: "prompts"}, "masks": {0: "prompts", 2: "height", 3: "width"},
                     "iou_predictions": {0: "prompts"}, "low_res_masks": {0: "prompts"}},
                    dict(metadata, quantization="fp32", role="decoder"))
    return ExportedPair(encoder_path, decoder_path, found.family, found.size, quantize)


def _add_metadata(path: str, metadata) -> None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, str(value)
    onnx.save_model(model, path)  # external data (if any) stays where the graph points to it


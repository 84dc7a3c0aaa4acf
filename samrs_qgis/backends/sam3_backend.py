"""SAM 3's interactive image model as a backend: the sam3 package's ViT encodes a window once, SAM 2's prompt encoder
and mask decoder (SAM 3's tracker's) take boxes in batches.

SAM 3's ``predict_inst`` (``SAM3InteractiveImagePredictor``) is the SAM 1 task on SAM 3's image encoder: the
detector's ViT trunk with its SAM 2-style neck (``sam2_convs``), then the tracker's prompt encoder and mask decoder,
which are SAM 2's (high-resolution features added while upscaling, an object-score token). Only those parts are built
and loaded from ``sam3.pt``: the text encoder, the detector's own neck, transformer and heads are not (nor is the BPE
vocabulary the text encoder would need), and the tracker's memory parts are dropped once the file is loaded.

A window is encoded as ``Sam3Processor.set_image`` does it: the uint8 frame resized to the square input of 1008 x
1008 (bilinear, antialiased, rounded back to uint8; *without* keeping the aspect ratio), to [0, 1], normalised with
mean and std 0.5; the trunk's 14-pixel patches give a 72 x 72 grid, the neck three levels of it: the image embedding
(1, 256, 72, 72) with the "no memory" embedding added, and the high-resolution features (1, 32, 288, 288) and
(1, 64, 144, 144) through the mask decoder's ``conv_s0`` / ``conv_s1`` (what ``predict_inst`` decodes against).

Decoding is :class:`.sam2_backend.Sam2Backend`'s (:class:`.sam2_backend.Sam2WindowDecoder`: box-independent work
once per window, logits over each box's region only). As there, the single mask is the single-mask token's: SAM 3's
predictor would fall back to the best multimask candidate when that mask looks unstable (a setting of its video
tracker, ``dynamic_multimask_via_stability``), which needs the whole 288 x 288 mask of every box.

Geometry: the logits are 288 x 288 cells of 3.5 input pixels (4 per embedding cell of 14). The shared decoder and
frame code measure the input in SAM's units, 16 per embedding cell (:data:`.sam_decoder.EMBED_CELL`); a SAM 3
window is therefore a :class:`Sam3Frame`: 72 x 16 = 1152 units across, prompts in the model's 1008 input pixels.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict

import numpy as np

from ..errors import BackendUnavailableError, InputError
from .devices import backend_notes, choose_device, device_type, resolve_precision
from .model_files import (SAM3_NECK, SAM3_TRACKER, SAM3_TRUNK, SAM3_VISION, Sam3TrunkConfig, check_model_type,
                          identify_state, is_onnx_file, read_state)
from .sam import CPU_BATCH, CUDA_BATCH
from .sam2_backend import WINDOW_TENSORS, Sam2Backend, Sam2WindowDecoder
from .sam2_frames import StretchedFrame
from .sam_checkpoint import checkpoint_fingerprint, skipping_random_init
from .sam_decoder import EMBED_CELL

PIXEL_MEAN = (0.5, 0.5, 0.5)  # Sam3Processor's normalisation of [0, 1] pixel values
PIXEL_STD = (0.5, 0.5, 0.5)
NECK_LEVELS = 3  # the neck's 4x, 2x and 1x levels; its 0.5x level is cut (SAM3VLBackbone's scalp=1)
# Parts of SAM 3's tracker that only video tracking uses (memories of earlier frames): dropped once loaded.
VIDEO_ONLY_PARTS = ("maskmem_backbone", "transformer")
# sam3.model_builder._create_vit_backbone's ViT arguments besides those a file's shapes tell (Sam3TrunkConfig)
TRUNK_FIXED = dict(img_size=1008, pretrain_img_size=336, patch_size=14, norm_layer="LayerNorm", drop_path_rate=0.1,
                   qkv_bias=True, use_abs_pos=True, tile_abs_pos=True, rel_pos_blocks=(), use_rope=True,
                   use_interp_rope=True, pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True,
                   ln_post=False, return_interm_layers=False, bias_patch_embed=False)


def import_sam3():
    """torch and sam3's model builder, or a :class:`BackendUnavailableError` saying how to install them."""
    try:
        import torch
        import sam3.model_builder as builder
    except ImportError as exc:
        raise BackendUnavailableError(f"SAM 3 models need torch and the sam3 package, which cannot be imported here "
                                      f"({exc}). Install them with `make setup` in the plugin folder.") from exc
    return torch, builder


@contextlib.contextmanager
def cuda_made_on_cpu(torch):
    """Tensors that sam3 0.1.4's constructors make with ``device="cuda"`` made on the CPU instead.

    The tracker's memory encoder precomputes its positional encoding with a hard-coded ``device="cuda"`` (which
    fails where there is no CUDA), and attention layers put their rotary tables on CUDA whenever it is available.
    The model is built on the CPU and moved to its device as a whole, so for the build only every factory call
    asking for CUDA is given the CPU."""
    from torch.overrides import TorchFunctionMode

    class CudaToCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return func(*args, **kwargs)

    with CudaToCpu():
        yield


def build_trunk(trunk: Sam3TrunkConfig):
    """SAM 3's ViT trunk of the configuration ``trunk`` (random weights; on torch's default device)."""
    from sam3.model.vitdet import ViT

    return ViT(**TRUNK_FIXED, embed_dim=trunk.embed_dim, depth=trunk.depth, num_heads=trunk.num_heads,
               mlp_ratio=trunk.mlp_ratio, global_att_blocks=trunk.global_blocks, window_size=trunk.window_size)


def build_encoder(trunk: Sam3TrunkConfig, builder):
    """SAM 3's image encoder for the interactive model: the ViT trunk and its SAM 2-style neck (random weights, on
    the CPU), as ``sam3.model_builder`` builds them, without the detector's own neck (``convs``) nor a positional
    encoding (the interactive model does not use the neck's)."""
    encoder = builder._create_vit_neck(None, build_trunk(trunk), enable_inst_interactivity=True)
    encoder.convs = None
    return encoder


def build_tracker(torch, builder):
    """SAM 3's tracker as its interactive image predictor has it (random weights, on the CPU)."""
    with cuda_made_on_cpu(torch):
        tracker = builder.build_tracker(apply_temporal_disambiguation=False)
    # Its constructor enters a CUDA bf16 autocast "for the entire model process" and never leaves it: left, it
    # would turn every later CUDA computation of this thread (other models' too) into bf16.
    tracker.bf16_context.__exit__(None, None, None)
    return tracker


def load_sam3(path: str, model_type: str = "auto"):
    """Load the interactive model of a SAM 3 file on the CPU: returns ``(encoder, tracker, model_file)``. An
    InputError for a missing, unreadable or other file and a ``model_type`` that does not match."""
    if not path or not os.path.isfile(path):
        raise InputError(f"SAM 3 model file '{path}' does not exist. Give the path of sam3.pt (from facebook/sam3 "
                         "on Hugging Face, gated: request access there, then download it).")
    torch, builder = import_sam3()
    if is_onnx_file(path):
        raise InputError(f"'{path}' is an ONNX file; the SAM 3 backend runs the sam3 package's .pt files.")
    state = read_state(path, torch)
    found = identify_state(state, path)
    if found.family != "sam3":
        raise InputError(f"'{path}' holds a {found.describe()} model, not a SAM 3 one.")
    check_model_type(found, model_type)
    with skipping_random_init(torch):  # every weight comes from the file: strictly loaded below
        encoder, tracker = build_encoder(found.sam3_trunk, builder), build_tracker(torch, builder)
    parts = ((encoder, SAM3_VISION, (SAM3_TRUNK, SAM3_NECK)), (tracker, SAM3_TRACKER, None))
    for module, prefix, kept in parts:  # as sam3.model_builder._load_checkpoint names them, but strictly
        wanted = {k[len(prefix):]: v for k, v in state.items()
                  if k.startswith(prefix) and (kept is None or k.startswith(kept))}
        try:
            module.load_state_dict(wanted, strict=True)
        except RuntimeError as exc:
            raise InputError(f"Model file '{path}' does not fit the sam3 package's {found.describe()} model "
                             f"({str(exc).splitlines()[0]}).") from exc
    del state, wanted  # unmaps the file
    encoder.sam2_convs = encoder.sam2_convs[:NECK_LEVELS]
    for part in VIDEO_ONLY_PARTS:
        setattr(tracker, part, None)
    return encoder.eval(), tracker.eval(), found


def window_features(encoder, tracker, image) -> Dict[str, object]:
    """What ``Sam3Processor.set_image`` and ``predict_inst`` make of a normalised input image (1, 3, S, S):
    WINDOW_TENSORS, the image embedding (1, 256, S/14, S/14) with the "no memory" embedding added and the
    high-resolution features (1, 32, 4 S/14, 4 S/14) and (1, 64, 2 S/14, 2 S/14) through ``conv_s0`` / ``conv_s1``."""
    top = encoder.trunk(image)[-1]
    s0, s1, embed = (conv(top) for conv in encoder.sam2_convs)
    decoder = tracker.sam_mask_decoder
    # predict_inst adds no_mem_embed (1, 1, c) to the flattened (HW, 1, c) embedding: per channel
    embed = embed + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    # contiguous, as an embedding loaded back from the cache is: the same memory layout, the same kernels, the
    # same logits to the bit (the trunk's output is a permuted view, which the convolutions pass on)
    window = (embed, decoder.conv_s0(s0), decoder.conv_s1(s1))
    return dict(zip(WINDOW_TENSORS, (tensor.contiguous() for tensor in window)))


@dataclass(frozen=True)
class Sam3Frame(StretchedFrame):
    """A frame stretched to SAM 3's square input: ``size`` is the input in the shared decoder's units
    (:data:`.sam_decoder.EMBED_CELL` per embedding cell, 1152 for 72 cells) for regions and logits; prompts are
    given in the model's ``input_size`` pixels (1008), as ``SAM2Transforms.transform_coords`` puts them."""

    input_size: int = 1008

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        return StretchedFrame(self.rows, self.cols, self.input_size).to_input(xy)


class Sam3Backend(Sam2Backend):
    """A SAM 3 model file's interactive image model; ``multimask=True`` keeps the best of three candidates by
    predicted IoU. Decoding, embeddings and the rest as :class:`.sam2_backend.Sam2Backend`."""

    name = "sam3"

    def __init__(self, checkpoint: str, model_type: str = "auto", device: str = "auto",
                 multimask: bool = False, precision: str = "auto"):
        torch, _ = import_sam3()
        self._torch = torch
        choice = choose_device(torch, device)
        self.device = choice.device
        self.device_name = choice.name
        if precision == "int8":  # int8 quantizes SAM's ViT encoder's MLPs; SAM 3's trunk is left as it is
            raise InputError("Precision int8 applies to SAM, SAM-HQ and MobileSAM encoders, not to SAM 3's: use "
                             "precision auto, fp32 or bf16 with SAM 3 files.")
        self.precision, precision_note = resolve_precision(precision, self.device, torch)
        self.notes, self.remarks = backend_notes(choice.note, precision, precision_note)
        # the mask decoder is SAM 2's over 72 x 72 tokens (1.27 x SAM's 64 x 64): SAM's batch sizes
        self.preferred_batch = CUDA_BATCH if device_type(self.device) == "cuda" else CPU_BATCH
        encoder, tracker, self.model_file = load_sam3(checkpoint, model_type)
        self.encoder = encoder.to(self.device)
        self.model = tracker.to(self.device)
        self.model_type = self.model_file.size
        self.multimask = multimask
        self.checkpoint = checkpoint
        self.input_size = self.model.image_size  # 1008: the frame's longest side; the model sees it stretched
        self.grid = self.model.sam_image_embedding_size  # 72 embedding cells across
        self.decoder = Sam2WindowDecoder(self.model, torch.bfloat16 if self.precision == "bf16" else None)
        self.window = None
        self.frame = None

    @property
    def model_name(self) -> str:
        """E.g. ``SAM 3``."""
        return self.model_file.describe()

    def close(self) -> None:
        self.encoder = None
        super().close()

    # -- windows ------------------------------------------------------------------------------------
    def input_tensor(self, frame: np.ndarray):
        """The frame as the image encoder takes it (1, 3, S, S) on the device, S = 1008: ``Sam3Processor``'s
        transform (resized as uint8, bilinearly with antialiasing, then to [0, 1] and normalised)."""
        from torchvision.transforms.v2 import functional as transforms

        torch, size = self._torch, self.input_size
        image = torch.as_tensor(np.ascontiguousarray(frame[..., :3])).permute(2, 0, 1).to(self.device)
        image = transforms.resize(image, [size, size])
        image = transforms.to_dtype(image, torch.float32, scale=True)
        return transforms.normalize(image, list(PIXEL_MEAN), list(PIXEL_STD))[None]

    def encode(self, frame: np.ndarray) -> None:
        torch = self._torch
        with torch.inference_mode():
            image = self.input_tensor(frame)
            with self._precision(), torch.device(self.device):
                window = window_features(self.encoder, self.model, image)
        self._set_window(window, frame.shape[:2])

    def _set_window(self, window: Dict[str, object], frame_shape) -> None:
        super()._set_window(window, frame_shape)
        self.frame = Sam3Frame(int(frame_shape[0]), int(frame_shape[1]), self.grid * EMBED_CELL, self.input_size)

    @property
    def embedding(self) -> Dict[str, np.ndarray]:
        """The encoded window, float32: ``image_embed`` (1, 256, 72, 72), ``high_res_feats_0`` (1, 32, 288, 288)
        and ``high_res_feats_1`` (1, 64, 144, 144)."""
        return super().embedding

    # -- the rest of the interface ------------------------------------------------------------------
    def identity(self) -> str:
        """Model weights and size, precision and the kind of device: what decides the embedding."""
        return (f"{checkpoint_fingerprint(self.checkpoint)}:sam3:{self.model_type}:{self.precision}:"
                f"{device_type(self.device)}")


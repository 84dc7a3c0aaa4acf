"""SAM 2 / SAM 2.1 image models as a backend: the sam2 package's model encodes a window once, its prompt encoder
and mask decoder take boxes in batches.

The model is built by the sam2 package from its own config (the one :mod:`.model_files` names for the file, read
from the installed package by hydra) and the file's weights are loaded strictly. A window is encoded as
``SAM2ImagePredictor.set_image`` does it: the frame is resized to the model's square input (1024 x 1024) *without*
keeping its aspect ratio, normalised, and the image encoder's three levels are kept: the image embedding
(64 x 64 cells of 16 input pixels) and the high-resolution features at 128 x 128 and 256 x 256, which SAM 2's mask
decoder adds while upscaling. Prompts go through the prompt encoder as ``SAM2ImagePredictor._predict`` gives them
(a box is two points labelled 2 and 3, followed by the point prompt; a padding point when there is no box).

Decoding shares :class:`.sam_decoder.WindowMaskDecoder`'s savings: the box-independent tensors of the first
transformer layer once per window, logits over each box's region only (the upscaling and its high-resolution
features are pixel-local), crops grouped by shape, one host copy of logits and scores per batch.

Frames and logits (:mod:`.sam2_frames`): SAM 2's low-resolution logits are a 256 x 256 grid over the stretched
input; a square frame's boxes get their crop of it, a frame that is not square one cell per frame pixel over each
box's region.
"""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError, missing_packages
from ..prompts import PROMPT_MODES, Prompts
from .base import Backend, BoxLogits, PendingLogits
from .devices import (backend_notes, choose_device, device_label, device_type, free_cached_memory,
                      is_out_of_memory, precision_context, resolve_precision, to_device)
from .model_files import identify_state, is_onnx_file, read_state, unsupported_message
from .sam import CPU_BATCH, CUDA_BATCH
from .sam_checkpoint import checkpoint_fingerprint, skipping_random_init
from .sam2_frames import PIXEL_MEAN, PIXEL_STD, StretchedFrame
from .sam_decoder import WindowMaskDecoder, gather_crops

# What an encoded window is: the names of SAM 2's ONNX exports (image_embed, high_res_feats_0/1)
WINDOW_TENSORS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
# Parts of SAM2Base that only video tracking uses (memories of earlier frames): dropped once the file is loaded.
VIDEO_ONLY_PARTS = ("memory_attention", "memory_encoder")


def import_sam2():
    """torch and sam2's builder, or a :class:`BackendUnavailableError` saying how to install them."""
    try:
        import torch
        from sam2.build_sam import build_sam2
    except ImportError as exc:
        raise missing_packages("SAM 2 model files need torch and the sam2 package (SAM 2 ONNX pairs do not)", exc,
                               "full") from exc
    return torch, build_sam2


def _build(config: str, build_sam2):
    """The sam2 package's model for ``config`` (random weights, on the CPU), its config read from the installed
    package. sam2 makes hydra search its configs when it is imported; if something else in the process set up
    hydra first, sam2's configs are searched for this build only and hydra's state is given back after it."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from hydra.errors import MissingConfigException

    # apply_postprocessing=False: no dynamic fall-back from the single mask to the multimask ones when the single
    # one looks unstable (a setting of SAM 2's video tracking): the single mask is the single-mask token's, as SAM's
    def build():
        return build_sam2(config, ckpt_path=None, device="cpu", mode="eval", apply_postprocessing=False)

    try:
        return build()
    except MissingConfigException:
        pass
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("sam2", version_base="1.2"):
            return build()
    finally:
        restore_gh_from_backup(backup)


def load_sam2(path: str, model_type: str = "auto"):
    """Load a SAM 2 / 2.1 model file on the CPU: returns ``(model, model_file)``. An InputError for a missing,
    unreadable or other file, a size the sam2 package has no config for and a ``model_type`` that does not match."""
    if not path or not os.path.isfile(path):
        raise InputError(f"SAM 2 model file '{path}' does not exist. Give the path of a .pt file such as "
                         "sam2.1_hiera_tiny.pt (from facebookresearch/sam2).")
    torch, build_sam2 = import_sam2()
    if is_onnx_file(path):
        raise InputError(f"'{path}' is an ONNX file; the SAM 2 backend runs the sam2 package's .pt files.")
    state = read_state(path, torch)
    found = identify_state(state, path)
    if found.family != "sam2":
        raise InputError(f"'{path}' holds a {found.describe()} model, not a SAM 2 one."
                         if found.family in ("sam", "sam_hq", "mobile_sam") else unsupported_message(found))
    if model_type not in ("auto", found.size):
        raise InputError(f"Model type mismatch: '{path}' holds a {found.describe()} model, not {model_type}. "
                         f"Choose model type 'auto'.")
    if found.sam2_config is None:
        raise InputError(f"'{path}' holds a SAM {found.version} model of a size the sam2 package has no config for "
                         f"({found.size}); its official sizes are hiera_t, hiera_s, hiera_b+ and hiera_l.")
    with skipping_random_init(torch):  # every weight comes from the file: strictly loaded below
        model = _build(found.sam2_config, build_sam2)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"Model file '{path}' does not fit the sam2 package's {found.describe()} model "
                         f"({str(exc).splitlines()[0]}).") from exc
    del state  # unmaps the file
    for part in VIDEO_ONLY_PARTS:
        setattr(model, part, None)
    return model.eval(), found


class Sam2WindowDecoder(WindowMaskDecoder):
    """:class:`.sam_decoder.WindowMaskDecoder` for SAM 2's prompt encoder and mask decoder: an object-score token
    before the IoU token (SAM 2.1, and 2.0's configs), and the high-resolution features added while upscaling
    (``act1(ln1(dc1(x) + s1))``, then ``act2(dc2(.) + s0)``), cropped like the embedding."""

    def __init__(self, model, dtype=None):
        super().__init__(SimpleNamespace(prompt_encoder=model.sam_prompt_encoder,
                                         mask_decoder=model.sam_mask_decoder), dtype)
        self.token_offset = 1 if self.decoder.pred_obj_scores else 0  # output tokens before the IoU token
        self.high_res: Optional[Tuple[object, object]] = None  # (s0 (1, c/8, 4R, 4C), s1 (1, c/4, 2R, 2C))

    def set_window(self, image_embed, high_res) -> None:
        """Take a window's image embedding (1, c, 64, 64) and high-resolution features (s0, s1)."""
        self.set_embedding(image_embed)
        self.high_res = tuple(self._cast(f) for f in high_res)

    def _output_tokens(self):
        decoder = self.decoder
        tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if decoder.pred_obj_scores:
            tokens.insert(0, decoder.obj_score_token.weight)
        return _torch().cat(tokens, dim=0)

    def _read_tokens(self, multimask: bool) -> int:
        return self.token_offset + super()._read_tokens(multimask)

    def _select(self, hs, multimask: bool, count: int):
        return super()._select(hs[:, self.token_offset:], multimask, count)

    def _crop_logits(self, src, group, shape: Tuple[int, int], hyper):
        if not self.decoder.use_high_res_features:
            return super()._crop_logits(src, group, shape, hyper)
        dc1, ln1, act1, dc2, act2 = self.decoder.output_upscaling
        s0, s1 = self.high_res
        rows, cols = shape
        scale = group.new_tensor([0, 2, 2])  # the one image's feature, at 2x and 4x the embedding's resolution
        feat_s1 = gather_crops(s1, group * scale, (2 * rows, 2 * cols))
        feat_s0 = gather_crops(s0, group * (2 * scale), (4 * rows, 4 * cols))
        upscaled = act1(ln1(dc1(gather_crops(src, group, shape)) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
        return (hyper[group[:, 0]].unsqueeze(1) @ upscaled.flatten(2)).squeeze(1)


def _torch():
    import torch

    return torch


def window_features(model, image) -> Dict[str, object]:
    """What ``SAM2ImagePredictor.set_image`` keeps of a normalised input image (1, 3, S, S): WINDOW_TENSORS, the
    image embedding (1, c, S/16, S/16) with the "no memory" embedding added and the high-resolution features
    (1, c/8, S/4, S/4) and (1, c/4, S/8, S/8). Torch tensors; traceable (the ONNX encoder is this function)."""
    backbone = model.forward_image(image)
    _, feats, _, sizes = model._prepare_backbone_features(backbone)
    if model.directly_add_no_mem_embed:  # as SAM2ImagePredictor.set_image: no memory of other frames
        feats[-1] = feats[-1] + model.no_mem_embed
    feats = [f.permute(1, 2, 0).reshape(1, -1, *size).contiguous() for f, size in zip(feats, sizes)]
    return dict(zip(WINDOW_TENSORS, (feats[-1],) + tuple(feats[:-1])))


class Sam2Backend(Backend):
    """A SAM 2 / 2.1 model file; ``multimask=True`` keeps the best of three candidates by predicted IoU."""

    name = "sam2"
    prompt_modes = PROMPT_MODES

    def __init__(self, checkpoint: str, model_type: str = "auto", device: str = "auto",
                 multimask: bool = False, precision: str = "auto"):
        torch, _ = import_sam2()
        self._torch = torch
        choice = choose_device(torch, device)
        self.device = choice.device
        self.device_name = choice.name
        if precision == "int8":  # int8 quantizes SAM's ViT encoder; Hiera is left as it is
            raise InputError("Precision int8 applies to SAM, SAM-HQ and MobileSAM encoders, not to SAM 2's Hiera: "
                             "use precision auto, fp32 or bf16 with SAM 2 files.")
        self.precision, precision_note = resolve_precision(precision, self.device, torch)
        self.notes, self.remarks = backend_notes(choice.note, precision, precision_note)
        # SAM 2's mask decoder costs what SAM's does per box (the same transformer over 64x64 image tokens;
        # measured here, fp32, one thread: 45 ms/box against vit_b's 48), so SAM's batch sizes
        self.preferred_batch = CUDA_BATCH if device_type(self.device) == "cuda" else CPU_BATCH
        model, self.model_file = load_sam2(checkpoint, model_type)
        self.model = model.to(self.device)
        self.model_type = self.model_file.size  # hiera_t, hiera_s, hiera_b+, hiera_l
        self.multimask = multimask
        self.checkpoint = checkpoint
        self.input_size = self.model.image_size  # the frame's longest side; the model sees it stretched square
        self.decoder = Sam2WindowDecoder(self.model, torch.bfloat16 if self.precision == "bf16" else None)
        self.window: Optional[Dict[str, object]] = None  # the encoded window: WINDOW_TENSORS on the device
        self.frame: Optional[StretchedFrame] = None  # the frame it was encoded from, stretched to the input

    @classmethod
    def from_options(cls, options) -> "Sam2Backend":
        return cls(options.checkpoint, options.model_type, options.device, options.multimask, options.precision)

    @property
    def model_name(self) -> str:
        """E.g. ``SAM 2.1 hiera_t``."""
        return self.model_file.describe()

    def close(self) -> None:
        if self.model is None:
            return
        self._description = self.describe()
        self.decoder = self.model = self.window = None  # nothing else holds them (no reference cycles)
        self.free_cached_memory()

    def _precision(self):
        return precision_context(self._torch, self.device, self.precision)

    # -- windows ------------------------------------------------------------------------------------
    def input_tensor(self, frame: np.ndarray):
        """The frame as the image encoder takes it (1, 3, S, S) on the device: ``SAM2Transforms``' steps (to
        [0, 1], resized to S x S bilinearly with antialiasing, normalised), S = the model's image size."""
        torch = self._torch
        size = self.input_size
        image = torch.as_tensor(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).float().div(255)[None]
        if tuple(image.shape[-2:]) != (size, size):
            image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                                                    antialias=True)
        mean = torch.tensor(PIXEL_MEAN, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=image.device).view(1, 3, 1, 1)
        return image.sub(mean).div(std)

    def encode(self, frame: np.ndarray) -> None:
        torch, model = self._torch, self.model
        with torch.inference_mode():
            image = self.input_tensor(frame)
            with self._precision(), torch.device(self.device):
                window = window_features(model, image)
        self._set_window(window, frame.shape[:2])

    def _set_window(self, window: Dict[str, object], frame_shape) -> None:
        self.window = window
        self.frame = StretchedFrame(int(frame_shape[0]), int(frame_shape[1]), self.input_size)
        with self._torch.inference_mode(), self._precision():
            self.decoder.set_window(window["image_embed"], (window["high_res_feats_0"], window["high_res_feats_1"]))

    @property
    def embedding(self) -> Dict[str, np.ndarray]:
        """The encoded window, float32: ``image_embed`` (1, 256, 64, 64), ``high_res_feats_0`` (1, 32, 256, 256)
        and ``high_res_feats_1`` (1, 64, 128, 128)."""
        return {name: self.window[name].float().cpu().numpy() for name in WINDOW_TENSORS}

    def load_embedding(self, embedding: Dict[str, np.ndarray], frame_shape) -> None:
        self._set_window({name: to_device(self._torch, embedding[name], self.device) for name in WINDOW_TENSORS},
                         frame_shape)

    def _prompt_tensors(self, prompts: Prompts):
        """(points, masks) for the prompt encoder in the input's coordinates (:meth:`.StretchedFrame.prompt_points`
        and :meth:`.StretchedFrame.mask_prompt`), on the device."""
        torch = self._torch
        points = self.frame.prompt_points(prompts)
        if points is not None:
            points = tuple(to_device(torch, part, self.device) for part in points)
        masks = None
        if prompts.polygons is not None:
            grid = self.model.sam_prompt_encoder.mask_input_size[0]
            masks = to_device(torch, self.frame.mask_prompt(prompts.polygons, grid), self.device)
        return points, masks

    # -- decoding -----------------------------------------------------------------------------------
    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        return self.decode_async(boxes, regions, prompts).result()

    def decode_async(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
                     prompts: Optional[Prompts] = None) -> PendingLogits:
        torch = self._torch
        prompts = prompts or Prompts(boxes=boxes)
        count = prompts.count
        spans = self.frame.pixel_spans(regions, count)
        points, masks = self._prompt_tensors(prompts)
        with torch.inference_mode(), self._precision():
            batch = self.decoder.decode_async(None, self.frame.input_regions(regions, spans), self.multimask, count,
                                              points, masks)
        return PendingLogits(lambda: self.frame.place(batch.result(), spans))

    # -- the rest of the interface ------------------------------------------------------------------
    def free_cached_memory(self) -> None:
        free_cached_memory(self._torch, self.device)

    def is_out_of_memory(self, error: BaseException) -> bool:
        return is_out_of_memory(self._torch, error)

    def identity(self) -> str:
        """Model weights, family and size, precision and the kind of device: what decides the embedding."""
        return (f"{checkpoint_fingerprint(self.checkpoint)}:sam2:{self.model_file.version}-{self.model_type}:"
                f"{self.precision}:{device_type(self.device)}")

    def describe(self) -> str:
        if self.model is None:
            return self._description
        return (f"{self.model_name} ({self.checkpoint}) on {device_label(self.device)} ({self.device_name}), "
                f"{self.precision}")


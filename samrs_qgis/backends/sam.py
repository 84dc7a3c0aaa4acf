"""SAM as a backend: segment-anything's predictor encodes a window once, its mask decoder takes boxes in batches.

Only the low-resolution logits (256x256 over the 1024x1024 input) leave the backend; upsampling to
native pixels happens per box, over the box's neighbourhood only (see :mod:`samrs_qgis.logits`).
"""
from __future__ import annotations

import contextlib
from typing import List, Optional

import numpy as np

from ..errors import InputError
from .base import Backend, BoxLogits
from .sam_checkpoint import import_torch, load_sam

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is usable, else ``cpu``."""
    torch, _ = import_torch()
    if device not in DEVICES:
        raise InputError(f"Unknown device '{device}'. Choose one of: {', '.join(DEVICES)}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("Device 'cuda' was asked for but torch sees no usable CUDA GPU. Use 'auto' or 'cpu'.")
    return device


def sam_box_prompt(boxes: np.ndarray) -> np.ndarray:
    """Frame-space pixel-corner boxes (n, 4) -> SAM's convention, inclusive pixel indices.

    SAM was trained on boxes whose x1/y1 are the last pixel inside (its prompt encoder adds 0.5 to
    reach pixel centres), so a box covering pixels [x0, x1) is given as (x0, y0, x1 - 1, y1 - 1).
    """
    out = boxes.astype(np.float32).copy()
    out[:, 2] = np.maximum(out[:, 2] - 1.0, out[:, 0])
    out[:, 3] = np.maximum(out[:, 3] - 1.0, out[:, 1])
    return out


class SamBackend(Backend):
    """SAM from a checkpoint; ``multimask=True`` keeps the best of three candidates by predicted IoU."""

    name = "sam"

    def __init__(self, checkpoint: str, model_type: str = "auto", device: str = "auto",
                 multimask: bool = False):
        torch, segment_anything = import_torch()
        self._torch = torch
        self.device = resolve_device(device)
        model, self.model_type = load_sam(checkpoint, model_type)
        self.model = model.to(self.device)
        self.predictor = segment_anything.SamPredictor(self.model)
        self.multimask = multimask
        self.checkpoint = checkpoint
        self.input_size = self.model.image_encoder.img_size

    def _precision(self):
        """Half precision on CUDA; fp32 on the CPU."""
        if self.device == "cuda":
            return self._torch.autocast("cuda", dtype=self._torch.float16)
        return contextlib.nullcontext()

    def encode(self, frame: np.ndarray) -> None:
        with self._torch.inference_mode(), self._precision():
            self.predictor.set_image(frame, image_format="RGB")

    def decode(self, boxes: np.ndarray) -> List[BoxLogits]:
        torch = self._torch
        prompts = torch.as_tensor(sam_box_prompt(boxes), device=self.device)
        with torch.inference_mode(), self._precision():
            sparse, dense = self.model.prompt_encoder(points=None, boxes=prompts, masks=None)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=self.predictor.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=self.multimask,
            )
        choice = iou.argmax(dim=1) if self.multimask else torch.zeros(len(boxes), dtype=torch.long,
                                                                       device=iou.device)
        rows = torch.arange(len(boxes), device=iou.device)
        grids = low_res[rows, choice].float().cpu().numpy()
        scores = iou[rows, choice].float().cpu().numpy()
        cell = self.input_size / grids.shape[-1]
        return [BoxLogits(grid=g, origin_x=0.0, origin_y=0.0, cell=cell, score=float(s))
                for g, s in zip(grids, scores)]

    def describe(self) -> str:
        return f"SAM {self.model_type} ({self.checkpoint}) on {self.device}"

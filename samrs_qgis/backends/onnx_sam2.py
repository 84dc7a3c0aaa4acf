"""SAM 2 / 2.1 as an ONNX encoder/decoder pair run by ONNX Runtime: SAM 2's masks without torch.

The pair is what ``python -m samrs_qgis export-onnx`` writes for a SAM 2 checkpoint
(:mod:`samrs_qgis.onnx_export_sam2` states the graphs' inputs and outputs) or what samexporter exports and
AnyLabeling publishes (:mod:`.model_files` tells them by their names). The ``checkpoint`` setting names the pair as
for SAM's pairs (:func:`.onnx_sam.find_pair`: a folder holding both, or one file with its partner beside it).

A window is encoded as :class:`.sam2_backend.Sam2Backend` (and ``SAM2ImagePredictor``) encodes it: the frame
stretched to the square input (:func:`.sam2_frames.input_image`), the encoder's three tensors kept (and cached as the
torch backend caches them). Prompts go to the decoder in the input's coordinates
(:meth:`.sam2_frames.StretchedFrame.prompt_points`): a box as two corners labelled 2 and 3, then the point; a mask
prompt as ``mask_input``. A decoder with a batch dimension decodes a batch of prompts in one run; one without it
runs once per box.

Which mask: this plugin's decoders give ``low_res_masks`` with ``low_res_iou_predictions``, SAM 2's single-mask
output and its three multimask candidates: the single mask, or with ``multimask`` the best candidate by predicted
IoU, as the torch backend chooses. samexporter's decoders give the three candidates only (``masks``,
``iou_predictions``): the best of them by predicted IoU is kept whatever ``multimask`` says, and a note says so.
(They also add their padding point to a mask prompt alone, which SAM 2's predictor does not: prompt mode rbox-mask
gives slightly different masks with them.)

Logits: the decoder gives the 256 x 256 grid over the input (4 input pixels per value); each box keeps its crop over
its region, placed in frame space as the torch backend places it (:meth:`.sam2_frames.StretchedFrame.place`: scaled
for a square frame, one cell per frame pixel over the region otherwise). Nothing here imports torch.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..prompts import Prompts
from .base import BoxLogits
from .model_files import ModelFile, model_type_name
from .onnx_sam import OnnxPairBackend, crop_logits
from .sam2_backend import WINDOW_TENSORS
from .sam2_frames import StretchedFrame, input_image
from .sam_decoder import LOGIT_CELL

FAMILY = "onnx_sam2"
ALL_MASKS = ("low_res_iou_predictions", "low_res_masks")  # this plugin's decoder: (B, 4), (B, 4, 256, 256)
CANDIDATES = ("iou_predictions", "masks")  # samexporter's: the three multimask candidates, (B, 3), (B, 3, 256, 256)


class OnnxSam2Backend(OnnxPairBackend):
    """A SAM 2 / 2.1 ONNX encoder/decoder pair in ONNX Runtime; ``multimask=True`` keeps the best of three
    candidates by predicted IoU, as :class:`.sam2_backend.Sam2Backend`."""

    families = (FAMILY,)
    runs = "SAM 2"

    def __init__(self, checkpoint: str, device: str = "auto", multimask: bool = False, model_type: str = "auto",
                 precision: str = "auto"):
        super().__init__(checkpoint, device, multimask, model_type, precision)
        if not self.single_mask and not multimask:
            self.notes += (f"ONNX decoder '{self.decoder_file.path}' gives SAM 2's three multimask candidates only: "
                           "the best of them by predicted IoU is kept. For SAM 2's single-mask output export the "
                           "pair with `python -m samrs_qgis export-onnx`.",)
        image = dict(self.encoder_file.inputs)["image"]
        self.input_size = image[-1] if isinstance(image[-1], int) else 1024  # the square input's side
        decoder_inputs = dict(self.decoder_file.inputs)
        self._set_batching(decoder_inputs)
        grid = decoder_inputs["mask_input"][-1]
        self._mask_grid = grid if isinstance(grid, int) else self.input_size // LOGIT_CELL
        self.window: Optional[Dict[str, np.ndarray]] = None  # the encoded window: WINDOW_TENSORS
        self.frame: Optional[StretchedFrame] = None  # the frame it was encoded from, stretched to the input

    def _check_decoder(self) -> None:
        outputs = {name for name, _ in self.decoder_file.outputs}
        self.single_mask = set(ALL_MASKS) <= outputs  # SAM 2's single-mask output is there
        if not self.single_mask and not set(CANDIDATES) <= outputs:
            raise InputError(f"ONNX decoder '{self.decoder_file.path}' has neither low_res_masks with "
                             f"low_res_iou_predictions nor masks with iou_predictions (it has "
                             f"{', '.join(sorted(outputs))}); export it again with `python -m samrs_qgis export-onnx`.")
        self._outputs = list(ALL_MASKS if self.single_mask else CANDIDATES)

    def _exported_type(self) -> Optional[str]:
        """The model type the pair was exported from (e.g. ``sam2.1_hiera_t``) as its metadata says; None without."""
        meta = self.metadata
        if not meta.get("size") or not meta.get("version"):
            return None
        return model_type_name(ModelFile(self.encoder_file.path, "sam2", meta["size"], version=meta["version"]))

    # -- windows ------------------------------------------------------------------------------------
    def encode(self, frame: np.ndarray) -> None:
        names = list(WINDOW_TENSORS)
        tensors = self._encoder.run(names, {"image": input_image(frame, self.input_size)})
        self._set_window(dict(zip(names, tensors)), frame.shape[:2])

    def _set_window(self, window: Dict[str, np.ndarray], frame_shape) -> None:
        self.window = window
        self.frame = StretchedFrame(int(frame_shape[0]), int(frame_shape[1]), self.input_size)

    @property
    def embedding(self) -> Dict[str, np.ndarray]:
        """The encoded window, float32: ``image_embed`` (1, 256, 64, 64), ``high_res_feats_0`` (1, 32, 256, 256)
        and ``high_res_feats_1`` (1, 64, 128, 128), as :attr:`.sam2_backend.Sam2Backend.embedding`."""
        return dict(self.window)

    def load_embedding(self, embedding: Dict[str, np.ndarray], frame_shape) -> None:
        self._set_window({name: np.ascontiguousarray(embedding[name], dtype=np.float32) for name in WINDOW_TENSORS},
                         frame_shape)

    # -- decoding -----------------------------------------------------------------------------------
    def _prompt_arrays(self, prompts: Prompts, count: int):
        """(point_coords (n, k, 2), point_labels (n, k), mask_input (n, 1, 256, 256), has_mask_input (1,)), float32,
        in the input's coordinates; k = 0 for a mask prompt alone."""
        points = self.frame.prompt_points(prompts)
        if points is None:
            coords, labels = np.zeros((count, 0, 2), np.float32), np.zeros((count, 0), np.float32)
        else:
            coords, labels = points[0], points[1].astype(np.float32)
        grid = self._mask_grid
        if prompts.polygons is not None:
            masks, has_mask = self.frame.mask_prompt(prompts.polygons, grid), np.ones(1, np.float32)
        else:
            masks, has_mask = np.zeros((count, 1, grid, grid), np.float32), np.zeros(1, np.float32)
        return coords, labels, masks.astype(np.float32), has_mask

    def _run_decoder(self, coords, labels, masks, has_mask):
        """(predicted IoU (n, C), low-resolution logits (n, C, 256, 256)) of one decoder run."""
        feed = dict(self.window, point_coords=coords, point_labels=labels, mask_input=masks, has_mask_input=has_mask)
        iou, low = self._decoder.run(self._outputs, feed)
        return iou, low

    def _choice(self, iou: np.ndarray) -> np.ndarray:
        """Per box, which of the decoder's masks: SAM 2's single mask (0) or the best candidate (1-3) by predicted
        IoU; of a decoder giving the candidates only, the best of them."""
        if iou.shape[1] == 1:
            return np.zeros(len(iou), dtype=np.int64)
        if not self.single_mask:
            return iou.argmax(axis=1)
        if self.multimask:
            return 1 + iou[:, 1:].argmax(axis=1)
        return np.zeros(len(iou), dtype=np.int64)

    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        if self.window is None:
            raise RuntimeError("decode before encode")
        prompts = prompts or Prompts(boxes=boxes)
        count = prompts.count or len(boxes)
        spans = self.frame.pixel_spans(regions, count)
        where = self.frame.input_regions(regions, spans)
        iou, low = self._run_prompts(self._prompt_arrays(prompts, count), count)
        choice = self._choice(iou)
        # per box its logits' crop over its region (input pixels; whole embedding cells, as the torch backend
        # decodes them), the crop's first embedding cell and its score
        decoded = [(*crop_logits(low[i, choice[i]], None if where is None else where[i]), float(iou[i, choice[i]]))
                   for i in range(count)]
        return self.frame.place(decoded, spans)

    def _model(self) -> str:
        return f"SAM {self.metadata['version']}" if self.metadata.get("version") else "SAM 2"

    def _decoding(self) -> str:
        decoding = super()._decoding()
        return decoding if self.single_mask else decoding + ", the best of three candidate masks"

    def close(self) -> None:
        super().close()
        self.window = None

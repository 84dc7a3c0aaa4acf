"""Export a SAM 2 / 2.1 checkpoint to an ONNX encoder and decoder, run later by ONNX Runtime without torch.

The pair keeps the names of samexporter's SAM 2 export (the pairs AnyLabeling publishes), so
:mod:`.backends.model_files` recognises it and tools made for those pairs run it:

- encoder: ``image`` float32 (1, 3, 1024, 1024), the frame stretched to 1024 x 1024 (its aspect ratio not kept),
  in [0, 1] and normalised with ImageNet's mean and std (``SAM2Transforms``, see
  :func:`.backends.sam2_frames.input_image`) -> ``high_res_feats_0`` (1, 32, 256, 256), ``high_res_feats_1``
  (1, 64, 128, 128) and ``image_embed`` (1, 256, 64, 64): what ``SAM2ImagePredictor.set_image`` keeps of a frame
  (:func:`.backends.sam2_backend.window_features`).
- decoder: ``image_embed``, ``high_res_feats_0``, ``high_res_feats_1`` as the encoder gives them, ``point_coords``
  (B, N, 2) in the 1024 x 1024 input (frame pixels times 1024 / width across and 1024 / height down),
  ``point_labels`` (B, N) (1 foreground, 0 background, 2 and 3 a box's top-left and bottom-right corners),
  ``mask_input`` (B, 1, 256, 256) and ``has_mask_input`` (1,) -> samexporter's ``masks`` (B, 3, 256, 256), the
  logits of SAM 2's three multimask candidates over the input (4 input pixels per value) clamped to [-32, 32], and
  ``iou_predictions`` (B, 3) their predicted IoU; and ``low_res_masks`` (B, 4, 256, 256), the logits of all four
  mask tokens as the model gives them (0: the single-mask output, 1-3: the candidates), with
  ``low_res_iou_predictions`` (B, 4).

The decoder's prompt encoder appends its padding point (label -1) to the N points itself, as samexporter's does and
``SAM2ImagePredictor`` asks of it; with N = 0 (a mask prompt alone) it adds no sparse prompt at all, as the
predictor gives none (samexporter's decoder adds the padding point there too). B prompts decode in one run
against the window, as the SAM export's decoder does.

``quantize="int8"`` quantizes the encoder's weights as for SAM (ONNX Runtime's dynamic quantization,
:func:`.onnx_export.quantize_encoder`); the decoder stays fp32. Measured on a random-weight SAM 2.1 hiera_t (the
tests' model, a real aerial image): each of the three window tensors within 3 % of fp32 (largest error over the
largest value, as SAM's int8 encoder), masks' IoU with fp32's 0.97 or more (0.99 on average); the encoder file
is a quarter of fp32's.

Needs torch, the sam2 package and onnx: exporting happens once, where torch is installed.
"""
from __future__ import annotations

import os
from typing import Optional

from .onnx_export import ExportedPair, _save_graph, pair_paths, write_encoder

ENCODER_OUTPUTS = ("high_res_feats_0", "high_res_feats_1", "image_embed")  # samexporter's order
DECODER_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
                  "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks", "low_res_iou_predictions")
LOGIT_CLAMP = 32.0  # samexporter's (and SAM2ImagePredictor's) bound on the ``masks`` logits


def _encoder_module(torch, model):
    from .backends.sam2_backend import window_features

    class Encoder(torch.nn.Module):
        """The image encoder: a normalised (1, 3, S, S) image -> its window tensors in samexporter's order."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            window = window_features(self.model, image)
            return tuple(window[name] for name in ENCODER_OUTPUTS)

    return Encoder().eval()


def _decoder_module(torch, model):
    from torch.onnx.operators import shape_as_tensor

    class Decoder(torch.nn.Module):
        """SAM 2's prompt encoder and mask decoder for B prompts against one window (see the module docstring)."""

        def __init__(self):
            super().__init__()
            self.prompt_encoder = model.sam_prompt_encoder
            self.mask_decoder = model.sam_mask_decoder

        def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                    has_mask_input):
            prompts = self.prompt_encoder
            sparse = prompts._embed_points(point_coords, point_labels, pad=True)  # (B, N + 1, c)
            # N = 0: no sparse prompt, not even the padding point (as SAM2ImagePredictor for a mask alone); N is
            # read from the input's shape in the graph, not fixed at the traced example's
            points = shape_as_tensor(point_labels)[1]
            sparse = sparse.index_select(1, torch.arange((points + 1) * (points > 0).to(points.dtype)))
            dense = (has_mask_input * prompts.mask_downscaling(mask_input)
                     + (1 - has_mask_input) * prompts.no_mask_embed.weight.reshape(1, -1, 1, 1))
            masks, iou, _, _ = self.mask_decoder.predict_masks(
                image_embeddings=image_embed, image_pe=prompts.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, repeat_image=True, high_res_features=[high_res_feats_0,
                                                                                     high_res_feats_1])
            return masks[:, 1:].clamp(-LOGIT_CLAMP, LOGIT_CLAMP), iou[:, 1:], masks, iou

    return Decoder().eval()


def export_sam2(torch, model, found, checkpoint: str, out_dir: str, quantize: Optional[str] = None,
                progress=None) -> ExportedPair:
    """Write the encoder and decoder .onnx of the SAM 2 ``model`` loaded from ``checkpoint`` (``found``: its
    :class:`.backends.model_files.ModelFile`) into ``out_dir`` as ``<name>[_int8]_encoder.onnx`` and
    ``<name>[_int8]_decoder.onnx``, with metadata ``samrs_source``, ``_family``, ``_version``, ``_size``,
    ``_quantization`` and ``_role``. Called by :func:`.onnx_export.export_onnx`."""
    os.makedirs(out_dir, exist_ok=True)
    encoder_path, decoder_path = pair_paths(out_dir, os.path.splitext(os.path.basename(checkpoint))[0], quantize)
    metadata = dict(source=os.path.basename(checkpoint), family=found.family, version=found.version, size=found.size,
                    quantization=quantize or "fp32")
    say = progress.info if progress is not None else (lambda message: None)
    decoder = model.sam_mask_decoder
    prompts = model.sam_prompt_encoder
    with torch.no_grad():
        say(f"Exporting the image encoder of {found.describe()} ...")
        image = torch.zeros(1, 3, model.image_size, model.image_size)
        write_encoder(torch, _encoder_module(torch, model), (image,), encoder_path, ["image"], ENCODER_OUTPUTS,
                      quantize, metadata, say)
        say("Exporting the prompt encoder and mask decoder ...")
        grid = prompts.image_embedding_size
        # an example window as the encoder gives it, and two prompts of a box each
        example = (torch.randn(1, prompts.embed_dim, *grid),
                   torch.randn(1, decoder.transformer_dim // 8, 4 * grid[0], 4 * grid[1]),
                   torch.randn(1, decoder.transformer_dim // 4, 2 * grid[0], 2 * grid[1]),
                   torch.randint(0, model.image_size, (2, 2, 2)).float(), torch.tensor([[2.0, 3.0], [2.0, 3.0]]),
                   torch.zeros(2, 1, *prompts.mask_input_size), torch.zeros(1))
        prompt_axes = {0: "prompts", 1: "points"}
        _save_graph(torch, _decoder_module(torch, model), example, decoder_path, DECODER_INPUTS, DECODER_OUTPUTS,
                    {"point_coords": prompt_axes, "point_labels": prompt_axes, "mask_input": {0: "prompts"},
                     **{name: {0: "prompts"} for name in DECODER_OUTPUTS}},
                    dict(metadata, quantization="fp32", role="decoder"))
    return ExportedPair(encoder_path, decoder_path, found.family, found.size, quantize)

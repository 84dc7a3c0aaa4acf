"""HQ-SAM (segment-anything-hq) as a backend: SAM's backend with HQ's encoder outputs and mask decoder.

HQ-SAM keeps SAM's image encoder and mask decoder and adds an output token (``hf_token``, with its own
hypernetwork ``hf_mlp``) whose mask is read from a high-quality feature: the early features of the image
encoder (``interm_embeddings``: the first global-attention block's output of a ViT, the second stage's of the
light model's TinyViT) compressed (``compress_vit_feat``), plus the image embedding upscaled
(``embedding_encoder``), plus ``embedding_maskfeature`` of the box's upscaled transformer output.

An encoded window is therefore two tensors, both kept by the embedding cache: ``image_embeddings``
(1, 256, 64, 64) and ``interm_embeddings`` (1, 64, 64, encoder width).
"""
from __future__ import annotations

from typing import Dict, Tuple

from .sam import SamBackend
from .sam_checkpoint import import_sam_hq
from .sam_decoder import EMBED_CELL, LOGIT_CELL, WindowMaskDecoder, _torch, gather_crops

PER = EMBED_CELL // LOGIT_CELL  # logit cells per embedding cell, along each axis
# Logit cells around a crop that HQ's ``embedding_maskfeature`` reads: two 3x3 convolutions see 2 cells out.
MASKFEATURE_REACH = 2


class HqWindowMaskDecoder(WindowMaskDecoder):
    """HQ-SAM's mask decoder for box prompts, with per-window work done once and logits over each box's region.

    What :class:`.sam_decoder.WindowMaskDecoder` shares per window (the first transformer layer's image side)
    it shares here too: HQ's transformer is SAM's, with one more output token. Besides:

    - The HQ feature, ``embedding_encoder(image embedding) + compress_vit_feat(early features)``, depends on
      the window alone: computed once per window (1, 32, 256, 256) and cropped per box.
    - ``embedding_maskfeature`` (3x3 convolution, channel layer norm, GELU, 3x3 convolution, both with zero
      padding at the window's edges) is not pixel-local: a logit cell depends on the upscaled transformer
      output up to 2 cells around it. Each box's crop is therefore upscaled with one embedding cell (4 logit
      cells) of margin, the convolutions run over the crop plus 2 logit cells, with what lies outside the window
      zeroed before each convolution as the window's own zero padding is, and the crop's cells are kept:
      the same values as over the whole window. Measured here (2 shared cores, best of 15 batches of 4; the
      decoder's size is the same for every HQ-SAM): a box's logits from the transformer's output over 8x8
      embedding cells (a box of about 100 pixels with its margin) take 3.2 ms with HQ's part (SAM alone: 0.3),
      over the whole window 297 ms (SAM alone: 69); bf16 2.8 and 216 ms. Over the whole window HQ's part would
      cost more than the rest of the decoder (~15 ms per box): so crops, as for SAM.

    The mask is what HQ-SAM's own ``SamPredictor`` gives by default (``hq_token_only=False``): SAM's mask
    (the single-mask token, or with ``multimask`` the best of the three by predicted IoU) plus HQ's mask;
    the score is SAM's predicted IoU of that mask (HQ's token has none).
    """

    def __init__(self, model, dtype=None):
        super().__init__(model, dtype)
        self.hq_features = None

    def set_embedding(self, features, interm=None) -> None:
        """Take a window's image embedding (1, c, 64, 64) and early features (1, 64, 64, width) and compute their
        box-independent tensors."""
        with self._native():
            self._set_embedding(features)
            decoder = self.decoder
            early = self._cast(interm).permute(0, 3, 1, 2)
            self.hq_features = decoder.embedding_encoder(self.window.features) + decoder.compress_vit_feat(early)

    def _output_tokens(self):
        """SAM's output tokens, then HQ's."""
        return _torch().cat([super()._output_tokens(), self.decoder.hf_token.weight], dim=0)

    def _read_tokens(self, multimask: bool) -> int:
        return self.decoder.num_mask_tokens + 1  # up to HQ's token, which follows SAM's mask tokens

    def _select(self, hs, multimask: bool, count: int):
        """(B, 2, c/8): SAM's chosen mask's hypernetwork weights and HQ's; SAM's predicted IoU."""
        hyper, scores = super()._select(hs, multimask, count)
        hq = self.decoder.hf_mlp(hs[:, self.decoder.num_mask_tokens, :])  # the HQ token follows SAM's mask tokens
        return _torch().stack([hyper, hq], dim=1), scores

    def _upscaled_channels(self, src) -> int:
        # margins and the mask feature's wider intermediate: about four times SAM's upscaled values per box
        return 4 * super()._upscaled_channels(src)

    def _crop_logits(self, src, group, shape: Tuple[int, int], hyper):
        torch = _torch()
        decoder = self.decoder
        rows, cols = shape
        upscaled = decoder.output_upscaling(gather_with_margin(src, group, shape))  # 1 cell of margin all round
        inner = upscaled[..., PER:-PER, PER:-PER]  # the crop's cells: SAM's mask
        boxes = group[:, 0]
        logits = (hyper[boxes, 0].unsqueeze(1) @ inner.flatten(2)).squeeze(1)
        reach, cut = MASKFEATURE_REACH, PER - MASKFEATURE_REACH
        ring = upscaled[..., cut:-cut, cut:-cut]  # the crop and what the mask feature reads around it
        grid_rows, grid_cols = (size * PER for size in src.shape[-2:])
        at_rows = (group[:, 1:2] * PER - reach) + torch.arange(ring.shape[-2], device=src.device)
        at_cols = (group[:, 2:3] * PER - reach) + torch.arange(ring.shape[-1], device=src.device)
        inside = (((at_rows >= 0) & (at_rows < grid_rows))[:, None, :, None]
                  & ((at_cols >= 0) & (at_cols < grid_cols))[:, None, None, :]).to(ring.dtype)
        first, norm, activation, second = decoder.embedding_maskfeature
        feature = second(activation(norm(first(ring * inside))) * inside)[..., reach:-reach, reach:-reach]
        hq_at = torch.stack([torch.zeros_like(boxes), group[:, 1] * PER, group[:, 2] * PER], dim=1)
        feature = feature + gather_crops(self.hq_features, hq_at, (rows * PER, cols * PER))
        return logits + (hyper[boxes, 1].unsqueeze(1) @ feature.flatten(2)).squeeze(1)


def gather_with_margin(src, offsets, shape: Tuple[int, int], margin: int = 1):
    """:func:`.sam_decoder.gather_crops` of ``shape`` grown by ``margin`` cells on each side: (g, c, rows + 2
    margin, cols + 2 margin). Cells beyond the grid repeat its edge (the caller zeroes what they give)."""
    torch = _torch()
    rows, cols = src.shape[-2:]
    row_index = (offsets[:, 1:2] - margin + torch.arange(shape[0] + 2 * margin, device=src.device)).clamp(0, rows - 1)
    col_index = (offsets[:, 2:3] - margin + torch.arange(shape[1] + 2 * margin, device=src.device)).clamp(0, cols - 1)
    crops = src[offsets[:, 0, None, None], :, row_index[:, :, None], col_index[:, None, :]]
    return crops.permute(0, 3, 1, 2)


class SamHqBackend(SamBackend):
    """HQ-SAM from a checkpoint (ViT b/l/h, or the light model's TinyViT): segment-anything-hq's predictor
    encodes, :class:`HqWindowMaskDecoder` decodes."""

    name = "sam_hq"
    families = ("sam_hq",)
    window_tensor_names = ("image_embeddings", "interm_embeddings")

    def _make_predictor(self):
        return import_sam_hq().SamPredictor(self.model)

    def _make_decoder(self, dtype) -> HqWindowMaskDecoder:
        return HqWindowMaskDecoder(self.model, dtype)

    def _window_tensors(self) -> Dict[str, object]:
        """The image embedding and the early features HQ's decoder reads (the first of the encoder's list)."""
        return {"image_embeddings": self.predictor.features, "interm_embeddings": self.predictor.interm_features[0]}

    def _set_window_tensors(self, tensors: Dict[str, object]) -> None:
        self.predictor.features = tensors["image_embeddings"]
        self.predictor.interm_features = [tensors["interm_embeddings"]]

    def _window_to_decoder(self) -> None:
        predictor = self.predictor
        predictor.interm_features = predictor.interm_features[:1]  # the decoder reads the first only: free the rest
        self.decoder.set_embedding(predictor.features, predictor.interm_features[0])

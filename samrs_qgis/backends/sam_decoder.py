"""SAM's mask decoder arranged for many boxes on one window: the same arithmetic, less of it.

segment-anything's ``MaskDecoder`` repeats the window's image embedding for every box and then
upsamples every mask over the whole 1024x1024 input. Two properties of its architecture let us
skip work without changing any value it computes:

- In the first two-way transformer layer the image side's projections (the keys and values the box
  tokens attend to, and the queries of the image-to-token attention) depend on the image alone.
  They are computed once per window and broadcast over the boxes.
- In the later layers each box has its own 4096 image tokens, but only a few prompt tokens (t = 7 for
  a box). Every projection of the image tokens is folded into the few tokens' side instead (matrix
  products reassociated; a softmax row sums to one, so a value projection's bias passes through it):
  no 4096-token projection and no head split/merge copy of the image side per box. The image side's
  positional encoding is the same for every box, so its projections are made once per window and each
  box meets them head by head (t x 16 rows per head, not 8 t x 256). Layer 0's output is the window's
  keys plus a low-rank update per box, through a layer norm: layer 1 takes it in that factored form
  (:class:`FirstLayerKeys`). The final attention runs only for the tokens whose outputs are read.
  The same values up to rounding; per box (SAM's single mask) 2.0 -> 0.55 GFLOP of matrix products
  (torch's FlopCounterMode, batch of 4).
- The output upscaling (two 2x2 stride-2 transposed convolutions with a per-pixel channel layer norm
  and GELU) and the hypernetwork product are pixel-local: a cell of the 256x256 logit grid depends
  only on the one 64x64 embedding cell it lies in. So each box's logits are computed over the
  cells its mask may occupy (its region), not over the whole window.

Grids: the image embedding is 64x64 cells of 16 frame pixels, the logits 256x256 cells of 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .devices import to_device

EMBED_CELL = 16  # frame pixels per image-embedding cell (1024 / 64)
LOGIT_CELL = 4  # frame pixels per low-resolution logit cell (1024 / 256)


@dataclass
class WindowTensors:
    """Per-window, box-independent tensors; ``n`` = 64*64 image positions, ``c`` = 256 channels."""

    features: object  # (1, c, rows, cols) the image embedding
    image_pe: object  # (1, c, rows, cols) positional encoding of the image positions
    keys: object  # (1, n, c) image embedding plus the "no mask" dense prompt
    first_keys: object  # (1, heads, n, c/2/heads) layer 0 token-to-image keys
    first_values: object  # (1, heads, n, c/2/heads) layer 0 token-to-image values
    first_queries: object  # (1, heads, n, c/2/heads) layer 0 image-to-token queries
    # Per cross attention after layer 0 (:func:`pe_projections`' order): the image positional encoding through
    # its image-side projection (token-to-image: keys, image-to-token: queries), no bias, (1, heads, n, c/2/heads)
    projected_pe: Tuple[object, ...]
    second: Optional["SecondLayerWindow"]  # what layer 1 needs of the window; None for a one-layer transformer
    grid_shape: Tuple[int, int]  # (rows, cols) of the image embedding


@dataclass
class SecondLayerWindow:
    """What layer 1 needs of the window to take layer 0's output in factored form (:class:`FirstLayerKeys`).

    ``x~`` = the window's keys (1, n, c) centred over their channels, gamma0 = layer 0's last layer-norm weight.
    Projections carry no bias; per-head ones are (1, heads, n, d).
    """

    scaled: object  # (1, n, c) x~ * gamma0
    squares: object  # (1, 1, n) |x~_i|^2
    out_heads: object  # (1, heads, n, d) x~ through layer 0's image-to-token output projection, per head
    out_bias: object  # (1, 1, n) x~ . that projection's bias
    keys: object  # x~ * gamma0 through layer 1's token-to-image key projection
    values: object  # ... its value projection
    queries: object  # ... layer 1's image-to-token query projection


@dataclass
class FirstLayerKeys:
    """Layer 0's image side for a batch of boxes in factored form; it is never made whole.

    Layer 0 ends with ``keys = norm(x + weights^T mixed)``: ``x`` (1, n, c) the window's keys, the same for every
    box, plus a rank-r update per box (r = heads t). Per position i that is keys_i = inv_sigma_i (x~_i +
    weights_i^T centred) * gamma + beta, with x~ = x centred over its channels and ``centred`` = mixed with its rows
    centred. A product of a few token rows with every keys_i splits into the window's part, made once per window
    (:class:`SecondLayerWindow`), and a rank-r part per box: about a quarter of the arithmetic of a product with
    made keys (per box 117 -> 33 MFLOP for 56 rows), and no pass over B x n x c values. The standard deviation
    comes from the same factors (:func:`first_layer_keys`).
    """

    weights: object  # (B, r, n) the image-to-token attention weights
    centred: object  # (B, r, c) the attention's mixed values, each row minus its mean
    inv_sigma: object  # (B, 1, n) 1 / the layer norm's standard deviation at each position
    norm: object  # the layer norm (gamma its weight, beta its bias)
    window: SecondLayerWindow

    def plus(self, weights, mixed):
        """keys + weights^T mixed, (B, n, c): layer 1's residual sum, made in one product from both updates."""
        torch = _torch()
        batch, _, n = weights.shape
        beta = self.norm.bias.expand(batch, 1, -1)  # through a row of ones: beta added by the product too
        left = torch.cat([self.weights * self.inv_sigma, weights, weights.new_ones(batch, 1, n)], dim=1)
        right = torch.cat([self.centred * self.norm.weight, mixed, beta], dim=1)
        # (an in-place baddbmm_ has no fast bf16 kernel on the CPU: 1000x slower than this)
        return torch.bmm(left.transpose(1, 2), right).addcmul_(self.inv_sigma.transpose(1, 2), self.window.scaled)


def _attend(attention, q, k, v):
    """segment-anything's ``Attention.forward`` after its q/k/v projections, for a batch of boxes against one
    window: ``q`` (B, t, heads, d) the boxes' tokens, ``k`` and ``v`` (1, heads, n, d) the window's. Returns
    (B, t, c). Each head's products take all boxes' tokens as rows (no copy of the window side per box)."""
    torch = _torch()
    batch, tokens, heads, per_head = q.shape
    scores = torch.softmax(_with_heads(q, k) / math.sqrt(per_head), dim=-1)  # (heads, B t, n)
    out = (scores @ v[0]).view(heads, batch, tokens, per_head).permute(1, 2, 0, 3)  # (B, t, heads, d)
    return attention.out_proj(out.reshape(batch, tokens, heads * per_head))


def _torch():
    import torch

    return torch


def _with_heads(per_head_tokens, projected):
    """Each head's tokens against its projected image side, every box's tokens as rows of one product per head:
    ``per_head_tokens`` (B, t, heads, d), ``projected`` (1, heads, n, d) -> (heads, B t, n)."""
    batch, tokens, heads, per_head = per_head_tokens.shape
    rows = per_head_tokens.permute(2, 0, 1, 3).reshape(heads, batch * tokens, per_head)
    return rows @ projected[0].transpose(1, 2)


def _add_heads(scores, per_head_tokens, projected):
    """``scores`` (B, heads t, n) plus :func:`_with_heads` of the tokens and ``projected``, in place."""
    batch, tokens, heads, _ = per_head_tokens.shape
    n = scores.shape[-1]
    scores.view(batch, heads, tokens, n).add_(
        _with_heads(per_head_tokens, projected).view(heads, batch, tokens, n).transpose(0, 1))
    return scores


def _split_heads(image_side, heads: int):
    """(1, n, heads d) -> (1, heads, n, d), contiguous: one window's projection ready for :func:`_with_heads`."""
    one, n, width = image_side.shape
    return image_side.view(one, n, heads, width // heads).transpose(1, 2).contiguous()


def pe_projections(transformer, key_pe) -> Tuple[object, ...]:
    """The image positional encoding ``key_pe`` (1, n, c) through the image-side projection of every cross
    attention after layer 0, in the order :func:`transformer_for_boxes` uses them: per later layer its
    token-to-image keys and image-to-token queries, then the final attention's keys. No bias (the tokens' side
    adds it). Each (1, heads, n, d)."""
    attentions = []
    for layer in transformer.layers[1:]:
        attentions += [(layer.cross_attn_token_to_image, "k_proj"), (layer.cross_attn_image_to_token, "q_proj")]
    attentions.append((transformer.final_attn_token_to_image, "k_proj"))
    return tuple(_split_heads(key_pe @ getattr(a, name).weight.t(), a.num_heads) for a, name in attentions)


def second_layer_window(transformer, keys) -> Optional[SecondLayerWindow]:
    """:class:`SecondLayerWindow` of the window's keys (1, n, c); None when the transformer has one layer."""
    if len(transformer.layers) < 2:
        return None
    first, second = transformer.layers[0], transformer.layers[1]
    centred = keys - keys.mean(-1, keepdim=True)
    scaled = centred * first.norm4.weight
    out = first.cross_attn_image_to_token.out_proj
    to_image, to_token = second.cross_attn_token_to_image, second.cross_attn_image_to_token

    def heads(image_side, attention):
        return _split_heads(image_side, attention.num_heads)

    return SecondLayerWindow(
        scaled=scaled, squares=(centred * centred).sum(-1).unsqueeze(1),
        out_heads=heads(centred @ out.weight, first.cross_attn_image_to_token),
        out_bias=(centred @ out.bias).unsqueeze(1),
        keys=heads(scaled @ to_image.k_proj.weight.t(), to_image),
        values=heads(scaled @ to_image.v_proj.weight.t(), to_image),
        queries=heads(scaled @ to_token.q_proj.weight.t(), to_token))


def first_layer_keys(norm, window: SecondLayerWindow, weights, mixed, values) -> FirstLayerKeys:
    """Layer 0's ``norm(x + weights^T mixed)`` in factored form, its standard deviation from the factors:
    var_i = (|x~_i|^2 + 2 weights_i . (mixed x~_i) + weights_i^T (centred centred^T) weights_i) / c, where
    mixed x~_i = v_h . (W_out,h^T x~_i) + b_out . x~_i / heads (``values`` (B, t, heads, d) the attention's
    values, ``mixed``'s rows being v_h W_out,h^T + b_out / heads). ``weights`` (B, r, n), ``mixed`` (B, r, c)."""
    torch = _torch()
    batch, _, n = weights.shape
    c = mixed.shape[-1]
    tokens, heads = values.shape[1], values.shape[2]
    centred = mixed - mixed.mean(-1, keepdim=True)
    with_window = _with_heads(values, window.out_heads).view(heads, batch, tokens, n).transpose(0, 1)  # (B, h, t, n)
    # each head's weights over its tokens sum to one: the bias term sums to b_out . x~_i
    cross = (weights.view(batch, heads, tokens, n) * with_window).sum((1, 2)).unsqueeze(1) + window.out_bias
    quadratic = (weights * ((centred @ centred.transpose(1, 2)) @ weights)).sum(1, keepdim=True)  # (B, 1, n)
    variance = (window.squares + 2 * cross + quadratic) / c
    return FirstLayerKeys(weights=weights, centred=centred, inv_sigma=torch.rsqrt(variance.clamp_min(0) + norm.eps),
                          norm=norm, window=window)


def _factored_scores(per_head_tokens, folded, bias, first: FirstLayerKeys, projected_keys, projected_pe):
    """(B, heads t, n): ``folded`` . (keys_i + pe_i) + ``bias`` at every position of :class:`FirstLayerKeys`,
    computed from its factors. ``folded`` (B, heads t, c) = the tokens (B, t, heads, d) through a projection
    W (:func:`_fold_into_tokens`); ``projected_keys`` the window's part through W, ``projected_pe`` the image
    positional encoding's (each (1, heads, n, d))."""
    gamma, beta = first.norm.weight, first.norm.bias
    scores = ((folded * gamma) @ first.centred.transpose(1, 2)) @ first.weights  # the rank-r part, (B, heads t, n)
    _add_heads(scores, per_head_tokens, projected_keys).mul_(first.inv_sigma)
    return _add_heads(scores, per_head_tokens, projected_pe) + (folded @ beta).unsqueeze(-1) + bias


def _factored_values(weights, first: FirstLayerKeys, value_projection, projected_values, tokens: int):
    """``weights`` (B, heads t, n), rows summing to one, times the keys of :class:`FirstLayerKeys` through
    ``value_projection`` (its bias not added), per head: (B, t, heads, d). ``projected_values`` (1, heads, n, d) the
    window's part through the value projection."""
    torch = _torch()
    batch, _, n = weights.shape
    heads, per_head = projected_values.shape[1], projected_values.shape[3]
    scaled = weights * first.inv_sigma
    per_head_rows = scaled.view(batch, heads, tokens, n).transpose(0, 1).reshape(heads, batch * tokens, n)
    window_part = (per_head_rows @ projected_values[0]).view(heads, batch, tokens, per_head).permute(1, 2, 0, 3)
    through = ((first.centred * first.norm.weight) @ value_projection.weight.t()).view(batch, -1, heads, per_head)
    low_rank = torch.einsum("bhtr,brhd->bthd", (scaled @ first.weights.transpose(1, 2)).view(batch, heads, tokens, -1),
                            through)
    # the rows summing to one carry beta through the projection unscaled
    return window_part + low_rank + (value_projection.weight @ first.norm.bias).view(heads, per_head)


def _fold_into_tokens(per_head_tokens, projection):
    """A projection of the image side folded into the tokens': ``per_head_tokens`` (B, t, heads, d) against
    ``projection`` (a Linear from c to heads d) -> (rows (B, heads t, c), bias (B, heads t, 1)), so that
    rows . x + bias = token_h . (W_h x + b_h) for an image position x (c,)."""
    torch = _torch()
    batch, tokens, heads, per_head = per_head_tokens.shape
    weight = projection.weight.view(heads, per_head, -1)
    rows = torch.einsum("bthd,hdc->bhtc", per_head_tokens, weight).reshape(batch, heads * tokens, -1)
    bias = torch.einsum("bthd,hd->bht", per_head_tokens, projection.bias.view(heads, per_head))
    return rows, bias.reshape(batch, heads * tokens, 1)


def tokens_to_image(attention, queries, keys, projected_pe, first: Optional[FirstLayerKeys] = None):
    """segment-anything's ``Attention`` with a few tokens attending to the image, reassociated:
    ``attention(q=queries, k=keys + key_pe, v=keys)``.

    ``queries`` (B, t, c) the tokens (their positional encoding added); ``keys`` (B, n, c) the image side;
    ``projected_pe`` (1, heads, n, d) the image positional encoding through the key projection
    (:func:`pe_projections`). The key and value projections are applied to the tokens' side: scores =
    (q_h W_k,h) . keys + q_h . (W_k,h key_pe) + q_h . b_k,h, and, a softmax row summing to one,
    softmax(scores) (keys W_v,h^T + b_v,h) = (softmax(scores) keys) W_v,h^T + b_v,h. With ``first`` (layer 1) the
    keys are layer 0's in factored form and ``keys`` is not read. Returns (B, t, c).
    """
    torch = _torch()
    batch, tokens, c = queries.shape
    heads = attention.num_heads
    q = attention.q_proj(queries)
    per_head = q.shape[-1] // heads
    q = q.view(batch, tokens, heads, per_head)
    folded, bias = _fold_into_tokens(q, attention.k_proj)
    if first is None:
        scores = _add_heads(folded @ keys.transpose(1, 2), q, projected_pe) + bias  # (B, heads t, n)
    else:
        scores = _factored_scores(q, folded, bias, first, first.window.keys, projected_pe)
    weights = torch.softmax(scores / math.sqrt(per_head), dim=-1)
    if first is None:
        mixed = (weights @ keys).view(batch, heads, tokens, c)
        out = torch.einsum("bhtc,hdc->bthd", mixed, attention.v_proj.weight.view(heads, per_head, c))
    else:
        out = _factored_values(weights, first, attention.v_proj, first.window.values, tokens)
    out = out + attention.v_proj.bias.view(heads, per_head)
    return attention.out_proj(out.reshape(batch, tokens, heads * per_head))


def image_to_tokens(attention, keys, queries, values, projected_pe=None, projected=None,
                    first: Optional[FirstLayerKeys] = None):
    """segment-anything's ``Attention`` with the image attending to a few tokens, ``attention(q=keys + key_pe,
    k=queries, v=values)``, reassociated and returned in factors: (weights (B, r, n), mixed (B, r, c), the values
    per head (B, t, heads, d)), r = heads t, the output at image position i being ``weights[:, :, i] @ mixed`` (its
    two-way block adds the residual: ``baddbmm(keys, weights^T, mixed)``).

    ``keys`` (B, n, c) the image side (read only without ``projected`` and ``first``); ``queries`` (B, t, c) the tokens with their positional encoding
    (the attention's keys), ``values`` (B, t, c) without. One of: ``projected_pe`` (1, heads, n, d), the image
    positional encoding through the query projection (:func:`pe_projections`); ``projected`` (1, heads, n, d), the
    whole query projection of ``keys + key_pe`` when it is already known (one window for all boxes); ``first``
    with ``projected_pe``: layer 0's keys in factored form (``keys`` not read). The query projection is folded
    into the tokens' keys, the output projection into their values, per head: scores = (keys + key_pe) .
    (W_q,h^T k_h) + b_q,h . k_h; out = sum over heads of softmax(scores) (v_h W_out,h^T) + b_out, the bias spread
    over the heads' rows (each head's weights sum to one). Scores are held as (B, heads t, n), so the softmax over
    a head's t tokens runs along n.
    """
    torch = _torch()
    batch, tokens, c = queries.shape
    heads = attention.num_heads
    k = attention.k_proj(queries)
    per_head = k.shape[-1] // heads
    k = k.view(batch, tokens, heads, per_head)
    if projected is not None:
        n = projected.shape[2]  # to (B, heads, t, n): one copy of the scores, not of the window side per box
        scores = _with_heads(k, projected).view(heads, batch, tokens, n).transpose(0, 1).contiguous()
    else:
        folded, bias = _fold_into_tokens(k, attention.q_proj)
        if first is not None:
            scores = _factored_scores(k, folded, bias, first, first.window.queries, projected_pe)
        else:
            scores = _add_heads(folded @ keys.transpose(1, 2), k, projected_pe) + bias
    n = scores.shape[-1]
    weights = torch.softmax(scores.view(batch, heads, tokens, n) / math.sqrt(per_head), dim=2)
    v = attention.v_proj(values).view(batch, tokens, heads, per_head)
    w_out = attention.out_proj.weight.view(c, heads, per_head)
    mixed = torch.einsum("bthd,chd->bhtc", v, w_out) + attention.out_proj.bias / heads
    return weights.reshape(batch, heads * tokens, n), mixed.reshape(batch, heads * tokens, c), v


def two_way_layer(layer, queries, keys, query_pe, projected_pe, first: Optional[FirstLayerKeys] = None):
    """segment-anything's ``TwoWayAttentionBlock.forward`` (a layer after the first) for a batch of boxes, its
    cross attentions reassociated (:func:`tokens_to_image`, :func:`image_to_tokens`). Shapes as
    :func:`transformer_for_boxes`; ``keys`` (B, n, c); ``projected_pe`` this layer's two
    :func:`pe_projections`. With ``first`` (layer 1) the keys are layer 0's in factored form (``keys`` None)."""
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    queries = layer.norm2(queries + tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys,
                                                    projected_pe[0], first))
    queries = layer.norm3(queries + layer.mlp(queries))
    weights, mixed, _ = image_to_tokens(layer.cross_attn_image_to_token, keys, queries + query_pe, queries,
                                        projected_pe=projected_pe[1], first=first)
    summed = first.plus(weights, mixed) if first is not None else _torch().baddbmm(keys, weights.transpose(1, 2), mixed)
    return queries, layer.norm4(summed)


def transformer_for_boxes(transformer, tokens, keys, first_keys, first_values, first_queries, projected_pe,
                          second: Optional[SecondLayerWindow], read_tokens: int):
    """The two-way transformer for a batch of box prompts against one window.

    ``tokens`` (B, t, c): output tokens + sparse prompt embeddings; the window tensors as in
    :class:`WindowTensors`. Returns (queries (B, read_tokens, c), keys (B, n, c)) as ``TwoWayTransformer`` does,
    its queries cut to the first ``read_tokens``: the final attention treats each token on its own, and only the
    tokens whose outputs are read go through it (SAM's single mask reads 2 of a box's 7).
    A plain function of tensors so that ``torch.compile`` can take it whole.
    """
    first = transformer.layers[0]  # skip_first_layer_pe: self-attention without the prompt PE
    queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
    to_image = first.cross_attn_token_to_image
    q = to_image.q_proj(queries + tokens)
    q = q.view(*q.shape[:2], to_image.num_heads, -1)
    queries = first.norm2(queries + _attend(to_image, q, first_keys, first_values))
    queries = first.norm3(queries + first.mlp(queries))
    weights, mixed, values = image_to_tokens(first.cross_attn_image_to_token, keys, queries + tokens, queries,
                                             projected=first_queries)
    factored = None
    if second is not None:  # layer 1 takes layer 0's output in factored form
        factored, keys = first_layer_keys(first.norm4, second, weights, mixed, values), None
    else:
        keys = first.norm4(_torch().baddbmm(keys, weights.transpose(1, 2), mixed))
    for i, layer in enumerate(transformer.layers[1:]):
        queries, keys = two_way_layer(layer, queries, keys, tokens, projected_pe[2 * i:2 * i + 2],
                                      factored if i == 0 else None)
    queries, tokens = queries[:, :read_tokens], tokens[:, :read_tokens]
    out = tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, keys, projected_pe[-1])
    return transformer.norm_final_attn(queries + out), keys


def region_cells(region: Optional[np.ndarray], grid_shape: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Embedding cells (r0, c0, r1, c1), end-exclusive, whose logits cover a frame-space region.

    ``region`` = (x0, y0, x1, y1) frame pixels over which logits will be sampled bilinearly at pixel
    centres (see :mod:`samrs_qgis.logits`); one logit cell of margin on each side covers the two
    cells each sample reads. None -> the whole grid.
    """
    rows, cols = grid_shape
    if region is None:
        return 0, 0, rows, cols
    x0, y0, x1, y1 = (float(v) for v in region)
    per = EMBED_CELL // LOGIT_CELL

    def span(a, b, size):
        lo = math.floor(a / LOGIT_CELL - 0.5) - 1
        hi = math.floor(b / LOGIT_CELL - 0.5) + 2
        lo = min(max(lo, 0), size * per - 1) // per
        hi = min(max(hi, 0), size * per - 1) // per + 1
        return lo, max(hi, lo + 1)

    r0, r1 = span(y0, y1, rows)
    c0, c1 = span(x0, x1, cols)
    return r0, c0, r1, c1


def bucketed(lo: int, hi: int, size: int) -> Tuple[int, int]:
    """Widen the cell span [lo, hi) to a power-of-two length (at most ``size``), staying inside [0, size).

    Each distinct crop shape makes oneDNN build and cache a convolution kernel; with free shapes that
    cache grew the process by ~100 MB over a large raster. Powers of two keep the shapes few.
    """
    length = min(1 << max(hi - lo - 1, 0).bit_length(), size)
    lo = max(min(lo, size - length), 0)
    return lo, lo + length


class WindowMaskDecoder:
    """SAM's prompt encoder + mask decoder for box prompts, with per-window work done once.

    ``set_embedding`` once per window, then ``decode`` batches of boxes. Inference mode is the caller's.
    With ``dtype`` (bfloat16) the mask decoder runs on a copy of its weights in that type, natively:
    under autocast every linear layer would cast the 4096 image tokens per box to bf16 and every layer
    norm back to fp32, and those copies cost more than the arithmetic (measured here: 18.3 -> 13.8
    ms/box, masks agreeing with fp32 as closely as autocast's, 0.997 on random weights). The prompt
    encoder always runs in fp32, also under the caller's autocast (its positional encoding needs it).
    Without ``dtype``, the caller's autocast (or fp32) applies to the mask decoder.
    """

    def __init__(self, model, dtype=None):
        import copy

        self.model = model
        self.dtype = dtype
        self.decoder = copy.deepcopy(model.mask_decoder).to(dtype) if dtype is not None else model.mask_decoder
        self.window: Optional[WindowTensors] = None
        # The compiled transformer, or None for eager. A function, never a bound method of self: a bound
        # method kept on the object is a reference cycle that holds the whole model (on its device) until
        # a full garbage collection.
        self._compiled_transformer = None

    @property
    def compiled(self) -> bool:
        return self._compiled_transformer is not None

    def transformer(self, tokens, w: WindowTensors, multimask: bool):
        run = self._compiled_transformer or transformer_for_boxes
        return run(self.decoder.transformer, tokens, w.keys, w.first_keys, w.first_values, w.first_queries,
                   w.projected_pe, w.second, self._read_tokens(multimask))

    def compile(self) -> None:
        """Compile the transformer (fixed shapes: the caller pads batches to one size)."""
        self._compiled_transformer = _torch().compile(transformer_for_boxes, dynamic=False)

    def uncompile(self) -> None:
        self._compiled_transformer = None

    def set_embedding(self, features) -> None:
        """Take a window's image embedding (1, c, 64, 64) and compute its box-independent tensors."""
        with self._native():
            self._set_embedding(features)

    def _native(self):
        """No autocast while the decoder runs in its own dtype (see the class docstring)."""
        import contextlib

        if self.dtype is None:
            return contextlib.nullcontext()
        return self._fp32()

    def _fp32(self):
        """No autocast: the prompt encoder's positional encoding maps coordinates in [-1, 1] through sines of
        random frequencies; rounded to bf16/fp16 first, a box corner moves by about a pixel at 1024."""
        return _torch().autocast(self.decoder.iou_token.weight.device.type, enabled=False)

    def _cast(self, tensor):
        return tensor.to(self.dtype) if self.dtype is not None else tensor

    def _set_embedding(self, features) -> None:
        prompt = self.model.prompt_encoder
        first = self.decoder.transformer.layers[0]
        to_image, to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)  # the dense prompt when no mask is given
        with self._fp32():
            image_pe = self._cast(prompt.get_dense_pe())
        features = self._cast(features)
        keys = (features + self._cast(dense)).flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        keyed = keys + key_pe
        self.window = WindowTensors(
            features=features, image_pe=image_pe, keys=keys,
            first_keys=to_image._separate_heads(to_image.k_proj(keyed), to_image.num_heads),
            first_values=to_image._separate_heads(to_image.v_proj(keys), to_image.num_heads),
            first_queries=_split_heads(to_token.q_proj(keyed), to_token.num_heads),
            projected_pe=pe_projections(self.decoder.transformer, key_pe),
            second=second_layer_window(self.decoder.transformer, keys),
            grid_shape=tuple(features.shape[-2:]))

    def decode(self, boxes, regions: Optional[np.ndarray], multimask: bool, count: Optional[int] = None,
               points=None, masks=None) -> List[Tuple[np.ndarray, int, int, float]]:
        """Prompts in SAM's input frame -> per box (logits, row0, col0, score); see :meth:`decode_async`."""
        return self.decode_async(boxes, regions, multimask, count, points, masks).result()

    def decode_async(self, boxes, regions: Optional[np.ndarray], multimask: bool, count: Optional[int] = None,
                     points=None, masks=None) -> "DecodedBatch":
        """Start decoding a batch of prompts (SAM's input frame); ``.result()`` of the answer waits for it.

        ``boxes`` (B, 4) tensor or None, ``points`` a (coords (B, k, 2), labels (B, k)) pair or None,
        ``masks`` (B, 1, 256, 256) dense mask prompts or None, as segment-anything's prompt encoder takes them.
        Per box the result is (logits, row0, col0, score): ``logits`` float32 covers embedding cells
        [row0, ...) x [col0, ...) at 4x their resolution (``LOGIT_CELL`` frame pixels per value); ``regions``
        (B, 4) frame-space areas the logits must cover, or None for the whole window. Only the first
        ``count`` boxes are returned (the rest is padding for a compiled batch shape). ``multimask`` picks
        the best of SAM's three candidates by predicted IoU, else SAM's single-mask output.

        On a GPU this returns once the work is queued: the logits come back in one non-blocking copy, so
        the caller can post-process the previous batch meanwhile.
        """
        with self._fp32():
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        with self._native():
            return self._decode(sparse, dense, masks is not None, regions, multimask,
                                sparse.shape[0] if count is None else count)

    def _output_tokens(self):
        """The decoder's output tokens (t, c): the IoU token, then the mask tokens."""
        return _torch().cat([self.decoder.iou_token.weight, self.decoder.mask_tokens.weight], dim=0)

    def _read_tokens(self, multimask: bool) -> int:
        """How many of the leading output tokens :meth:`_select` reads: the IoU token and the single-mask token, or
        with ``multimask`` all mask tokens."""
        return 1 + self.decoder.num_mask_tokens if multimask else 2

    def _select(self, hs, multimask: bool, count: int):
        """The transformer's output tokens (B, t, c) -> (the chosen mask's hypernetwork weights, its predicted
        IoU (B,)): what :meth:`_crop_logits` takes."""
        torch = _torch()
        decoder = self.decoder
        iou = decoder.iou_prediction_head(hs[:, 0, :]).float()  # (B, mask tokens)
        if multimask:  # the best of the three multimask candidates (tokens 1-3), chosen on the device
            choice = 1 + iou[:, 1:4].argmax(dim=1)
            hyper = torch.stack([decoder.output_hypernetworks_mlps[t](hs[:, 1 + t, :]) for t in (1, 2, 3)], dim=1)
            hyper = hyper.gather(1, (choice - 1).view(-1, 1, 1).expand(-1, 1, hyper.shape[-1]))[:, 0]
        else:
            choice = torch.zeros(count, dtype=torch.long, device=iou.device)
            hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1, :])  # (B, c/8)
        return hyper, iou.gather(1, choice.view(-1, 1))[:, 0]

    def _upscaled_channels(self, src) -> int:
        """Values per logit cell of a box's upscaled crop (what bounds a crop group's memory)."""
        return src.shape[1] // 8

    def _crop_logits(self, src, group, shape: Tuple[int, int], hyper):
        """Logits (g, 16 rows cols) of a group of boxes over their crops of ``shape`` embedding cells:
        ``group`` (g, 3) int64 rows (box, row0, col0); ``src`` (B, c, rows, cols) the transformer's image side."""
        upscaled = self.decoder.output_upscaling(gather_crops(src, group, shape))  # (g, c/8, 4 rows, 4 cols)
        return (hyper[group[:, 0]].unsqueeze(1) @ upscaled.flatten(2)).squeeze(1)

    def _decode(self, sparse, dense, mask_prompt: bool, regions, multimask: bool, count: int) -> "DecodedBatch":
        torch = _torch()
        decoder, w = self.decoder, self.window
        output_tokens = self._output_tokens()
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1),
                            sparse.to(output_tokens.dtype)), dim=1)
        if not mask_prompt:
            hs, keys = self.transformer(tokens, w, multimask)
        else:  # a mask prompt changes the image side per box: nothing to share, segment-anything's own path
            hs, keys = decoder.transformer(w.features + self._cast(dense), w.image_pe, tokens)
        hs, keys = hs[:count], keys[:count]
        hyper, scores = self._select(hs, multimask, count)  # scores (B,)
        rows, cols = w.grid_shape
        src = keys.transpose(1, 2).reshape(count, -1, rows, cols)  # (B, c, rows, cols)
        cells = [crop_cells(None if regions is None else regions[i], w.grid_shape) for i in range(count)]
        groups = list(crop_groups(cells, self._upscaled_channels(src)))
        # (box, row0, col0) of every box in group order: the batch's one copy of crop offsets to the device
        offsets = to_device(torch, np.array([[i, cells[i][0], cells[i][1]] for _, members in groups for i in members],
                                            dtype=np.int64).reshape(-1, 3), str(src.device))
        parts, layout, at = [scores], [], 0
        for shape, members in groups:
            group = offsets[at:at + len(members)]
            at += len(members)
            logits = self._crop_logits(src, group, shape, hyper)  # (g, 16 rows cols)
            parts.append(logits.float().flatten())
            layout.append((members, (shape[0] * EMBED_CELL // LOGIT_CELL, shape[1] * EMBED_CELL // LOGIT_CELL)))
        return DecodedBatch(torch.cat(parts), count, cells, layout)


def crop_cells(region: Optional[np.ndarray], grid_shape: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """The embedding cells (r0, c0, r1, c1) whose logits are computed for a region: :func:`region_cells`
    widened to power-of-two spans (:func:`bucketed`)."""
    rows, cols = grid_shape
    r0, c0, r1, c1 = region_cells(region, grid_shape)
    (r0, r1), (c0, c1) = bucketed(r0, r1, rows), bucketed(c0, c1, cols)
    return r0, c0, r1, c1


# Upscaled crops of one group held at once, in values (256 MB in float32): bounds the decoder's memory when a
# GPU batch of 64 boxes asks for whole-window logits (2.1 M values each).
GROUP_VALUES = 64 * 1024 * 1024


def crop_groups(cells, upscaled_channels: int):
    """Boxes grouped by crop shape, so each group is upscaled in one call: yields ((rows, cols), box indices),
    each group small enough that its upscaled crops (``upscaled_channels`` x 4 rows x 4 cols per box) stay
    within ``GROUP_VALUES``."""
    groups = {}
    for i, (r0, c0, r1, c1) in enumerate(cells):
        groups.setdefault((r1 - r0, c1 - c0), []).append(i)
    for shape, members in groups.items():
        per_box = upscaled_channels * 16 * shape[0] * shape[1]
        step = max(1, GROUP_VALUES // per_box)
        for start in range(0, len(members), step):
            yield shape, members[start:start + step]


def gather_crops(src, offsets, shape: Tuple[int, int]):
    """(g, c, rows, cols) crops of ``src`` (B, c, R, C) in one indexing operation: crop k is box
    ``offsets[k, 0]``'s cells from corner (``offsets[k, 1]``, ``offsets[k, 2]``); ``offsets`` (g, 3) int64."""
    torch = _torch()
    row_index = offsets[:, 1:2] + torch.arange(shape[0], device=src.device)  # (g, rows)
    col_index = offsets[:, 2:3] + torch.arange(shape[1], device=src.device)  # (g, cols)
    crops = src[offsets[:, 0, None, None], :, row_index[:, :, None], col_index[:, None, :]]  # (g, rows, cols, c)
    return crops.permute(0, 3, 1, 2)


class DecodedBatch:
    """A batch's logits and scores in one flat float32 tensor on its way to the host.

    Layout: ``count`` scores, then per crop group its boxes' logits (``(rows, cols)`` each) in group order.
    On CUDA the copy to pinned host memory is non-blocking and :meth:`result` waits for it; elsewhere the
    copy is done when this is made. Either way it is the batch's only transfer to the host.
    """

    def __init__(self, packed, count: int, cells, layout):
        torch = _torch()
        on_cuda = packed.device.type == "cuda"
        self.host = torch.empty(packed.shape, dtype=packed.dtype, device="cpu", pin_memory=on_cuda)
        self.host.copy_(packed, non_blocking=on_cuda)
        self.ready = None
        if on_cuda:
            self.ready = torch.cuda.Event()
            self.ready.record()
        self.count, self.cells, self.layout = count, cells, layout

    def result(self) -> List[Tuple[np.ndarray, int, int, float]]:
        """Per box, in batch order: (logits float32 (rows, cols), row0, col0, score)."""
        if self.ready is not None:
            self.ready.synchronize()
        flat = self.host.numpy()
        scores = flat[:self.count].tolist()
        grids: List[Optional[np.ndarray]] = [None] * self.count
        at = self.count
        for members, (rows, cols) in self.layout:
            block = flat[at:at + len(members) * rows * cols].reshape(len(members), rows, cols)
            at += block.size
            for k, i in enumerate(members):
                grids[i] = block[k]
        return [(grids[i], self.cells[i][0], self.cells[i][1], scores[i]) for i in range(self.count)]

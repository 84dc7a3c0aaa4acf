"""Memory-lean attention for SAM's ViT image encoder: the same arithmetic, a few query rows at a time.

segment-anything's ``Attention.forward`` materialises, for each of vit_b's global-attention blocks, the scores of
12 heads x 4096 x 4096 tokens (0.8 GB in fp32), then the decomposed relative-position bias added to them (another
0.8 GB while both are alive) and the softmax. Here the scores ``q*scale @ k^T`` plus the bias built from the small
``rel_h``/``rel_w`` tables, the softmax and the product with ``v`` are computed for a band of query rows at a time,
so at most one band of scores (about :data:`CHUNK_BYTES`) exists at once; each band is exact (a softmax runs over
all keys of its rows), so the embedding is the one the full attention gives.

:func:`apply` gives a loaded model's attention modules this forward, instance by instance (each module's class is
swapped for a subclass that only overrides ``forward``: the weights, their names and the state dict stay as they
are; other models in the process are untouched).
"""
from __future__ import annotations

from typing import Dict

# Scores of one band of query rows, in bytes of fp32 (the bias and the softmax add as much again): for vit_b's
# 12 heads on a 64x64 token grid, 2 image rows. Bands that stay in cache are faster than the full attention:
# measured (one vit_b global block, 1 thread, CPU seconds, best of 5) fp32 2.9 s full, 1.2-1.6 s in 16-48 MB
# bands, 2.5 s in 200 MB ones; bf16 autocast 1.2 s full, 0.93-0.97 s in 16-48 MB bands. A windowed block (25
# windows of 14x14) fp32 0.41 s full, 0.36 s in 8-32 MB bands; bf16 the same. torch's scaled_dot_product_attention
# with each band's bias as its mask was no faster in fp32 (1.35 s at 16 MB), slower under bf16 autocast (1.3 s)
# and there 3.5 % off the full attention (it computes in bf16 what autocast keeps in fp32).
CHUNK_BYTES = 32 << 20

# Modules whose ``Attention`` class computes exactly segment-anything's forward (HQ-SAM's ViT copies it).
ATTENTION_MODULES = ("segment_anything.modeling.image_encoder", "segment_anything_hq.modeling.image_encoder")

_LEAN_CLASSES: Dict[type, type] = {}


def _rel_pos_table(size: int, rel_pos):
    """segment-anything's ``get_rel_pos(size, size, rel_pos)``: the (size, size, C) table of relative-position
    embeddings for query and key sizes both ``size`` (interpolated when the stored table has another length)."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    return get_rel_pos(size, size, rel_pos)


def lean_forward(self, x):
    """``Attention.forward`` of segment-anything, computed a band of query rows at a time."""
    import torch

    B, H, W, _ = x.shape
    heads = self.num_heads
    qkv = self.qkv(x).reshape(B, H * W, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, B * heads, H * W, -1).unbind(0)
    n, tokens, dim = q.shape
    if self.use_rel_pos:
        rh = _rel_pos_table(H, self.rel_pos_h)  # (H, H, dim)
        rw = _rel_pos_table(W, self.rel_pos_w)  # (W, W, dim)
    kt = k.transpose(-2, -1)
    rows = max(1, min(H, CHUNK_BYTES // max(1, 4 * n * W * tokens)))
    out = None  # written band by band: bands kept in a list would sit between the freed scores of the next
    # bands and fragment the heap (glibc serves these sizes from it once they have been freed), growing RSS by
    # ~0.9 GB over a vit_b encode
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        qc = q[:, r0 * W:r1 * W]
        attn = (qc * self.scale) @ kt  # (n, band, tokens)
        if self.use_rel_pos:
            r_q = qc.reshape(n, r1 - r0, W, dim)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
            attn = (attn.view(n, r1 - r0, W, H, W) + rel_h[:, :, :, :, None]
                    + rel_w[:, :, :, None, :]).view(n, (r1 - r0) * W, tokens)
        attn = attn.softmax(dim=-1)
        band = attn @ v
        del attn
        if out is None:
            if r1 == H:
                out = band
                break
            out = torch.empty((n, tokens, dim), dtype=band.dtype, device=band.device)
        out[:, r0 * W:r1 * W] = band
        del band
    out = out.view(B, heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
    return self.proj(out)


def _is_sam_attention(module) -> bool:
    cls = type(module)
    return cls.__name__ == "Attention" and cls.__module__ in ATTENTION_MODULES


def _lean_class(cls: type) -> type:
    lean = _LEAN_CLASSES.get(cls)
    if lean is None:
        lean = _LEAN_CLASSES[cls] = type(f"Lean{cls.__name__}", (cls,), {
            "forward": lean_forward, "__module__": __name__,
            "__doc__": f"{cls.__module__}.{cls.__name__} computed a band of query rows at a time."})
    return lean


def apply(model) -> int:
    """Give every segment-anything attention module in ``model`` the lean forward; returns how many."""
    count = 0
    for module in model.modules():
        if _is_sam_attention(module):
            module.__class__ = _lean_class(type(module))
            count += 1
        elif type(module) in _LEAN_CLASSES.values():
            count += 1
    return count


def is_lean(model) -> bool:
    """True when ``model`` has attention modules and all of them compute the lean way."""
    lean = [type(m) in _LEAN_CLASSES.values() for m in model.modules() if _is_sam_attention(m) or
            type(m) in _LEAN_CLASSES.values()]
    return bool(lean) and all(lean)

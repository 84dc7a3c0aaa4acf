"""Bringing a backend's low-resolution logits to native pixels, over one box's neighbourhood only.

SAM's own post-processing upsamples every mask to the whole (padded) input and then to the image
size; for many boxes in a 1024 px window that costs more than decoding. Here each native pixel of
the neighbourhood samples the logit grid bilinearly at its centre (``align_corners=False`` semantics,
edges clamped), which at native scale (one frame pixel per native pixel) equals SAM's upsampling.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .backends.base import BoxLogits


def _axis_weights(start: int, stop: int, scale: float, origin: float, cell: float, size: int):
    """Indices and weights of the two grid cells each native pixel centre in [start, stop) falls between."""
    pos = ((np.arange(start, stop) + 0.5) * scale - origin) / cell - 0.5
    pos = np.clip(pos, 0.0, size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, size - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def sample_region(logits: BoxLogits, scale: Tuple[float, float],
                  region: Tuple[int, int, int, int]) -> np.ndarray:
    """Logits at native pixel centres of ``region``.

    ``scale`` = frame pixels per native pixel (x, y); ``region`` = (c0, r0, c1, r1) in native pixels
    relative to the window's top-left corner. Returns float32 (r1 - r0, c1 - c0).
    """
    c0, r0, c1, r1 = region
    grid = logits.grid
    y_lo, y_hi, wy = _axis_weights(r0, r1, scale[1], logits.origin_y, logits.cell, grid.shape[0])
    x_lo, x_hi, wx = _axis_weights(c0, c1, scale[0], logits.origin_x, logits.cell, grid.shape[1])
    rows = grid[y_lo] * (1.0 - wy)[:, None] + grid[y_hi] * wy[:, None]
    return rows[:, x_lo] * (1.0 - wx)[None, :] + rows[:, x_hi] * wx[None, :]

"""Optional clean-up of a box's native-resolution mask (SAMRS used none; its ablation tried clipping).

Applied in this order, each optional: clip to the box polygon, fill holes, remove islands smaller
than an area, keep the largest component. Components are 4-connected, as the polygons traced from
the mask are (a diagonal touch makes two parts). Holes are 4-connected too: in the traced (valid)
polygons a background pixel that meets the outside only at a corner is still an interior ring (it
touches the shell at one point), so filling holes fills every background pixel that has no
4-connected path to the crop border.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PostProcessing:
    """``min_island_px``: components with fewer pixels are dropped (0: none); the others are switches."""

    fill_holes: bool = False
    min_island_px: int = 0
    keep_largest: bool = False

    @property
    def active(self) -> bool:
        return self.fill_holes or self.min_island_px > 0 or self.keep_largest


def clean_mask(mask: np.ndarray, steps: PostProcessing) -> np.ndarray:
    """A bool mask (rows, cols) after ``steps``; the input is not modified."""
    if not steps.active or not mask.any():
        return mask
    if steps.fill_holes:
        # a hole is background that cannot reach the crop border through edge-sharing pixels: a
        # diagonal contact (a shared corner) leaves an interior ring in the traced polygon
        mask = ndimage.binary_fill_holes(mask, structure=FOUR_CONNECTED)
    if steps.min_island_px > 0 or steps.keep_largest:
        labels, count = ndimage.label(mask, structure=FOUR_CONNECTED)
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            sizes[0] = 0
            keep = sizes >= max(steps.min_island_px, 1)
            if steps.keep_largest:
                keep &= sizes == sizes.max()
                keep[np.flatnonzero(keep)[1:]] = False  # ties: the first in raster order
            mask = keep[labels]
    return mask

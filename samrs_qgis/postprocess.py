"""Optional clean-up of a box's native-resolution mask (SAMRS used none; its ablation tried clipping).

Applied in this order, each optional: clip to the box polygon, fill holes (all, or those smaller than an
area), remove islands smaller than an area, keep the largest component. Areas are given in raster pixels or in
map units squared (:meth:`PostProcessing.of` turns them into pixels). Components are 4-connected, as the polygons traced from
the mask are (a diagonal touch makes two parts). Holes are 4-connected too: in the traced (valid)
polygons a background pixel that meets the outside only at a corner is still an interior ring (it
touches the shell at one point), so filling holes fills every background pixel that has no
4-connected path to the crop border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PostProcessing:
    """``min_island_px``: components with fewer pixels are dropped (0: none); ``min_hole_px``: holes with fewer
    pixels are filled (0: none); the others are switches."""

    fill_holes: bool = False
    min_island_px: int = 0
    keep_largest: bool = False
    min_hole_px: int = 0

    @classmethod
    def of(cls, options, pixel_area: float) -> "PostProcessing":
        """The clean-up ``options`` (:class:`.settings.SegmentOptions`) ask for, with their areas in map units squared
        turned into pixels of ``pixel_area`` map units squared each; of a threshold in pixels and one in map
        units, the larger counts."""
        def pixels(area: float) -> int:
            return math.ceil(area / pixel_area - 1e-9) if area > 0 and pixel_area > 0 else 0

        return cls(options.fill_holes, max(options.min_island_px, pixels(options.min_island_area)),
                   options.keep_largest, max(options.min_hole_px, pixels(options.min_hole_area)))

    @property
    def active(self) -> bool:
        return self.fill_holes or self.min_island_px > 0 or self.keep_largest or self.min_hole_px > 0


def clean_mask(mask: np.ndarray, steps: PostProcessing) -> np.ndarray:
    """A bool mask (rows, cols) after ``steps``; the input is not modified."""
    if not steps.active or not mask.any():
        return mask
    if steps.fill_holes:
        # a hole is background that cannot reach the crop border through edge-sharing pixels: a
        # diagonal contact (a shared corner) leaves an interior ring in the traced polygon
        mask = ndimage.binary_fill_holes(mask, structure=FOUR_CONNECTED)
    elif steps.min_hole_px > 0:
        holes = ndimage.binary_fill_holes(mask, structure=FOUR_CONNECTED) & ~mask
        labels, count = ndimage.label(holes, structure=FOUR_CONNECTED)
        if count:
            small = np.bincount(labels.ravel(), minlength=count + 1) < steps.min_hole_px
            small[0] = False
            mask = mask | small[labels]
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

"""One box's mask at native resolution: its neighbourhood, thresholding, nodata and the optional clip.

A mask is held as a small bool array over the box's neighbourhood (``MaskCrop``), never over the
whole window or raster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from affine import Affine
from rasterio import features
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.ops import unary_union

from .raster_input import PixelWindow

NEIGHBOURHOOD = 0.25  # margin around a box in which its mask may lie, as a fraction of its larger side
MIN_NEIGHBOURHOOD = 4  # pixels
MASK_THRESHOLD = 0.0  # SAM's logit threshold


@dataclass
class MaskCrop:
    """A mask over raster pixels ``[col, col + cols) x [row, row + rows)``; ``mask`` is bool (rows, cols)."""

    col: int
    row: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def window(self) -> PixelWindow:
        return PixelWindow(self.col, self.row, self.mask.shape[1], self.mask.shape[0])


def neighbourhood(bounds: Tuple[float, float, float, float], window: PixelWindow) -> Tuple[int, int, int, int]:
    """Window-relative native region (c0, r0, c1, r1) around pixel-space box ``bounds``, inside the window."""
    x0, y0, x1, y1 = bounds
    pad = max(MIN_NEIGHBOURHOOD, NEIGHBOURHOOD * max(x1 - x0, y1 - y0))
    c0 = max(math.floor(x0 - pad), window.col) - window.col
    r0 = max(math.floor(y0 - pad), window.row) - window.row
    c1 = min(math.ceil(x1 + pad), window.col_end) - window.col
    r1 = min(math.ceil(y1 + pad), window.row_end) - window.row
    return c0, r0, c1, r1


def polygon_mask(polygon: Polygon, crop_col: int, crop_row: int, shape_rc: Tuple[int, int]) -> np.ndarray:
    """Pixels of a crop whose centres lie inside a pixel-space polygon, bool (rows, cols)."""
    local = affinity.translate(polygon, -crop_col, -crop_row)
    return features.rasterize([(mapping(local), 1)], out_shape=shape_rc, fill=0, dtype="uint8",
                              transform=Affine.identity()).astype(bool)


def polygonize(crop: MaskCrop, raster_transform: Affine) -> Optional[MultiPolygon]:
    """The mask as a valid MultiPolygon in the raster's CRS (pixel edges traced, 4-connected); None if empty."""
    if not crop.mask.any():
        return None
    transform = raster_transform * Affine.translation(crop.col, crop.row)
    parts = [shape(geom) for geom, _ in features.shapes(crop.mask.astype(np.uint8), mask=crop.mask,
                                                         connectivity=4, transform=transform)]
    # The 4-connected components are disjoint but for corners that diagonal pixels share, which a MultiPolygon's
    # parts may: they are one valid MultiPolygon as they are (10x faster than a union for a speckled mask).
    merged = MultiPolygon(parts)
    if not merged.is_valid:
        merged = unary_union(parts)
        if not merged.is_valid:
            merged = merged.buffer(0)
    if isinstance(merged, Polygon):
        merged = MultiPolygon([merged])
    elif not isinstance(merged, MultiPolygon):
        merged = MultiPolygon([g for g in getattr(merged, "geoms", []) if isinstance(g, Polygon)])
    return merged

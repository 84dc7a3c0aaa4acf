"""Masks on an image's pixel grid kept as their bounding window: made from polygons, written as COCO RLE.

A window mask is ``(mask, row, col)``: a bool array (rows, cols) whose top-left pixel is grid pixel
``(col, row)``; pixel ``(c, r)`` covers ``[c, c+1) x [r, r+1)`` in pixel space (GDAL's corner convention).
A polygon is rasterized by pixel centres (a pixel belongs to it when its centre lies inside,
``all_touched=False``) over its own bounding window, clipped to the grid, never over the whole grid. So a
polygon that traces pixel edges (as the pipeline's polygons do) gives its mask back exactly.

A window mask becomes a COCO run-length encoding of the whole ``height`` x ``width`` grid without a
full-grid array. Used by the output writers (:mod:`.samrs_format`, :mod:`.review_export`) and the
evaluation (:mod:`.evaluation`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
from affine import Affine

from .errors import SamrsError

WindowMask = Tuple[np.ndarray, int, int]  # (bool mask (rows, cols), row, col of its top-left pixel)


def empty_window() -> WindowMask:
    return np.zeros((0, 0), bool), 0, 0


def rasterize_window(pixel_parts: Sequence, width: int, height: int) -> WindowMask:
    """Rasterize pixel-space polygons (shapely, non-empty) over their bounding window clipped to a
    ``width`` x ``height`` grid. Returns ``(mask, row, col)``; an empty (0, 0) mask when they miss the grid."""
    from rasterio import features
    from shapely.geometry import mapping

    bounds = np.array([p.bounds for p in pixel_parts])
    c0 = max(int(math.floor(bounds[:, 0].min())), 0)
    r0 = max(int(math.floor(bounds[:, 1].min())), 0)
    c1 = min(int(math.ceil(bounds[:, 2].max())), width)
    r1 = min(int(math.ceil(bounds[:, 3].max())), height)
    if c1 <= c0 or r1 <= r0:
        return empty_window()
    # The geometry is already in pixel space: the window's transform is a plain shift.
    mask = features.rasterize([(mapping(p), 1) for p in pixel_parts], out_shape=(r1 - r0, c1 - c0), fill=0,
                              transform=Affine.translation(c0, r0), all_touched=False, dtype="uint8")
    return mask.astype(bool), r0, c0


def rasterize_map_geometry(geometry: Optional[dict], transform: Affine, width: int, height: int) -> WindowMask:
    """The window mask of a GeoJSON-like (multi)polygon in map coordinates on the grid whose pixel corners
    ``transform`` maps to map coordinates; an empty (0, 0) mask for a null or empty geometry.

    GDAL rasterizes the map geometry through the window's transform: no copy of it in pixel space is made (a
    mask of many parts made that copy the dearest step)."""
    from rasterio import features

    if geometry is None:
        return empty_window()
    xy = _coordinates(geometry)
    if not len(xy):
        return empty_window()
    inverse = ~transform
    # the geometry's map bounding box, its four corners in pixel space (a rotated grid turns it)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    corners = np.array([inverse * (x, y) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))])
    c0 = max(int(math.floor(corners[:, 0].min())), 0)
    r0 = max(int(math.floor(corners[:, 1].min())), 0)
    c1 = min(int(math.ceil(corners[:, 0].max())), width)
    r1 = min(int(math.ceil(corners[:, 1].max())), height)
    if c1 <= c0 or r1 <= r0:
        return empty_window()
    mask = features.rasterize([(geometry, 1)], out_shape=(r1 - r0, c1 - c0), fill=0,
                              transform=transform * Affine.translation(c0, r0), all_touched=False, dtype="uint8")
    return mask.astype(bool), r0, c0


def _coordinates(geometry: dict) -> np.ndarray:
    """Every vertex of a GeoJSON-like Polygon or MultiPolygon as an (n, 2) array."""
    rings = geometry.get("coordinates") or []
    if geometry.get("type") == "MultiPolygon":
        rings = [ring for polygon in rings for ring in polygon]
    points = [point[:2] for ring in rings for point in ring]
    return np.array(points, dtype=float).reshape(-1, 2)


def feature_window_mask(feature: dict, transform: Affine, width: int, height: int, layer_path: str,
                        exact: bool = True) -> WindowMask:
    """The window mask of one feature of a result polygon layer (``instance_id``, ``area_px``); ``exact``: checked
    to cover as many pixel centres as the run counted mask pixels, a :class:`SamrsError` when it does not (the
    layer is not on this grid, or its geometry was edited). Shaped polygons (regularised, smoothed, simplified:
    :mod:`.polygon_shaping`) are not their masks' exact outlines: not ``exact``."""
    p = feature["properties"]
    mask, row, col = rasterize_map_geometry(feature["geometry"], transform, width, height)
    area = int(mask.sum())
    if exact and area != (p.get("area_px") or 0):
        raise SamrsError(f"Instance {p['instance_id']} of '{layer_path}' has {p.get('area_px')} mask pixels but its "
                         f"polygon covers {area} pixel centres of the image grid: the layer is not on the image's grid "
                         "(was its geometry edited?).")
    return mask, row, col


def window_rle(mask: np.ndarray, row: int, col: int, height: int, width: int) -> dict:
    """Compressed COCO RLE over a ``height`` x ``width`` grid of a bool window ``mask`` (rows, cols) whose
    top-left pixel is grid pixel ``(col, row)``.

    COCO RLE counts alternate runs of 0 and 1 in column-major order over the whole grid, starting with 0.
    The set pixels' column-major indices come out sorted from ``nonzero`` of the transposed window, so the
    runs are found without a full-grid array (what ``pycocotools.mask.encode`` would need).
    """
    from pycocotools import mask as mask_utils

    total = height * width
    cols_idx, rows_idx = np.nonzero(mask.T)  # (col, row) pairs in column-major order of the window
    if cols_idx.size == 0:
        counts = [total]
    else:
        linear = (cols_idx.astype(np.int64) + col) * height + (rows_idx.astype(np.int64) + row)
        breaks = np.flatnonzero(np.diff(linear) != 1)
        starts = np.concatenate([linear[:1], linear[breaks + 1]])
        ends = np.concatenate([linear[breaks], linear[-1:]]) + 1
        gaps = starts - np.concatenate([[0], ends[:-1]])
        runs = np.empty(2 * starts.size, dtype=np.int64)
        runs[0::2] = gaps
        runs[1::2] = ends - starts
        counts = runs.tolist()
        if ends[-1] < total:  # COCO's encoder writes no trailing run of length 0
            counts.append(int(total - ends[-1]))
    return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)

"""The pixel grid masks are compared on, and masks on it as full-grid COCO run-length encodings (RLE).

Coordinate spaces and units:

* All masks live on one **pixel grid** per image: the grid of ``grid_raster`` (the source image or an
  instance raster; width ``W``, height ``H``, its geotransform and CRS). Pixel ``(c, r)`` covers
  ``[c, c+1) x [r, r+1)`` in pixel space (GDAL's corner convention, as in ``raster_input``). Areas,
  intersections and unions are in **pixels** of that grid.
* Polygons are rasterized with ``rasterio.features.rasterize`` (a pixel belongs to a polygon when its
  centre lies inside, ``all_touched=False``), each instance on its own over its bounding window
  (rows, cols) of the grid, never over the whole grid. Parts outside the grid are not counted.

Memory: each mask is kept as a COCO RLE of the full ``H x W`` grid, built directly from its window
(column-major runs), so no full-grid array is ever allocated.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio import features as rio_features

from ..errors import InputError
from ..georef import pixel_to_map_transform
from .sources import EvaluationPair, InstanceRaster

RLE_LIMIT = 1 << 32  # pycocotools counts runs in uint32: a grid must hold fewer pixels than this


@dataclass(frozen=True)
class Grid:
    """A pixel grid: ``width`` x ``height`` pixels, ``transform`` pixel -> map coordinates, ``crs`` (or None)."""

    path: str
    width: int
    height: int
    transform: Affine
    crs: Optional[rasterio.crs.CRS]


def open_raster(path: str, role: str):
    """``rasterio.open(path)``; an unreadable file raises :class:`InputError` naming its ``role``."""
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"The {role} '{path}' cannot be opened by GDAL ({exc}). "
                         "Give a GDAL-readable raster (GeoTIFF, VRT, …).") from exc


def read_grid(path: str) -> Grid:
    """The pixel grid of a raster file (the source image or an instance raster)."""
    with open_raster(path, "grid raster") as ds:
        if ds.width * ds.height >= RLE_LIMIT:
            raise InputError(f"The grid raster '{path}' has {ds.width} x {ds.height} pixels; COCO's run-length "
                             f"masks hold fewer than {RLE_LIMIT} pixels per image. Cut the image and its masks "
                             "into tiles (e.g. `gdal_retile.py`) and evaluate the tiles together as a dataset.")
        # a raster without georeferencing sits where QGIS shows it, as the engine's outputs for it do
        return Grid(path=path, width=ds.width, height=ds.height, transform=pixel_to_map_transform(ds), crs=ds.crs)


def pair_grid(pair: EvaluationPair, produced, reference) -> Grid:
    """The grid of a pair: its ``grid_raster``, else the grid of its (produced, then reference) instance raster."""
    if pair.grid_raster:
        return read_grid(os.fspath(pair.grid_raster))
    for spec in (produced, reference):
        if isinstance(spec, InstanceRaster):
            return read_grid(spec.path)
    raise InputError(f"No pixel grid to compare the polygon layers '{produced.path}' and '{reference.path}' on. "
                     "Give grid_raster: the source image the masks were made from (or one of the instance rasters).")


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


@dataclass
class GridMask:
    """One instance as read from a source: its mask over the grid (compressed RLE) and what came with it."""

    rle: dict
    area: int  # pixels
    class_name: Optional[str]
    score: Optional[float]


def rasterize_window(pixel_parts: Sequence, grid: Grid) -> Tuple[np.ndarray, int, int]:
    """Rasterize pixel-space polygons over their bounding window clipped to the grid.

    Returns ``(mask, row, col)``: bool ``mask`` (rows, cols) whose top-left pixel is grid pixel
    ``(col, row)``; a pixel is set when its centre lies inside (``all_touched=False``).
    """
    from shapely.geometry import mapping

    bounds = np.array([p.bounds for p in pixel_parts])
    c0 = max(int(math.floor(bounds[:, 0].min())), 0)
    r0 = max(int(math.floor(bounds[:, 1].min())), 0)
    c1 = min(int(math.ceil(bounds[:, 2].max())), grid.width)
    r1 = min(int(math.ceil(bounds[:, 3].max())), grid.height)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((0, 0), bool), 0, 0
    # The geometry is already in pixel space: the window's transform is a plain shift.
    mask = rio_features.rasterize([(mapping(p), 1) for p in pixel_parts], out_shape=(r1 - r0, c1 - c0), fill=0,
                                  transform=Affine.translation(c0, r0), all_touched=False, dtype="uint8")
    return mask.astype(bool), r0, c0

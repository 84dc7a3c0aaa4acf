"""The pixel grid masks are compared on, and a mask as read from a source onto it.

Coordinate spaces and units:

* All masks live on one **pixel grid** per image: the grid of ``grid_raster`` (the source image or an
  instance raster; width ``W``, height ``H``, its geotransform and CRS). Pixel ``(c, r)`` covers
  ``[c, c+1) x [r, r+1)`` in pixel space (GDAL's corner convention, as in ``raster_input``). Areas,
  intersections and unions are in **pixels** of that grid.
* Polygons are rasterized by pixel centres, each instance on its own over its bounding window of the
  grid, never over the whole grid (:mod:`samrs_qgis.window_masks`). Parts outside the grid are not counted.

Memory: each mask is kept as a COCO RLE of the full ``H x W`` grid, built directly from its window
(:func:`samrs_qgis.window_masks.window_rle`), so no full-grid array is ever allocated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import rasterio
from affine import Affine

from ..errors import InputError
from ..georef import open_raster as open_engine_raster, pixel_to_map_transform
from ..window_masks import window_rle
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
    """The raster opened for reading (one without georeferencing is placed in pixel space, without a warning);
    an unreadable file raises :class:`InputError` naming its ``role``."""
    try:
        return open_engine_raster(path)
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


@dataclass
class GridMask:
    """One instance as read from a source: its mask over the grid (compressed RLE) and what came with it."""

    rle: dict
    area: int  # pixels
    class_name: Optional[str]
    score: Optional[float]

    @classmethod
    def from_window(cls, window, row: int, col: int, grid: Grid, class_name: Optional[str] = None,
                    score: Optional[float] = None) -> "GridMask":
        """The instance whose mask is the bool ``window`` with top-left grid pixel ``(col, row)``."""
        return cls(rle=window_rle(window, row, col, grid.height, grid.width), area=int(window.sum()),
                   class_name=class_name, score=score)

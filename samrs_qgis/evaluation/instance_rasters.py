"""Reading an instance raster onto the pixel grid: one mask per id.

Instance rasters are never resampled: one that is not on the grid (size, geotransform, CRS) is refused
with the ``gdalwarp`` command that puts it there. They are read in two passes: a blockwise pass
collecting each id's bounding box, then one windowed read per id, so peak memory follows the largest
instance's bounding box and one read block of at most :data:`CHUNK_PIXELS`.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterator, List

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import InputError
from ..georef import pixel_to_map_transform
from ..progress import Progress
from .grid import Grid, GridMask, open_raster
from .sources import InstanceRaster, Key

CHUNK_PIXELS = 1 << 22  # pixels per block read in an instance raster's first pass (16 MB of uint32)


def _chunks(ds) -> Iterator[Window]:
    """Read windows covering the raster, aligned to its blocks, of about :data:`CHUNK_PIXELS` pixels."""
    block_h, block_w = ds.block_shapes[0]
    block_h, block_w = max(1, min(block_h, ds.height)), max(1, min(block_w, ds.width))
    if ds.width * block_h <= CHUNK_PIXELS or block_w >= ds.width:
        chunk_w = ds.width  # whole rows: strips, or tiles that are as wide as the raster
    else:
        chunk_w = max(block_w, (CHUNK_PIXELS // block_h) // block_w * block_w)
    chunk_h = max(block_h, (CHUNK_PIXELS // chunk_w) // block_h * block_h)
    for row in range(0, ds.height, chunk_h):
        for col in range(0, ds.width, chunk_w):
            yield Window(col, row, min(chunk_w, ds.width - col), min(chunk_h, ds.height - row))


def _check_on_grid(ds, path: str, role: str, grid: Grid) -> None:
    """Refuse an instance raster that is not on the grid (never resampled: ids cannot be interpolated)."""
    problem = None
    if (ds.width, ds.height) != (grid.width, grid.height):
        problem = f"it has {ds.width} x {ds.height} pixels, the grid {grid.width} x {grid.height}"
    else:
        # The instance raster's pixel space in the grid's: identity when the rasters are aligned.
        rel = ~grid.transform * pixel_to_map_transform(ds)
        if max(abs(rel.a - 1), abs(rel.b), abs(rel.d), abs(rel.e - 1)) > 1e-6 or max(abs(rel.c), abs(rel.f)) > 1e-3:
            problem = "its geotransform differs from the grid's (pixel size or origin)"
    if problem is None and ds.crs and grid.crs and ds.crs != grid.crs:
        from pyproj import CRS

        if not CRS.from_wkt(ds.crs.to_wkt()).equals(CRS.from_wkt(grid.crs.to_wkt()), ignore_axis_order=True):
            problem = "its CRS differs from the grid's"
    if problem:
        left, bottom, right, top = rasterio.transform.array_bounds(grid.height, grid.width, grid.transform)
        srs = f" -t_srs {grid.crs.to_string()}" if grid.crs else ""
        raise InputError(f"The {role} instance raster '{path}' is not on the grid of '{grid.path}': {problem}. "
                         f"Ids cannot be resampled silently; warp it onto the grid with nearest neighbour, e.g. "
                         f"`gdalwarp -r near{srs} -te {left} {bottom} {right} {top} -ts {grid.width} {grid.height} "
                         f"{os.path.basename(path)} on_grid.tif`, or give it as the grid raster.")


def read_instance_raster(spec: InstanceRaster, role: str, grid: Grid, progress: Progress) -> Dict[Key, GridMask]:
    """Per-id masks of an instance raster, in two passes (per-id bounding boxes, then one window per id)."""
    masks: Dict[Key, GridMask] = {}
    with open_raster(spec.path, f"{role} instance raster") as ds:
        if not 1 <= spec.band <= ds.count:
            raise InputError(f"The {role} instance raster '{spec.path}' has {ds.count} band(s); band {spec.band} "
                             "does not exist. Give a band number from 1.")
        dtype = np.dtype(ds.dtypes[spec.band - 1])
        if not np.issubdtype(dtype, np.integer):
            raise InputError(f"The {role} instance raster '{spec.path}' holds {dtype} values; instance ids are "
                             "integers (the engine writes uint32). Give an instance raster, not a score or "
                             "class raster.")
        _check_on_grid(ds, spec.path, role, grid)
        nodata = ds.nodatavals[spec.band - 1]

        def instance_pixels(data: np.ndarray) -> np.ndarray:
            valid = data != 0
            if nodata is not None and not math.isnan(nodata) and nodata != 0:
                valid &= data != dtype.type(nodata)
            return valid

        # Pass 1: bounding box (rows r0..r1, cols c0..c1, inclusive) of every id, one block at a time.
        bounds: Dict[int, List[int]] = {}
        windows = list(_chunks(ds))
        for n, window in enumerate(windows):
            progress.check_cancelled()
            data = ds.read(spec.band, window=window)
            rows, cols = np.nonzero(instance_pixels(data))
            if rows.size == 0:
                continue
            ids = data[rows, cols]
            order = np.argsort(ids, kind="stable")
            ids, rows, cols = ids[order], rows[order] + window.row_off, cols[order] + window.col_off
            starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
            per_id = zip(ids[starts].tolist(), np.minimum.reduceat(rows, starts).tolist(),
                         np.minimum.reduceat(cols, starts).tolist(), np.maximum.reduceat(rows, starts).tolist(),
                         np.maximum.reduceat(cols, starts).tolist())
            for ident, r0, c0, r1, c1 in per_id:
                box = bounds.get(ident)
                if box is None:
                    bounds[ident] = [r0, c0, r1, c1]
                else:
                    box[0], box[1] = min(box[0], r0), min(box[1], c0)
                    box[2], box[3] = max(box[2], r1), max(box[3], c1)
        # Pass 2: each id over its own bounding box, read in raster order (neighbours share GDAL's block cache).
        for ident, (r0, c0, r1, c1) in sorted(bounds.items(), key=lambda item: (item[1][0], item[1][1])):
            progress.check_cancelled()
            data = ds.read(spec.band, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1))
            window = data == dtype.type(ident)
            masks[int(ident)] = GridMask.from_window(window, r0, c0, grid)
    return masks

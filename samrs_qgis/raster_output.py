"""The instance and semantic rasters, on the input raster's grid, painted and written window by window.

Ownership rule where masks overlap: **the smaller mask owns the pixel** (a vehicle on a bridge stays
visible), and between masks of equal area the later box in the input wins, as SAMRS painted in
annotation order. The rule only compares areas, so the result does not depend on the order in which
windows are processed.

Masks are painted into an uncompressed tiled scratch GeoTIFF (GDAL's block cache bounds memory);
the final files are copied from it block by block, tiled and DEFLATE-compressed; as Cloud Optimized GeoTIFF on
request (GDAL's COG driver copies them once more: overviews by mode resampling, so that an overview pixel holds
an id or class that is there, not an average of ids).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np
from rasterio.windows import Window

from .classes import class_colours
from .georef import open_raster
from .masks import MaskCrop

BLOCK = 512
GDAL_CACHE_MB = 256
CREATION = dict(driver="GTiff", tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
                BIGTIFF="IF_SAFER")
COG_CREATION = ["COMPRESS=DEFLATE", "PREDICTOR=YES", f"BLOCKSIZE={BLOCK}", "RESAMPLING=MODE", "OVERVIEWS=AUTO",
                "BIGTIFF=IF_SAFER"]
PLAIN_SUFFIX = ".plain.tif"  # a raster written before it is copied as COG (beside it, removed once copied)


class InstanceCanvas:
    """Run-local instance indices (1..n, 0 = none) painted with the ownership rule."""

    def __init__(self, path: str, width: int, height: int, count: int, transform):
        self.width, self.height = width, height
        self.areas = np.zeros(count + 1, dtype=np.int64)
        self._ds = open_raster(path, "w+", driver="GTiff", width=width, height=height, count=1,
                               dtype="uint32", transform=transform, tiled=True, blockxsize=256,
                               blockysize=256, SPARSE_OK=True)

    def paint(self, crop: MaskCrop, index: int) -> None:
        """Paint ``crop``'s pixels with run index ``index`` where the ownership rule gives them to it."""
        self.areas[index] = crop.area
        if not self.areas[index]:
            return
        window = crop.window().to_rasterio()
        current = self._ds.read(1, window=window)
        own_area, their_area = self.areas[index], self.areas[current]
        take = crop.mask & ((current == 0) | (own_area < their_area) | ((own_area == their_area) & (index > current)))
        current[take] = index
        self._ds.write(current, 1, window=window)

    def blocks(self):
        """Yield ``(window, indices)`` over the canvas in BLOCK x BLOCK pieces."""
        for row in range(0, self.height, BLOCK):
            for col in range(0, self.width, BLOCK):
                window = Window(col, row, min(BLOCK, self.width - col), min(BLOCK, self.height - row))
                yield window, self._ds.read(1, window=window)

    def close(self) -> None:
        self._ds.close()


def semantic_dtype(max_class_id: int, background: int) -> str:
    return "uint8" if max(max_class_id, background) <= 255 else "uint16"


def write_rasters(canvas: InstanceCanvas, profile: Dict, instance_path: Optional[str],
                  semantic_path: Optional[str], instance_ids: np.ndarray, class_of_index: np.ndarray,
                  class_names: Dict[int, str], background: int, tags: Dict[str, str], cog: bool = False) -> None:
    """Copy the canvas to the final rasters (``cog``: as Cloud Optimized GeoTIFF).

    ``instance_ids[i]`` is the instance id (uint32) written for run index ``i`` (index 0 -> 0);
    ``class_of_index[i]`` the class id for run index ``i`` (index 0 -> ``background``).
    ``profile`` carries the input grid: ``width``, ``height``, ``crs``, ``transform``.
    """
    finals = [p for p in (instance_path, semantic_path) if p]
    if cog:
        instance_path, semantic_path = (p + PLAIN_SUFFIX if p else None for p in (instance_path, semantic_path))
    outputs = []
    if instance_path:
        outputs.append((instance_path, instance_ids.astype(np.uint32), "uint32", 0))
    if semantic_path:
        dtype = semantic_dtype(max(class_names), background)
        outputs.append((semantic_path, class_of_index.astype(dtype), dtype, background))
    grid = {k: profile[k] for k in ("width", "height", "crs", "transform")}
    handles = [(open_raster(path, "w", count=1, dtype=dtype, nodata=nodata, **grid, **CREATION), lut)
               for path, lut, dtype, nodata in outputs]
    try:
        for window, indices in canvas.blocks():
            for ds, lut in handles:
                ds.write(lut[indices], 1, window=window)
        for ds, _ in handles:
            ds.update_tags(**tags)
        if semantic_path:
            ds = handles[-1][0]
            ds.update_tags(SAMRS_CLASSES=json.dumps({str(k): v for k, v in sorted(class_names.items())}),
                           SAMRS_BACKGROUND=str(background))
            colours = class_colours(sorted(class_names))
            colours[background] = (0, 0, 0, 0)
            ds.write_colormap(1, colours)
            ds.set_band_description(1, "class id")
        if instance_path:
            handles[0][0].set_band_description(1, "instance id")
    finally:
        for ds, _ in handles:
            ds.close()
    if semantic_path:
        _write_category_names(semantic_path, class_names, background)
    if cog:
        for final in finals:
            copy_as_cog(final + PLAIN_SUFFIX, final)


def copy_as_cog(plain: str, target: str) -> None:
    """``plain`` (a GeoTIFF, with its .aux.xml) copied to ``target`` as Cloud Optimized GeoTIFF, then removed.
    Tags, colour table and category names go along."""
    from osgeo import gdal

    copied = gdal.Translate(target, plain, format="COG", creationOptions=COG_CREATION)
    if copied is None:
        raise OSError(f"GDAL could not write '{target}' as Cloud Optimized GeoTIFF: {gdal.GetLastErrorMsg()}")
    copied = None  # closed: written
    for path in (plain, plain + ".aux.xml"):
        if os.path.exists(path):
            os.remove(path)


def _write_category_names(path: str, class_names: Dict[int, str], background: int) -> None:
    """Class names as GDAL category names (kept in the .aux.xml beside the GeoTIFF), read by GIS legends."""
    from osgeo import gdal

    names = [""] * (max(max(class_names), background) + 1)
    for class_id, name in class_names.items():
        names[class_id] = name
    names[background] = "background"
    ds = gdal.Open(path, gdal.GA_Update)
    try:
        ds.GetRasterBand(1).SetCategoryNames(names)
    finally:
        ds = None

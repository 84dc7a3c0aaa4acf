"""Where an image's pixels are on the map: the one place that decides the pixel -> map transform.

A georeferenced image maps pixel (x, y) (pixel-corner convention, x = column, y = row) to map coordinates
through its geotransform. An image *without* georeferencing is placed where QGIS shows it: QGIS 3.22 draws
a non-georeferenced W x H image over x 0..W, y -H..0 with no CRS (measured with a 40 x 30 PNG), i.e.
map = (column, -row). Layers made for such an image use the same convention so they line up on the map.
"""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from .errors import InputError

PIXEL_SPACE = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # map = (column, -row), as QGIS shows an ungeoreferenced image
# "No CRS" as a layer can carry it: GDAL writes this as GeoPackage srs_id -1, which QGIS never reprojects
# (its default for no CRS, srs_id 0 "Undefined geographic SRS", is taken as degrees and reprojected).
UNDEFINED_CARTESIAN_WKT = 'LOCAL_CS["Undefined cartesian SRS"]'


class _InsidePixelSpaceBlock:
    """Stands in for the module pattern of a warnings filter: matches whatever module a warning is attributed
    to, but only in a thread that is inside :func:`pixel_space_expected` at that moment."""

    _depth = threading.local()

    def match(self, module: str) -> bool:  # the warnings machinery calls .match() on a filter's module pattern
        return getattr(self._depth, "value", 0) > 0


_EXPECTED_IN_ENGINE = _InsidePixelSpaceBlock()
_IGNORE_IN_ENGINE = ("ignore", None, NotGeoreferencedWarning, _EXPECTED_IN_ENGINE, 0)


@contextmanager
def pixel_space_expected() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning in this thread for the block: the engine opens and writes
    images without georeferencing on purpose and places them in pixel space (:data:`PIXEL_SPACE`).

    rasterio attributes the warning to its own ``rasterio.open``, the same place as a user's own call, and
    ``warnings.catch_warnings()`` swaps the filters of every thread. So this installs one filter, once, that
    matches only NotGeoreferencedWarning and only while the current thread is inside such a block: a user's
    code, and any other thread (the QGIS GUI while a Processing task runs), still gets the warning.
    """
    filters = warnings.filters
    if _IGNORE_IN_ENGINE not in filters:  # again after catch_warnings() or resetwarnings() dropped it
        filters.insert(0, _IGNORE_IN_ENGINE)
    depth = _InsidePixelSpaceBlock._depth
    depth.value = getattr(depth, "value", 0) + 1
    try:
        yield
    finally:
        depth.value -= 1


def open_raster(path, mode: str = "r", **kwargs):
    """``rasterio.open`` for the engine: an image without georeferencing opens (or is written) without
    NotGeoreferencedWarning; the engine puts it in pixel space itself."""
    with pixel_space_expected():
        return rasterio.open(path, mode, **kwargs)


def defined_crs_wkt(wkt: Optional[str]) -> str:
    """``wkt`` unchanged, or '' when it is empty or one of GDAL's "Undefined ... SRS" placeholders."""
    if not wkt:
        return ""
    from pyproj import CRS

    try:
        name = CRS.from_wkt(wkt).name or ""
    except Exception:  # noqa: BLE001 - an unparsable CRS is reported where it is used
        return wkt
    return "" if name.lower().startswith("undefined") else wkt


def pixel_to_map_transform(dataset: Optional[rasterio.io.DatasetReader] = None) -> Affine:
    """The affine transform taking pixel coordinates (x = column, y = row, pixel corners) of ``dataset`` to
    map coordinates: its geotransform when it is georeferenced, else :data:`PIXEL_SPACE` (as QGIS shows
    the image; also used when there is no image at all).

    An image counts as not georeferenced when GDAL gives it no geotransform and no CRS (rasterio then
    reports the identity transform). An image placed only by ground control points is an InputError:
    its pixels have no affine place on the map until it is warped.
    """
    if dataset is None:
        return PIXEL_SPACE
    with pixel_space_expected():  # some rasterio versions warn when asked for an ungeoreferenced transform
        transform, crs, gcps = dataset.transform, dataset.crs, dataset.gcps[0]
    if transform.is_identity and not crs:
        if gcps:
            raise InputError(f"Image '{dataset.name}' is georeferenced only by ground control points. "
                             "Warp it to a geotransform first, e.g. `gdalwarp in.tif out.tif`.")
        return PIXEL_SPACE
    return transform


@dataclass(frozen=True)
class ImageFrame:
    """An image's size (pixels), its pixel -> map transform and CRS (WKT, '' for none)."""

    width: int
    height: int
    transform: Affine
    crs_wkt: str

    @property
    def georeferenced(self) -> bool:
        return self.transform != PIXEL_SPACE or bool(self.crs_wkt)


def image_frame(path: str) -> ImageFrame:
    """Open an image with GDAL (rasterio) and read its frame; InputError when GDAL cannot read it."""
    try:
        with open_raster(path) as ds:  # a plain PNG/JPEG is fine here: it gets the pixel-space convention
            return ImageFrame(ds.width, ds.height, pixel_to_map_transform(ds), ds.crs.to_wkt() if ds.crs else "")
    except RasterioIOError as exc:
        raise InputError(f"Image '{path}' cannot be opened by GDAL ({exc}). Give the image the annotations "
                         "belong to (GeoTIFF, PNG, JPEG, …), or none for a layer in pixel space.") from exc

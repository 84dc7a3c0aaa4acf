"""The input raster as SAM sees it: three 8-bit bands, read window by window, plus a validity mask.

Coordinate spaces used throughout the engine:

* **pixel space** of the raster: continuous ``(col, row)`` with the GDAL pixel-corner convention,
  pixel ``(c, r)`` covers ``[c, c+1) x [r, r+1)``; ``raster.transform`` maps it to map coordinates
  (for a raster without georeferencing, to where QGIS shows it: see :mod:`samrs_qgis.georef`).
* **frame space**: the image handed to the segmentation backend for one window, the window resampled
  by ``(scale_x, scale_y)`` so that its longest side is the model's input size (1024 for SAM).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from .errors import InputError
from .georef import open_raster, pixel_to_map_transform
from .stretch import Stretch, compute_stretch


@dataclass(frozen=True)
class PixelWindow:
    """An integer window of the raster in pixel space: columns ``[col, col+width)``, rows ``[row, row+height)``."""

    col: int
    row: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        return self.col + self.width

    @property
    def row_end(self) -> int:
        return self.row + self.height

    def to_rasterio(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)

    def contains(self, bounds: Tuple[float, float, float, float]) -> bool:
        """True when pixel-space ``(x0, y0, x1, y1)`` lies wholly inside the window."""
        x0, y0, x1, y1 = bounds
        return x0 >= self.col and y0 >= self.row and x1 <= self.col_end and y1 <= self.row_end


def default_bands(dataset: rasterio.io.DatasetReader) -> Tuple[int, int, int]:
    """Bands fed to SAM when the user names none (1-based): red/green/blue by colour interpretation,
    else the first three non-alpha bands, else the first band three times."""
    interp = list(dataset.colorinterp)
    rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
    if len(rgb) == 3:
        return tuple(rgb)  # type: ignore[return-value]
    non_alpha = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(non_alpha) >= 3:
        return tuple(non_alpha[:3])  # type: ignore[return-value]
    first = non_alpha[0] if non_alpha else 1
    return (first, first, first)


class RasterInput:
    """An open GDAL raster with the band choice and the 8-bit stretch fixed for the whole run.

    The stretch is computed once per raster so that every window is mapped to 8 bit the same way.
    """

    def __init__(self, path: str, bands: Optional[Sequence[int]] = None, stretch: str = "auto"):
        try:
            self.dataset = open_raster(path)  # an image without georeferencing is read in pixel space
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"Raster '{path}' cannot be opened by GDAL ({exc}). "
                             "Give a GDAL-readable raster file (GeoTIFF, JPEG2000, VRT, …).") from exc
        self.path = path
        ds = self.dataset
        self.transform = pixel_to_map_transform(ds)  # refuses GCP-only rasters
        self.bands: Tuple[int, ...] = tuple(int(b) for b in bands) if bands else default_bands(ds)
        bad = [b for b in self.bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"Band(s) {bad} do not exist in raster '{path}', which has {ds.count} band(s). "
                             f"Choose bands between 1 and {ds.count}.")
        if len(self.bands) == 1:
            self.bands = self.bands * 3
        if len(self.bands) != 3:
            raise InputError(f"SAM takes 3 bands, {len(self.bands)} were given ({list(self.bands)}). "
                             "Give one band (it is repeated) or three.")
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        # Float rasters may hide missing data as NaN without declaring nodata.
        self.has_invalid_pixels = (not all(f == [MaskFlags.all_valid] for f in flags)
                                   or np.dtype(ds.dtypes[self.bands[0] - 1]).kind == "f")
        self.stretch: Stretch = compute_stretch(ds, self.bands, stretch)

    # -- sent to another process (a cluster's worker) ----------------------------------------------
    def __getstate__(self) -> dict:
        """Everything but the open dataset: the receiving process opens the same file again (it must see it
        at the same path) and keeps the sender's band choice and stretch."""
        return {k: v for k, v in self.__dict__.items() if k != "dataset"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        try:
            self.dataset = open_raster(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"Raster '{self.path}' cannot be opened here ({exc}): a cluster's workers read the "
                             "raster themselves, so give a path that every worker reaches (a shared file "
                             "system) at the same place.") from exc

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def height(self) -> int:
        return self.dataset.height

    @property
    def crs(self):
        return self.dataset.crs

    def close(self) -> None:
        self.dataset.close()

    # -- reading ----------------------------------------------------------------------------------
    def read_frame(self, window: PixelWindow, frame_shape: Tuple[int, int]) -> np.ndarray:
        """The window resampled to ``frame_shape`` (rows, cols) as an RGB uint8 array of shape (rows, cols, 3).

        Invalid (nodata) pixels are black. Downsampling averages (GDAL uses overviews when present),
        upsampling is bilinear, and a native-size read involves no resampling at all.
        """
        rows, cols = frame_shape
        unique_bands = list(dict.fromkeys(self.bands))
        kwargs = {}
        if (rows, cols) != (window.height, window.width):
            shrinking = rows < window.height or cols < window.width
            kwargs = {"out_shape": (len(unique_bands), rows, cols),
                      "resampling": Resampling.average if shrinking else Resampling.bilinear}
        data = self.dataset.read(unique_bands, window=window.to_rasterio(), masked=True, **kwargs)
        by_band = {b: data[i] for i, b in enumerate(unique_bands)}
        planes = [self.stretch.apply(by_band[b], idx) for idx, b in enumerate(self.bands)]
        return np.ascontiguousarray(np.stack(planes, axis=-1))

    def read_valid(self, window: PixelWindow) -> Optional[np.ndarray]:
        """Validity of each native pixel of the window, bool (height, width); None when all pixels are valid."""
        if not self.has_invalid_pixels:
            return None
        win = window.to_rasterio()
        valid = np.ones((window.height, window.width), dtype=bool)
        for b in dict.fromkeys(self.bands):
            valid &= self.dataset.read_masks(b, window=win) > 0
            if np.dtype(self.dataset.dtypes[b - 1]).kind == "f":
                valid &= np.isfinite(self.dataset.read(b, window=win))
        return valid

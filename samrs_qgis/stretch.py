"""Mapping raster values to the 8-bit range SAM was trained on, fixed once per raster.

A per-window stretch would make neighbouring windows disagree; a min–max stretch over the whole
image is ruined by one hot pixel or by nodata. We take low/high percentiles per band from a
decimated read of the whole raster (GDAL serves it from overviews when the file has them),
with nodata and non-finite values left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

STRETCH_MODES = ("auto", "none", "percentile")
PERCENTILES = (2.0, 98.0)
SAMPLE_SIDE = 2048  # longest side of the decimated read the percentiles come from, in pixels


@dataclass(frozen=True)
class Stretch:
    """Linear map ``low -> 0``, ``high -> 255`` per selected band (index into ``bands``), clipped."""

    low: Tuple[float, ...]
    high: Tuple[float, ...]
    identity: bool = False

    def apply(self, values: np.ma.MaskedArray, band_index: int) -> np.ndarray:
        """Band values (rows, cols), masked where invalid -> uint8 (rows, cols), invalid pixels 0."""
        data = np.ma.getdata(values)
        invalid = np.ma.getmaskarray(values)
        if self.identity:
            out = np.clip(data, 0, 255).astype(np.uint8)
        else:
            lo, hi = self.low[band_index], self.high[band_index]
            scaled = (data.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
            out = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)
        out[invalid] = 0
        return out

    def describe(self) -> str:
        if self.identity:
            return "none (values used as 8-bit)"
        return "percentile {}–{}: ".format(*PERCENTILES) + ", ".join(
            f"[{lo:g}, {hi:g}]" for lo, hi in zip(self.low, self.high))


def compute_stretch(dataset, bands: Sequence[int], mode: str = "auto") -> Stretch:
    """The stretch for ``bands`` (1-based) of an open rasterio dataset.

    ``auto`` leaves 8-bit data as it is (what SAM and SAMRS expect of ordinary imagery) and
    stretches anything else by percentiles; ``none`` forces values to be used as 8-bit;
    ``percentile`` always stretches.
    """
    from .errors import InputError

    if mode not in STRETCH_MODES:
        raise InputError(f"Unknown stretch '{mode}'. Choose one of: {', '.join(STRETCH_MODES)}.")
    dtypes = {dataset.dtypes[b - 1] for b in bands}
    if mode == "none" or (mode == "auto" and dtypes == {"uint8"}):
        return Stretch(low=(0.0,) * len(bands), high=(255.0,) * len(bands), identity=True)

    factor = max(dataset.width, dataset.height) / SAMPLE_SIDE
    shape = (max(1, round(dataset.height / max(factor, 1))), max(1, round(dataset.width / max(factor, 1))))
    lows, highs = [], []
    for band in bands:
        sample = dataset.read(band, out_shape=shape, masked=True)
        values = np.ma.compressed(sample).astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            lows.append(0.0)
            highs.append(255.0)
            continue
        lo, hi = np.percentile(values, PERCENTILES)
        if hi <= lo:  # a constant band: keep it constant rather than divide by zero
            hi = lo + 1.0
        lows.append(float(lo))
        highs.append(float(hi))
    return Stretch(low=tuple(lows), high=tuple(highs))

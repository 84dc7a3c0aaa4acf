"""The numbers of one subset (:class:`Statistics`) and the bins its histograms use."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..boxes import STATUSES

SCORE_BINS = 20
PIXEL_SOURCE_RASTER = "class rasters"
PIXEL_SOURCE_AREA = "area_px"
PIXEL_SOURCE_MIXED = "mixed"


@dataclass
class Statistics:
    """The numbers of one subset. Counts are plain ints; areas in pixels.

    ``class_names``: class id -> name, every class that has instances or pixels or was listed.
    ``instances_per_class``: class id -> instances (features with status ``ok`` and ``area_px`` > 0).
    ``pixels_per_class``: class id -> pixels, measured as :attr:`pixel_source` says.
    ``pixel_source``: ``"class rasters"`` (every layer had a class raster), ``"area_px"`` (none had: sums of
    the instances' ``area_px``), ``"mixed"`` (rasters where given, ``area_px`` for the other layers).
    ``area_px_per_class``: class id -> sum of the instances' ``area_px`` (always, for comparison).
    ``background_pixels``: background (and nodata) pixels of the class rasters.
    ``size_histogram``: bin k -> instances with ``2**k <= area_px < 2**(k+1)``.
    ``size_histogram_per_class``: class id -> {bin k -> instances}.
    ``score_histogram``: 20 counts, bin i = instances with ``i/20 <= score < (i+1)/20`` (1.0 in the last).
    ``no_score``: instances with a null score. ``scores_out_of_range``: scores outside [0, 1] (clamped).
    ``status_counts``: status -> boxes (all features), always with ok/empty/outside/invalid.
    ``images``: images of the subset (from a manifest, else = ``layers``); ``layers``/``rasters``: polygon
    layers and class rasters read. ``image_status``: manifest image status -> images (empty without one).
    ``background``: the background value used (None when every raster's own tag/nodata was used).
    ``source``: where the subset came from (a folder, or "N polygon layers"). ``notes``: remarks for the reader.
    """

    class_names: Dict[int, str] = field(default_factory=dict)
    instances_per_class: Dict[int, int] = field(default_factory=dict)
    pixels_per_class: Dict[int, int] = field(default_factory=dict)
    pixel_source: str = PIXEL_SOURCE_AREA
    area_px_per_class: Dict[int, int] = field(default_factory=dict)
    background_pixels: int = 0
    size_histogram: Dict[int, int] = field(default_factory=dict)
    size_histogram_per_class: Dict[int, Dict[int, int]] = field(default_factory=dict)
    score_histogram: List[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    no_score: int = 0
    scores_out_of_range: int = 0
    status_counts: Dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    images: int = 0
    layers: int = 0
    rasters: int = 0
    image_status: Dict[str, int] = field(default_factory=dict)
    background: Optional[int] = None
    source: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        """All features read (every status)."""
        return sum(self.status_counts.values())

    @property
    def instances(self) -> int:
        return sum(self.instances_per_class.values())

    @property
    def class_pixels(self) -> int:
        return sum(self.pixels_per_class.values())


def size_bin_edges(k: int) -> Tuple[int, int]:
    """Mask size bin ``k`` as ``(low, high)`` pixels: it holds ``low <= area_px < high``."""
    return 1 << k, 1 << (k + 1)


def score_bin_edges(i: int) -> Tuple[float, float]:
    """Score bin ``i`` as ``(low, high)``: it holds ``low <= score < high`` (the last bin also 1.0)."""
    return i / SCORE_BINS, (i + 1) / SCORE_BINS


def size_bin(area_px: int) -> int:
    """The mask size bin of an area of ``area_px`` ≥ 1 pixels: ``floor(log2(area_px))``, exactly."""
    return int(area_px).bit_length() - 1

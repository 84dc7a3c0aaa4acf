"""Dataset statistics report: per subset (train, val, …), what the SAMRS paper tabulated for its subsets —
instances per class, pixels per class, the distribution of mask sizes — plus SAM's scores and the boxes'
statuses, as one self-contained HTML file and CSV files.

Inputs. A *result set* is one subset: a list of ``(polygon layer, class raster or None)`` pairs, the
outputs of ``segment`` / ``segmentdataset``, and optionally the class names (id -> name).
:func:`result_set_from_folder` finds the pairs in a dataset output folder (``manifest.json``,
``geo/<stem>.gpkg``, ``class_index/<stem>.png``). Polygon layers are streamed feature by feature (fiona,
attributes only); class rasters (our semantic GeoTIFFs, SAMRS class-index PNGs) are read block by block,
so neither is ever held whole in memory.

Definitions (all areas and counts in **pixels** of the segmented raster's grid):

* **boxes by status**: every feature of every layer, counted by its ``status`` field
  (``ok``, ``empty``, ``outside``, ``invalid``; other values are counted under their own name).
* **instance**: a feature with ``status`` = ``ok`` and ``area_px`` > 0. Instances per class, mask sizes and
  scores count instances only.
* **pixels per class**: for a layer paired with a class raster, the raster's pixels of each class id (the
  background value and the raster's nodata value are left out and counted as background); for a layer
  without one, the sum of its instances' ``area_px``. Overlapping masks share their pixels in a raster (the
  smaller mask owns them) but each counts its own in ``area_px``, so the two measures differ where masks
  overlap. :attr:`Statistics.pixel_source` says which measure a subset's numbers are.
* **mask size bins**: powers of two; bin *k* holds the masks with ``2**k <= area_px < 2**(k+1)`` pixels
  (bin 0 = 1 px, bin 1 = 2–3 px, bin 2 = 4–7 px, …). Exact for integer areas, no rounding.
* **score bins**: 20 bins of width 0.05 over [0, 1]; bin *i* holds ``i/20 <= score < (i+1)/20``, the last bin
  also holds 1.0. Scores below 0 or above 1 (SAM's predicted IoU is not bounded) are counted in the first
  or last bin and in :attr:`Statistics.scores_out_of_range`. Instances with a null score (GrabCut) are
  counted in :attr:`Statistics.no_score`.

Class ids: the given class names (a dataset's class list) fix the ids. Without them the layers'
``class_id``/``class_name`` fields (and a semantic GeoTIFF's ``SAMRS_CLASSES`` tag) give them; classes are
matched by name, and when the layers disagree on ids (separate runs over text class fields number their
classes on their own) the classes are renumbered by sorted name, with a note in :attr:`Statistics.notes`.

Modules (one concept each): :mod:`.result_set` (finding a subset's inputs), :mod:`.statistics` (the
numbers and their bins), :mod:`.collect` (reading the inputs into them), :mod:`.tables` (rows for CSV and
HTML), :mod:`.plots`, :mod:`.html_page`, :mod:`.writing` (:func:`write_report`), :mod:`.subsets` (the subsets a report
compares, named from folders and layers).
"""
from __future__ import annotations

from .collect import collect_statistics, statistics_from_folder
from .result_set import ResultSet, result_set_from_folder
from .subsets import check_report_outputs, collect_subsets, dataset_subsets, describe_subsets, report_class_names
from .statistics import SCORE_BINS, STATUSES, Statistics, score_bin_edges, size_bin_edges
from .tables import CSV_FILES
from .writing import ReportFiles, write_report

__all__ = ["Statistics", "ResultSet", "ReportFiles", "collect_statistics", "result_set_from_folder",
           "statistics_from_folder", "write_report", "size_bin_edges", "score_bin_edges", "SCORE_BINS",
           "STATUSES", "CSV_FILES", "check_report_outputs", "collect_subsets", "dataset_subsets", "describe_subsets", "report_class_names"]


"""Evaluating produced masks against reference masks, as SAMRS chose its prompt on HRSC2016.

Matching is *per box*: produced instance ``k`` is compared with reference instance ``k`` (same key;
the produced layer's ``instance_id`` against the reference's key field, or the id value in instance
rasters). The measures, overall and per class:

* **mean IoU**: the mean of the per-instance IoU over the reference instances;
* **area-weighted IoU**: ΣI / ΣU, intersections and unions summed over the reference instances (large
  objects weigh more);
* **COCO mask AP** (AP@[.5:.95], AP50, AP75) by pycocotools' ``COCOeval`` with ``iouType="segm"``;
  a produced mask's score is its ``score`` field (1.0 where it is empty or missing).

Rules:

* A reference instance without a produced mask (no produced feature with its key, a null geometry, a
  ``status`` other than ``ok`` (whatever the geometry), no pixel centre inside) has IoU 0 and is a
  missed object for AP.
* A produced feature whose key is not in the reference is counted (``unmatched_produced``) and left out
  of IoU and, by default, of AP (``unmatched_in_ap=True`` makes it a false positive there).
* A reference instance whose mask has no pixel on the grid (null geometry, outside the grid, thinner
  than a pixel centre) cannot be scored: it is listed in ``skipped_reference`` and left out, with the
  produced mask of the same key.
* An empty produced mask is no detection for AP (it cannot match anything; its reference counts as missed).
* Zeros are never silent: when no produced mask of an image matches a reference instance by key (key
  fields that do not correspond, or produced masks holding no instance at all) or every matched produced
  mask is empty, the evaluation warns through its progress (the CLI prints ``warning: …``, Processing
  pushes it) and still scores the image: IoU 0, missed for AP. This is not an error, not even when the
  produced masks are empty everywhere: a method that found nothing is truly scored 0, and compare and
  ablation tables keep its row.
* Class of an instance: the reference's class field when given (and not empty), else the produced
  ``class_name``. An instance left without a class (no class field, no produced feature, or instance
  rasters) takes the evaluation's only class when there is exactly one, ``object`` (the engine's class
  without a class field) when there is none, and ``(unknown)`` among several. An unknown class is a
  class of its own, also for AP.

Modules (one concept each):

* :mod:`.sources`: what is evaluated (polygon layers, instance rasters, pairs of a dataset);
* :mod:`.grid`: the pixel grid and masks on it as full-grid RLEs (coordinate spaces, units, memory);
* :mod:`.polygons` / :mod:`.instance_rasters`: reading each kind of source onto the grid;
* :mod:`.iou`: per-box matching, per-instance IoU, classes, the per-class and overall rows;
* :mod:`.coco_ap`: COCO mask AP (with the split into clusters of overlapping instances);
* :mod:`.results`: the result objects; :mod:`.tables`: the CSV tables;
* :mod:`.run`: :func:`evaluate` / :func:`evaluate_dataset`, tying them together.
"""
from __future__ import annotations

from .coco_ap import ScoredImage, coco_mask_ap, overlap_clusters
from .grid import RLE_LIMIT, Grid, read_grid
from .instance_rasters import CHUNK_PIXELS
from .iou import DEFAULT_CLASS, DEFAULT_SCORE, UNKNOWN_CLASS
from .polygons import DENSIFY_PARTS, STATUS_OK
from .results import OVERALL, EvaluationResult, InstanceScore, MetricsRow
from .run import evaluate, evaluate_dataset
from .sources import RASTER_EXTENSIONS, EvaluationPair, InstanceRaster, Key, MaskSource, PolygonMasks
from .tables import (COMPARISON_COLUMNS, INSTANCE_COLUMNS, METRICS_COLUMNS, check_table_outputs,
                     write_comparison_csv, write_instances_csv, write_metrics_csv)

__all__ = ["evaluate", "evaluate_dataset", "EvaluationPair", "PolygonMasks", "InstanceRaster", "MaskSource", "Key",
           "Grid", "read_grid", "EvaluationResult", "MetricsRow", "InstanceScore",
           "check_table_outputs", "write_metrics_csv", "write_instances_csv", "write_comparison_csv", "OVERALL", "DEFAULT_CLASS",
           "UNKNOWN_CLASS", "DEFAULT_SCORE", "STATUS_OK", "CHUNK_PIXELS", "DENSIFY_PARTS", "RLE_LIMIT",
           "RASTER_EXTENSIONS", "METRICS_COLUMNS", "INSTANCE_COLUMNS", "COMPARISON_COLUMNS", "ScoredImage",
           "coco_mask_ap", "overlap_clusters"]

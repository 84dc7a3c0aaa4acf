"""Evaluation of produced masks against reference masks (samrs_qgis.evaluation) on real GDAL/OGR files.

Masks are pixel-aligned rectangles on a 0.5 m UTM grid, so every intersection and union is known by hand.
COCO AP values are derived in comments from COCOeval's 101-point interpolation: with ``npig`` reference
instances and detections ranked by score, precision is made non-increasing from the right, and for each
recall threshold r in {0, 0.01, …, 1} the precision of the first rank whose recall reaches r is taken
(0 when no rank reaches it); AP is the mean of those 101 values (and over the 10 IoU thresholds
.50:.05:.95 for AP@[.5:.95]).
"""
from __future__ import annotations

import csv
import os
import tracemalloc

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.ops import transform as shapely_transform, unary_union

import support
from samrs.samrs_qgis import evaluation
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.progress import Progress
from samrs.samrs_qgis.evaluation import (COMPARISON_COLUMNS, INSTANCE_COLUMNS, METRICS_COLUMNS, OVERALL,
                                         EvaluationPair, InstanceRaster, PolygonMasks, evaluate, evaluate_dataset,
                                         write_comparison_csv, write_instances_csv, write_metrics_csv)
from samrs.samrs_qgis.window_masks import window_rle

PIX = 0.5  # metres per pixel
T = Affine(PIX, 0, 500000.0, 0, -PIX, 4000000.0)
SIZE = 64

PRODUCED_SCHEMA = {"instance_id": "int", "class_name": "str", "class_id": "int", "score": "float",
                   "area_px": "int", "area_m2": "float", "status": "str", "detail": "str"}


def rect(c0, r0, c1, r1, transform=T) -> Polygon:
    """Map polygon of pixels [c0, c1) x [r0, r1)."""
    return support.pixel_box(transform, c0, r0, c1, r1)


def write_grid(path, size=SIZE, transform=T, crs=support.UTM) -> str:
    return support.write_raster(path, np.zeros((size, size), np.uint8), transform, crs=crs)


def write_produced(path, items, crs=support.UTM, key="instance_id", driver=None) -> str:
    """Our polygon layer: items are (instance_id, class_name, score or None, polygon or None[, status])."""
    geometries, properties = [], []
    for iid, cls, score, geom, *status in items:
        geometries.append(MultiPolygon([geom]) if isinstance(geom, Polygon) else geom)
        properties.append({key: iid, "class_name": cls, "class_id": 0, "score": score,
                           "area_px": int(round(geom.area / PIX ** 2)) if geom is not None else 0,
                           "area_m2": geom.area if geom is not None else 0.0,
                           "status": status[0] if status else "ok" if geom is not None else "empty",
                           "detail": "" if geom is not None else "no object pixel found"})
    schema = {(key if k == "instance_id" else k): t for k, t in PRODUCED_SCHEMA.items()}
    return support.write_boxes(path, geometries, crs=crs, properties=properties, schema=schema,
                               geometry_type="MultiPolygon", driver=driver)


def write_reference(path, items, key="instance_id", class_field=None, crs=support.UTM) -> str:
    """A reference layer: items are (key, class or None, polygon or None)."""
    schema = {key: "int"}
    if class_field:
        schema[class_field] = "str"
    properties = []
    for k, cls, _ in items:
        props = {key: k}
        if class_field:
            props[class_field] = cls
        properties.append(props)
    return support.write_boxes(path, [g for *_, g in items], crs=crs, properties=properties, schema=schema)


def write_instances(path, shapes, size=SIZE, transform=T, block=16) -> str:
    """A tiled uint32 instance raster (0 = none) with ``shapes`` {id: map polygon} burnt in (pixel centres)."""
    from rasterio import features

    data = np.zeros((size, size), np.uint32)
    for iid, geom in shapes.items():
        data[features.rasterize([(geom, 1)], out_shape=data.shape, transform=transform, dtype="uint8") > 0] = iid
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint32", crs=support.UTM,
                       transform=transform, nodata=0, tiled=True, blockxsize=block, blockysize=block) as ds:
        ds.write(data, 1)
    return str(path)


def by_key(result):
    return {i.key: i for i in result.instances}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# --------------------------------------------------------------------------------------------------------


def test_identical_masks_give_iou_and_ap_one(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    shapes = {1: rect(2, 2, 12, 12), 2: rect(20, 5, 30, 25), 3: unary_union([rect(40, 40, 50, 42), rect(40, 42, 42, 50)])}
    produced = write_produced(tmp_path / "masks.gpkg", [(k, "ship", 0.9, g) for k, g in shapes.items()])
    reference = write_reference(tmp_path / "truth.gpkg", [(k, None, g) for k, g in shapes.items()])

    result = evaluate(produced, reference, grid)

    o = result.overall
    assert (o.class_name, o.instances, o.unmatched_produced) == (OVERALL, 3, 0)
    assert o.mean_iou == 1.0 and o.weighted_iou == 1.0
    assert o.ap == pytest.approx(1.0) and o.ap50 == pytest.approx(1.0) and o.ap75 == pytest.approx(1.0)
    # pixel counts: 10x10, 10x20, and an L of 10x2 + 2x8
    assert {k: (i.reference_px, i.produced_px, i.intersection_px, i.union_px) for k, i in by_key(result).items()} == \
        {1: (100, 100, 100, 100), 2: (200, 200, 200, 200), 3: (36, 36, 36, 36)}
    assert [r.class_name for r in result.classes] == ["ship"]  # no reference class field: the produced class


def test_offset_squares_known_iou_and_area_weighted_iou(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(10, 10, 20, 20)), (2, None, rect(30, 30, 40, 40))])
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "object", 0.9, rect(15, 10, 25, 20)),  # 10x10 shifted 5 px in x: I = 50, U = 150, IoU 1/3
        (2, "object", 0.8, rect(30, 30, 40, 50)),  # 10x20 over the 10x10: I = 100, U = 200, IoU 1/2
    ])

    result = evaluate(produced, reference, grid)

    inst = by_key(result)
    assert (inst[1].intersection_px, inst[1].union_px, inst[1].produced_px, inst[1].reference_px) == (50, 150, 100, 100)
    assert (inst[2].intersection_px, inst[2].union_px, inst[2].produced_px, inst[2].reference_px) == (100, 200, 200, 100)
    assert inst[1].iou == pytest.approx(1 / 3) and inst[2].iou == pytest.approx(0.5)
    assert result.overall.mean_iou == pytest.approx((1 / 3 + 1 / 2) / 2)  # 5/12
    assert result.overall.weighted_iou == pytest.approx((50 + 100) / (150 + 200))  # 3/7, not 5/12
    assert (result.overall.intersection_px, result.overall.union_px) == (150, 350)
    # AP50: ranks 0.9 (IoU 1/3: false positive), 0.8 (IoU exactly 0.5 reaches the inclusive 0.5 threshold:
    # true positive). Recall [0, 1/2], precision [0, 1/2] -> [1/2, 1/2]; 51 recall thresholds 0..0.50 get
    # 1/2, the other 50 get 0 -> 25.5/101. Above 0.5 both are false positives: AP75 = 0, AP = AP50 / 10.
    assert result.overall.ap50 == pytest.approx(25.5 / 101)
    assert result.overall.ap75 == 0.0
    assert result.overall.ap == pytest.approx(25.5 / 101 / 10)


@pytest.mark.parametrize("perfect_score, poor_score, expected", [
    # Ranks: perfect (TP), poor (FP) with 2 references: recall [1/2, 1/2], precision [1, 1/2] -> [1, 1/2].
    # Recall thresholds 0.00 … 0.50 (51 of 101) take precision 1, the 50 above 0.5 are unreachable -> 0:
    # AP = 51/101 at every IoU threshold (IoU 1 and 0.25 are on the same side of all of them).
    (0.9, 0.8, 51 / 101),
    # Ranks reversed: poor (FP), perfect (TP): recall [0, 1/2], precision [0, 1/2] -> [1/2, 1/2]:
    # the same 51 thresholds now take 1/2 -> AP = 25.5/101. The scores decide the ranking.
    (0.8, 0.95, 25.5 / 101),
])
def test_ap_on_a_known_case(tmp_path, perfect_score, poor_score, expected):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(5, 5, 15, 15)), (2, None, rect(30, 30, 40, 40))])
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "ship", perfect_score, rect(5, 5, 15, 15)),
        (2, "ship", poor_score, rect(36, 30, 46, 40)),  # shifted 6 px: I = 40, U = 160, IoU 0.25 < 0.5
    ])

    o = evaluate(produced, reference, grid).overall

    assert o.ap50 == pytest.approx(expected) and o.ap75 == pytest.approx(expected) and o.ap == pytest.approx(expected)
    assert o.mean_iou == pytest.approx((1 + 0.25) / 2)


def test_ap_over_iou_thresholds(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(5, 5, 15, 15)), (2, None, rect(30, 30, 40, 40))])
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "ship", 0.9, rect(5, 5, 15, 15)),  # IoU 1
        (2, "ship", 0.8, rect(30, 30, 38, 39)),  # 8x9 inside the 10x10: IoU 72/100
    ])

    o = evaluate(produced, reference, grid).overall

    # IoU thresholds 0.50 … 0.70 (5 of 10): both detections are true positives, recall [1/2, 1], precision
    # [1, 1] -> every recall threshold gets 1 -> AP 1. Thresholds 0.75 … 0.95: the 0.72 mask is a false
    # positive -> 51/101 as above. AP = (5 * 1 + 5 * 51/101) / 10 = 76/101.
    assert o.ap50 == pytest.approx(1.0)
    assert o.ap75 == pytest.approx(51 / 101)
    assert o.ap == pytest.approx(76 / 101)


def test_per_class_rows_use_the_reference_class_and_count_unmatched(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [
        (1, "carrier", rect(2, 2, 12, 12)), (2, "carrier", rect(20, 2, 30, 12)), (3, "warship", rect(30, 30, 40, 40)),
    ], key="obj_id", class_field="category")
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "object", 0.9, rect(2, 2, 12, 12)),  # IoU 1
        (2, "object", 0.8, rect(25, 2, 35, 12)),  # IoU 50/150
        (3, "object", 0.7, rect(30, 30, 40, 50)),  # IoU 100/200
        (99, "boat", 0.6, rect(50, 50, 60, 60)),  # no reference with key 99
    ])

    result = evaluate(produced, reference, grid, key_field="obj_id", reference_class_field="category")

    assert [r.class_name for r in result.rows()] == ["boat", "carrier", "warship", OVERALL]
    carrier, warship, boat, overall = (result.row(c) for c in ("carrier", "warship", "boat", OVERALL))
    assert (carrier.instances, warship.instances, boat.instances, overall.instances) == (2, 1, 0, 3)
    assert (carrier.unmatched_produced, warship.unmatched_produced, boat.unmatched_produced,
            overall.unmatched_produced) == (0, 0, 1, 1)
    assert result.unmatched_produced == [("masks", 99)]
    assert carrier.mean_iou == pytest.approx((1 + 1 / 3) / 2)
    assert carrier.weighted_iou == pytest.approx((100 + 50) / (100 + 150))
    assert warship.mean_iou == pytest.approx(0.5) and warship.weighted_iou == pytest.approx(0.5)
    assert boat.mean_iou is None and boat.weighted_iou is None and boat.ap is None
    assert overall.mean_iou == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert overall.weighted_iou == pytest.approx((100 + 50 + 100) / (100 + 150 + 200))
    # carrier: perfect (0.9) then IoU 1/3 (0.8) -> 51/101 at every threshold (see test_ap_on_a_known_case).
    # warship: one reference, its IoU-0.5 mask is a true positive only at 0.50 -> AP50 1, AP75 0, AP 1/10.
    assert (carrier.ap, carrier.ap50, carrier.ap75) == pytest.approx((51 / 101, 51 / 101, 51 / 101))
    assert (warship.ap, warship.ap50, warship.ap75) == pytest.approx((0.1, 1.0, 0.0))
    # Overall AP is COCO's: the mean over the classes that have reference instances (boat has none).
    assert overall.ap == pytest.approx((51 / 101 + 0.1) / 2)
    assert overall.ap50 == pytest.approx((51 / 101 + 1.0) / 2)
    assert overall.ap75 == pytest.approx((51 / 101 + 0.0) / 2)

    table = read_csv(write_metrics_csv(result, tmp_path / "out" / "metrics.csv"))
    assert tuple(table[0]) == METRICS_COLUMNS
    assert table[1] == ["boat", "0", "", "", "", "", "", "1"]
    assert table[2][:3] == ["carrier", "2", "0.666667"] and table[2][4:] == [f"{51 / 101:.6f}"] * 3 + ["0"]
    assert table[3] == ["warship", "1", "0.500000", "0.500000", "0.100000", "1.000000", "0.000000", "0"]
    assert table[4][:4] == [OVERALL, "3", f"{11 / 18:.6f}", f"{5 / 9:.6f}"] and table[4][-1] == "1"


def test_unmatched_produced_as_false_positive_when_asked(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(5, 5, 15, 15)), (2, None, rect(30, 30, 40, 40))])
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "ship", 0.9, rect(5, 5, 15, 15)), (2, "ship", 0.8, rect(36, 30, 46, 40)),
        (7, "ship", 0.95, rect(50, 5, 60, 15)),  # not in the reference
    ])

    ignored = evaluate(produced, reference, grid).overall
    counted = evaluate(produced, reference, grid, unmatched_in_ap=True).overall

    assert ignored.ap50 == pytest.approx(51 / 101) and ignored.unmatched_produced == 1
    # Ranks 0.95 (FP), 0.9 (TP), 0.8 (FP): recall [0, 1/2, 1/2], precision [0, 1/2, 1/3] -> [1/2, 1/2, 1/3];
    # thresholds 0 … 0.50 take 1/2 -> 25.5/101. IoU measures do not change.
    assert counted.ap50 == pytest.approx(25.5 / 101)
    assert counted.mean_iou == ignored.mean_iou == pytest.approx((1 + 0.25) / 2)


def test_missing_or_empty_produced_instance_counts_as_iou_zero(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg",
                                [(1, None, rect(5, 5, 15, 15)), (2, None, rect(20, 20, 30, 30)), (3, None, rect(40, 40, 50, 50)),
                                 (4, None, rect(40, 5, 50, 15))])
    produced = write_produced(tmp_path / "masks.gpkg", [
        (1, "ship", None, rect(5, 5, 15, 15)),  # perfect, no score (GrabCut): ranked with 1.0
        (2, "ship", None, None),  # status 'empty', null geometry
        (4, "ship", None, rect(40, 5, 50, 15), "invalid"),  # a status other than ok: no mask whatever the geometry
    ])  # key 3 is missing

    result = evaluate(produced, reference, grid)

    inst = by_key(result)
    assert [inst[k].iou for k in (1, 2, 3, 4)] == [1.0, 0.0, 0.0, 0.0]
    assert (inst[4].has_produced, inst[4].produced_px) == (True, 0)
    assert (inst[2].has_produced, inst[2].produced_px, inst[2].union_px) == (True, 0, 100)
    assert (inst[3].has_produced, inst[3].produced_px, inst[3].union_px, inst[3].score) == (False, 0, 100, None)
    assert inst[1].score == 1.0
    assert inst[3].class_name == "ship"  # no class anywhere for key 3: the evaluation's only class
    assert result.overall.mean_iou == pytest.approx(1 / 4)
    assert result.overall.weighted_iou == pytest.approx(100 / 400)
    # One detection (empty masks are none), a true positive, over 4 references: recall 1/4, precision 1;
    # thresholds 0.00 … 0.25 (26 of 101) take 1 -> AP 26/101 at every IoU threshold.
    assert result.overall.ap50 == pytest.approx(26 / 101) and result.overall.ap == pytest.approx(26 / 101)

    # Among several classes a reference instance that nothing classes is '(unknown)', a class of its own.
    two_classes = write_produced(tmp_path / "masks2.gpkg", [(1, "ship", 0.9, rect(5, 5, 15, 15)),
                                                            (2, "boat", 0.9, rect(20, 20, 30, 30))])
    result = evaluate(two_classes, reference, grid)
    assert [(r.class_name, r.instances, r.mean_iou) for r in result.rows()] == \
        [("(unknown)", 2, 0.0), ("boat", 1, 1.0), ("ship", 1, 1.0), (OVERALL, 4, 0.5)]
    assert (result.row("(unknown)").ap, result.row("ship").ap) == (0.0, pytest.approx(1.0))


def test_instance_rasters_give_the_same_numbers_as_polygons(tmp_path, monkeypatch):
    # Tiny read chunks: the first pass sees instances cut across many blocks and must merge their bounds.
    monkeypatch.setattr(evaluation.instance_rasters, "CHUNK_PIXELS", 300)
    grid = write_grid(tmp_path / "image.tif")
    triangle = Polygon([T * (30.3, 33.3), T * (60.3, 33.3), T * (30.3, 60.7)])  # vertices off pixel centres
    truth = {1: rect(2, 2, 20, 14), 2: unary_union([rect(24, 2, 40, 6), rect(24, 6, 28, 30)]), 3: triangle,
             4: rect(3, 40, 20, 60)}
    masks = {1: rect(4, 2, 22, 16), 2: rect(24, 2, 40, 8), 3: Polygon([T * (31.3, 33.3), T * (60.3, 33.3), T * (31.3, 62.7)]),
             5: rect(50, 2, 60, 10)}  # 4 missing, 5 unmatched
    produced_gpkg = write_produced(tmp_path / "masks.gpkg", [(k, "object", None, g) for k, g in masks.items()])
    reference_gpkg = write_reference(tmp_path / "truth.gpkg", [(k, None, g) for k, g in truth.items()])
    produced_tif = write_instances(tmp_path / "instances.tif", masks)
    reference_tif = write_instances(tmp_path / "truth.tif", truth)

    results = {
        "polygons": evaluate(produced_gpkg, reference_gpkg, grid),
        "produced raster": evaluate(produced_tif, reference_gpkg),  # grid taken from the instance raster
        "reference raster": evaluate(produced_gpkg, reference_tif, grid),
        "both rasters": evaluate(InstanceRaster(produced_tif), InstanceRaster(reference_tif)),
    }

    base = results["polygons"]
    rows = [(i.key, i.intersection_px, i.union_px, i.produced_px, i.reference_px) for i in base.instances]
    assert rows[0] == (1, 16 * 12, 18 * 12 + 18 * 14 - 16 * 12, 18 * 14, 18 * 12)
    assert rows[3] == (4, 0, 17 * 20, 0, 17 * 20)
    assert base.overall.unmatched_produced == 1 and 0 < base.overall.ap < 1
    for name, result in results.items():
        assert [(i.key, i.intersection_px, i.union_px, i.produced_px, i.reference_px) for i in result.instances] == rows, name
        for field in ("instances", "mean_iou", "weighted_iou", "ap", "ap50", "ap75", "unmatched_produced"):
            assert getattr(result.overall, field) == getattr(base.overall, field), (name, field)


def test_reference_in_another_crs_is_reprojected(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    shapes = {1: rect(5, 5, 15, 15), 2: rect(20, 30, 45, 38)}
    to_wgs84 = Transformer.from_crs(support.UTM, "EPSG:4326", always_xy=True)
    reference = write_reference(tmp_path / "truth_wgs84.geojson",
                                [(k, None, shapely_transform(to_wgs84.transform, g)) for k, g in shapes.items()],
                                crs="EPSG:4326")
    produced = write_produced(tmp_path / "masks.gpkg", [(1, "ship", 0.9, shapes[1]), (2, "ship", 0.9, rect(20, 30, 45, 34))])

    result = evaluate(produced, reference, grid)

    inst = by_key(result)
    assert (inst[1].reference_px, inst[1].iou) == (100, 1.0)
    assert (inst[2].reference_px, inst[2].intersection_px, inst[2].union_px) == (25 * 8, 25 * 4, 25 * 8)


def test_dataset_of_pairs_pools_instances_and_ap(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    t_b = Affine(1.0, 0, 600000.0, 0, -1.0, 4100000.0)  # the second image has its own grid
    grid_a = write_grid(a_dir / "tile.tif")
    grid_b = write_grid(b_dir / "tile.tif", size=40, transform=t_b)
    pair_a = EvaluationPair(write_produced(a_dir / "masks.gpkg", [(1, "ship", 0.9, rect(5, 5, 15, 15))]),
                            write_reference(a_dir / "truth.gpkg", [(1, None, rect(5, 5, 15, 15))]), grid_a)
    pair_b = (write_produced(b_dir / "masks.gpkg", [(1, "ship", 0.8, rect(16, 5, 26, 15, t_b))]),
              write_reference(b_dir / "truth.gpkg", [(1, None, rect(10, 5, 20, 15, t_b))]), grid_b)

    result = evaluate_dataset([pair_a, pair_b])

    # Same key 1 in both images, kept apart; the two file names clash, so the second image is renamed.
    assert result.images == ["masks", "masks#2"]
    assert [(i.image, i.key, i.iou) for i in result.instances] == [("masks", 1, 1.0), ("masks#2", 1, pytest.approx(40 / 160))]
    # AP pools the images: ranks 0.9 (TP, image a), 0.8 (FP, image b) over 2 references -> 51/101.
    assert result.overall.ap50 == pytest.approx(51 / 101) and result.overall.ap == pytest.approx(51 / 101)
    assert result.overall.weighted_iou == pytest.approx((100 + 40) / (100 + 160))


def test_clusters_give_the_same_ap_as_whole_images():
    rng = np.random.default_rng(7)
    height, width = 120, 150
    grid = evaluation.Grid("mem", width, height, Affine.identity(), None)
    scored = []
    for image in range(2):
        refs, dets = [], []
        for n in range(40):
            c0, r0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            w, h = int(rng.integers(6, 20)), int(rng.integers(6, 20))
            cls = ["a", "b", "c"][n % 3]
            ref = np.ones((h, w), bool)
            refs.append((cls, window_rle(ref, r0, c0, height, width), h * w))
            if rng.random() < 0.85:  # a jittered mask, ties in score on purpose
                dc, dr = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
                c, r = min(max(c0 + dc, 0), width - w), min(max(r0 + dr, 0), height - h)
                dets.append((cls, window_rle(np.ones((h, w), bool), r, c, height, width), h * w,
                             float(rng.choice([0.5, 0.7, 0.9]))))
        scored.append(evaluation.ScoredImage(f"img{image}", grid, refs, dets))

    split = evaluation.coco_mask_ap(scored, Progress(), split_clusters=True)
    whole = evaluation.coco_mask_ap(scored, Progress(), split_clusters=False)

    from pycocotools import mask as mask_utils

    xywh = mask_utils.toBbox([r[1] for r in scored[0].references] + [d[1] for d in scored[0].detections])
    assert 5 < max(evaluation.overlap_clusters(xywh)) + 1 < len(xywh)  # the split really happened
    assert split == whole
    assert 0.2 < split[None][0] < split[None][1] < 0.95  # non-trivial: AP < AP50 < 1


def test_errors_name_the_input_and_the_fix(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    produced = write_produced(tmp_path / "masks.gpkg", [(1, "ship", 0.9, rect(5, 5, 15, 15))])
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(5, 5, 15, 15))], key="obj_id")

    with pytest.raises(InputError, match=r"key field 'instance_id' is not in the reference layer .*truth\.gpkg.*"
                                         r"Its fields are: obj_id"):
        evaluate(produced, reference, grid)
    with pytest.raises(InputError, match="class field 'kind' is not in the reference"):
        evaluate(produced, reference, grid, key_field="obj_id", reference_class_field="kind")

    empty = write_reference(tmp_path / "empty.gpkg", [], key="obj_id")
    with pytest.raises(InputError, match="holds no instance with a pixel on the grid"):
        evaluate(produced, empty, grid, key_field="obj_id")
    far = write_reference(tmp_path / "far.gpkg", [(1, None, rect(500, 500, 510, 510))])
    with pytest.raises(InputError, match="overlaps the grid raster"):
        evaluate(produced, far, grid)

    no_crs = write_reference(tmp_path / "nocrs.gpkg", [(1, None, rect(5, 5, 15, 15))], crs=None)
    with pytest.raises(InputError, match="has no CRS.*Assign the right CRS"):
        evaluate(produced, no_crs, grid)

    duplicate = write_reference(tmp_path / "dup.gpkg", [(1, None, rect(5, 5, 15, 15)), (1, None, rect(20, 5, 25, 15))])
    with pytest.raises(InputError, match="key 1 appears on more than one feature.*Dissolve"):
        evaluate(produced, duplicate, grid)

    points = support.write_boxes(tmp_path / "points.gpkg", [Point(T * (5, 5))], properties=[{"instance_id": 1}],
                                 geometry_type="Point")
    with pytest.raises(InputError, match="is a Point; masks must be polygons"):
        evaluate(produced, points, grid)

    ok_reference = write_reference(tmp_path / "truth2.gpkg", [(1, None, rect(5, 5, 15, 15))])
    with pytest.raises(InputError, match="No pixel grid .*Give grid_raster"):
        evaluate(produced, ok_reference)

    shifted = write_instances(tmp_path / "shifted.tif", {1: rect(5, 5, 15, 15)},
                              transform=Affine(PIX, 0, 500000.0 + 3 * PIX, 0, -PIX, 4000000.0))
    with pytest.raises(InputError, match=r"not on the grid of .*image\.tif.*geotransform.*gdalwarp -r near"):
        evaluate(shifted, ok_reference, grid)

    scores = support.write_raster(tmp_path / "scores.tif", np.zeros((SIZE, SIZE), np.float32), T)
    with pytest.raises(InputError, match="float32 values; instance ids are integers"):
        evaluate(scores, ok_reference, grid)

    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "nothing.gpkg", ok_reference, grid)


def test_shapefile_produced_layer_and_explicit_sources(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    produced = write_produced(tmp_path / "masks.shp", [(1, "ship", 0.9, rect(5, 5, 15, 15))], key="inst_id")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, "frigate", rect(5, 5, 15, 25))], class_field="type")

    result = evaluate(PolygonMasks(produced), PolygonMasks(reference), grid, reference_class_field="type")

    assert [(r.class_name, r.instances, r.mean_iou) for r in result.rows()] == [("frigate", 1, 0.5), (OVERALL, 1, 0.5)]


def test_tables_are_written_atomically_and_compared(tmp_path):
    grid = write_grid(tmp_path / "image.tif")
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(10, 10, 20, 20)), (2, None, rect(30, 30, 40, 40))])
    box = evaluate(write_produced(tmp_path / "box.gpkg", [(1, "ship", 0.9, rect(10, 10, 20, 20)),
                                                          (2, "ship", 0.8, rect(30, 30, 40, 50))]), reference, grid)
    point = evaluate(write_produced(tmp_path / "point.gpkg", [(1, "ship", 0.9, rect(15, 10, 25, 20))]), reference, grid)
    out = tmp_path / "tables"
    out.mkdir()
    (out / "comparison.csv").write_text("old content\n")

    write_comparison_csv({"box": box, "point": point}, out / "comparison.csv")
    write_instances_csv(box, out / "instances.csv")

    comparison = read_csv(out / "comparison.csv")
    assert tuple(comparison[0]) == COMPARISON_COLUMNS
    assert comparison[1][:4] == ["box", "2", f"{(1 + 0.5) / 2:.6f}", f"{200 / 300:.6f}"]
    # point: only instance 1, IoU 1/3; instance 2 missing -> 0. Weighted (50 + 0) / (150 + 100).
    assert comparison[2][:4] == ["point", "2", f"{(1 / 3) / 2:.6f}", f"{50 / 250:.6f}"]
    assert comparison[2][4:] == ["0.000000", "0.000000", "0.000000", "0"]
    instances = read_csv(out / "instances.csv")
    assert tuple(instances[0]) == INSTANCE_COLUMNS
    assert instances[1:] == [["1", "ship", "1.000000", "100", "100", "100", "100", "box"],
                             ["2", "ship", "0.500000", "100", "200", "200", "100", "box"]]
    assert sorted(os.listdir(out)) == ["comparison.csv", "instances.csv"]  # no temporary file left behind
    with pytest.raises(InputError, match="is a folder"):
        write_metrics_csv(box, out)


def test_memory_stays_bounded_by_the_instances(tmp_path):
    # A 30000 x 30000 grid: one full-grid uint8 array would be 900 MB, a uint32 one 3.6 GB.
    big = 30000
    grid = str(tmp_path / "big.tif")
    with rasterio.open(grid, "w", driver="GTiff", width=big, height=big, count=1, dtype="uint8", crs=support.UTM,
                       transform=T, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True, compress="deflate"):
        pass  # sparse: no block is written
    reference = write_reference(tmp_path / "truth.gpkg", [(1, None, rect(100, 100, 300, 300)),
                                                          (2, None, rect(29000, 29000, 29100, 29100))])
    produced = write_produced(tmp_path / "masks.gpkg", [(1, "ship", 0.9, rect(150, 100, 350, 300)),
                                                        (2, "ship", 0.9, rect(29000, 29000, 29100, 29100))])
    tracemalloc.start()
    try:
        result = evaluate(produced, reference, grid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [i.iou for i in result.instances] == [pytest.approx(150 * 200 / (250 * 200)), 1.0]
    assert peak < 20e6, peak

    # An instance raster is read block by block: a 6000 x 6000 uint32 raster (144 MB as one array).
    size = 6000
    raster = str(tmp_path / "instances.tif")
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint32", crs=support.UTM,
                       transform=T, nodata=0, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True,
                       compress="deflate") as ds:
        ds.write(np.full((200, 200), 1, np.uint32), 1, window=rasterio.windows.Window(150, 100, 200, 200))
        ds.write(np.full((100, 100), 2, np.uint32), 1, window=rasterio.windows.Window(5000, 5000, 100, 100))
    reference_small = write_reference(tmp_path / "truth_small.gpkg", [(1, None, rect(100, 100, 300, 300)),
                                                                      (2, None, rect(5000, 5000, 5100, 5100))])
    tracemalloc.start()
    try:
        result = evaluate(raster, reference_small)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [i.iou for i in result.instances] == [pytest.approx(150 * 200 / (250 * 200)), 1.0]
    assert peak < 60e6, peak


def test_masks_of_an_image_without_georeferencing_are_compared_where_qgis_shows_it(tmp_path):
    """A plain PNG as the grid and pixel-space layers (x = column, y = -row): identical masks give IoU 1,
    a known overlap its value."""
    import fiona
    import rasterio as rio
    from shapely.geometry import box as rect, mapping

    from samrs.samrs_qgis.evaluation import evaluate
    from samrs.samrs_qgis.georef import UNDEFINED_CARTESIAN_WKT

    png = tmp_path / "image.png"
    with rio.open(png, "w", driver="PNG", width=64, height=48, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 48, 64), np.uint8))

    def layer(path, squares):
        schema = {"geometry": "Polygon", "properties": {"instance_id": "int", "class_name": "str", "status": "str"}}
        with fiona.open(path, "w", driver="GPKG", layer="masks", schema=schema, crs_wkt=UNDEFINED_CARTESIAN_WKT) as out:
            for i, (c0, r0, c1, r1) in enumerate(squares, start=1):
                out.write({"geometry": mapping(rect(c0, -r1, c1, -r0)),
                           "properties": {"instance_id": i, "class_name": "a", "status": "ok"}})
        return str(path)

    reference = layer(tmp_path / "ref.gpkg", [(10, 10, 30, 30), (40, 5, 60, 25)])
    produced = layer(tmp_path / "prod.gpkg", [(10, 10, 30, 40), (40, 5, 60, 25)])
    result = evaluate(produced, reference, str(png))
    ious = sorted(round(i.iou, 6) for i in result.instances)
    # the first produced square is 10 rows taller: I = 20 * 20, U = 20 * 30
    assert ious == [round(400 / 600, 6), 1.0]

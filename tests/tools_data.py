"""Small inputs with known answers for the tests of the tools (import, report, evaluate, ablation)."""
from __future__ import annotations

import json

import numpy as np
from affine import Affine
from shapely.geometry import Point

from support import UTM, pixel_box, write_boxes, write_raster

TRANSFORM = Affine(0.5, 0.0, 404000.0, 0.0, -0.5, 3285200.0)
SIZE = 128
# (centre col, row), radius px, class: bright and dark discs on a noisy ground
DISCS = [((34, 34), 16, "tank"), ((94, 36), 18, "pond"), ((62, 94), 20, "tank")]

# DOTA lines in pixels of the scene: x1 y1 x2 y2 x3 y3 x4 y4 class difficult
DOTA_A = """imagesource:GoogleEarth
gsd:0.5
15 15 53 15 53 53 15 53 storage-tank 0
73 15 115 15 115 57 73 57 swimming-pool 1
1 2 3 4 5 storage-tank
39 71 85 71 85 117 39 117 storage-tank 0
"""
DOTA_B = "10 10 20 10 20 20 10 20 plane 0\n"


def disc_bounds():
    return [(cx - r - 3, cy - r - 3, cx + r + 3, cy + r + 3) for (cx, cy), r, _ in DISCS]


def scene_raster(path, crs=UTM):
    rng = np.random.default_rng(11)
    image = 100 + rng.normal(0, 8, (3, SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for (cx, cy), r, cls in DISCS:
        disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r ** 2
        colour = (235, 230, 225) if cls == "tank" else (25, 55, 110)
        for band in range(3):
            image[band][disc] = colour[band] + rng.normal(0, 4, disc.sum())
    return write_raster(path, np.clip(image, 0, 255).astype(np.uint8), TRANSFORM, crs=crs)


def scene_boxes(path):
    return write_boxes(path, [pixel_box(TRANSFORM, *b) for b in disc_bounds()],
                       properties=[{"label": cls} for *_, cls in DISCS])


def reference_discs(path):
    """The true discs as polygons with the boxes' instance ids (1-based box order) and a class field."""
    polygons = [Point(TRANSFORM * (cx, cy)).buffer(r * TRANSFORM.a, 64) for (cx, cy), r, _ in DISCS]
    return write_boxes(path, polygons, properties=[{"instance_id": i + 1, "kind": cls}
                                                   for i, (*_, cls) in enumerate(DISCS)])


# Squares with a known answer (pixels of the scene grid): reference 1 = [10,30)x[10,30), produced 1 =
# [10,30)x[10,40) -> I 400, U 600, IoU 2/3; instance 2 identical, [60,90)x[60,80) -> IoU 1.
REF_SQUARES = [(10, 10, 30, 30, "a"), (60, 60, 90, 80, "b")]
PROD_SQUARES = [(10, 10, 30, 40, 0.8), (60, 60, 90, 80, 0.9)]
MEAN_IOU = (2 / 3 + 1) / 2
WEIGHTED_IOU = (400 + 600) / (600 + 600)
AP50 = 1.0
# COCO AP is the mean over classes (reference classes a and b): class a (IoU 0.667) matches at the
# thresholds .50 .55 .60 .65 of ten -> 0.4; class b (IoU 1) at all ten -> 1.0.
AP = (0.4 + 1.0) / 2
AP75 = (0.0 + 1.0) / 2


def write_squares(tmp_path, prefix="", produced=PROD_SQUARES, reference=REF_SQUARES):
    """(produced polygon layer, reference polygon layer) of the known squares."""
    prod = write_boxes(tmp_path / f"{prefix}produced.gpkg", [pixel_box(TRANSFORM, *s[:4]) for s in produced],
                       properties=[{"instance_id": i + 1, "class_name": "object", "score": s[4], "status": "ok"}
                                   for i, s in enumerate(produced)])
    ref = write_boxes(tmp_path / f"{prefix}reference.gpkg", [pixel_box(TRANSFORM, *s[:4]) for s in reference],
                      properties=[{"instance_id": i + 1, "kind": s[4]} for i, s in enumerate(reference)])
    return prod, ref


def write_instance_raster(path, squares=PROD_SQUARES):
    data = np.zeros((SIZE, SIZE), dtype=np.uint32)
    for i, (c0, r0, c1, r1, *_) in enumerate(squares):
        data[r0:r1, c0:c1] = i + 1
    return write_raster(path, data, TRANSFORM, nodata=0)


# A mask layer as segmentation writes it: 2 instances (tank 100 px, pond 50 px) and one empty box.
MASK_ROWS = [("tank", 0, 0.92, 100, "ok"), ("pond", 1, 0.81, 50, "ok"), ("tank", 0, None, 0, "empty")]


def write_mask_layer(path, rows=MASK_ROWS):
    polygons = [pixel_box(TRANSFORM, 10 + 20 * i, 10, 20 + 20 * i, 20) if area else None
                for i, (_, _, _, area, _) in enumerate(rows)]
    props = [{"instance_id": i + 1, "class_name": c, "class_id": cid, "score": s, "area_px": a, "status": st}
             for i, (c, cid, s, a, st) in enumerate(rows)]
    schema = {"instance_id": "int", "class_name": "str", "class_id": "int", "score": "float", "area_px": "int",
              "status": "str"}
    return write_boxes(path, polygons, properties=props, schema=schema)


def write_dataset_folder(folder, layers=1):
    """A folder as the dataset segmentation writes it, without class rasters: geo/<stem>.gpkg and a manifest."""
    (folder / "geo").mkdir(parents=True)
    images = {}
    for k in range(layers):
        write_mask_layer(folder / "geo" / f"img{k}.gpkg")
        images[f"img{k}"] = {"status": "done"}
    (folder / "manifest.json").write_text(json.dumps({"classes": ["tank", "pond"], "background": 255,
                                                      "images": images}))
    return str(folder)

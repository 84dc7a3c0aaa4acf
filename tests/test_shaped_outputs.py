"""Polygon shaping and Cloud Optimized GeoTIFF in real runs (GrabCut on a synthetic scene of buildings and a tank):
regularised buildings have right angles on the map, also over a rotated geotransform with pixels that are not
square; the rasters do not change; a shape that is not rectilinear says so in ``detail``; the options are
recorded; areas in map units fill holes and drop specks; COG outputs pass GDAL's validation and open in QGIS
with the same styles."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio import features
from shapely import affinity
from shapely.geometry import Polygon

import support
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.postprocess import PostProcessing, clean_mask
from samrs.samrs_qgis.settings import SegmentOptions

SIZE = 320
NORTH_UP = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
ROTATED = (Affine.translation(600020, 3300000) * Affine.rotation(-30) * Affine.scale(0.5, -0.8)  # not square
           * Affine.translation(0, -75))
# shapes in the north-up raster's pixel space, where they are on the map in every test: (class, polygon, whether
# its box is the shape's rotated rectangle)
BUILDING = affinity.rotate(Polygon([(40, 50), (150, 50), (150, 110), (40, 110)]), 17, origin=(95, 80))
HALL = affinity.rotate(Polygon([(185, 60), (285, 60), (285, 130), (185, 130)]), 25, origin=(235, 95))
TANK = Polygon(np.c_[90 + 45 * np.cos(np.linspace(0, 2 * np.pi, 90)), 230 + 45 * np.sin(np.linspace(0, 2 * np.pi, 90))])
SHAPES = [("building", BUILDING, True), ("building", HALL, False), ("tank", TANK, False)]


def on_map(geometry, transform: Affine):
    return affinity.affine_transform(geometry, [transform.a, transform.b, transform.d, transform.e, transform.c,
                                                transform.f])


def scene(folder, transform):
    """The raster on ``transform``'s grid (buildings red, the tank white, on noisy grass; the shapes are the same
    on the map whatever the grid) and its boxes: the 17° building's box is its rotated rectangle, the others (a
    hall at 25°, the tank) are along the map's axes. (GrabCut cuts the inner corner of an L-shaped building:
    L-shapes are tested on exact masks, tests/test_polygon_shaping.py.)"""
    rng = np.random.default_rng(4)
    image = np.stack([np.full((SIZE, SIZE), v, float) for v in (70, 110, 60)]) + rng.normal(0, 5, (3, SIZE, SIZE))
    for (cls, shape, _), colour in zip(SHAPES, [(200, 60, 50), (200, 60, 50), (235, 235, 230)]):
        inside = features.rasterize([(on_map(shape, NORTH_UP), 1)], out_shape=(SIZE, SIZE),
                                    transform=transform).astype(bool)
        for band in range(3):
            image[band][inside] = colour[band] + rng.normal(0, 4, inside.sum())
    raster = support.write_raster(folder / "scene.tif", np.clip(image, 0, 255).astype(np.uint8), transform)
    boxes = []
    for _, shape, rotated_box in SHAPES:
        shape = on_map(shape, NORTH_UP)
        outline = shape.minimum_rotated_rectangle if rotated_box else shape.envelope
        boxes.append(outline.buffer(3, join_style=2))  # a detector's box is a little larger than the object
    layer = support.write_boxes(folder / "boxes.gpkg", boxes, properties=[{"cls": c} for c, _, _ in SHAPES])
    return raster, layer


def run(folder, transform, **options) -> OutputPaths:
    folder.mkdir(parents=True, exist_ok=True)
    raster, boxes = scene(folder, transform)
    out = OutputPaths(str(folder / "instances.tif"), str(folder / "semantic.tif"), str(folder / "masks.gpkg"))
    segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="cls",
                                                                    embedding_cache=False, **options))
    return out


def corner_angles(ring) -> list:
    c = np.asarray(ring.coords)[:-1]
    out = []
    for i in range(len(c)):
        a, b = c[i - 1] - c[i], c[(i + 1) % len(c)] - c[i]
        out.append(math.degrees(math.acos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))
    return out


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated-non-square"])
def test_regularised_buildings_have_right_angles_on_the_map(tmp_path, transform):
    raw = run(tmp_path / "raw", transform, keep_largest=True)  # as a user would: GrabCut leaves specks
    shaped = run(tmp_path / "regularised", transform, keep_largest=True, regularise=True)
    raw_rows, rows = support.read_features(raw.polygons), support.read_features(shaped.polygons)
    assert [r["status"] for r in rows] == ["ok"] * 3
    for k, angle in ((0, 17), (1, 25)):  # the 17° building (the box's orientation), the hall (its outline's)
        (part,) = rows[k]["geometry"].geoms
        assert rows[k]["detail"] == "" and len(part.exterior.coords) == 5
        assert all(abs(a - 90) < 0.01 for a in corner_angles(part.exterior)), corner_angles(part.exterior)
        edge = np.diff(np.asarray(on_map(part, ~NORTH_UP).exterior.coords)[:2], axis=0)[0]  # where it was drawn
        assert abs(math.degrees(math.atan2(edge[1], edge[0])) % 90 - angle) < 1.5  # along the building's walls
        raw_part = raw_rows[k]["geometry"]
        assert len(raw_part.geoms[0].exterior.coords) > 16  # the traced stairs
        assert abs(part.area - raw_part.area) < 0.04 * raw_part.area
        assert part.symmetric_difference(raw_part).area < 0.1 * raw_part.area
    assert "not rectilinear: left as traced" in rows[2]["detail"]  # the tank
    assert rows[2]["geometry"].equals(raw_rows[2]["geometry"])
    for a, b in ((raw.instances, shaped.instances), (raw.semantic, shaped.semantic)):  # rasters: masks, unshaped
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(1), y.read(1))
    with rasterio.open(shaped.instances) as ds:
        assert json.loads(ds.tags()["SAMRS_SETTINGS"])["regularise"] is True


def test_smoothed_and_simplified_polygons_are_valid_and_recorded(tmp_path):
    raw = run(tmp_path / "raw", NORTH_UP)
    out = run(tmp_path / "shaped", NORTH_UP, smooth_px=2.0, simplify_px=0.75)
    raw_rows, rows = support.read_features(raw.polygons), support.read_features(out.polygons)
    for before, after in zip(raw_rows, rows):
        geometry = after["geometry"]
        assert geometry.geom_type == "MultiPolygon" and geometry.is_valid and after["detail"] == ""
        assert len(geometry.geoms[0].exterior.coords) < len(before["geometry"].geoms[0].exterior.coords)
        assert abs(geometry.area - before["geometry"].area) < 0.05 * before["geometry"].area
    with rasterio.open(out.semantic) as ds:
        settings = json.loads(ds.tags()["SAMRS_SETTINGS"])
    assert (settings["smooth_px"], settings["simplify_px"], settings["regularise"]) == (2.0, 0.75, False)


def test_areas_in_map_units_fill_holes_and_drop_specks():
    """A pixel of 0.5 x 0.5 m is 0.25 m²: a hole of 40 pixels is 10 m², a speck of 6 pixels 1.5 m²."""
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    mask[20:28, 20:25] = False  # the hole: 40 pixels
    mask[2:4, 55:58] = True  # the speck: 6 pixels
    options = SegmentOptions(min_hole_area=10.5, min_island_area=1.6)
    steps = PostProcessing.of(options, 0.25)
    assert (steps.min_hole_px, steps.min_island_px) == (42, 7)
    cleaned = clean_mask(mask, steps)
    assert cleaned[20:28, 20:25].all() and not cleaned[2:4, 55:58].any()
    kept = clean_mask(mask, PostProcessing.of(SegmentOptions(min_hole_area=10.0, min_island_area=1.5), 0.25))
    assert np.array_equal(kept, mask)  # exactly the threshold: kept as it is
    larger = PostProcessing.of(SegmentOptions(min_hole_px=50, min_hole_area=1.0), 0.25)
    assert larger.min_hole_px == 50  # of pixels and map units, the larger threshold counts


def test_cog_outputs_are_valid_and_open_in_qgis_with_the_same_styles(tmp_path, qgis_app):
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate
    from qgis.core import QgsRasterLayer

    plain = run(tmp_path / "plain", NORTH_UP)
    cog = run(tmp_path / "cog", NORTH_UP, cog=True)
    assert sorted(p.name for p in (tmp_path / "cog").iterdir()) == sorted(p.name for p in (tmp_path / "plain").iterdir())
    for a, b in ((plain.instances, cog.instances), (plain.semantic, cog.semantic)):
        errors, warnings, _ = validate(b, full_check=True)
        assert errors == [] and warnings == [], (errors, warnings)
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(1), y.read(1)) and x.transform == y.transform and x.crs == y.crs
            same = lambda tags: {k: v for k, v in tags.items() if k not in ("SAMRS_SOURCE_RASTER", "SAMRS_SETTINGS")}  # noqa: E731
            assert same(x.tags()) == same(y.tags()) and json.loads(y.tags()["SAMRS_SETTINGS"])["cog"] is True
            assert y.profile["blockxsize"] == 512 and y.compression.name.lower() == "deflate"
            if b == cog.semantic:
                from osgeo import gdal

                assert x.colormap(1) == y.colormap(1)
                # (gdalinfo's text: this GDAL's Python GetCategoryNames answers None for a list with blanks)
                names = [gdal.Info(p).split("Categories:")[1] for p in (a, b)]
                assert names[0] == names[1] and "0: building" in names[1] and "1: tank" in names[1]
    for a, b in ((plain.semantic, cog.semantic), (plain.instances, cog.instances)):
        one, other = QgsRasterLayer(a, "plain"), QgsRasterLayer(b, "cog")
        assert one.isValid() and other.isValid()
        assert one.renderer().type() == other.renderer().type() == "paletted"
        assert [(c.value, c.label) for c in one.renderer().classes()] == \
               [(c.value, c.label) for c in other.renderer().classes()]


def test_cog_outputs_have_mode_overviews(tmp_path):
    """A raster larger than a block gets overviews; each overview pixel holds a class that is in the raster."""
    transform = Affine(0.25, 0, 600000, 0, -0.25, 3300000)
    raster, boxes, _ = support.synthetic_files(tmp_path, 1200, 2, transform)
    out = OutputPaths(str(tmp_path / "i.tif"), str(tmp_path / "s.tif"), None)
    segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="cls",
                                                                    embedding_cache=False, cog=True))
    with rasterio.open(out.semantic) as ds:
        assert ds.overviews(1) == [2, 4]
        values = set(np.unique(ds.read(1)))
        overview = ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
        assert set(np.unique(overview)) <= values
    with rasterio.open(out.instances) as ds:
        assert set(np.unique(ds.read(1, out_shape=(ds.height // 4, ds.width // 4)))) <= set(np.unique(ds.read(1)))


def test_a_dataset_run_shapes_every_image_polygons_and_records_the_options(tmp_path):
    """segment_dataset with smoothing and simplification: each image's polygon layer has them, the manifest
    records them, and the instance files (COCO masks: the pixels the polygons cover) follow the shaped polygons,
    close to the raw masks."""
    from samrs.samrs_qgis.dataset import segment_dataset

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for stem, seed in (("a", 1), ("b", 2)):
        image, objects = support.synthetic_scene(256, seed=seed)
        support.write_raster(images / f"{stem}.tif", image, NORTH_UP)
        lines = [" ".join(f"{v} {w}" for v, w in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))) + f" {cls} 0"
                 for cls, _, (c0, r0, c1, r1) in objects]
        (labels / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    plain = segment_dataset(str(images), str(labels), str(tmp_path / "plain"),
                            SegmentOptions(backend="grabcut", embedding_cache=False))
    shaped = segment_dataset(str(images), str(labels), str(tmp_path / "shaped"),
                             SegmentOptions(backend="grabcut", embedding_cache=False, smooth_px=2.0, simplify_px=0.5))
    assert plain.done == shaped.done == 2 and shaped.failed == 0
    manifest = json.loads((tmp_path / "shaped" / "manifest.json").read_text())
    assert (manifest["settings"]["smooth_px"], manifest["settings"]["simplify_px"]) == (2.0, 0.5)
    for stem in ("a", "b"):
        before = support.read_features(tmp_path / "plain" / "geo" / f"{stem}.gpkg", layer="masks")
        after = support.read_features(tmp_path / "shaped" / "geo" / f"{stem}.gpkg", layer="masks")
        assert len(before) == len(after) == 9
        for x, y in zip(before, after):
            assert y["geometry"].is_valid and y["geometry"].geom_type == "MultiPolygon"
            assert not y["geometry"].equals(x["geometry"]) and y["area_px"] == x["area_px"]
        records = [json.loads((tmp_path / run / "instances" / f"{stem}.json").read_text())
                   for run in ("plain", "shaped")]
        assert [r["instance_id"] for r in records[0]] == [r["instance_id"] for r in records[1]]
        for raw, smooth in zip(*records):
            assert abs(smooth["area"] - raw["area"]) <= 0.1 * raw["area"]

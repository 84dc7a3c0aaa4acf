"""The three outputs: instance raster, semantic raster and polygon layer, and how they are written.

Real GeoTIFFs and vector files are written in ``tmp_path`` and the real engine runs over them with the
weights-free GrabCut backend.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio import features as rio_features
from shapely.geometry import mapping

import support
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import Cancelled, InputError
from samrs.samrs_qgis.masks import MaskCrop
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions
from samrs.samrs_qgis.progress import Progress
from samrs.samrs_qgis.raster_output import InstanceCanvas

UTM_T = Affine(0.5, 0.0, 631000.0, 0.0, -0.5, 4190000.0)  # 0.5 m pixels, EPSG:32617
DOCUMENTED_FIELDS = ("instance_id", "class_name", "class_id", "score", "area_px", "area_m2", "status", "detail")

# Four bright objects on a 256 px textured ground: (c0, r0, c1, r1) pixel rectangles.
RECTS = [(20, 20, 70, 60), (120, 25, 180, 75), (30, 140, 80, 200), (150, 150, 215, 210)]


# -- helpers ------------------------------------------------------------------------------------------
def scene(tmp_path, size=256, rects=RECTS, seed=0, name="scene.tif"):
    rng = np.random.default_rng(seed)
    image = 70 + rng.normal(0, 8, (3, size, size))
    for c0, r0, c1, r1 in rects:
        image[:, r0:r1, c0:c1] = np.array([225, 220, 215])[:, None, None]
    image = np.clip(image, 1, 255).astype(np.uint8)
    return support.write_raster(tmp_path / name, image, UTM_T), image


def box_layer(tmp_path, properties, rects=RECTS, name="boxes.gpkg", schema=None):
    return support.write_boxes(tmp_path / name, [support.pixel_box(UTM_T, *r) for r in rects],
                               properties=properties, schema=schema)


def all_outputs(folder, stem="out", polygons_ext=".gpkg"):
    return OutputPaths(instances=str(folder / f"{stem}_instances.tif"),
                       semantic=str(folder / f"{stem}_semantic.tif"),
                       polygons=str(folder / f"{stem}_masks{polygons_ext}"))


def grabcut(**kwargs):
    return SegmentOptions(backend="grabcut", **kwargs)


def read_band(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def rect_mask(shape_rc, rect):
    c0, r0, c1, r1 = rect
    out = np.zeros(shape_rc, bool)
    out[r0:r1, c0:c1] = True
    return out


def geometry_mask(geometry, shape_rc, transform=UTM_T):
    """Pixels of a (pixel-edge traced) mask polygon, back on the raster grid."""
    return rio_features.rasterize([(mapping(geometry), 1)], out_shape=shape_rc, transform=transform,
                                  fill=0, dtype="uint8").astype(bool)


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


# -- 1. the overlap rule ----------------------------------------------------------------------------------
def canvas_after(path, paints, size=64, count=4):
    canvas = InstanceCanvas(str(path), size, size, count, UTM_T)
    try:
        for crop, index in paints:
            canvas.paint(crop, index)
        (window, indices), = list(canvas.blocks())
        assert (window.width, window.height) == (size, size)
        return indices.copy()
    finally:
        canvas.close()


def test_instance_canvas_smaller_mask_owns_pixels_in_any_order(tmp_path):
    big = MaskCrop(col=5, row=5, mask=np.ones((40, 40), bool))  # 1600 px
    disc = np.hypot(*np.mgrid[-6:6, -6:6] + 0.5) < 6
    small = MaskCrop(col=18, row=22, mask=disc)  # inside the big one
    a = canvas_after(tmp_path / "a.tif", [(big, 1), (small, 2)])
    b = canvas_after(tmp_path / "b.tif", [(small, 2), (big, 1)])
    assert np.array_equal(a, b)
    small_pixels = np.zeros_like(a, bool)
    small_pixels[22:34, 18:30] = disc
    big_pixels = np.zeros_like(a, bool)
    big_pixels[5:45, 5:45] = True
    assert (a[small_pixels] == 2).all()
    assert (a[big_pixels & ~small_pixels] == 1).all()
    assert (a[~big_pixels] == 0).all()

    # Equal areas: the later box (higher index) wins, whatever order they are painted in.
    left = MaskCrop(col=0, row=0, mask=np.ones((10, 10), bool))
    right = MaskCrop(col=5, row=5, mask=np.ones((10, 10), bool))
    c = canvas_after(tmp_path / "c.tif", [(left, 2), (right, 3)])
    d = canvas_after(tmp_path / "d.tif", [(right, 3), (left, 2)])
    assert np.array_equal(c, d)
    assert (c[5:10, 5:10] == 3).all() and (c[0:5, 0:10] == 2).all() and (c[10:15, 5:15] == 3).all()


@pytest.mark.parametrize("small_first", [False, True])
def test_small_object_inside_big_box_owns_its_pixels(tmp_path, small_first):
    size = 256
    rng = np.random.default_rng(1)
    image = 70 + rng.normal(0, 8, (3, size, size))
    big_rect, small_rect = (40, 40, 170, 160), (90, 85, 115, 110)
    image[:, 40:160, 40:170] = np.array([225, 225, 225])[:, None, None]
    image[:, 85:110, 90:115] = np.array([235, 195, 30])[:, None, None]  # e.g. a vehicle on a roof
    image = np.clip(image, 1, 255).astype(np.uint8)
    raster = support.write_raster(tmp_path / "r.tif", image, UTM_T)
    order = [("small", small_rect), ("big", big_rect)] if small_first else [("big", big_rect), ("small", small_rect)]
    boxes = box_layer(tmp_path, [{"name": n} for n, _ in order], rects=[r for _, r in order])

    outputs = all_outputs(tmp_path)
    segment_boxes(raster, read_box_file(boxes), outputs, grabcut())
    rows = {r["name"]: r for r in support.read_features(outputs.polygons)}
    big_mask = geometry_mask(rows["big"]["geometry"], (size, size))
    small_mask = geometry_mask(rows["small"]["geometry"], (size, size))
    assert big_mask.sum() == rows["big"]["area_px"] and small_mask.sum() == rows["small"]["area_px"]
    assert rows["small"]["area_px"] < rows["big"]["area_px"]
    overlap = big_mask & small_mask
    assert overlap.sum() > 0.5 * small_mask.sum()  # the masks really overlap (the layer keeps both whole)

    instances = read_band(outputs.instances)
    big_id, small_id = rows["big"]["instance_id"], rows["small"]["instance_id"]
    assert (instances[small_mask] == small_id).all()
    assert (instances[big_mask & ~small_mask] == big_id).all()
    assert (instances[~(big_mask | small_mask)] == 0).all()
    with rasterio.open(outputs.instances) as ds:
        assert "smaller" in ds.tags().get("SAMRS_OVERLAP_RULE", "")


# -- 2. grids, types, metadata and fields --------------------------------------------------------------------
def test_output_grids_types_classes_and_fields(tmp_path):
    image, objects = support.synthetic_scene(512, seed=0)
    raster = support.write_raster(tmp_path / "scene.tif", image, UTM_T)
    properties = [{"label": cls, "note": f"obj{i}", "score": 0.5 + i / 100} for i, (cls, _, _) in enumerate(objects)]
    boxes = support.write_boxes(tmp_path / "boxes.gpkg", [support.pixel_box(UTM_T, *b) for _, _, b in objects],
                                properties=properties)
    outputs = all_outputs(tmp_path)
    summary = segment_boxes(raster, read_box_file(boxes), outputs, grabcut(class_field="label"))
    assert summary.status_counts == {"ok": len(objects)}
    names = sorted({cls for cls, _, _ in objects})
    assert summary.classes == dict(enumerate(names))

    with rasterio.open(raster) as src, rasterio.open(outputs.instances) as inst, \
            rasterio.open(outputs.semantic) as sem:
        for out in (inst, sem):
            assert out.crs == src.crs
            assert out.transform == src.transform
            assert (out.width, out.height, out.count) == (src.width, src.height, 1)
        assert inst.dtypes == ("uint32",) and inst.nodata == 0
        assert sem.dtypes == ("uint8",) and sem.nodata == 255
        instances, semantic = inst.read(1), sem.read(1)
        colormap = sem.colormap(1)
        tags = sem.tags()
    assert colormap[255][3] == 0  # background transparent
    class_colours = {colormap[i] for i in range(len(names))}
    assert len(class_colours) == len(names) and all(c[3] == 255 for c in class_colours)
    assert json.loads(tags["SAMRS_CLASSES"]) == {str(i): n for i, n in enumerate(names)}

    from osgeo import gdal

    ds = gdal.Open(outputs.semantic)
    try:
        ds.GetGeoTransform()  # GDAL 3.6's GTiff driver loads the .aux.xml (PAM) lazily, on such a call
        categories = ds.GetRasterBand(1).GetCategoryNames()
    finally:
        ds = None
    assert categories[:len(names)] == names
    assert categories[255] == "background"

    with fiona.open(outputs.polygons) as layer:
        fields = list(layer.schema["properties"])
        assert CRS.from_wkt(layer.crs_wkt).equals(CRS.from_epsg(32617))
    assert set(DOCUMENTED_FIELDS) <= set(fields)
    assert {"label", "note", "src_score"} <= set(fields)  # source attributes, renamed where they clash

    rows = support.read_features(outputs.polygons)
    assert len(rows) == len(objects)
    assert sorted(r["instance_id"] for r in rows) == list(range(1, len(objects) + 1))
    for row in rows:
        i = row["instance_id"] - 1
        cls, truth, _ = objects[i]
        assert row["note"] == f"obj{i}" and row["src_score"] == pytest.approx(0.5 + i / 100)
        assert row["label"] == cls and row["class_name"] == cls and row["class_id"] == names.index(cls)
        assert row["status"] == "ok" and row["area_px"] > 0
        assert row["area_m2"] == pytest.approx(row["area_px"] * 0.25, rel=1e-9)
        assert row["area_m2"] == pytest.approx(row["geometry"].area, rel=1e-9)
        owned = instances == row["instance_id"]
        assert support.iou(owned, truth) > 0.8
        assert (semantic[owned] == row["class_id"]).all()
    assert set(np.unique(instances)) == {0} | {r["instance_id"] for r in rows}
    assert np.array_equal(semantic == 255, instances == 0)


def test_area_m2_converts_projected_units_to_metres(tmp_path):
    """A raster in US survey feet (NAD83 / North Carolina ftUS): area_m2 is in square metres, not feet."""
    transform = Affine(2.0, 0.0, 2000000.0, 0.0, -2.0, 600000.0)  # 2 ft pixels
    rng = np.random.default_rng(2)
    image = 70 + rng.normal(0, 8, (3, 128, 128))
    rect = (30, 40, 80, 90)
    image[:, 40:90, 30:80] = 225
    raster = support.write_raster(tmp_path / "feet.tif", np.clip(image, 1, 255).astype(np.uint8), transform,
                                  crs="EPSG:2264")
    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(transform, *rect)], crs="EPSG:2264")
    outputs = OutputPaths(polygons=str(tmp_path / "m.gpkg"))
    segment_boxes(raster, read_box_file(boxes), outputs, grabcut())
    (row,) = support.read_features(outputs.polygons)
    us_survey_foot = 1200 / 3937  # metres
    assert row["area_px"] > 0.8 * 50 * 50
    assert row["area_m2"] == pytest.approx(row["area_px"] * (2.0 * us_survey_foot) ** 2, rel=1e-6)


# -- 3. class ids and instance ids ------------------------------------------------------------------------------------
def run_classes(tmp_path, properties, **kwargs):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, properties)
    outputs = all_outputs(tmp_path)
    summary = segment_boxes(raster, read_box_file(boxes), outputs, grabcut(**kwargs))
    rows = support.read_features(outputs.polygons)
    return summary, rows, read_band(outputs.instances), read_band(outputs.semantic), outputs


def test_integer_class_field_values_are_the_class_ids(tmp_path):
    values = [3, 7, 3, 12]
    summary, rows, instances, semantic, _ = run_classes(tmp_path, [{"cls": v} for v in values], class_field="cls")
    assert summary.classes == {3: "3", 7: "7", 12: "12"}
    assert sorted(r["cls"] for r in rows) == sorted(values)
    for row in rows:
        assert row["class_id"] == row["cls"] and row["class_name"] == str(row["cls"])
        owned = instances == row["instance_id"]
        assert owned.sum() > 0 and (semantic[owned] == row["cls"]).all()


def test_text_class_field_gets_ids_by_sorted_name(tmp_path):
    names = ["tank", "building", "pond", "tank"]
    summary, rows, instances, semantic, _ = run_classes(tmp_path, [{"kind": n} for n in names], class_field="kind")
    ordered = sorted(set(names))
    assert summary.classes == {ordered.index(n): n for n in set(names)}
    for row in rows:
        assert row["class_name"] == row["kind"]
        assert row["class_id"] == ordered.index(row["kind"])
        owned = instances == row["instance_id"]
        assert (semantic[owned] == row["class_id"]).all()

    # The same names in another feature order give the same ids.
    other = tmp_path / "again"
    other.mkdir()
    _, rows2, *_ = run_classes(other, [{"kind": n} for n in reversed(names)], class_field="kind")
    assert {r["kind"]: r["class_id"] for r in rows2} == {r["kind"]: r["class_id"] for r in rows}


def test_explicit_class_list_gives_ids_by_position(tmp_path):
    names = ["tank", "building", "pond", "tank"]
    class_list = ["pond", "car", "tank", "building"]  # 'car' is not used; ids stay positional
    summary, rows, instances, semantic, outputs = run_classes(
        tmp_path, [{"kind": n} for n in names], class_field="kind", class_names=class_list)
    assert summary.classes == dict(enumerate(class_list))
    for row in rows:
        assert row["class_id"] == class_list.index(row["kind"])
        assert (semantic[instances == row["instance_id"]] == row["class_id"]).all()
    with rasterio.open(outputs.semantic) as ds:
        assert json.loads(ds.tags()["SAMRS_CLASSES"]) == {str(i): n for i, n in enumerate(class_list)}


def test_id_field_gives_instance_ids(tmp_path):
    ids = [101, 7, 4000000000, 42]
    _, rows, instances, _, _ = run_classes(tmp_path, [{"uid": i, "name": f"n{i}"} for i in ids], id_field="uid")
    assert sorted(r["instance_id"] for r in rows) == sorted(ids)
    for row in rows:
        assert row["instance_id"] == row["uid"]
        c0, r0, c1, r1 = RECTS[ids.index(row["uid"])]
        assert support.iou(instances == row["uid"], rect_mask(instances.shape, (c0, r0, c1, r1))) > 0.8
    assert set(np.unique(instances)) == {0, *ids}


def test_duplicate_ids_are_refused(tmp_path):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, [{"uid": i} for i in (5, 9, 5, 11)])
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        segment_boxes(raster, read_box_file(boxes), all_outputs(out), grabcut(id_field="uid"))
    assert "uid" in str(err.value) and "5" in str(err.value)
    assert not out.exists() or not os.listdir(out)


# -- 4. polygon output formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".shp", ".geojson"])
def test_polygon_layer_format_by_extension(tmp_path, ext):
    raster, _ = scene(tmp_path)
    names = ["a", "b", "c", "d"]
    boxes = box_layer(tmp_path, [{"name": n} for n in names])
    out = tmp_path / "out"
    polygons = str(out / f"masks{ext}")
    segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=polygons), grabcut())

    expected_driver = {".shp": "ESRI Shapefile", ".geojson": "GeoJSON"}[ext]
    with fiona.open(polygons) as layer:
        assert layer.driver == expected_driver
        assert CRS.from_wkt(layer.crs_wkt).equals(CRS.from_epsg(32617))
    rows = support.read_features(polygons)
    assert Counter(r["name"] for r in rows) == Counter(names)
    for row in rows:
        assert row["status"] == "ok" and row["geometry"] is not None
        rect = RECTS[names.index(row["name"])]
        assert support.pixel_box(UTM_T, *rect).contains(row["geometry"].centroid)
    files = sorted(os.listdir(out))
    assert not [f for f in files if "partial" in f]
    if ext == ".shp":
        assert {"masks.shp", "masks.shx", "masks.dbf", "masks.prj", "masks.qml"} <= set(files)
    else:
        assert files == ["masks.geojson", "masks.qml"]  # the layer and its QGIS style


def test_shapefile_keeps_documented_fields_apart_from_source_fields(tmp_path):
    raster, _ = scene(tmp_path)
    labels = ["tank", "car", "tank", "roof"]
    boxes = box_layer(tmp_path, [{"class_name_raw": n} for n in labels])
    polygons = str(tmp_path / "masks.shp")
    segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=polygons), grabcut())
    with fiona.open(polygons) as layer:
        fields = set(layer.schema["properties"])
    # DBF names hold 10 characters: instance_id is written as inst_id, the rest keep their names.
    assert {f if f != "instance_id" else "inst_id" for f in DOCUMENTED_FIELDS} <= fields
    rows = support.read_features(polygons)
    assert [r["class_name"] for r in rows] == ["object"] * len(labels)  # no class field: all 'object'
    assert [r["inst_id"] for r in rows] == [1, 2, 3, 4]
    source_field = (fields - set(DOCUMENTED_FIELDS) - {"inst_id"}).pop()  # class_name_raw, cut and renamed
    assert [r[source_field] for r in rows] == labels


def test_unknown_polygon_extension_is_refused_before_any_work(tmp_path):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, [{"name": "x"} for _ in RECTS])
    out = tmp_path / "out"
    out.mkdir()

    class Recorder(Progress):
        def __init__(self):
            self.calls = []

        def set_fraction(self, fraction):
            self.calls.append(("fraction", fraction))

        def info(self, message):
            self.calls.append(("info", message))

    progress = Recorder()
    bad = str(out / "masks.xyz")
    with pytest.raises(InputError) as err:
        segment_boxes(raster, read_box_file(boxes), OutputPaths(instances=str(out / "i.tif"), polygons=bad),
                      grabcut(), progress)
    assert bad in str(err.value)
    assert progress.calls == []
    assert os.listdir(out) == []


def test_shapefile_output_spares_files_sharing_its_stem(tmp_path):
    raster, _ = scene(tmp_path, name="scene.tif")
    boxes = box_layer(tmp_path, [{"name": n} for n in "abcd"])
    # Natural choices: all outputs named 'result', and the polygons named after the input raster.
    outputs = OutputPaths(instances=str(tmp_path / "result.tif"), polygons=str(tmp_path / "result.shp"))
    segment_boxes(raster, read_box_file(boxes), outputs, grabcut())
    segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "scene.shp")), grabcut())
    files = set(os.listdir(tmp_path))
    assert {"result.tif", "result.shp", "scene.shp"} <= files
    assert "scene.tif" in files  # the input raster itself


# -- 5. atomic outputs ----------------------------------------------------------------------------------------------
class CancelAfterFirstProgress(Progress):
    def __init__(self):
        self.fractions = []

    def set_fraction(self, fraction):
        self.fractions.append(fraction)

    def is_cancelled(self):
        return bool(self.fractions)


def test_cancelled_run_leaves_no_files_and_keeps_earlier_outputs(tmp_path, monkeypatch):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, [{"name": n} for n in "abcd"])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the engine's scratch files go

    out = tmp_path / "out"
    outputs = all_outputs(out, polygons_ext=".shp")
    progress = CancelAfterFirstProgress()
    with pytest.raises(Cancelled):
        segment_boxes(raster, read_box_file(boxes), outputs, grabcut(batch_size=1), progress)
    assert len(progress.fractions) == 1 and 0 < progress.fractions[0] < 1  # stopped mid-way
    assert not out.exists() or os.listdir(out) == []
    assert os.listdir(scratch) == []

    # A good run, then a cancelled one over the same paths: the good files stay as they were.
    segment_boxes(raster, read_box_file(boxes), outputs, grabcut())
    before = snapshot(out)
    assert {"out_instances.tif", "out_semantic.tif", "out_masks.shp", "out_masks.dbf"} <= set(before)
    for f in before:  # make the earlier outputs recognisable: the cancelled run must not even rewrite them
        os.utime(out / f, (1_000_000_000, 1_000_000_000))
    progress = CancelAfterFirstProgress()
    with pytest.raises(Cancelled):
        segment_boxes(raster, read_box_file(boxes), outputs, grabcut(batch_size=1), progress)
    assert snapshot(out) == before
    assert all(os.stat(out / f).st_mtime == 1_000_000_000 for f in before)
    assert not [f for f in os.listdir(out) if "partial" in f]
    assert os.listdir(scratch) == []


# -- 6. unwritable output folder -------------------------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("role", ["instances", "semantic", "polygons"])
def test_output_under_a_regular_file_is_refused(tmp_path, role, nested):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, [{"name": n} for n in "abcd"])
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file")
    good = all_outputs(tmp_path / "good")
    folder = blocker / "sub" if nested else blocker
    bad_path = str(folder / ("out.gpkg" if role == "polygons" else "out.tif"))
    outputs = OutputPaths(**{**vars(good), role: bad_path})
    with pytest.raises(InputError) as err:
        segment_boxes(raster, read_box_file(boxes), outputs, grabcut())
    assert bad_path in str(err.value)
    assert blocker.read_text() == "a regular file"
    good_dir = tmp_path / "good"
    assert not good_dir.exists() or os.listdir(good_dir) == []  # nothing written for the other outputs


def test_every_output_records_the_settings_it_was_made_with(tmp_path):
    raster, _ = scene(tmp_path)
    boxes = box_layer(tmp_path, [{"kind": "tank"}] * len(RECTS))
    out = all_outputs(tmp_path / "out")
    segment_boxes(raster, read_box_file(boxes), out,
                  grabcut(fill_holes=True, min_island_px=5, keep_largest=True, clip_to_box=True))
    with fiona.open(out.polygons, layer="masks") as layer:
        layer_tags = layer.tags()
    for tags in (layer_tags, rasterio.open(out.instances).tags(), rasterio.open(out.semantic).tags()):
        settings = json.loads(tags["SAMRS_SETTINGS"])
        assert settings["prompt"] == "box" and settings["backend"] == "grabcut"
        assert (settings["fill_holes"], settings["min_island_px"], settings["keep_largest"],
                settings["clip_to_box"]) == (True, 5, True, True)
        assert tags["SAMRS_SOURCE_RASTER"] == raster and tags["SAMRS_BACKEND"].startswith("grabcut")


@pytest.mark.parametrize("ext", [".gpkg", ".shp"])
def test_polygon_features_come_in_input_order_whatever_the_processing_order(tmp_path, ext):
    """Windows are processed by place and boxes that need no mask first; the layer still lists the boxes in
    the order of the input layer."""
    rects = [(530, 60, 580, 110), (250, 40, 300, 90), (20, 30, 70, 80), (300, 120, 350, 170)]
    raster, _ = scene(tmp_path, size=600, rects=rects)
    bounds = [support.pixel_box(UTM_T, *r) for r in rects]
    outside = support.pixel_box(UTM_T, 700, 700, 720, 720)
    geometries = [bounds[0], outside, bounds[1], bounds[2], outside, bounds[3]]
    boxes = support.write_boxes(tmp_path / "boxes.gpkg", geometries, properties=[{"n": i} for i in range(6)])
    out = OutputPaths(polygons=str(tmp_path / "out" / f"masks{ext}"))
    summary = segment_boxes(raster, read_box_file(boxes), out, grabcut(window_size=200))
    assert summary.windows >= 3
    rows = support.read_features(out.polygons)
    assert [r["n"] for r in rows] == list(range(6))
    ids = [r.get("instance_id", r.get("inst_id")) for r in rows]
    assert ids == list(range(1, 7))
    assert [r["status"] for r in rows] == ["ok", "outside", "ok", "ok", "outside", "ok"]

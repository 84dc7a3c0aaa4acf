"""The dataset statistics report: numbers from real polygon layers and class rasters written here, checked
against counts made independently in the tests (Counter over the features written, numpy over the arrays
written), then the CSV files read back and the HTML inspected."""
from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box, mapping

import support
from samrs.samrs_qgis.errors import Cancelled, InputError
from samrs.samrs_qgis.progress import Progress
from samrs.samrs_qgis.report import (CSV_FILES, SCORE_BINS, STATUSES, ResultSet, Statistics, collect_statistics,
                                     result_set_from_folder, statistics_from_folder, write_report)
from samrs.samrs_qgis.vector_output import RESULT_FIELDS

UTM_T = Affine(0.5, 0.0, 631000.0, 0.0, -0.5, 4190000.0)
TRICKY = "<b>tank</b> & co"  # a class name that must be escaped in HTML


# -- builders -----------------------------------------------------------------------------------------
def random_features(seed, classes, n=60, score_none_share=0.15):
    """Result-layer attribute rows: random class, status, area (1 px … ~200k px, log-uniform) and score."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        class_id = int(rng.integers(len(classes)))
        status = str(rng.choice(STATUSES, p=[0.7, 0.1, 0.1, 0.05, 0.05]))
        ok = status == "ok"
        area = int(round(2 ** rng.uniform(0, 17.6))) if ok else 0
        score = None if rng.random() < score_none_share else float(rng.random())
        rows.append({"instance_id": i + 1, "class_name": classes[class_id], "class_id": class_id,
                     "score": score if ok else None, "area_px": area, "area_m2": area * 0.25,
                     "status": status, "detail": "" if ok else f"{status} box"})
    return rows


def write_layer(path, rows, layer="masks", driver=None):
    """A polygon layer with the result fields (null geometry except for ok boxes: a small square)."""
    kwargs = {"layer": layer} if layer else {}
    if driver:
        kwargs["driver"] = driver
    with fiona.open(path, "w", schema={"geometry": "MultiPolygon", "properties": dict(RESULT_FIELDS)},
                    crs="EPSG:32617", **kwargs) as out:
        for i, row in enumerate(rows):
            geom = None
            if row["status"] == "ok":
                geom = {"type": "MultiPolygon", "coordinates": [mapping(box(i, 0, i + 1, 1))["coordinates"]]}
            out.write({"geometry": geom, "properties": row})
    return str(path)


def write_png(path, array):
    with rasterio.open(path, "w", driver="PNG", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype) as ds:
        ds.write(array, 1)
    return str(path)


def write_semantic_tif(path, array, class_names, background=255):
    """A semantic GeoTIFF as the pipeline writes it: tiled, nodata = background, SAMRS tags."""
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs="EPSG:32617", transform=UTM_T, nodata=background, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as ds:
        ds.write(array, 1)
        ds.update_tags(SAMRS_CLASSES=json.dumps({str(k): v for k, v in class_names.items()}),
                       SAMRS_BACKGROUND=str(background))
    return str(path)


def class_array(seed, shape, class_ids, background=255, bg_share=0.6):
    rng = np.random.default_rng(seed)
    values = rng.choice(class_ids, size=shape).astype(np.uint8)
    values[rng.random(shape) < bg_share] = background
    return values


# -- independent expectations -------------------------------------------------------------------------
def instances(rows):
    return [r for r in rows if r["status"] == "ok" and r["area_px"] > 0]


def expected_instances(rows):
    return Counter(r["class_name"] for r in instances(rows))


def expected_area_sum(rows):
    out = Counter()
    for r in instances(rows):
        out[r["class_name"]] += r["area_px"]
    return out


def expected_sizes(rows, class_name=None):
    areas = np.array([r["area_px"] for r in instances(rows) if class_name in (None, r["class_name"])], dtype=float)
    return Counter(int(k) for k in np.floor(np.log2(areas)))


def expected_scores(rows):
    scores = [r["score"] for r in instances(rows) if r["score"] is not None]
    hist, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    return [int(h) for h in hist], sum(1 for r in instances(rows) if r["score"] is None)


def expected_pixels(arrays_and_names, background=255):
    """Pixels per class name from (array, id -> name) pairs, with numpy's unique."""
    out, bg = Counter(), 0
    for array, names in arrays_and_names:
        values, counts = np.unique(array, return_counts=True)
        for v, c in zip(values, counts):
            if v == background:
                bg += int(c)
            else:
                out[names[int(v)]] += int(c)
    return out, bg


def by_name(stats: Statistics, values):
    return {stats.class_names[i]: v for i, v in values.items() if v}


# -- collect_statistics -------------------------------------------------------------------------------
def test_counts_from_layers_and_class_rasters(tmp_path):
    classes = ["plane", "ship", "storage-tank", "harbor"]
    names = dict(enumerate(classes))
    rows_a = random_features(1, classes, n=80)
    rows_b = random_features(2, classes, n=50)
    rows_b[0].update(status="ok", area_px=1, score=0.0)          # smallest bin, lowest score edge
    rows_b[1].update(status="ok", area_px=2 ** 14, score=1.0)    # exact power of two; 1.0 in the last bin
    rows_b[2].update(status="ok", area_px=2 ** 14 - 1, score=0.5)
    png = class_array(3, (1800, 2500), [0, 1, 2])  # 4.5 M px: read in several strips
    tif = class_array(4, (700, 530), [1, 3])       # tiled 256 px, partial edge blocks
    pairs = [(write_layer(tmp_path / "a.gpkg", rows_a), write_png(tmp_path / "a.png", png)),
             (write_layer(tmp_path / "b.gpkg", rows_b), write_semantic_tif(tmp_path / "b.tif", tif, names))]

    fractions = []

    class Record(Progress):
        def set_fraction(self, fraction):
            fractions.append(fraction)

    stats = collect_statistics(pairs, class_names=names, progress=Record())

    rows = rows_a + rows_b
    assert stats.class_names == names
    assert by_name(stats, stats.instances_per_class) == dict(expected_instances(rows))
    assert stats.instances == len(instances(rows))
    assert by_name(stats, stats.area_px_per_class) == dict(expected_area_sum(rows))
    pixels, background = expected_pixels([(png, names), (tif, names)])
    assert stats.pixel_source == "class rasters"
    assert by_name(stats, stats.pixels_per_class) == dict(pixels)
    assert stats.background_pixels == background
    assert stats.background_pixels + stats.class_pixels == png.size + tif.size
    assert stats.status_counts == {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    assert stats.boxes == 130
    assert stats.size_histogram == dict(expected_sizes(rows))
    assert stats.size_histogram[0] >= 1 and stats.size_histogram[14] >= 1 and stats.size_histogram[13] >= 1
    for class_id, hist in stats.size_histogram_per_class.items():
        assert hist == dict(expected_sizes(rows, names[class_id]))
    hist, no_score = expected_scores(rows)
    assert stats.score_histogram == hist and stats.score_histogram[0] >= 1 and stats.score_histogram[-1] >= 1
    assert stats.no_score == no_score > 0
    assert stats.scores_out_of_range == 0
    assert (stats.images, stats.layers, stats.rasters) == (2, 2, 2)
    assert fractions == [0.5, 1.0]
    assert stats.notes == []


def test_pixels_from_area_px_without_rasters_and_mixed(tmp_path):
    classes = ["car", "truck"]
    rows_a = random_features(5, classes, n=40)
    rows_b = random_features(6, classes, n=30)
    layer_a = write_layer(tmp_path / "a.gpkg", rows_a)
    layer_b = write_layer(tmp_path / "b.shp", rows_b, layer=None)  # a Shapefile, and a bare path
    stats = collect_statistics([layer_a, layer_b])
    rows = rows_a + rows_b
    assert stats.pixel_source == "area_px"
    assert by_name(stats, stats.pixels_per_class) == dict(expected_area_sum(rows))
    assert stats.pixels_per_class == stats.area_px_per_class
    assert stats.background_pixels == 0 and stats.rasters == 0
    assert stats.class_names == {0: "car", 1: "truck"}  # from the layers' class_id/class_name
    assert by_name(stats, stats.instances_per_class) == dict(expected_instances(rows))

    png = class_array(7, (64, 80), [0, 1])
    mixed = collect_statistics([(layer_a, write_png(tmp_path / "a.png", png)), (layer_b, None)])
    pixels, _ = expected_pixels([(png, dict(enumerate(classes)))])
    expected = pixels + expected_area_sum(rows_b)
    assert mixed.pixel_source == "mixed"
    assert by_name(mixed, mixed.pixels_per_class) == dict(expected)
    assert any("1 of 2 layers had a class raster" in n for n in mixed.notes)


def test_given_class_names_replace_the_layers_names(tmp_path):
    # An integer class field: the layer names classes by their number; the dataset's list names them.
    rows = random_features(18, ["0", "1", "2"], n=40)
    stats = collect_statistics([write_layer(tmp_path / "m.gpkg", rows)], class_names={0: "car", 1: "truck", 2: "bus"})
    assert stats.class_names == {0: "car", 1: "truck", 2: "bus"}
    counted = expected_instances(rows)
    assert stats.instances_per_class == {0: counted["0"], 1: counted["1"], 2: counted["2"]}


def test_scores_out_of_range_and_unusual_rows(tmp_path):
    base = {"instance_id": 1, "class_name": "a", "class_id": 0, "area_m2": 1.0, "detail": ""}
    rows = [dict(base, status="ok", area_px=10, score=1.07),      # SAM's IoU estimate can exceed 1
            dict(base, status="ok", area_px=12, score=-0.02),
            dict(base, status="ok", area_px=300, score=0.31),
            dict(base, status="ok", area_px=0, score=0.9),        # ok without pixels: not an instance
            dict(base, status="skipped", area_px=0, score=None)]
    stats = collect_statistics([write_layer(tmp_path / "m.gpkg", rows)])
    expected = [0] * SCORE_BINS
    expected[0], expected[6], expected[19] = 1, 1, 1
    assert stats.score_histogram == expected and stats.scores_out_of_range == 2
    assert stats.instances_per_class == {0: 3} and stats.size_histogram == {3: 2, 8: 1}
    assert stats.status_counts == {"ok": 4, "empty": 0, "outside": 0, "invalid": 0, "failed": 0, "skipped": 1}
    assert len(stats.notes) == 3 and any("skipped" in n for n in stats.notes)


def test_classes_matched_by_name_when_runs_number_them_differently(tmp_path):
    # Two separate runs over a text class field: each numbered its own classes by sorted name.
    rows_a = random_features(8, ["plane", "ship"], n=40)
    rows_b = random_features(9, ["ship", "tank"], n=40)
    png_a = class_array(10, (50, 60), [0, 1])  # 0 = plane, 1 = ship
    png_b = class_array(11, (40, 70), [0, 1])  # 0 = ship, 1 = tank
    stats = collect_statistics([(write_layer(tmp_path / "a.gpkg", rows_a), write_png(tmp_path / "a.png", png_a)),
                                (write_layer(tmp_path / "b.gpkg", rows_b), write_png(tmp_path / "b.png", png_b))])
    assert stats.class_names == {0: "plane", 1: "ship", 2: "tank"}
    assert by_name(stats, stats.instances_per_class) == dict(expected_instances(rows_a + rows_b))
    pixels, background = expected_pixels([(png_a, {0: "plane", 1: "ship"}), (png_b, {0: "ship", 1: "tank"})])
    assert by_name(stats, stats.pixels_per_class) == dict(pixels)
    assert stats.background_pixels == background
    assert any("renumbered" in n for n in stats.notes)


def test_statistics_of_a_real_segmentation_run(tmp_path):
    """The pipeline's own outputs (GrabCut): pixels equal the semantic raster's, instances the layer's."""
    from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs.samrs_qgis.settings import SegmentOptions
    from samrs.samrs_qgis.boxes import read_box_file

    rng = np.random.default_rng(0)
    image = 70 + rng.normal(0, 8, (3, 256, 256))
    rects = [(20, 20, 70, 60), (120, 25, 180, 75), (30, 140, 80, 200), (150, 150, 215, 210)]
    for c0, r0, c1, r1 in rects:
        image[:, r0:r1, c0:c1] = np.array([225, 220, 215])[:, None, None]
    raster = support.write_raster(tmp_path / "scene.tif", np.clip(image, 1, 255).astype(np.uint8), UTM_T)
    polys = [support.pixel_box(UTM_T, c0 - 4, r0 - 4, c1 + 4, r1 + 4) for c0, r0, c1, r1 in rects]
    polys.append(support.pixel_box(UTM_T, 1000, 1000, 1010, 1010))  # outside the raster
    boxes = support.write_boxes(tmp_path / "boxes.gpkg", polys,
                                properties=[{"label": c} for c in ["roof", "roof", "pool", "roof", "pool"]])
    outputs = OutputPaths(semantic=str(tmp_path / "semantic.tif"), polygons=str(tmp_path / "masks.gpkg"))
    segment_boxes(raster, read_box_file(boxes), outputs, SegmentOptions(backend="grabcut", class_field="label"))

    stats = collect_statistics([(outputs.polygons, outputs.semantic)])
    features = support.read_features(outputs.polygons, layer="masks")
    with rasterio.open(outputs.semantic) as ds:
        semantic = ds.read(1)
        tagged = {int(k): v for k, v in json.loads(ds.tags()["SAMRS_CLASSES"]).items()}
    pixels, background = expected_pixels([(semantic, tagged)])
    assert stats.class_names == tagged == {0: "pool", 1: "roof"}
    assert by_name(stats, stats.pixels_per_class) == dict(pixels) and sum(pixels.values()) > 0
    assert stats.background_pixels == background == semantic.size - sum(pixels.values())
    ok = [f for f in features if f["status"] == "ok" and f["area_px"] > 0]
    assert by_name(stats, stats.instances_per_class) == dict(Counter(f["class_name"] for f in ok))
    assert stats.status_counts["outside"] == 1 and stats.boxes == 5
    assert stats.no_score == len(ok) == 4 and sum(stats.score_histogram) == 0  # GrabCut has no score
    assert by_name(stats, stats.area_px_per_class) == {
        name: sum(f["area_px"] for f in ok if f["class_name"] == name) for name in ("pool", "roof")}


# -- dataset folders ----------------------------------------------------------------------------------
DATASET_CLASSES = ["plane", "ship", TRICKY, "bridge"]


def make_dataset(folder, seed, stems, statuses=None, manifest=True, background=255):
    """A segmentdataset output folder; returns (rows by stem, class arrays by stem)."""
    (folder / "geo").mkdir(parents=True)
    (folder / "class_index").mkdir()
    statuses = statuses or {}
    rows, arrays = {}, {}
    for n, stem in enumerate(stems):
        status = statuses.get(stem, "done")
        if status != "done":
            continue
        rows[stem] = random_features(seed + n, DATASET_CLASSES[:3], n=30 + 10 * n)  # 'bridge' never occurs
        arrays[stem] = class_array(seed + 100 + n, (90 + n, 120), [0, 1, 2], background=background)
        write_layer(folder / "geo" / f"{stem}.gpkg", rows[stem])
        write_png(folder / "class_index" / f"{stem}.png", arrays[stem])
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({
            "classes": DATASET_CLASSES, "background": background,
            "images": {stem: {"status": statuses.get(stem, "done"), "source": f"{stem}.tif"} for stem in stems}}))
    return rows, arrays


def test_result_set_from_a_dataset_folder(tmp_path):
    folder = tmp_path / "train"
    rows, arrays = make_dataset(folder, 20, ["img_a", "img_b", "img_c", "img_d"],
                                statuses={"img_c": "failed", "img_d": "no_boxes"})
    result = result_set_from_folder(folder)
    pairs, class_names = result  # unpacks as the pair the report needs
    assert pairs == [(str(folder / "geo" / f"{s}.gpkg"), str(folder / "class_index" / f"{s}.png"))
                     for s in ("img_a", "img_b")]
    assert class_names == dict(enumerate(DATASET_CLASSES))
    assert result.image_status == {"done": 2, "failed": 1, "no_boxes": 1} and result.background == 255

    stats = statistics_from_folder(folder)
    all_rows = rows["img_a"] + rows["img_b"]
    names = dict(enumerate(DATASET_CLASSES))
    assert stats.class_names == names
    assert stats.instances_per_class[3] == 0 and stats.pixels_per_class[3] == 0  # listed class, never seen
    assert by_name(stats, stats.instances_per_class) == dict(expected_instances(all_rows))
    pixels, background = expected_pixels([(arrays[s], names) for s in arrays])
    assert by_name(stats, stats.pixels_per_class) == dict(pixels)
    assert stats.background_pixels == background
    assert (stats.images, stats.layers, stats.rasters) == (4, 2, 2)
    assert stats.image_status == {"done": 2, "failed": 1, "no_boxes": 1}
    assert stats.source == str(folder)


def test_folder_without_manifest_takes_classes_from_layers(tmp_path):
    folder = tmp_path / "val"
    rows, arrays = make_dataset(folder, 40, ["x", "y"], manifest=False)
    result = result_set_from_folder(folder)
    assert result.class_names is None and len(result.pairs) == 2 and result.image_status == {}
    stats = collect_statistics(result)
    names = dict(enumerate(DATASET_CLASSES[:3]))
    assert stats.class_names == names  # 'bridge' is unknown without the manifest
    assert by_name(stats, stats.instances_per_class) == dict(expected_instances(rows["x"] + rows["y"]))
    pixels, _ = expected_pixels([(arrays[s], names) for s in arrays])
    assert by_name(stats, stats.pixels_per_class) == dict(pixels)
    assert stats.images == stats.layers == 2


def test_manifest_background_value_is_used(tmp_path):
    folder = tmp_path / "bg0"
    rows, arrays = make_dataset(folder, 60, ["only"], background=0)
    stats = statistics_from_folder(folder)
    values, counts = np.unique(arrays["only"], return_counts=True)
    assert stats.background_pixels == int(counts[values == 0][0])
    assert 0 not in {i for i, v in stats.pixels_per_class.items() if v}  # id 0 is background here
    assert stats.background_pixels + stats.class_pixels == arrays["only"].size


# -- the report ---------------------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_report_two_subsets_html_and_csv(tmp_path):
    train_rows, train_arrays = make_dataset(tmp_path / "train", 70, ["t1", "t2", "t3"])
    val_rows, val_arrays = make_dataset(tmp_path / "val", 90, ["v1"])
    subsets = {"train": statistics_from_folder(tmp_path / "train"), "val": statistics_from_folder(tmp_path / "val")}
    out = tmp_path / "report"
    (out).mkdir()
    (out / "report.html").write_text("old report")
    files = write_report(subsets, out / "report.html", csv_folder=out / "csv")

    assert files.html == str(out / "report.html")
    assert sorted(files.csv) == sorted(CSV_FILES)
    assert sorted(os.listdir(out)) == ["csv", "report.html"]  # no temporary files left
    assert sorted(os.listdir(out / "csv")) == sorted(CSV_FILES)
    names = dict(enumerate(DATASET_CLASSES))
    truth = {"train": sum(train_rows.values(), []), "val": sum(val_rows.values(), [])}
    arrays = {"train": train_arrays, "val": val_arrays}

    # instances per class: every listed class, per subset, equal to the features' counts
    table = read_csv(files.csv["instances_per_class.csv"])
    for subset, rows in truth.items():
        got = {r["class_name"]: int(r["instances"]) for r in table if r["subset"] == subset}
        expected = expected_instances(rows)
        assert got == {name: expected.get(name, 0) for name in DATASET_CLASSES}
        assert math.isclose(sum(float(r["percent"]) for r in table if r["subset"] == subset), 100, abs_tol=0.05)
    assert {(int(r["class_id"]), r["class_name"]) for r in table} == set(names.items())

    table = read_csv(files.csv["pixels_per_class.csv"])
    for subset in truth:
        pixels, _ = expected_pixels([(a, names) for a in arrays[subset].values()])
        got = {r["class_name"]: int(r["pixels"]) for r in table if r["subset"] == subset and int(r["pixels"])}
        assert got == dict(pixels)
        assert {r["pixel_source"] for r in table if r["subset"] == subset} == {"class rasters"}
        area = {r["class_name"]: int(r["area_px_sum"]) for r in table if r["subset"] == subset and int(r["area_px_sum"])}
        assert area == dict(expected_area_sum(truth[subset]))

    table = read_csv(files.csv["mask_sizes.csv"])
    for subset, rows in truth.items():
        overall = {int(r["bin"]): int(r["instances"]) for r in table
                   if r["subset"] == subset and r["class_name"] == "all" and int(r["instances"])}
        assert overall == dict(expected_sizes(rows))
        for r in table:
            assert int(r["area_px_min"]) == 2 ** int(r["bin"]) and int(r["area_px_below"]) == 2 ** (int(r["bin"]) + 1)
        tank = {int(r["bin"]): int(r["instances"]) for r in table
                if r["subset"] == subset and r["class_name"] == TRICKY and int(r["instances"])}
        assert tank == dict(expected_sizes(rows, TRICKY)) and tank

    table = read_csv(files.csv["scores.csv"])
    for subset, rows in truth.items():
        hist, no_score = expected_scores(rows)
        got = [int(r["instances"]) for r in table if r["subset"] == subset and r["bin"] != "no_score"]
        assert got == hist
        assert [int(r["instances"]) for r in table if r["subset"] == subset and r["bin"] == "no_score"] == [no_score]
        assert [float(r["score_min"]) for r in table if r["subset"] == subset and r["bin"] == "3"] == [0.15]

    table = read_csv(files.csv["status.csv"])
    for subset, rows in truth.items():
        got = {r["status"]: int(r["boxes"]) for r in table if r["subset"] == subset}
        assert got == {s: sum(r["status"] == s for r in rows) for s in STATUSES}

    summary = {r["subset"]: r for r in read_csv(files.csv["summary.csv"])}
    assert int(summary["train"]["images"]) == 3 and int(summary["val"]["images"]) == 1
    assert int(summary["train"]["instances"]) == len(instances(truth["train"]))
    assert int(summary["val"]["background_pixels"]) == int((val_arrays["v1"] == 255).sum())

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "old report" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 6  # instances, pixels, sizes, sizes per class ×2, scores
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    for name in ("plane", "ship", "bridge", "train", "val"):
        assert name in page
    assert "&lt;b&gt;tank&lt;/b&gt; &amp; co" in page and "<b>tank" not in page
    assert f"{len(instances(truth['train'])):,}" in page  # the summary's number


def test_report_with_one_subset_without_csv(tmp_path):
    rows = random_features(12, ["a$b$"], n=20)  # '$' must not start matplotlib mathematics
    stats = collect_statistics([write_layer(tmp_path / "m.gpkg", rows)])
    files = write_report({"all": stats}, tmp_path / "nested" / "r.html", title="Little <report>")
    assert files.csv == {}
    page = Path(files.html).read_text(encoding="utf-8")
    assert "<title>Little &lt;report&gt;</title>" in page and "a$b$" in page
    assert "area_px" in page  # the pixel source is named
    assert page.count("data:image/png;base64,") >= 4


# -- errors -------------------------------------------------------------------------------------------
def test_inputs_that_cannot_be_used(tmp_path):
    missing = tmp_path / "nope.gpkg"
    with pytest.raises(InputError, match="nope.gpkg' does not exist"):
        collect_statistics([str(missing)])

    foreign = support.write_boxes(tmp_path / "boxes.gpkg", [box(0, 0, 1, 1)], properties=[{"label": "x"}])
    with pytest.raises(InputError, match=r"boxes.gpkg.*no field class_name/class_id, area_px, status.*'segment'"):
        collect_statistics([foreign])

    layer = write_layer(tmp_path / "good.gpkg", random_features(13, ["a"], n=5))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="broken.png' cannot be read.*leave it out"):
        collect_statistics([(layer, str(broken))])

    floats = support.write_raster(tmp_path / "float.tif", np.zeros((4, 4), np.float32), UTM_T)
    with pytest.raises(InputError, match="float.tif' has 1 band.*float32.*integer band"):
        collect_statistics([(layer, floats)])

    two = tmp_path / "two.gpkg"
    write_layer(two, random_features(14, ["a"], n=3), layer="first")
    write_layer(two, random_features(15, ["a"], n=3), layer="second")
    with pytest.raises(InputError, match="several layers.*'masks'"):
        collect_statistics([str(two)])

    rows, _ = make_dataset(tmp_path / "ds", 16, ["a", "b"])
    os.remove(tmp_path / "ds" / "geo" / "b.gpkg")
    with pytest.raises(InputError, match="image 'b' as done.*b.gpkg' is missing"):
        result_set_from_folder(tmp_path / "ds")

    with pytest.raises(InputError, match="no manifest.json and no polygon layers"):
        result_set_from_folder(tmp_path / "ds" / "class_index")
    with pytest.raises(InputError, match="has no polygon layers"):
        collect_statistics(ResultSet([]))

    stats = collect_statistics([layer])
    (tmp_path / "csv_is_a_file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_report({"s": stats}, tmp_path / "never.html", csv_folder=tmp_path / "csv_is_a_file")
    assert not (tmp_path / "never.html").exists()


@pytest.mark.parametrize("calls_before_stop", [0, 1, 2])  # before the layer, in the layer, in the raster
def test_cancelling_stops_collection(tmp_path, calls_before_stop):
    class Stop(Progress):
        calls = 0

        def is_cancelled(self):
            self.calls += 1
            return self.calls > calls_before_stop

    layer = write_layer(tmp_path / "m.gpkg", random_features(17, ["a"], n=5))
    raster = write_png(tmp_path / "m.png", class_array(17, (20, 20), [0]))
    progress = Stop()
    with pytest.raises(Cancelled):
        collect_statistics([(layer, raster)], progress=progress)
    assert progress.calls == calls_before_stop + 1

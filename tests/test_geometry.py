"""Where boxes land on the raster and where masks land on the map.

Real GeoTIFFs and vector files are written in ``tmp_path`` and the real engine runs over them with the
weights-free GrabCut backend. Expected positions are derived independently of the engine: from the
pixel rectangles the test images were drawn in, mapped with the raster's geotransform (and pyproj).
"""
from __future__ import annotations

import re
from collections import Counter

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from shapely import affinity
from shapely.geometry import Point, Polygon
from shapely.prepared import prep

import support
from samrs.samrs_qgis.boxes import PixelProjector, project_box, read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.masks import polygon_mask
from samrs.samrs_qgis.pipeline import OutputPaths, SegmentJob
from samrs.samrs_qgis.settings import SegmentOptions
from samrs.samrs_qgis.raster_input import PixelWindow, RasterInput

UTM_T = Affine(0.5, 0.0, 631000.0, 0.0, -0.5, 4190000.0)  # 0.5 m pixels, north-up, EPSG:32617
BRIGHT = (225, 225, 220)


# -- helpers ------------------------------------------------------------------------------------------
def textured_ground(size, seed=0, bands=3, level=70.0, noise=8.0):
    """(bands, size, size) float ground with mild noise."""
    rng = np.random.default_rng(seed)
    return level + rng.normal(0, noise, (bands, size, size))


def draw_rects(image, rects, colour=BRIGHT):
    for c0, r0, c1, r1 in rects:
        for band in range(image.shape[0]):
            image[band, r0:r1, c0:c1] = colour[band % len(colour)]
    return image


def as_uint8(image):
    """uint8 with no zero values (so nodata=0 only marks what a test sets to 0)."""
    return np.clip(image, 1, 255).astype(np.uint8)


def rect_mask(shape_rc, rect):
    c0, r0, c1, r1 = rect
    out = np.zeros(shape_rc, bool)
    out[r0:r1, c0:c1] = True
    return out


def outputs_in(folder, name="out"):
    return OutputPaths(instances=str(folder / f"{name}_instances.tif"),
                       semantic=str(folder / f"{name}_semantic.tif"),
                       polygons=str(folder / f"{name}_masks.gpkg"))


def prepared_job(raster, boxes_path, outputs, **option_kwargs):
    job = SegmentJob(raster, read_box_file(boxes_path), outputs, SegmentOptions(backend="grabcut", **option_kwargs))
    job.prepare()
    return job


def read_band(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile


def centres_inside(mask, polygon):
    """For every True pixel of ``mask`` (pixel space), whether its centre lies inside ``polygon``."""
    rows, cols = np.nonzero(mask)
    inside = prep(polygon)
    return np.array([inside.contains(Point(c + 0.5, r + 0.5)) for r, c in zip(rows, cols)], dtype=bool)


def densify(polygon, steps=32):
    ring = np.asarray(polygon.exterior.coords)
    a, b = ring[:-1], ring[1:]
    t = np.linspace(0, 1, steps, endpoint=False)
    return Polygon((a[:, None, :] + (b - a)[:, None, :] * t[None, :, None]).reshape(-1, 2))


def to_map(transform, pixel_polygon):
    return Polygon([transform * xy for xy in pixel_polygon.exterior.coords])


# -- 1. a box layer in EPSG:4326 over a UTM raster --------------------------------------------------------
def test_wgs84_boxes_land_on_utm_pixels_and_masks_come_out_in_utm(tmp_path):
    size = 256
    rects = [(40, 30, 100, 80), (150, 140, 214, 196)]
    image = as_uint8(draw_rects(textured_ground(size), rects))
    raster = support.write_raster(tmp_path / "utm.tif", image, UTM_T, crs="EPSG:32617")

    to_wgs84 = Transformer.from_crs("EPSG:32617", "EPSG:4326", always_xy=True)
    boxes_4326 = []
    for rect in rects:
        ring = np.asarray(densify(support.pixel_box(UTM_T, *rect)).exterior.coords)
        lon, lat = to_wgs84.transform(ring[:, 0], ring[:, 1])
        assert np.all((-82 < lon) & (lon < -78)) and np.all((37 < lat) & (lat < 39))  # really degrees
        boxes_4326.append(Polygon(np.column_stack([lon, lat])))
    boxes = support.write_boxes(tmp_path / "boxes_4326.gpkg", boxes_4326, crs="EPSG:4326",
                                properties=[{"name": f"b{i}"} for i in range(len(rects))])

    outputs = OutputPaths(instances=str(tmp_path / "i.tif"), polygons=str(tmp_path / "m.gpkg"))
    job = prepared_job(raster, boxes, outputs)
    for pixel_box, rect in zip(job.boxes, rects):
        assert pixel_box.status == "ok"
        np.testing.assert_allclose(pixel_box.bounds, rect, atol=0.05)
    job.run()

    with fiona.open(outputs.polygons) as layer:
        assert CRS.from_wkt(layer.crs_wkt).equals(CRS.from_epsg(32617))
    rows = support.read_features(outputs.polygons)
    assert sorted(r["name"] for r in rows) == ["b0", "b1"]
    instances, profile = read_band(outputs.instances)
    assert CRS.from_wkt(profile["crs"].to_wkt()).equals(CRS.from_epsg(32617))
    for row in rows:
        rect = rects[int(row["name"][1:])]
        target = support.pixel_box(UTM_T, *rect)  # UTM metres
        geom = row["geometry"]
        assert row["status"] == "ok" and geom is not None
        assert target.contains(geom.centroid)
        assert geom.intersection(target).area / geom.area > 0.9
        assert geom.area == pytest.approx(target.area, rel=0.2)
        assert support.iou(instances == row["instance_id"], rect_mask(instances.shape, rect)) > 0.8


def test_wgs84_box_edges_are_followed_not_only_its_corners(tmp_path):
    """A box drawn in lon/lat has straight edges in lon/lat; on a UTM grid its parallels are curved, and
    the prompt must enclose the curved shape (over ~44 km the bulge is a third of a 100 m pixel)."""
    transform = Affine(100.0, 0.0, 460000.0, 0.0, -100.0, 4240000.0)
    size = 640
    raster = support.write_raster(tmp_path / "coarse.tif", as_uint8(textured_ground(size, seed=9)), transform)
    lon0, lat0, lon1, lat1 = -81.25, 37.9, -80.75, 38.2  # straddles the zone's central meridian (81 W)
    corners = Polygon([(lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1)])
    boxes = support.write_boxes(tmp_path / "b.gpkg", [corners], crs="EPSG:4326")

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32617", always_xy=True)
    inverse = ~transform

    def pixel_bounds(lonlat_polygon):
        ring = np.asarray(lonlat_polygon.exterior.coords)
        x, y = to_utm.transform(ring[:, 0], ring[:, 1])
        cols, rows = inverse * (np.asarray(x), np.asarray(y))
        return np.array([cols.min(), rows.min(), cols.max(), rows.max()])

    true_bounds = pixel_bounds(densify(corners, steps=2000))
    corner_bounds = pixel_bounds(corners)
    assert np.abs(true_bounds - corner_bounds).max() > 0.2  # the edges do bulge beyond the corners

    job = prepared_job(raster, boxes, outputs_in(tmp_path))
    assert job.boxes[0].status == "ok"
    np.testing.assert_allclose(job.boxes[0].bounds, true_bounds, atol=0.02)


# -- 2. a rotated box ---------------------------------------------------------------------------------
def test_rotated_box_prompt_is_enclosing_box_and_clip_keeps_mask_inside(tmp_path):
    size = 256
    # A 100 x 50 px rectangle centred at (128, 128), rotated by 30 degrees, in pixel space.
    rotated = affinity.rotate(Polygon([(78, 103), (178, 103), (178, 153), (78, 153)]), 30, origin=(128, 128))
    ex0, ey0, ex1, ey1 = rotated.bounds
    enclosing = (int(np.floor(ex0)), int(np.floor(ey0)), int(np.ceil(ex1)), int(np.ceil(ey1)))
    # The object fills the whole enclosing horizontal box, so an unclipped mask has corners outside the
    # rotated box and only the clip can keep them out.
    image = as_uint8(draw_rects(textured_ground(size), [enclosing]))
    raster = support.write_raster(tmp_path / "r.tif", image, UTM_T)
    boxes = support.write_boxes(tmp_path / "rotated.gpkg", [to_map(UTM_T, rotated)])

    clipped = prepared_job(raster, boxes, outputs_in(tmp_path, "clip"), clip_to_box=True)
    pixel_box = clipped.boxes[0]
    np.testing.assert_allclose(pixel_box.bounds, rotated.bounds, atol=1e-6)
    assert pixel_box.polygon.symmetric_difference(rotated).area < 1e-6
    clipped.run()
    mask = read_band(clipped.outputs.instances)[0] == 1
    assert mask.sum() > 0.8 * rotated.area  # the object under the rotated box is found …
    assert centres_inside(mask, rotated).all()  # … and nothing outside the rotated box is kept

    free = prepared_job(raster, boxes, outputs_in(tmp_path, "free"), clip_to_box=False)
    free.run()
    free_mask = read_band(free.outputs.instances)[0] == 1
    assert (~centres_inside(free_mask, rotated)).sum() > 100  # without the clip the corners are in
    assert not (mask & ~free_mask).any()  # clipping only removes pixels


# -- 3. pixel-corner exactness ------------------------------------------------------------------------------
def test_box_on_pixel_corners_maps_exactly(tmp_path):
    # Pixel size and origin that are not exact in binary floating point: mapping the corners there and back
    # gives e.g. row 5.0000000019, which must still count as the pixel corner.
    transform = Affine(0.29, 0.0, 631234.7, 0.0, -0.29, 4123456.79)
    size = 128
    rect = (10, 5, 20, 15)  # cols 10..19, rows 5..14
    image = as_uint8(draw_rects(textured_ground(size, seed=3), [rect], colour=(235, 235, 235)))
    raster = support.write_raster(tmp_path / "r.tif", image, transform)
    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(transform, *rect)])

    with rasterio.open(raster) as ds:
        projector = PixelProjector(read_box_file(boxes).crs_wkt, ds.crs, ds.transform, (ds.width, ds.height))
    feature = next(iter(read_box_file(boxes).features))
    pixel_box = project_box(feature, projector, 1, "object", 0)
    assert pixel_box.status == "ok" and pixel_box.detail == ""
    assert pixel_box.bounds == (10.0, 5.0, 20.0, 15.0)

    expected = rect_mask((size, size), rect)
    marked = polygon_mask(pixel_box.polygon, 0, 0, (size, size))
    assert marked.sum() == 100
    assert np.array_equal(marked, expected)
    # The same polygon rasterised in a crop that starts elsewhere marks the same raster pixels.
    crop = polygon_mask(pixel_box.polygon, 7, 3, (20, 20))
    assert np.array_equal(crop, expected[3:23, 7:27])

    job = prepared_job(raster, boxes, outputs_in(tmp_path), clip_to_box=True)
    job.run()
    instances = read_band(job.outputs.instances)[0]
    assert instances.any()
    assert not (instances.astype(bool) & ~expected).any()  # no mask pixel outside the box
    assert (instances == 1).sum() >= 80


# -- 4. boxes partly outside, fully outside, invalid -----------------------------------------------------------
def test_outside_partly_outside_and_invalid_boxes(tmp_path):
    size = 256
    inside_rect = (50, 50, 100, 100)
    partly_rect = (-20, 120, 40, 170)  # 20 px hang over the left edge
    image = as_uint8(draw_rects(textured_ground(size), [inside_rect, (0, 120, 40, 170)]))
    raster = support.write_raster(tmp_path / "r.tif", image, UTM_T)
    x, y = UTM_T * (150, 150)
    polygons = [
        support.pixel_box(UTM_T, *inside_rect),
        support.pixel_box(UTM_T, *partly_rect),
        support.pixel_box(UTM_T, 300, 10, 340, 50),  # wholly right of the raster
        Polygon([(x, y), (x + 10, y), (x + 20, y)]),  # zero area
        None,  # no geometry
    ]
    names = ["inside", "partly", "outside", "flat", "none"]
    boxes = support.write_boxes(tmp_path / "b.gpkg", polygons, properties=[{"name": n} for n in names])

    job = prepared_job(raster, boxes, outputs_in(tmp_path))
    by_name = {b.feature.attributes["name"]: b for b in job.boxes}
    assert by_name["inside"].status == "ok" and by_name["inside"].bounds == inside_rect
    assert by_name["partly"].status == "ok"
    assert "clipped" in by_name["partly"].detail
    np.testing.assert_allclose(by_name["partly"].bounds, (0, 120, 40, 170), atol=1e-9)
    assert by_name["outside"].status == "outside"
    assert by_name["flat"].status == "invalid"
    assert by_name["none"].status == "invalid"
    summary = job.run()
    assert summary.status_counts == {"ok": 2, "outside": 1, "invalid": 2}

    rows = support.read_features(job.outputs.polygons)
    assert Counter(r["name"] for r in rows) == Counter(names)  # every box exactly once
    assert sorted(r["instance_id"] for r in rows) == [1, 2, 3, 4, 5]
    out = {r["name"]: r for r in rows}
    assert out["outside"]["status"] == "outside" and out["outside"]["geometry"] is None
    assert out["outside"]["area_px"] == 0
    for name in ("flat", "none"):
        assert out[name]["status"] == "invalid" and out[name]["geometry"] is None and out[name]["detail"]
    assert out["partly"]["status"] == "ok" and "clipped" in out["partly"]["detail"]
    raster_extent = support.pixel_box(UTM_T, 0, 0, size, size)
    partly_geom = out["partly"]["geometry"]
    assert partly_geom is not None and raster_extent.buffer(1e-6).contains(partly_geom)
    assert support.pixel_box(UTM_T, 0, 120, 40, 170).contains(partly_geom.centroid)

    instances = read_band(job.outputs.instances)[0]
    assert set(np.unique(instances)) <= {0, out["inside"]["instance_id"], out["partly"]["instance_id"]}
    assert support.iou(instances == out["partly"]["instance_id"], rect_mask(instances.shape, (0, 120, 40, 170))) > 0.8


# -- 5. nodata -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("declare_nodata,fill_holes", [(True, False), (False, False), (True, True)])
def test_no_mask_pixel_on_nodata(tmp_path, declare_nodata, fill_holes):
    """Also with hole filling: a nodata block inside an object is a hole that must stay out of the mask."""
    size = 256
    obj = (60, 60, 140, 140)
    image = as_uint8(draw_rects(textured_ground(size, seed=5), [obj]))
    hole = (90, 90, 112, 112)  # nodata block at the box centre, where GrabCut's sure-foreground seed lies
    image[:, hole[1]:hole[3], hole[0]:hole[2]] = 0
    image[:, 0:30, 200:256] = 0  # and one away from the object
    nodata = 0 if declare_nodata else None
    raster = support.write_raster(tmp_path / "r.tif", image, UTM_T, nodata=nodata)
    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(UTM_T, *obj)])

    job = prepared_job(raster, boxes, outputs_in(tmp_path), fill_holes=fill_holes)
    job.run()
    mask = read_band(job.outputs.instances)[0] == 1
    nodata_pixels = (image == 0).all(axis=0)
    assert mask.sum() > 0.8 * (rect_mask(mask.shape, obj) & ~nodata_pixels).sum()
    if declare_nodata:
        assert not (mask & nodata_pixels).any()
        semantic = read_band(job.outputs.semantic)[0]
        assert (semantic[nodata_pixels] == 255).all()
    else:
        # Control: the same pixels as ordinary (black) data do get into the mask, so the check above
        # is about nodata handling and not about GrabCut skipping black pixels.
        assert (mask & nodata_pixels).sum() > 50


# -- 6. 16-bit and single-band rasters ----------------------------------------------------------------------------
def test_uint16_raster_is_percentile_stretched_and_segmented(tmp_path):
    size = 256
    rng = np.random.default_rng(7)
    image = 800 + rng.normal(0, 60, (3, size, size))
    rects = [(30, 40, 90, 90), (150, 130, 220, 200)]
    for c0, r0, c1, r1 in rects:
        image[:, r0:r1, c0:c1] = 3700 + rng.normal(0, 80, (3, r1 - r0, c1 - c0))
    image = np.clip(image, 0, 4000).astype(np.uint16)
    raster = support.write_raster(tmp_path / "r16.tif", image, UTM_T)

    ri = RasterInput(raster)
    try:
        assert ri.bands == (1, 2, 3)
        assert ri.stretch.identity is False
        for lo, hi in zip(ri.stretch.low, ri.stretch.high):
            assert 0 <= lo < hi <= 4000
            assert hi - lo > 255  # the data do not fit 8 bits as they are
        frame = ri.read_frame(PixelWindow(0, 0, size, size), (size, size))
        assert frame.dtype == np.uint8
        # Objects come out bright and ground dark after the stretch: the contrast survives.
        assert frame[60, 60].min() > 200 and frame[10, 10].max() < 200
    finally:
        ri.close()

    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(UTM_T, *r) for r in rects])
    job = prepared_job(raster, boxes, outputs_in(tmp_path))
    summary = job.run()
    assert summary.status_counts == {"ok": 2}
    assert "percentile" in summary.stretch
    instances = read_band(job.outputs.instances)[0]
    for i, rect in enumerate(rects, start=1):
        assert support.iou(instances == i, rect_mask(instances.shape, rect)) > 0.85


def test_single_band_raster_is_repeated_to_three(tmp_path):
    size = 192
    rects = [(20, 30, 70, 80), (110, 100, 170, 150)]
    image = as_uint8(draw_rects(textured_ground(size, bands=1, seed=2), rects, colour=(230,)))
    raster = support.write_raster(tmp_path / "gray.tif", image, UTM_T)

    ri = RasterInput(raster)
    try:
        assert ri.bands == (1, 1, 1)
        frame = ri.read_frame(PixelWindow(0, 0, size, size), (size, size))
        assert frame.shape == (size, size, 3)
        for channel in range(3):
            assert np.array_equal(frame[..., channel], image[0])
    finally:
        ri.close()

    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(UTM_T, *r) for r in rects])
    job = prepared_job(raster, boxes, outputs_in(tmp_path))
    job.run()
    instances = read_band(job.outputs.instances)[0]
    for i, rect in enumerate(rects, start=1):
        assert support.iou(instances == i, rect_mask(instances.shape, rect)) > 0.85


# -- 7. non-north-up geotransforms ---------------------------------------------------------------------------------
NON_NORTH_UP = {
    "rotated": Affine.translation(631000.0, 4190000.0) * Affine.rotation(20) * Affine.scale(0.5, -0.5),
    "south_up": Affine(0.5, 0.0, 631000.0, 0.0, 0.5, 4190000.0),
}


@pytest.mark.parametrize("kind", sorted(NON_NORTH_UP))
def test_non_north_up_geotransform(tmp_path, kind):
    transform = NON_NORTH_UP[kind]
    if kind == "rotated":
        assert transform.b != 0 and transform.d != 0
    else:
        assert transform.e > 0
    size = 224
    rects = [(30, 20, 90, 70), (130, 120, 200, 190)]
    image = as_uint8(draw_rects(textured_ground(size, seed=11), rects))
    raster = support.write_raster(tmp_path / f"{kind}.tif", image, transform)
    with rasterio.open(raster) as ds:
        assert ds.transform.almost_equals(transform)  # GDAL kept the geotransform as given

    names = ["first", "second"]
    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(transform, *r) for r in rects],
                                properties=[{"name": n} for n in names])
    job = prepared_job(raster, boxes, outputs_in(tmp_path))
    for pixel_box, rect in zip(job.boxes, rects):
        assert pixel_box.status == "ok"
        np.testing.assert_allclose(pixel_box.bounds, rect, atol=1e-6)
    job.run()

    for path in (job.outputs.instances, job.outputs.semantic):
        with rasterio.open(path) as out:
            assert out.transform.almost_equals(transform, precision=1e-9)
            assert (out.width, out.height) == (size, size)
            assert out.crs == rasterio.crs.CRS.from_user_input(support.UTM)
    instances = read_band(job.outputs.instances)[0]
    pixel_area = abs(transform.determinant)
    rows = {r["name"]: r for r in support.read_features(job.outputs.polygons)}
    for name, rect in zip(names, rects):
        row = rows[name]
        assert support.iou(instances == row["instance_id"], rect_mask(instances.shape, rect)) > 0.85
        geom = row["geometry"]
        col, r = ~transform * (geom.centroid.x, geom.centroid.y)
        c0, r0, c1, r1 = rect
        assert c0 < col < c1 and r0 < r < r1
        assert geom.intersection(support.pixel_box(transform, *rect)).area / geom.area > 0.95
        assert row["area_m2"] == pytest.approx(row["area_px"] * pixel_area, rel=1e-6)


# -- 8. multispectral band choice -----------------------------------------------------------------------------
def test_band_choice_on_four_band_raster(tmp_path):
    size = 160
    rng = np.random.default_rng(4)
    image = np.clip(rng.normal(100, 10, (4, size, size)), 1, 255)
    obj = (40, 50, 110, 120)
    image[3, obj[1]:obj[3], obj[0]:obj[2]] = 240  # visible in band 4 only (e.g. near infrared)
    image = image.astype(np.uint8)
    raster = support.write_raster(tmp_path / "ms.tif", image, UTM_T)

    ri = RasterInput(raster, [4, 3, 2])
    try:
        assert ri.bands == (4, 3, 2)
        frame = ri.read_frame(PixelWindow(0, 0, size, size), (size, size))
        for channel, band in enumerate((4, 3, 2)):
            assert np.array_equal(frame[..., channel], image[band - 1])
    finally:
        ri.close()

    with pytest.raises(InputError) as err:
        RasterInput(raster, [5, 3, 2])
    assert re.search(r"\b5\b", str(err.value)) and "band" in str(err.value).lower()

    boxes = support.write_boxes(tmp_path / "b.gpkg", [support.pixel_box(UTM_T, *obj)])
    with pytest.raises(InputError, match=r"\b5\b"):
        prepared_job(raster, boxes, outputs_in(tmp_path, "bad"), bands=[2, 5, 3])
    assert not list(tmp_path.glob("bad_*"))

    job = prepared_job(raster, boxes, outputs_in(tmp_path), bands=[4, 3, 2])
    job.run()
    instances = read_band(job.outputs.instances)[0]
    assert support.iou(instances == 1, rect_mask(instances.shape, obj)) > 0.85


# -- a raster without georeferencing: pixel space as QGIS shows it ------------------------------------------
def test_ungeoreferenced_png_with_imported_annotations_lines_up_in_pixel_space(tmp_path):
    """A plain PNG and a DOTA file imported without georeferencing: boxes and outputs use map = (col, -row),
    no CRS, the same place QGIS shows the PNG; the object's mask comes out where the object is."""
    from samrs.samrs_qgis.annotations import import_annotations

    image = as_uint8(draw_rects(textured_ground(160, seed=9), [(40, 50, 90, 80)]))
    png = tmp_path / "scene.png"
    with rasterio.open(png, "w", driver="PNG", width=160, height=160, count=3, dtype="uint8") as ds:
        ds.write(image)
    labels = tmp_path / "scene.txt"
    labels.write_text("imagesource:test\ngsd:0.5\n36 46 94 46 94 84 36 84 tank 0\n")
    boxes = tmp_path / "boxes.gpkg"
    import_annotations([str(labels)], str(boxes), image_path=str(png))
    with fiona.open(boxes) as layer:
        (feature,) = list(layer)
        xs, ys = zip(*feature["geometry"]["coordinates"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (36, 94, -84, -46)
    out = outputs_in(tmp_path)
    job = prepared_job(str(png), str(boxes), out, class_field="class_name")
    job.run()
    instances, profile = read_band(out.instances)
    assert profile["crs"] is None and profile["transform"] == Affine(1, 0, 0, 0, -1, 0)
    truth = rect_mask(instances.shape, (40, 50, 90, 80))
    assert ((instances > 0) & truth).sum() / ((instances > 0) | truth).sum() > 0.9
    (polygon,) = support.read_features(out.polygons)
    x0, y0, x1, y1 = polygon["geometry"].bounds
    assert abs(x0 - 40) <= 2 and abs(x1 - 90) <= 2 and abs(y0 + 80) <= 2 and abs(y1 + 50) <= 2

"""Previews drawn by QGIS's renderer, headless: not blank, and class colours where the masks are."""
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

import support
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.classes import class_colours
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions

T = Affine(0.5, 0, 600000, 0, -0.5, 3300000)


def read_png(path):
    with warnings.catch_warnings():  # a PNG has no georeference
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return np.transpose(ds.read()[:3], (1, 2, 0)).astype(int)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("previews")
    image, objects = support.synthetic_scene(256, seed=11)
    raster = support.write_raster(tmp / "scene.tif", image, T)
    boxes = support.write_boxes(tmp / "boxes.gpkg", [support.pixel_box(T, *o[2]) for o in objects],
                                properties=[{"cls": o[0]} for o in objects])
    out = OutputPaths(str(tmp / "instances.tif"), str(tmp / "semantic.tif"), str(tmp / "masks.gpkg"))
    summary = segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="cls"))
    return tmp, raster, out, summary


def test_overview_shows_each_class_colour_on_its_masks_outlines(result, qgis_app):
    from samrs.samrs_previews import render_previews

    tmp, raster, out, summary = result
    files = render_previews(raster, out.polygons, str(tmp / "overview.png"), size=256)  # one PNG pixel per raster pixel
    png = read_png(files.overview)
    assert png.shape == (256, 256, 3) and png.std() > 20  # not blank
    with rasterio.open(out.semantic) as ds:
        semantic = ds.read(1)
    colours = class_colours(sorted(summary.classes))
    for class_id in summary.classes:
        inside = semantic == class_id
        if not inside.any():
            continue
        edge = inside & ~ndimage.binary_erosion(inside, iterations=2)  # the outline is drawn along the mask edge
        r, g, b, _ = colours[class_id]
        distance = np.abs(png[edge] - np.array([r, g, b])).sum(axis=1)
        assert (distance < 60).mean() > 0.3, summary.classes[class_id]
        outside = ndimage.binary_dilation(semantic != 255, iterations=6) == 0  # far from any mask: imagery only
        assert (np.abs(png[outside] - np.array([r, g, b])).sum(axis=1) < 60).mean() < 0.05


def test_contact_sheet_tiles_the_lowest_scoring_masks(result, qgis_app):
    from samrs.samrs_previews import render_previews

    tmp, raster, out, summary = result
    files = render_previews(raster, out.polygons, str(tmp / "ov.png"), str(tmp / "sheet.png"), count=6, tile=128)
    assert files.masks_shown == min(6, summary.status_counts.get("ok", 0))
    sheet = read_png(files.contact_sheet)
    assert sheet.shape[1] == 4 * 128 and sheet.shape[0] == 2 * (128 + 22)
    first_tile = sheet[:128, :128]
    assert first_tile.std() > 10 and (np.abs(first_tile - 255).sum(axis=2) < 30).any()  # white focus outline


def test_results_side_by_side_with_white_outlines(result, qgis_app, tmp_path):
    """Two panels over one map extent (the upper half of the scene, 128 x 64 m): 200 pixels wide each, as high as
    the extent, a title row under them; in outline mode the masks' edges are white, the rest imagery."""
    from samrs.samrs_previews.render import LABEL_HEIGHT, render_side_by_side

    _, raster, out, _ = result
    extent = (600000, 3300000 - 64, 600128, 3300000)
    path = render_side_by_side(raster, [(out.polygons, "before"), (out.polygons, "after")], extent,
                               str(tmp_path / "pair.png"), tile=200, outlines=True)
    png = read_png(path)
    assert png.shape == (100 + LABEL_HEIGHT, 400, 3)
    left, right = png[:100, :200], png[:100, 200:]
    assert np.array_equal(left, right)  # the same layer drawn twice
    white = (left > 235).all(axis=2)
    with rasterio.open(out.semantic) as ds:
        semantic = ds.read(1, window=((0, 128), (0, 256)))
    mask_edges = ndimage.zoom((semantic != 255).astype(float), 200 / 256, order=0) > 0.5
    edge_band = ndimage.binary_dilation(mask_edges ^ ndimage.binary_erosion(mask_edges), iterations=2)
    assert white.sum() > 100 and white[edge_band[:100, :200]].sum() > 0.8 * white.sum()

"""Window masks: polygons rasterized by pixel centres over their own window, and full-grid COCO RLE."""
import numpy as np
from affine import Affine
from pycocotools import mask as mask_utils
from shapely.geometry import MultiPolygon, Polygon, box, mapping

from samrs.samrs_qgis.window_masks import rasterize_map_geometry, rasterize_window, window_rle

T = Affine(2.0, 0, 1000.0, 0, -2.0, 5000.0)  # pixel corners -> map coordinates


def to_map(polygon):
    return Polygon([T * xy for xy in polygon.exterior.coords])


def test_a_polygon_on_pixel_edges_gives_its_pixels_back_over_its_window_clipped_to_the_grid():
    mask, row, col = rasterize_window([box(3, 2, 7, 5), box(8, 4, 12, 9)], width=10, height=8)
    assert (row, col, mask.shape) == (2, 3, (6, 7))  # window clipped at column 10 and row 8
    full = np.zeros((8, 10), bool)
    full[row:row + mask.shape[0], col:col + mask.shape[1]] = mask
    expected = np.zeros((8, 10), bool)
    expected[2:5, 3:7] = True
    expected[4:8, 8:10] = True
    assert np.array_equal(full, expected)
    assert rasterize_window([box(20, 20, 30, 30)], 10, 8)[0].shape == (0, 0)  # off the grid


def test_map_geometries_and_the_rle_of_the_whole_grid():
    geometry = mapping(MultiPolygon([to_map(box(1, 1, 3, 2)), to_map(box(5, 0, 6, 4))]))
    mask, row, col = rasterize_map_geometry(geometry, T, width=8, height=6)
    decoded = mask_utils.decode(window_rle(mask, row, col, 6, 8)).astype(bool)
    expected = np.zeros((6, 8), bool)
    expected[1:2, 1:3] = True
    expected[0:4, 5:6] = True
    assert np.array_equal(decoded, expected) and int(mask.sum()) == 6
    assert rasterize_map_geometry(None, T, 8, 6)[0].shape == (0, 0)
    assert mask_utils.area(window_rle(np.zeros((0, 0), bool), 0, 0, 6, 8)) == 0

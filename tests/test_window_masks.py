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


def test_map_geometries_on_a_rotated_grid_and_of_many_parts_match_the_pixel_space_rasterization():
    """Rasterizing in map coordinates gives exactly the pixels of the same polygons in pixel space: on a rotated,
    sheared grid, for a mask of many parts with holes."""
    rng = np.random.default_rng(4)
    grid = Affine(0.5, 0.3, 400000.0, 0.2, -0.5, 5200000.0)
    parts = []
    for _ in range(60):
        c, r = rng.integers(0, 90, 2)
        outer = box(c, r, c + rng.integers(1, 9), r + rng.integers(1, 9))
        parts.append(outer.difference(box(c + 1, r + 1, c + 2, r + 2)) if outer.area > 9 else outer)
    pixel_geometry = MultiPolygon([p for p in parts if p.geom_type == "Polygon"])
    map_geometry = MultiPolygon([Polygon([grid * xy for xy in p.exterior.coords],
                                         [[grid * xy for xy in hole.coords] for hole in p.interiors])
                                 for p in pixel_geometry.geoms])
    mask, row, col = rasterize_map_geometry(mapping(map_geometry), grid, width=95, height=80)
    expected, erow, ecol = rasterize_window(list(pixel_geometry.geoms), 95, 80)
    full, expected_full = np.zeros((80, 95), bool), np.zeros((80, 95), bool)
    full[row:row + mask.shape[0], col:col + mask.shape[1]] = mask
    expected_full[erow:erow + expected.shape[0], ecol:ecol + expected.shape[1]] = expected
    assert expected_full.sum() > 500 and np.array_equal(full, expected_full)
    assert rasterize_map_geometry({"type": "MultiPolygon", "coordinates": []}, grid, 95, 80)[0].shape == (0, 0)

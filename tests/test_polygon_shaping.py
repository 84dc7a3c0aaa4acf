"""Polygon shaping on synthetic masks with known answers: a pixel-stair rectangle at 17° regularises to a rectangle
at 17°, an L-shaped building keeps its six right-angled corners, a disc is not rectilinear and is left as traced,
a noisy disc smoothed stays near the true circle, and simplifying many random masks never gives an invalid or
self-crossing geometry or one outside the box's neighbourhood."""
from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from rasterio import features
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon

from samrs.samrs_qgis.masks import MaskCrop, polygonize
from samrs.samrs_qgis.polygon_shaping import (NOT_RECTILINEAR, PolygonShaping, box_orientation, crop_extent,
                                              shape_polygon)

SIZE = 220
EVERYWHERE = crop_extent(0, 0, SIZE, SIZE)
REGULARISE = PolygonShaping(regularise=True)


def mask_of(polygon: Polygon, size: int = SIZE) -> np.ndarray:
    """The pixels whose centres lie inside ``polygon`` (pixel space)."""
    return features.rasterize([(polygon, 1)], out_shape=(size, size)).astype(bool)


def traced(mask: np.ndarray) -> MultiPolygon:
    """The mask's polygon as the engine traces it, in pixel space."""
    return polygonize(MaskCrop(0, 0, mask), Affine.identity())


def corner_angles(ring) -> list:
    """The inner angle at each corner of a closed ring, degrees."""
    c = np.asarray(ring.coords)[:-1]
    angles = []
    for i in range(len(c)):
        a, b = c[i - 1] - c[i], c[(i + 1) % len(c)] - c[i]
        angles.append(math.degrees(math.acos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))))
    return angles


def edge_directions(ring) -> list:
    """Each edge's direction modulo 90°, degrees."""
    edges = np.diff(np.asarray(ring.coords), axis=0)
    return [math.degrees(math.atan2(dy, dx)) % 90 for dx, dy in edges]


def rotated(polygon: Polygon, degrees: float) -> Polygon:
    return affinity.rotate(polygon, degrees, origin=(SIZE / 2, SIZE / 2))


@pytest.mark.parametrize("from_box", [False, True])
def test_a_pixel_stair_rectangle_at_17_degrees_regularises_to_a_rectangle_at_17_degrees(from_box):
    truth = rotated(Polygon([(60, 90), (160, 90), (160, 135), (60, 135)]), 17)
    stairs = traced(mask_of(truth))
    assert len(stairs.geoms[0].exterior.coords) > 40  # pixel stairs
    angle = box_orientation(truth) if from_box else None
    assert (angle is not None) == from_box and (not from_box or abs(angle - 17) < 1e-6)
    shaped, note = shape_polygon(stairs, REGULARISE, EVERYWHERE, angle)
    (part,) = shaped.geoms
    assert note == "" and len(part.exterior.coords) == 5 and shaped.is_valid
    assert all(abs(d - 17) < 1 for d in edge_directions(part.exterior))
    assert all(abs(a - 90) < 1e-6 for a in corner_angles(part.exterior))
    assert abs(part.area - truth.area) < 0.02 * truth.area


def test_an_l_shaped_building_keeps_its_six_right_angled_corners():
    truth = rotated(Polygon([(50, 50), (150, 50), (150, 90), (90, 90), (90, 160), (50, 160)]), 25)
    shaped, note = shape_polygon(traced(mask_of(truth)), REGULARISE, EVERYWHERE)
    (part,) = shaped.geoms
    assert note == "" and len(part.exterior.coords) == 7
    assert all(abs(a - 90) < 1e-6 or abs(a - 270) < 1e-6 for a in corner_angles(part.exterior))
    assert all(abs(d - 25) < 1 for d in edge_directions(part.exterior))
    assert abs(part.area - truth.area) < 0.02 * truth.area
    assert part.symmetric_difference(truth).area < 0.05 * truth.area


def test_a_courtyard_is_regularised_with_its_building():
    shell = Polygon([(40, 40), (170, 40), (170, 150), (40, 150)], [[(80, 70), (130, 70), (130, 120), (80, 120)]])
    truth = rotated(shell, 10)
    shaped, note = shape_polygon(traced(mask_of(truth)), REGULARISE, EVERYWHERE)
    (part,) = shaped.geoms
    assert note == "" and len(part.interiors) == 1 and len(part.interiors[0].coords) == 5
    assert all(abs(d - 10) < 1 for d in edge_directions(part.interiors[0]))


def test_a_shape_that_is_not_rectilinear_is_left_as_traced_and_flagged():
    disc = Polygon(np.c_[110 + 40 * np.cos(np.linspace(0, 2 * np.pi, 100)),
                         110 + 40 * np.sin(np.linspace(0, 2 * np.pi, 100))])
    stairs = traced(mask_of(disc))
    shaped, note = shape_polygon(stairs, REGULARISE, EVERYWHERE)
    assert shaped.equals(stairs) and NOT_RECTILINEAR in note and "1 of 1 part(s)" in note


def hausdorff_to_circle(polygon: MultiPolygon, centre, radius) -> float:
    """The largest distance of the polygon's outline from the circle (its vertices and edge midpoints)."""
    ring = np.asarray(polygon.geoms[0].exterior.coords)
    points = np.vstack([ring, (ring[1:] + ring[:-1]) / 2])
    return float(np.abs(np.hypot(points[:, 0] - centre[0], points[:, 1] - centre[1]) - radius).max())


def test_a_noisy_disc_smoothed_stays_near_the_true_circle():
    """A disc of radius 50 whose boundary pixels (within 1.5 of the circle) are each in or out at random: traced,
    its outline is 2.6 times the circle's length, in dozens of parts; smoothed, one part within 2.5 pixels of the
    circle (the noise's width plus one), its length and area within 6 % of the circle's."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    distance = np.hypot(xx - 110, yy - 110)
    mask = distance <= 50
    edge = np.abs(distance - 50) < 1.5
    mask[edge] = rng.random(edge.sum()) < 0.5
    raw = traced(mask)
    largest = max(raw.geoms, key=lambda g: g.area)
    assert len(raw.geoms) > 20 and largest.length > 2.5 * 2 * math.pi * 50
    shaped, note = shape_polygon(raw, PolygonShaping(smooth_px=3), EVERYWHERE)
    assert note == "" and shaped.is_valid and len(shaped.geoms) == 1  # the specks are gone, one part
    assert hausdorff_to_circle(shaped, (110, 110), 50) < 2.5
    assert abs(shaped.length / (2 * math.pi * 50) - 1) < 0.06
    assert abs(shaped.area / (math.pi * 50 ** 2) - 1) < 0.06


def test_smoothing_that_would_leave_nothing_keeps_the_mask():
    line = np.zeros((SIZE, SIZE), bool)
    line[100:102, 20:200] = True  # two pixels wide
    raw = traced(line)
    shaped, note = shape_polygon(raw, PolygonShaping(smooth_px=2), EVERYWHERE)
    assert shaped.equals(raw) and "narrower than 4 pixels" in note


def random_mask(rng) -> np.ndarray:
    """Blobs with holes, thin bridges and specks: sums of random discs and rings, thresholded."""
    yy, xx = np.mgrid[:96, :96] + 0.5
    field = np.zeros((96, 96))
    for _ in range(rng.integers(2, 7)):
        cx, cy, r = rng.uniform(10, 86), rng.uniform(10, 86), rng.uniform(4, 25)
        field += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2)) * rng.choice([1, -0.6])
    mask = field > rng.uniform(0.2, 0.6)
    mask ^= rng.random(mask.shape) < 0.03  # specks and pinholes
    return mask


@pytest.mark.parametrize("shaping", [PolygonShaping(simplify_px=1.5), PolygonShaping(simplify_px=4),
                                     PolygonShaping(smooth_px=1.5, simplify_px=1),
                                     PolygonShaping(regularise=True, simplify_px=1)])
def test_shaping_many_random_masks_never_gives_an_invalid_geometry_or_leaves_the_neighbourhood(shaping):
    rng = np.random.default_rng(11)
    limit = crop_extent(0, 0, 96, 96)
    checked = 0
    for _ in range(150):
        mask = random_mask(rng)
        if not mask.any():
            continue
        raw = traced(mask)
        shaped, _ = shape_polygon(raw, shaping, limit)
        assert isinstance(shaped, MultiPolygon) and shaped.is_valid and not shaped.is_empty
        assert limit.buffer(1e-9).contains(shaped)
        if shaping.simplify_px and not shaping.smooth_px and not shaping.regularise:
            # parts and holes never cross (validity); no vertex added, no outline moved by more than the tolerance
            assert sum(len(p.exterior.coords) for p in shaped.geoms) <= sum(len(p.exterior.coords) for p in raw.geoms)
            assert raw.symmetric_difference(shaped).area <= shaping.simplify_px * raw.length
        checked += 1
    assert checked > 100


def test_a_box_along_the_pixel_grid_has_no_orientation():
    assert box_orientation(Polygon([(0, 0), (10, 0), (10, 5), (0, 5)])) is None
    assert abs(box_orientation(rotated(Polygon([(0, 0), (10, 0), (10, 5), (0, 5)]), 100)) - 10) < 1e-9

"""Optional shaping of each mask's polygon before it is written (SAMRS used none; all off by default):

- **regularise** (buildings and other man-made objects): the dominant orientation (the box's when it is rotated,
  else the one that fits the outline best), single pixels in or out along the outline ignored, every edge
  snapped to it or its perpendicular, steps shorter than :data:`MIN_STEP_PX` merged away; a part that is not
  rectilinear, or whose area or outline would change by more than :data:`AREA_TOLERANCE` or
  :data:`SHAPE_TOLERANCE`, is left as traced and the box's ``detail`` says so;
- **smooth** (natural objects): a closing then an opening with a disc of the given radius (round joins), which
  rounds the pixel stairs and corners; parts narrower than twice the radius go (a part that would vanish whole
  is left as traced);
- **simplify**: Douglas-Peucker, topology-preserving (GEOS): parts and holes never cross.

Applied in that order, in a frame of square pixels on the map (:func:`shape_in_map`: distances in pixels, angles
the map's, whatever the geotransform), then mapped back to map coordinates. The result is always a valid
MultiPolygon within the box's neighbourhood (the mask crop's extent), one per box; a step that would leave
nothing keeps its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box as rectangle
from shapely.geometry.base import BaseGeometry
from shapely.validation import make_valid

MIN_STEP_PX = 4.0  # regularise: steps shorter than this (pixels) are merged into their neighbours (mask noise)
MIN_PART_PX = 16.0  # regularise: parts smaller than this (square pixels) are left as they are
AREA_TOLERANCE = 0.10  # regularise: a part whose area would change by more than this fraction is left as traced
SHAPE_TOLERANCE = 0.15  # regularise: ... or whose outline would move over more than this fraction of its area
OUTLINE_TOLERANCE_PX = 1.0  # regularise: pixel stairs within this of a straight edge are that edge
RECTILINEAR_SHARE = 0.7  # regularise: edges within ANGLE_SLACK of the two directions hold this share of the outline
ANGLE_SLACK_DEG = 20.0
EDGE_SMOOTHING_PX = 2.0  # regularise: the mask is smoothed over this many pixels before its edges' direction is read
DENOISE_PX = 1.0  # regularise: the outline is opened and closed by this before its walls are found
REFINE_STEP_DEG = 0.5  # regularise: the orientation found is refined between this either side
QUAD_SEGS = 4  # smooth: segments per quarter circle of the round joins
NOT_RECTILINEAR = "not rectilinear: left as traced"


@dataclass(frozen=True)
class PolygonShaping:
    """What is done to each polygon (see the module): ``simplify_px`` and ``smooth_px`` in raster pixels (0: off)."""

    simplify_px: float = 0.0
    smooth_px: float = 0.0
    regularise: bool = False

    @classmethod
    def of(cls, settings) -> "PolygonShaping":
        """The shaping ``settings`` ask for: :class:`.settings.SegmentOptions`, or a run's recorded settings (a
        dict, e.g. a dataset manifest's; missing keys: off)."""
        get = settings.get if isinstance(settings, dict) else lambda key, default: getattr(settings, key, default)
        return cls(float(get("simplify_px", 0) or 0), float(get("smooth_px", 0) or 0), bool(get("regularise", False)))

    @property
    def active(self) -> bool:
        return self.simplify_px > 0 or self.smooth_px > 0 or self.regularise


def shape_polygon(traced: MultiPolygon, shaping: PolygonShaping, limit: Polygon,
                  box_angle: Optional[float] = None, mask_angle: Optional[float] = None) -> Tuple[MultiPolygon, str]:
    """``traced`` (pixel space) after ``shaping``, clipped to ``limit`` (the box's neighbourhood, pixel space);
    and a note for the box's ``detail`` ("" when every step went as asked). ``box_angle``: the rotated box's
    orientation in degrees (None for a box along the pixel grid)."""
    notes: List[str] = []
    shaped = traced
    if shaping.regularise:
        shaped, left = regularise(shaped, box_angle, mask_angle)
        if left:
            notes.append(f"regularise: {left} of {len(shaped.geoms)} part(s) {NOT_RECTILINEAR}")
    if shaping.smooth_px > 0:
        r = shaping.smooth_px
        smoothed = shaped.buffer(r, resolution=QUAD_SEGS).buffer(-2 * r, resolution=QUAD_SEGS).buffer(
            r, resolution=QUAD_SEGS)
        if smoothed.is_empty:
            notes.append(f"smooth: every part is narrower than {2 * r:g} pixels: left unsmoothed")
        else:
            shaped = as_multipolygon(smoothed)
    if shaping.simplify_px > 0:
        shaped = as_multipolygon(shaped.simplify(shaping.simplify_px, preserve_topology=True)) or shaped
    if shaped is traced:  # nothing was changed: the traced polygon as it is
        return traced, "; ".join(notes)
    clipped = as_multipolygon(shaped.intersection(limit))
    return (clipped if clipped is not None else traced), "; ".join(notes)


def shape_in_map(polygon: MultiPolygon, shaping: PolygonShaping, transform: Affine, crop,
                 box_polygon: Polygon) -> Tuple[MultiPolygon, str]:
    """:func:`shape_polygon` for ``polygon`` in map coordinates, traced from ``crop`` (a :class:`.masks.MaskCrop`)
    of a raster with geotransform ``transform``; ``box_polygon``: the box in pixel space.

    Shaped in a frame of square pixels: map coordinates from the crop's corner, in units of the pixel size
    (the square root of a pixel's area), so that right angles and orientations are those on the map (also for
    rotated geotransforms and pixels that are not square) and distances are about pixels."""
    pixel = math.sqrt(abs(transform.determinant))
    ox, oy = transform * (crop.col, crop.row)
    into_frame = [1 / pixel, 0, 0, 1 / pixel, -ox / pixel, -oy / pixel]
    rows, cols = crop.mask.shape
    frame = [affinity.affine_transform(g, into_frame)
             for g in (polygon, to_map(crop_extent(crop.col, crop.row, rows, cols), transform),
                       to_map(box_polygon, transform))]
    mask_angle = mask_orientation(crop.mask, transform) if shaping.regularise else None
    shaped, note = shape_polygon(frame[0], shaping, frame[1], box_orientation(frame[2]), mask_angle)
    if shaped is frame[0]:  # left as traced: not moved by the round trip through the frame
        return polygon, note
    return affinity.affine_transform(shaped, [pixel, 0, 0, pixel, ox, oy]), note


def to_map(polygon: MultiPolygon, transform: Affine) -> MultiPolygon:
    """A pixel-space geometry in map coordinates (any affine geotransform, rotated too)."""
    return affinity.affine_transform(polygon, [transform.a, transform.b, transform.d, transform.e,
                                               transform.c, transform.f])


def crop_extent(col: int, row: int, rows: int, cols: int) -> Polygon:
    """The pixel-space rectangle a mask crop covers."""
    return rectangle(col, row, col + cols, row + rows)


def box_orientation(box_polygon: Polygon) -> Optional[float]:
    """The orientation (degrees, in [0, 90)) of a rotated box's longest edge; None for a box along the grid."""
    ring = np.asarray(box_polygon.exterior.coords)
    edges = np.diff(ring, axis=0)
    longest = edges[np.argmax(np.hypot(edges[:, 0], edges[:, 1]))]
    angle = math.degrees(math.atan2(longest[1], longest[0])) % 90.0
    return None if min(angle, 90.0 - angle) < 0.5 else angle


def as_multipolygon(geometry: BaseGeometry) -> Optional[MultiPolygon]:
    """The polygons of a geometry (made valid) as one MultiPolygon; None when there are none."""
    if geometry.is_empty:
        return None
    if not geometry.is_valid:
        geometry = make_valid(geometry)
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    if isinstance(geometry, MultiPolygon):
        return geometry
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for g in parts for p in (g.geoms if isinstance(g, MultiPolygon) else [g]) if not p.is_empty]
    return MultiPolygon(polygons) if polygons else None


# -- regularising --------------------------------------------------------------------------------------------
def regularise(polygon: MultiPolygon, box_angle: Optional[float],
               mask_angle: Optional[float] = None) -> Tuple[MultiPolygon, int]:
    """Each part regularised (see the module), along ``box_angle`` when given, else along the best fitting
    orientation (``mask_angle`` is one more candidate); (the result, how many parts were left as traced)."""
    parts, left, changed = [], 0, False
    for part in polygon.geoms:
        if part.area < MIN_PART_PX:  # a speck has no walls: left as it is, and not worth a note
            parts.append(part)
            continue
        done = regularise_part(part, box_angle) if box_angle is not None else best_fit(part, mask_angle)
        if done is None:
            left += 1
            done = part
        else:
            changed = True
        parts.append(done)
    if not changed:
        return polygon, left
    merged = as_multipolygon(MultiPolygon(parts)) if len(parts) > 1 else MultiPolygon(parts)
    if merged is None or not merged.is_valid or len(merged.geoms) != len(parts):
        return polygon, len(polygon.geoms)  # regularised parts that would run into each other: none is changed
    return merged, left


def best_fit(part: Polygon, hint: Optional[float] = None) -> Optional[Polygon]:
    """``part`` regularised along the orientation that fits its outline best: of the outline's mean edge direction
    (:func:`dominant_orientation`) and its minimum rotated rectangle's, the one whose regularised shape differs
    least from ``part`` (area of the symmetric difference), refined by a parabola through it and its neighbours
    :data:`REFINE_STEP_DEG` either side. None when it is not rectilinear at any of them."""
    candidates = [a for a in (hint, dominant_orientation(part), rectangle_orientation(part)) if a is not None]
    fits = {}

    walls = denoised(part)  # once for every orientation tried

    def misfit(angle: float) -> float:
        if angle not in fits:
            fits[angle] = regularise_part(part, angle, walls)
        shape = fits[angle]
        return math.inf if shape is None else shape.symmetric_difference(part).area

    if not candidates:
        return None
    best = min(candidates, key=misfit)
    if math.isinf(misfit(best)):
        return None
    lower, upper = misfit(best - REFINE_STEP_DEG), misfit(best + REFINE_STEP_DEG)
    curvature = lower + upper - 2 * misfit(best)
    if math.isfinite(curvature) and curvature > 0:
        vertex = best + REFINE_STEP_DEG * (lower - upper) / (2 * curvature)
        if abs(vertex - best) <= REFINE_STEP_DEG:
            misfit(vertex)
    return fits[min((a for a in fits if fits[a] is not None), key=misfit)]


def mask_orientation(mask: np.ndarray, transform: Affine) -> Optional[float]:
    """The orientation (degrees, [0, 90), on the map) the mask's edges follow: the mean direction modulo 90° of
    the edges of the mask smoothed over a few pixels (pixel noise and stairs averaged away), each weighted by its
    strength. Directions are taken to the map through ``transform``'s linear part (rotated, non-square grids)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(mask.astype(np.float32), EDGE_SMOOTHING_PX)
    d_row, d_col = np.gradient(smooth)
    strength = np.hypot(d_row, d_col)
    strong = strength > 0.25 * strength.max() if strength.size and strength.max() > 0 else None
    if strong is None or not strong.any():
        return None
    along_col, along_row = -d_row[strong], d_col[strong]  # the edge's direction in pixel space (col, row)
    x = transform.a * along_col + transform.b * along_row
    y = transform.d * along_col + transform.e * along_row
    quadruple = 4 * np.arctan2(y, x)
    weights = strength[strong]
    mean = math.atan2(float(np.sum(weights * np.sin(quadruple))), float(np.sum(weights * np.cos(quadruple))))
    return math.degrees(mean / 4) % 90.0


def rectangle_orientation(part: Polygon) -> Optional[float]:
    """The orientation (degrees, [0, 90)) of the part's minimum rotated rectangle."""
    ring = np.asarray(part.minimum_rotated_rectangle.exterior.coords) if part.area > 0 else np.zeros((0, 2))
    if len(ring) < 3:
        return None
    edge = ring[1] - ring[0]
    return math.degrees(math.atan2(edge[1], edge[0])) % 90.0


def dominant_orientation(part: Polygon) -> Optional[float]:
    """The orientation (degrees, [0, 90)) the outline's straight edges follow, or None for too small a part:
    the length-weighted mean of the edge directions modulo 90° of the outline with its pixel stairs removed."""
    outline = part.exterior.simplify(OUTLINE_TOLERANCE_PX, preserve_topology=False)
    ring = np.asarray(outline.coords)
    if len(ring) < 4:
        return None
    edges = np.diff(ring, axis=0)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    quadruple = 4 * np.arctan2(edges[:, 1], edges[:, 0])  # directions modulo 90° as angles modulo 360°
    mean = math.atan2(float(np.sum(lengths * np.sin(quadruple))), float(np.sum(lengths * np.cos(quadruple))))
    return math.degrees(mean / 4) % 90.0


def regularise_part(part: Polygon, angle: float, walls: Optional[Polygon] = None) -> Optional[Polygon]:
    """``part`` with every edge along ``angle`` (degrees) or its perpendicular, or None when it is not rectilinear
    (or would change its area by more than :data:`AREA_TOLERANCE`, or move its outline over more than
    :data:`SHAPE_TOLERANCE` of its area). Its holes are regularised the same way; a
    hole that cannot be is kept as traced. ``walls``: ``part`` :func:`denoised` (made here when not given)."""
    centre, area = part.centroid, part.area
    upright = affinity.rotate(walls or denoised(part), -angle, origin=centre)  # the dominant directions along the axes
    shell = rectilinear_ring(np.asarray(upright.exterior.coords))
    if shell is None:
        return None
    holes = []
    for interior in upright.interiors:
        ring = rectilinear_ring(np.asarray(interior.coords))
        holes.append(ring if ring is not None and Polygon(ring).is_valid else np.asarray(interior.coords))
    result = Polygon(shell, holes)
    if not result.is_valid:
        result = Polygon(shell, [np.asarray(i.coords) for i in upright.interiors])
        if not result.is_valid:
            return None
    if abs(result.area - area) > AREA_TOLERANCE * area:
        return None
    result = affinity.rotate(result, angle, origin=centre)
    if result.symmetric_difference(part).area > SHAPE_TOLERANCE * area:  # the same area, another shape
        return None
    return result


def denoised(part: Polygon) -> Polygon:
    """``part`` opened and closed by :data:`DENOISE_PX`: single pixels in or out along the outline are not walls
    (``part`` itself when that would take most of it away)."""
    opened = part.buffer(DENOISE_PX, join_style=2).buffer(-2 * DENOISE_PX, join_style=2).buffer(
        DENOISE_PX, join_style=2)
    return opened if isinstance(opened, Polygon) and opened.area > 0.5 * part.area else part


def rectilinear_ring(ring: np.ndarray) -> Optional[np.ndarray]:
    """A closed ring (k, 2) whose edges run nearly along the axes as an axis-parallel ring (m, 2): stairs
    straightened, each run of horizontal (vertical) edges one edge at their length-weighted mean y (x), runs
    shorter than :data:`MIN_STEP_PX` merged away. None when it is not rectilinear."""
    from shapely.geometry import LinearRing

    outline = np.asarray(LinearRing(ring).simplify(OUTLINE_TOLERANCE_PX, preserve_topology=False).coords)
    edges = np.diff(outline, axis=0)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    if len(edges) < 4 or lengths.sum() == 0:
        return None
    direction = np.degrees(np.arctan2(np.abs(edges[:, 1]), np.abs(edges[:, 0])))  # 0: horizontal, 90: vertical
    long_enough = lengths >= MIN_STEP_PX  # shorter edges are the mask's noise, whatever their direction
    horizontal = (direction <= ANGLE_SLACK_DEG) & long_enough
    vertical = (direction >= 90 - ANGLE_SLACK_DEG) & long_enough
    if lengths[horizontal | vertical].sum() < RECTILINEAR_SHARE * lengths[long_enough].sum():
        return None
    # runs: [is_horizontal, level (weighted sum), weight, length]; diagonal corner cuts are dropped
    runs: List[List] = []
    for edge, length, is_h, is_v, start in zip(edges, lengths, horizontal, vertical, outline[:-1]):
        if not (is_h or is_v) or length == 0:
            continue
        middle = start + edge / 2
        level = middle[1] if is_h else middle[0]
        if runs and runs[-1][0] == is_h:
            runs[-1][1] += level * length
            runs[-1][2] += length
        else:
            runs.append([bool(is_h), level * length, length])
    if len(runs) > 1 and runs[0][0] == runs[-1][0]:  # the ring closes inside a run
        last = runs.pop()
        runs[0][1] += last[1]
        runs[0][2] += last[2]
    runs = merge_short_steps(runs)
    if runs is None:
        return None
    levels = [(is_h, total / weight) for is_h, total, weight in runs]
    corners = []
    for (is_h, level), (_, next_level) in zip(levels, levels[1:] + levels[:1]):
        corners.append((next_level, level) if is_h else (level, next_level))
    corners.append(corners[0])
    return np.asarray(corners, dtype=float)


def merge_short_steps(runs: Sequence[List]) -> Optional[List[List]]:
    """Alternating horizontal/vertical runs with every run at least :data:`MIN_STEP_PX` long (its extent along
    the outline is taken as its weight), short ones merged into their neighbours; None when fewer than 4 remain
    or they do not alternate."""
    runs = [list(r) for r in runs]
    while True:
        if len(runs) < 4 or len(runs) % 2:
            return None
        if any(a[0] == b[0] for a, b in zip(runs, runs[1:] + runs[:1])):
            return None
        shortest = min(range(len(runs)), key=lambda i: runs[i][2])
        if runs[shortest][2] >= MIN_STEP_PX or len(runs) == 4:
            return runs
        # drop the short run; its two neighbours (the other direction) become one run. Rotated so that they
        # are the first three: the ring's order is kept.
        k = (shortest - 1) % len(runs)
        before, _, after, *rest = runs[k:] + runs[:k]
        runs = [[before[0], before[1] + after[1], before[2] + after[2]]] + rest

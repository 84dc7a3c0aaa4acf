"""Figure 10: what each polygon option costs per 1,000 masks, against polygonizing alone, measured in one run.

The masks are generated: buildings (rectangles and L-shapes at random angles, 40-120 pixels) and natural objects
(blobs of random discs), each with a ragged outline, in crops of their box's neighbourhood on a north-up 0.5 m
grid. Each option runs on the polygons traced from the same masks; the figure prints milliseconds per 1,000
masks for tracing alone and for each option on top of it, and the ratio of each to tracing. There is no target:
the figure says what an option costs.

    .venv/bin/python bench/polygon_costs.py      the figure alone (about a minute on 2 cores)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MASKS = 1000
OPTIONS = (("regularise", {"regularise": True}), ("smooth 2 px", {"smooth_px": 2.0}),
           ("simplify 1 px", {"simplify_px": 1.0}))


def masks(rng, count: int):
    """``count`` (bool mask (rows, cols), pixel-space box polygon) pairs, half buildings, half blobs."""
    from rasterio import features
    from scipy import ndimage
    from shapely import affinity
    from shapely.geometry import Polygon

    out = []
    for i in range(count):
        size = rng.uniform(40, 120)
        if i % 2 == 0:
            w, h = size, size * rng.uniform(0.5, 1.0)
            if i % 4 == 0:
                shape = Polygon([(0, 0), (w, 0), (w, h), (0, h)])
            else:
                shape = Polygon([(0, 0), (w, 0), (w, h / 2), (w / 2, h / 2), (w / 2, h), (0, h)])
            shape = affinity.rotate(shape, rng.uniform(0, 90), origin="centroid")
        else:
            discs = [affinity.translate(Polygon(np.c_[np.cos(np.linspace(0, 6.3, 24)),
                                                      np.sin(np.linspace(0, 6.3, 24))]), *rng.normal(0, 0.5, 2))
                     .buffer(0) for _ in range(4)]
            shape = affinity.scale(discs[0].union(discs[1]).union(discs[2]).union(discs[3]), size / 3, size / 3)
        x0, y0, x1, y1 = shape.bounds
        pad = 12
        shape = affinity.translate(shape, pad - x0, pad - y0)
        rows, cols = int(y1 - y0) + 2 * pad, int(x1 - x0) + 2 * pad
        mask = features.rasterize([(shape, 1)], out_shape=(rows, cols)).astype(bool)
        edge = mask ^ ndimage.binary_erosion(mask) | ndimage.binary_dilation(mask) ^ mask
        ragged = edge & (rng.random(mask.shape) < 0.15)  # a pixel in or out here and there along the outline
        mask[ragged] = ~mask[ragged]
        out.append((mask, shape.envelope))
    return out


def figure(log, out) -> bool:
    """Measure and print figure 10; True (it has no target). A mask noted is one whose ``detail`` says what the
    option could not do (regularise: a shape left as traced, not rectilinear)."""
    from affine import Affine

    from samrs_qgis.masks import MaskCrop, polygonize
    from samrs_qgis.polygon_shaping import PolygonShaping, shape_in_map

    transform = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
    generated = masks(np.random.default_rng(5), MASKS)
    crops = [(MaskCrop(0, 0, mask), box) for mask, box in generated]
    t0 = time.perf_counter()
    traced = [polygonize(crop, transform) for crop, _ in crops]
    tracing = time.perf_counter() - t0
    costs, notes = {}, {}
    for name, settings in OPTIONS:
        shaping = PolygonShaping(**settings)
        t0 = time.perf_counter()
        results = [shape_in_map(polygon, shaping, transform, crop, box) for polygon, (crop, box) in zip(traced, crops)]
        costs[name] = time.perf_counter() - t0
        noted = [bool(note) for _, note in results]
        notes[name] = f"noted: {sum(noted[0::2])} buildings, {sum(noted[1::2])} blobs"
        log(f"  {name}: {1000 * costs[name] / MASKS * 1000:.0f} ms per 1000 masks ({notes[name]})")
    per_thousand = lambda seconds: 1000 * seconds / MASKS * 1000  # noqa: E731 - ms per 1,000 masks
    parts = ", ".join(f"{name} {per_thousand(costs[name]):.0f} ms ({costs[name] / tracing:.2f}x tracing; "
                      f"{notes[name]})" for name, _ in OPTIONS)
    out(f"Fig 10 polygon options per 1,000 masks ({MASKS // 2} buildings, {MASKS // 2} blobs, 40-120 px, ragged "
        f"outlines): tracing alone {per_thousand(tracing):.0f} ms; on top of it: {parts} | no target (what each "
        "option costs)")
    return True


def main():
    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    figure(bench.log, bench.out)


if __name__ == "__main__":
    main()

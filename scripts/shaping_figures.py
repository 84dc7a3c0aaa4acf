"""The README's figures of the polygon options: each result before and after the option, drawn by the previews'
renderer (QGIS, the styles the outputs open with) into docs/figures/.

* regularise: a generated scene of buildings (rectangles and L-shapes at several angles; a tank, which is left as
  traced), segmented with GrabCut from boxes along the map's axes;
* smooth and simplify: the demo's tree crowns (demo/OSBS_029.tif, its boxes), GrabCut.

    make figures        (or: .venv/bin/python scripts/shaping_figures.py [OUT_DIR])

GrabCut needs no model file, so anyone can make them again; SAM's masks shape the same way.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "docs" / "figures"
PIXEL = 0.3  # metres: the buildings' scene is a 0.3 m orthophoto
# the buildings: (outline in pixels, before rotation about its centre; angle in degrees)
BUILDINGS = [([(0, 0), (70, 0), (70, 40), (0, 40)], 17), ([(0, 0), (60, 0), (60, 25), (25, 25), (25, 55), (0, 55)], -28),
             ([(0, 0), (45, 0), (45, 45), (0, 45)], 40), ([(0, 0), (80, 0), (80, 30), (0, 30)], 5),
             ([(0, 0), (50, 0), (50, 20), (35, 20), (35, 50), (15, 50), (15, 20), (0, 20)], 62)]
CENTRES = [(70, 70), (200, 80), (320, 75), (110, 200), (240, 210)]
TANK = (350, 215, 28)  # centre x, y and radius in pixels
SIZE = (420, 290)  # columns, rows
ZOOM = (150, 30, 300, 255)  # the figure's close-up: col0, row0, col1, row1
DEMO_EXTENT_M = 20.0  # the demo figure shows this many metres across, from the raster's top-left corner


def engine_on_path() -> None:
    """``samrs_qgis`` and ``samrs_previews`` importable without the repository root on sys.path (its
    processing/ would shadow QGIS's)."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    links = Path(tempfile.mkdtemp(prefix="samrs-figures-path-"))
    for package in ("samrs_qgis", "samrs_previews"):
        os.symlink(REPO / package, links / package)
    sys.path.insert(0, str(links))


def buildings_scene(folder: Path):
    """The buildings' raster and boxes in ``folder``; (raster, boxes, map extent)."""
    import fiona
    import rasterio
    from affine import Affine
    from rasterio import features
    from rasterio.crs import CRS
    from shapely import affinity
    from shapely.geometry import Point, Polygon, mapping

    transform = Affine(PIXEL, 0, 500000, 0, -PIXEL, 5200000)
    rng = np.random.default_rng(8)
    cols, rows = SIZE
    image = np.stack([np.full((rows, cols), v, float) for v in (92, 118, 70)]) + rng.normal(0, 7, (3, rows, cols))
    shapes = []
    for (outline, angle), (cx, cy) in zip(BUILDINGS, CENTRES):
        shape = Polygon(outline)
        shape = affinity.translate(shape, cx - shape.centroid.x, cy - shape.centroid.y)
        shapes.append(("building", affinity.rotate(shape, angle, origin="centroid"), (178, 92, 80)))
    shapes.append(("tank", Point(TANK[0], TANK[1]).buffer(TANK[2], 64), (226, 226, 218)))
    for _, shape, colour in shapes:
        inside = features.rasterize([(shape, 1)], out_shape=(rows, cols)).astype(bool)
        for band in range(3):
            image[band][inside] = colour[band] + rng.normal(0, 6, inside.sum())
    raster = folder / "buildings.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=cols, height=rows, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32633), transform=transform) as ds:
        ds.write(np.clip(image, 0, 255).astype(np.uint8))
    boxes = folder / "buildings_boxes.gpkg"
    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    with fiona.open(boxes, "w", driver="GPKG", crs_wkt=CRS.from_epsg(32633).to_wkt(),
                    schema={"geometry": "Polygon", "properties": {"class": "str"}}) as out:
        for cls, shape, _ in shapes:
            box = affinity.affine_transform(shape.envelope.buffer(4, join_style=2), to_map)
            out.write({"geometry": mapping(box), "properties": {"class": cls}})
    x0, y1 = transform * (0, 0)
    x1, y0 = transform * (cols, rows)
    return str(raster), str(boxes), (x0, y0, x1, y1)


def segment(raster: str, boxes: str, folder: Path, name: str, **options) -> str:
    from samrs_qgis.boxes import read_box_file
    from samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs_qgis.settings import SegmentOptions

    polygons = folder / name / "masks.gpkg"
    polygons.parent.mkdir()
    segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=str(polygons)),
                  SegmentOptions(backend="grabcut", embedding_cache=False, **options))
    return str(polygons)


def main(out_dir: Path = FIGURES) -> None:
    engine_on_path()
    import rasterio

    from samrs_previews.render import render_side_by_side

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="samrs-figures-"))
    try:
        raster, boxes, extent = buildings_scene(work)
        options = {"class_field": "class", "keep_largest": True}
        raw = segment(raster, boxes, work, "raw", **options)
        regular = segment(raster, boxes, work, "regularise", regularise=True, **options)
        x0, _, _, y1 = extent  # the figure shows the L- and T-shaped buildings close up
        close = (x0 + ZOOM[0] * PIXEL, y1 - ZOOM[3] * PIXEL, x0 + ZOOM[2] * PIXEL, y1 - ZOOM[1] * PIXEL)
        print(render_side_by_side(raster, [(raw, "traced (pixel stairs)"), (regular, "--regularise")], close,
                                  str(out_dir / "regularise.png"), tile=400, outlines=True))
        demo, demo_boxes = str(REPO / "demo" / "OSBS_029.tif"), str(REPO / "demo" / "OSBS_029_boxes.gpkg")
        with rasterio.open(demo) as ds:
            left, top = ds.bounds.left, ds.bounds.top
        crop = (left, top - DEMO_EXTENT_M, left + DEMO_EXTENT_M, top)
        trees = {name: segment(demo, demo_boxes, work, f"trees-{name}", **kw) for name, kw in (
            ("raw", {}), ("smooth", {"smooth_px": 4.0}), ("simplify", {"simplify_px": 2.0}))}
        print(render_side_by_side(demo, [(trees["raw"], "traced"), (trees["smooth"], "--smooth-px 4")], crop,
                                  str(out_dir / "smooth.png"), tile=420, outlines=True))
        print(render_side_by_side(demo, [(trees["raw"], "traced"), (trees["simplify"], "--simplify-px 2")], crop,
                                  str(out_dir / "simplify.png"), tile=420, outlines=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else FIGURES)

"""Builders of real GDAL/OGR test files and small measures shared by the tests."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import fiona
import numpy as np
import rasterio
from affine import Affine
from shapely.geometry import Polygon, mapping, shape

from samrs.samrs_qgis.progress import Progress  # conftest has put the plugin on the path

UTM = "EPSG:32617"


def write_raster(path, data: np.ndarray, transform: Affine, crs: Optional[str] = UTM, nodata=None,
                 colorinterp=None) -> str:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF; returns the path as text."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)
        if colorinterp:
            ds.colorinterp = colorinterp
    return str(path)


def write_boxes(path, polygons: Sequence, crs: Optional[str] = UTM, properties: Optional[List[Dict]] = None,
                schema: Optional[Dict[str, str]] = None, geometry_type: str = "Polygon",
                driver: Optional[str] = None) -> str:
    """Write polygons (shapely, or None for no geometry) with properties to an OGR file."""
    properties = properties or [{} for _ in polygons]
    schema = schema or {k: ("int" if isinstance(v, int) else "float" if isinstance(v, float) else "str")
                        for k, v in (properties[0].items() if properties else [])}
    kwargs = {"driver": driver} if driver else {}
    with fiona.open(path, "w", schema={"geometry": geometry_type, "properties": schema},
                    crs_wkt=rasterio.crs.CRS.from_user_input(crs).to_wkt() if crs else None, **kwargs) as out:
        for geom, props in zip(polygons, properties):
            out.write({"geometry": mapping(geom) if geom is not None else None, "properties": props})
    return str(path)


def pixel_box(transform: Affine, c0, r0, c1, r1) -> Polygon:
    """The map-coordinate polygon of pixel-space rectangle [c0, c1) x [r0, r1) (works for any affine)."""
    corners = [transform * (c0, r0), transform * (c1, r0), transform * (c1, r1), transform * (c0, r1)]
    return Polygon(corners)


def read_features(path, layer=None) -> List[Dict]:
    """All features of a layer as dicts: properties plus ``geometry`` (shapely or None)."""
    with fiona.open(path, layer=layer) as src:
        out = []
        for f in src:
            row = dict(f["properties"])
            row["geometry"] = shape(f["geometry"]) if f["geometry"] else None
            out.append(row)
        return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def synthetic_scene(size: int = 512, seed: int = 0) -> Tuple[np.ndarray, List[Tuple[str, np.ndarray, Tuple[int, int, int, int]]]]:
    """A textured RGB scene with known objects: (image uint8 (3, size, size), [(class, mask, (c0, r0, c1, r1))]).

    Objects are discs ('tank'), rectangles ('building') and ellipses ('pond') in colours that stand
    out from a noisy, two-tone ground; boxes are the objects' tight pixel extents.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    ground = np.where((xx // 128 + yy // 128) % 2 == 0, 95, 120).astype(np.float32)
    image = np.stack([ground * 0.9, ground, ground * 0.7]) + rng.normal(0, 6, (3, size, size))
    objects = []
    specs = [
        ("tank", lambda cx, cy, r: (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2, (230, 230, 225)),
        ("building", lambda cx, cy, r: (abs(xx - cx) <= r) & (abs(yy - cy) <= r * 0.6), (200, 70, 60)),
        ("pond", lambda cx, cy, r: ((xx - cx) / r) ** 2 + ((yy - cy) / (r * 0.55)) ** 2 <= 1, (30, 60, 110)),
    ]
    centres = [(80, 80), (250, 90), (420, 100), (90, 260), (260, 250), (420, 270), (100, 420), (270, 420), (420, 430)]
    k = size / 512  # the layout scales with the scene
    for i, (cx, cy) in enumerate(centres):
        cls, fn, colour = specs[i % 3]
        cx, cy, radius = cx * k, cy * k, (22 + 6 * (i % 4)) * k
        mask = fn(cx, cy, radius)
        for band in range(3):
            image[band][mask] = colour[band] + rng.normal(0, 6, mask.sum())
        rows, cols = np.nonzero(mask)
        objects.append((cls, mask, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def synthetic_files(folder, size: int, seed: int, transform: Affine) -> Tuple[str, str, list]:
    """:func:`synthetic_scene` written into ``folder``: (the raster on ``transform``'s grid, its boxes as a layer
    with the class in field ``cls``, the scene's objects)."""
    image, objects = synthetic_scene(size, seed=seed)
    raster = write_raster(folder / "scene.tif", image, transform)
    boxes = write_boxes(folder / "boxes.gpkg", [pixel_box(transform, *o[2]) for o in objects],
                        properties=[{"cls": o[0]} for o in objects])
    return raster, boxes, objects


class RecordingProgress(Progress):
    """An engine Progress that records what it is told and cancels on demand: when a message starts with
    ``cancel_at``, or once ``cancel_after`` fractions were reported."""

    def __init__(self, cancel_at: Optional[str] = None, cancel_after: Optional[int] = None):
        self.fractions, self.messages, self.warnings = [], [], []
        self.cancel_at, self.cancel_after, self.cancelled = cancel_at, cancel_after, False

    def set_fraction(self, fraction):
        self.fractions.append(fraction)

    def info(self, message):
        self.messages.append(message)
        if self.cancel_at and message.startswith(self.cancel_at):
            self.cancelled = True

    def warning(self, message):
        self.warnings.append(message)

    def is_cancelled(self):
        return self.cancelled or (self.cancel_after is not None and len(self.fractions) >= self.cancel_after)


def review_first_two_masks(layer, classes=("storage-tank", "swimming-pool")) -> Tuple[List[int], str]:
    """Write a review into a dataset's mask layer as the review dock does: the first ok mask rejected, the
    second relabelled to the other of ``classes``. Returns (the ok masks' ids sorted, the new class)."""
    import fiona

    with fiona.open(layer, layer="masks") as src:
        schema, crs, features = src.schema, src.crs_wkt, list(src)
    schema["properties"].update(review="str", class_orig="str")
    masks = sorted(f["properties"]["instance_id"] for f in features if f["properties"]["status"] == "ok")
    rejected, relabelled = masks[0], masks[1]
    old_class = next(f["properties"]["class_name"] for f in features if f["properties"]["instance_id"] == relabelled)
    new_class = next(c for c in classes if c != old_class)
    with fiona.open(layer, "w", driver="GPKG", layer="masks", schema=schema, crs_wkt=crs) as dst:
        for f in features:
            props = dict(f["properties"], review=None, class_orig=None)
            if props["instance_id"] == rejected:
                props["review"] = "rejected"
            elif props["instance_id"] == relabelled:
                props.update(review="relabelled", class_orig=props["class_name"], class_name=new_class)
            dst.write({"geometry": f["geometry"], "properties": props})
    return masks, new_class


def on_common_cells(a, b):
    """The two logit grids over the frame cells both cover (both have 4-pixel cells on the same lattice)."""
    assert a.cell == b.cell == 4

    def at(logits, r0, c0, r1, c1):
        dr, dc = int(logits.origin_y // 4), int(logits.origin_x // 4)
        return logits.grid[r0 - dr:r1 - dr, c0 - dc:c1 - dc]

    r0, c0 = int(max(a.origin_y, b.origin_y) // 4), int(max(a.origin_x, b.origin_x) // 4)
    r1 = int(min(a.origin_y // 4 + a.grid.shape[0], b.origin_y // 4 + b.grid.shape[0]))
    c1 = int(min(a.origin_x // 4 + a.grid.shape[1], b.origin_x // 4 + b.grid.shape[1]))
    assert r1 - r0 >= 8 and c1 - c0 >= 8
    return at(a, r0, c0, r1, c1), at(b, r0, c0, r1, c1)

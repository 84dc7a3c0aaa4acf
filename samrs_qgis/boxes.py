"""Detection boxes: reading a box layer and bringing each box into the raster's pixel space.

A box is any polygon (usually four corners, horizontal or rotated) in the layer's CRS. It is
reprojected *as a polygon* (edges densified first, so a box in EPSG:4326 over a UTM raster keeps its
true shape) and mapped through the inverse geotransform into pixel space, where the SAM prompt is its
enclosing horizontal box (SAMRS's "RH-box"). Boxes that cannot be used are kept with a status.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np
from shapely import wkb
from shapely.geometry import MultiPolygon, Polygon, box as shapely_box, shape
from shapely.geometry.base import BaseGeometry

from .errors import InputError
from .georef import defined_crs_wkt

STATUS_OK = "ok"
STATUS_EMPTY = "empty"  # the backend found no object pixels
STATUS_OUTSIDE = "outside"  # the box does not overlap the raster
STATUS_INVALID = "invalid"  # no geometry, not a polygon, zero area, or not transformable
STATUS_FAILED = "failed"  # its mask could not be computed (on a cluster: the workers given it died each time)
STATUSES = (STATUS_OK, STATUS_EMPTY, STATUS_OUTSIDE, STATUS_INVALID, STATUS_FAILED)

DENSIFY_STEPS = 16  # points inserted per box edge before reprojection
SNAP = 1e-6  # pixel coordinates within this of an integer are that integer (float noise of the transform)



@dataclass
class BoxFeature:
    """One input box as read from its layer (any CRS)."""

    index: int  # 0-based position in the layer; instance ids follow it unless an id field is given
    fid: Any
    attributes: Dict[str, Any]
    geometry: Optional[BaseGeometry]


@dataclass
class BoxSource:
    """A layer of boxes: its fields (name -> fiona type name), CRS (WKT, '' when unknown) and features.

    ``features`` may be a one-shot iterator; the engine reads it once.
    """

    name: str
    fields: Dict[str, str]
    crs_wkt: str
    geometry_type: str  # 'Polygon', 'MultiPolygon', 'Point', … as declared by the source, or 'Unknown'
    features: Iterable[BoxFeature]
    feature_count: Optional[int] = None
    path: Optional[str] = None  # the file the layer is read from, when it is one (outputs must never replace it)


@dataclass
class PixelBox:
    """A box in the raster's pixel space, with what the outputs need to know about it."""

    feature: BoxFeature
    instance_id: int  # 1-based, unique per run; the value in the instance raster
    class_name: Optional[str]
    class_id: Optional[int]
    status: str
    detail: str = ""
    polygon: Optional[Polygon] = None  # the box polygon in pixel space
    bounds: Optional[Tuple[float, float, float, float]] = None  # RH-box (x0, y0, x1, y1), clipped to the raster

    @property
    def is_usable(self) -> bool:
        return self.status == STATUS_OK

    @property
    def size(self) -> Tuple[float, float]:
        x0, y0, x1, y1 = self.bounds
        return x1 - x0, y1 - y0


def check_layer_name(path: str, layer: str, what: str) -> None:
    """Raise an InputError listing the layers of ``path`` when it has none called ``layer`` (GDAL's own message
    is a bare "Null layer"). ``what`` names the source in the message, e.g. "Box layer 'boxes.gpkg'"."""
    import fiona

    try:
        layers = fiona.listlayers(path)
    except Exception:  # not an OGR source: opening it reports that
        return
    if layer not in layers:
        raise InputError(f"{what} has no layer '{layer}'; its layers are: {', '.join(layers) or '(none)'}. "
                         "Name one of them.")


def read_box_file(path: str, layer: Optional[str] = None) -> BoxSource:
    """Open a box layer from any OGR source (GPKG, Shapefile, GeoJSON, FlatGeobuf, …) with fiona; a ``layer``
    the source does not have is an InputError listing the layers it has."""
    import fiona

    if layer:
        check_layer_name(path, layer, f"Box layer '{path}'")
    try:
        collection = fiona.open(path, layer=layer) if layer else fiona.open(path)
    except Exception as exc:  # fiona raises several types for unreadable sources
        raise InputError(f"Box layer '{path}' cannot be opened by OGR ({exc}). "
                         "Give a vector file (GPKG, Shapefile, GeoJSON, …) holding polygons.") from exc
    fields = {name: ftype.split(":")[0] for name, ftype in collection.schema["properties"].items()}
    crs_wkt = collection.crs_wkt or ""
    geometry_type = collection.schema.get("geometry") or "Unknown"

    def features() -> Iterator[BoxFeature]:
        with collection:
            for index, feat in enumerate(collection):
                geom = feat["geometry"]
                yield BoxFeature(index=index, fid=feat.get("id", index),
                                 attributes=dict(feat["properties"]),
                                 geometry=shape(geom) if geom is not None else None)

    return BoxSource(name=path, path=path, fields=fields, crs_wkt=crs_wkt, geometry_type=str(geometry_type),
                     features=features(), feature_count=len(collection))


def geometry_from_wkb(data: Optional[bytes]) -> Optional[BaseGeometry]:
    """A shapely geometry from WKB (as QGIS exports it); None for no geometry."""
    if not data:
        return None
    return wkb.loads(bytes(data))


def _densify_ring(coords: np.ndarray, steps: int) -> np.ndarray:
    """Ring vertices (n, 2) with ``steps - 1`` points inserted on every edge."""
    a, b = coords[:-1], coords[1:]
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    pts = a[:, None, :] + (b - a)[:, None, :] * t[None, :, None]
    return np.vstack([pts.reshape(-1, 2), coords[-1:]])


def _snap(values: np.ndarray) -> np.ndarray:
    rounded = np.round(values)
    return np.where(np.abs(values - rounded) < SNAP, rounded, values)


class PixelProjector:
    """Maps geometries from the box layer's CRS to the raster's pixel space."""

    def __init__(self, source_crs_wkt: str, raster_crs, raster_transform, raster_size: Tuple[int, int],
                 layer_name: str = "box layer"):
        from pyproj import CRS, Transformer

        self.inverse = ~raster_transform
        self.width, self.height = raster_size
        self.transformer = None
        source_crs_wkt = defined_crs_wkt(source_crs_wkt)
        if source_crs_wkt and raster_crs:
            src = CRS.from_wkt(source_crs_wkt)
            dst = CRS.from_wkt(raster_crs.to_wkt())
            if not src.equals(dst, ignore_axis_order=True):
                self.transformer = Transformer.from_crs(src, dst, always_xy=True)
        elif bool(source_crs_wkt) != bool(raster_crs):
            which = "raster" if not raster_crs else f"box layer '{layer_name}'"
            raise InputError(f"The {which} has no CRS (unknown CRS), so boxes cannot be placed on the raster. "
                             "Assign the right CRS to it (in QGIS: Layer Properties > Source, or "
                             "`gdal_edit.py -a_srs` / `ogr2ogr -a_srs`).")

    def polygon_to_pixels(self, polygon: Polygon) -> Polygon:
        """Exterior of ``polygon`` (layer CRS) as a polygon in pixel space; holes are irrelevant to a box."""
        ring = np.asarray(polygon.exterior.coords, dtype=np.float64)[:, :2]
        if self.transformer is not None:
            ring = _densify_ring(ring, DENSIFY_STEPS)
            x, y = self.transformer.transform(ring[:, 0], ring[:, 1])
            ring = np.column_stack([x, y])
            if not np.all(np.isfinite(ring)):
                raise ValueError("the box cannot be transformed to the raster's CRS")
        a, b, c, d, e, f = self.inverse.a, self.inverse.b, self.inverse.c, self.inverse.d, self.inverse.e, self.inverse.f
        cols = _snap(a * ring[:, 0] + b * ring[:, 1] + c)
        rows = _snap(d * ring[:, 0] + e * ring[:, 1] + f)
        return Polygon(np.column_stack([cols, rows]))


def _single_polygon(geometry: BaseGeometry) -> Optional[Polygon]:
    """The polygon a box stands for: itself, or for a multipolygon the convex hull of its parts."""
    if isinstance(geometry, Polygon):
        return geometry
    if isinstance(geometry, MultiPolygon):
        return geometry.convex_hull if not geometry.is_empty else None
    return None


def project_box(feature: BoxFeature, projector: PixelProjector, instance_id: int,
                class_name: Optional[str], class_id: Optional[int]) -> PixelBox:
    """Place one box on the raster and give it a status (ok / outside / invalid)."""
    result = PixelBox(feature=feature, instance_id=instance_id, class_name=class_name, class_id=class_id,
                      status=STATUS_INVALID)
    geometry = feature.geometry
    if geometry is None or geometry.is_empty:
        result.detail = "the feature has no geometry"
        return result
    polygon = _single_polygon(geometry)
    if polygon is None:
        result.detail = f"a {geometry.geom_type} is not a box; boxes are polygons"
        return result
    try:
        pixel_polygon = projector.polygon_to_pixels(polygon)
    except ValueError as exc:
        result.detail = str(exc)
        return result
    if not pixel_polygon.is_valid or pixel_polygon.area <= 0:
        result.detail = "the box is degenerate (zero area or self-intersecting)"
        return result
    result.polygon = pixel_polygon
    raster_area = shapely_box(0, 0, projector.width, projector.height)
    if not pixel_polygon.intersects(raster_area) or pixel_polygon.intersection(raster_area).area <= 0:
        result.status = STATUS_OUTSIDE
        result.detail = "the box does not overlap the raster"
        return result
    x0, y0, x1, y1 = pixel_polygon.bounds
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(projector.width)), min(y1, float(projector.height)))
    result.bounds = clipped
    result.status = STATUS_OK
    if clipped != (x0, y0, x1, y1):
        result.detail = "the box extends beyond the raster; the prompt was clipped to it"
    return result


def check_layer(source: BoxSource, class_field: Optional[str], id_field: Optional[str]) -> None:
    """Layer-level checks that need no feature: geometry type and named fields."""
    gtype = source.geometry_type.replace("3D ", "").replace(" ", "")
    if gtype not in ("Polygon", "MultiPolygon", "Unknown", "Any", "None", "GeometryCollection", "") and \
            "Polygon" not in gtype:
        raise InputError(f"Box layer '{source.name}' holds {source.geometry_type} geometries; boxes must be "
                         "polygons (four-corner boxes, horizontal or rotated).")
    for role, name in (("class", class_field), ("id", id_field)):
        if name and name not in source.fields:
            raise InputError(f"The {role} field '{name}' is not in box layer '{source.name}'. "
                             f"Its fields are: {', '.join(source.fields) or '(none)'}.")

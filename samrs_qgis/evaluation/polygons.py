"""Reading a polygon layer onto the pixel grid: one mask per key, streamed feature by feature.

**CRS**: a layer in another CRS than the grid is *reprojected* to it (pyproj, edges densified first so
that long straight edges follow their true curved path), then mapped through the grid's inverse
geotransform into pixel space (col, row). A layer without a CRS over a grid with one (or the reverse) is
refused.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from ..boxes import check_layer_name
from ..errors import InputError
from ..georef import defined_crs_wkt
from ..progress import Progress
from ..vector_output import SHAPEFILE_RESULT_NAMES
from ..window_masks import empty_window, rasterize_window
from .grid import Grid, GridMask
from .sources import Key, PolygonMasks

STATUS_OK = "ok"  # the produced layer's status of a box with a mask; other statuses mean no mask
DENSIFY_PARTS = 32  # when reprojecting, no edge is longer than 1/32 of the geometry's larger extent


def _normalise_key(value) -> Optional[Key]:
    """Keys compare across sources whatever their type: 3, 3.0 and '3' are the same instance."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else str(value)
    text = str(value).strip()
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
            return int(number) if number.is_integer() else text
        except ValueError:
            return text


def _class_text(value) -> Optional[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class _ToPixels:
    """Maps geometries from a layer's CRS to the grid's pixel space (reprojecting when the CRSs differ)."""

    def __init__(self, layer_crs_wkt: str, grid: Grid, layer_label: str):
        from pyproj import CRS, Transformer

        self.inverse = ~grid.transform
        self.transformer = None
        grid_wkt = grid.crs.to_wkt() if grid.crs else ""
        layer_crs_wkt = defined_crs_wkt(layer_crs_wkt)  # GDAL's "Undefined ... SRS" means no CRS
        if layer_crs_wkt and grid_wkt:
            src, dst = CRS.from_wkt(layer_crs_wkt), CRS.from_wkt(grid_wkt)
            if not src.equals(dst, ignore_axis_order=True):
                self.transformer = Transformer.from_crs(src, dst, always_xy=True)
        elif layer_crs_wkt:  # and the grid has none
            raise InputError(f"The grid raster '{grid.path}' has no CRS but the {layer_label} has one, so the "
                             "polygons cannot be placed on its pixels. Assign the right CRS to the raster "
                             "(`gdal_edit.py -a_srs EPSG:…`, or in QGIS: Layer Properties > Source), or give as "
                             "grid the georeferenced source image.")
        elif grid_wkt:  # and the layer has none
            raise InputError(f"The {layer_label} has no CRS, so its polygons cannot be placed on the grid of "
                             f"'{grid.path}'. Assign the right CRS to the layer (`ogr2ogr -a_srs EPSG:…`, or in "
                             "QGIS: Layer Properties > Source).")

    def _coords(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if self.transformer is not None:
            x, y = self.transformer.transform(x, y)
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise ValueError("not transformable")
        inv = self.inverse
        return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f

    def __call__(self, polygon):
        """A Polygon in the layer's CRS as a Polygon in the grid's pixel space (col, row)."""
        from shapely.geometry import Polygon
        from shapely.ops import transform

        if self.transformer is not None:
            x0, y0, x1, y1 = polygon.bounds
            longest = max(x1 - x0, y1 - y0) / DENSIFY_PARTS
            if longest > 0:
                polygon = Polygon(_densify(polygon.exterior.coords, longest),
                                  [_densify(ring.coords, longest) for ring in polygon.interiors])
        return transform(self._coords, polygon)


def _densify(ring, longest: float) -> np.ndarray:
    """Ring vertices (n, 2) with points inserted so that no edge is longer than ``longest`` (layer units).

    Reprojection bends straight edges; densified, the polygon follows the bend (works with shapely 1.8,
    which has no ``segmentize``).
    """
    xy = np.asarray(ring, dtype=np.float64)[:, :2]
    if len(xy) < 2:
        return xy
    a, b = xy[:-1], xy[1:]
    steps = np.maximum(1, np.ceil(np.hypot(*(b - a).T) / longest)).astype(int)
    parts = [a[i] + (b[i] - a[i]) * (np.arange(n) / n)[:, None] for i, n in enumerate(steps.tolist())]
    return np.vstack(parts + [xy[-1:]])


def _polygon_parts(geometry) -> Optional[list]:
    """Polygonal parts of a geometry (empty list for an empty one); None when it holds something else."""
    if geometry is None or geometry.is_empty:
        return []
    kind = geometry.geom_type
    if kind == "Polygon":
        return [geometry]
    if kind == "MultiPolygon":
        return [g for g in geometry.geoms if not g.is_empty]
    if kind == "GeometryCollection":
        parts = []
        for g in geometry.geoms:
            sub = _polygon_parts(g)
            if sub is None:
                return None
            parts.extend(sub)
        return parts
    return None


def _find_field(fields: Sequence[str], name: str) -> Optional[str]:
    """The layer's field called ``name`` (case-insensitive, as OGR is); the Shapefile short name of ours too."""
    lowered = {f.lower(): f for f in fields}
    for candidate in (name, SHAPEFILE_RESULT_NAMES.get(name)):
        if candidate and candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def read_polygon_masks(spec: PolygonMasks, role: str, grid: Grid, key_field: str, class_field: Optional[str],
                       score_field: Optional[str], progress: Progress,
                       status_field: Optional[str] = None) -> Dict[Key, GridMask]:
    """Stream a polygon layer feature by feature into per-key masks on ``grid``.

    Only the feature at hand and its mask window are in memory; what is kept per feature is its RLE.
    ``score_field`` / ``status_field`` are read where the layer has them (the produced layer).
    """
    import fiona
    from shapely.geometry import shape

    label = f"{role} layer '{spec.path}'" + (f" (layer '{spec.layer}')" if spec.layer else "")
    if spec.layer:
        check_layer_name(spec.path, spec.layer, f"The {role} masks '{spec.path}'")
    try:
        collection = fiona.open(spec.path, layer=spec.layer) if spec.layer else fiona.open(spec.path)
    except Exception as exc:  # fiona raises several types for unreadable sources
        raise InputError(f"The {label} cannot be opened by OGR ({exc}). Give a polygon layer "
                         "(GPKG, Shapefile, GeoJSON, …) or an instance raster.") from exc
    masks: Dict[Key, GridMask] = {}
    with collection:
        fields = list(collection.schema["properties"])
        key_name = _find_field(fields, key_field)
        if key_name is None:
            raise InputError(f"The key field '{key_field}' is not in the {label}. Its fields are: "
                             f"{', '.join(fields) or '(none)'}. Name the field that holds the instance ids "
                             "matching the produced layer's instance_id (key_field).")
        class_name = None
        if class_field:
            class_name = _find_field(fields, class_field)
            if class_name is None:
                raise InputError(f"The class field '{class_field}' is not in the {label}. Its fields are: "
                                 f"{', '.join(fields) or '(none)'}. Name an existing field, or none.")
        score_name = _find_field(fields, score_field) if score_field else None
        status_name = _find_field(fields, status_field) if status_field else None
        to_pixels = _ToPixels(collection.crs_wkt or "", grid, label)
        for index, feature in enumerate(collection):
            if index % 256 == 0:
                progress.check_cancelled()
            props = feature["properties"]
            key = _normalise_key(props.get(key_name))
            fid = feature.get("id", index)
            if key is None:
                raise InputError(f"Feature {fid} of the {label} has no value in its key field '{key_name}'. "
                                 "Every instance needs its id there.")
            if key in masks:
                raise InputError(f"The key {key!r} appears on more than one feature of the {label} (field "
                                 f"'{key_name}'). Keys must be unique per instance: check the key field, or merge "
                                 "the parts of one instance into one multipolygon (e.g. Dissolve by that field).")
            geometry = shape(feature["geometry"]) if feature["geometry"] else None
            status = props.get(status_name) if status_name else None
            if status is not None and str(status).strip().lower() != STATUS_OK:
                geometry = None  # our layer: boxes that are not ok have no mask
            parts = _polygon_parts(geometry)
            if parts is None:
                raise InputError(f"Feature {fid} (key {key!r}) of the {label} is a {geometry.geom_type}; masks "
                                 "must be polygons.")
            window, row, col = empty_window()
            if parts:
                try:
                    pixel_parts = [to_pixels(p) for p in parts]
                except ValueError:
                    pixel_parts = None
                if pixel_parts is None or not all(np.all(np.isfinite(p.bounds)) for p in pixel_parts):
                    raise InputError(f"Feature {fid} (key {key!r}) of the {label} cannot be transformed to the "
                                     f"CRS of the grid raster '{grid.path}'. Check the layer's CRS.")
                window, row, col = rasterize_window(pixel_parts, grid.width, grid.height)
            score = None
            if score_name is not None:
                value = props.get(score_name)
                score = float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) \
                    else None
            masks[key] = GridMask.from_window(window, row, col, grid,
                                              _class_text(props.get(class_name)) if class_name else None, score)
    return masks

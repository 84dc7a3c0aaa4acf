"""The polygon layer: exactly one feature per input box, streamed to any OGR format with fiona.

Fields: the box's own attributes (renamed ``src_<name>`` where they clash with ours), then
``instance_id`` (``inst_id`` in a Shapefile, whose names hold 10 characters), ``class_name``, ``class_id``, ``score``, ``area_px``, ``area_m2``, ``status``, ``detail``.
Geometry: the box's whole mask as a valid MultiPolygon in the raster's CRS (null for boxes without a
mask). Overlapping masks overlap here too; only the rasters apply the ownership rule.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, List, Optional

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from .errors import InputError

VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".sqlite": "SQLite",
    ".gml": "GML",
    ".kml": "KML",
}

RESULT_FIELDS = {
    "instance_id": "int",
    "class_name": "str",
    "class_id": "int",
    "score": "float",
    "area_px": "int",
    "area_m2": "float",
    "status": "str",
    "detail": "str",
}


def vector_driver(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in VECTOR_DRIVERS:
        raise InputError(f"The polygon output '{path}' ends in '{ext or '(no extension)'}', which names no vector "
                         f"format the polygons can be written as. Give a name ending in one of: "
                         f"{', '.join(VECTOR_DRIVERS)}.")
    return VECTOR_DRIVERS[ext]


# Shapefile (DBF) field names hold at most 10 characters: the result fields that are longer get these.
SHAPEFILE_RESULT_NAMES = {"instance_id": "inst_id"}
SHAPEFILE_NAME_LENGTH = 10
WRITE_CHUNK = 256  # features per write call (one GeoPackage transaction each)


def result_field_names(driver: str) -> Dict[str, str]:
    """Result field -> its name in a layer written by ``driver``."""
    if driver == "ESRI Shapefile":
        return {n: SHAPEFILE_RESULT_NAMES.get(n, n) for n in RESULT_FIELDS}
    return {n: n for n in RESULT_FIELDS}


def output_field_names(source_fields: Dict[str, str], driver: str = "GPKG") -> Dict[str, str]:
    """Source field name -> name in the output: ``src_`` prefix where it clashes with a result field,
    and for Shapefiles cut to 10 characters and made unique (so no source field takes a result's name)."""
    limit = SHAPEFILE_NAME_LENGTH if driver == "ESRI Shapefile" else None
    taken = {n.lower() for n in result_field_names(driver).values()}
    renamed = {}
    for name in source_fields:
        candidate = name if name.lower() not in taken else f"src_{name}"
        candidate = candidate[:limit] if limit else candidate
        suffix = 1
        while candidate.lower() in taken:
            tail = f"_{suffix}"
            candidate = (candidate[:limit - len(tail)] if limit else candidate) + tail
            suffix += 1
        taken.add(candidate.lower())
        renamed[name] = candidate
    return renamed


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    return value


class AreaCalculator:
    """Area in square metres of a geometry in a given CRS: planar for projected CRSs, geodesic for
    geographic ones, None when the CRS is unknown."""

    def __init__(self, crs_wkt: str):
        self._factor = None
        self._geod = None
        if not crs_wkt:
            return
        from pyproj import CRS

        crs = CRS.from_wkt(crs_wkt)
        if crs.is_geographic:
            self._geod = crs.get_geod()
        elif crs.is_projected and crs.axis_info:
            self._factor = crs.axis_info[0].unit_conversion_factor

    def area_m2(self, geometry: Optional[BaseGeometry]) -> Optional[float]:
        if geometry is None:
            return 0.0 if (self._factor or self._geod) else None
        if self._factor:
            return geometry.area * self._factor ** 2
        if self._geod is not None:
            return abs(self._geod.geometry_area_perimeter(geometry)[0])
        return None


def _open_layer(path: str, driver: str, schema: Dict, crs_wkt: str, layer_name: str,
                tags: Optional[Dict[str, str]]):
    import fiona

    options = {"layer": layer_name} if driver in ("GPKG", "SQLite") else {}
    collection = fiona.open(path, "w", driver=driver, schema=schema, crs_wkt=crs_wkt or None, **options)
    if tags and driver == "GPKG":
        collection.update_tags(tags)
    return collection


class PolygonWriter:
    """Takes result features in any order and writes the layer in input order, one feature per box.

    Features go to a scratch GeoPackage as they are made (windows do not follow the input order), under
    positional field names (a source field such as ``fid`` would otherwise become the GeoPackage's
    feature id); ``close`` copies them into ``path`` by input index, fetching each by its feature id.
    Memory: one integer per feature and at most :data:`WRITE_CHUNK` features, never the layer. Features are
    written in chunks: fiona commits a GeoPackage transaction per ``write`` call.
    """

    def __init__(self, path: str, scratch_path: str, source_fields: Dict[str, str], crs_wkt: str,
                 layer_name: str, tags: Optional[Dict[str, str]] = None):
        """``tags``: layer metadata (GeoPackage keeps it; formats without layer metadata drop it)."""
        self._path, self._scratch_path = path, scratch_path
        self._crs_wkt, self._layer_name, self._tags = crs_wkt, layer_name, tags
        driver = vector_driver(path)
        self._renamed = output_field_names(source_fields, driver)
        self._result_names = result_field_names(driver)
        properties = {self._renamed[n]: (t if t in ("int", "float", "str", "bool") else "str")
                      for n, t in source_fields.items()}
        properties.update({self._result_names[n]: t for n, t in RESULT_FIELDS.items()})
        self.schema = {"geometry": "MultiPolygon", "properties": properties}
        self._names = list(properties)
        scratch_schema = {"geometry": "MultiPolygon",
                          "properties": {f"p{i}": t for i, t in enumerate(properties.values())}}
        self._scratch = _open_layer(scratch_path, "GPKG", scratch_schema, crs_wkt, "scratch", None)
        self.areas = AreaCalculator(crs_wkt)
        self._fids: Dict[int, int] = {}  # input index -> scratch feature id
        self._pending: List[Dict[str, Any]] = []  # scratch features not yet written

    def write(self, index: int, attributes: Dict[str, Any], result: Dict[str, Any],
              geometry: Optional[BaseGeometry]) -> None:
        """The feature of the box at input position ``index`` (any order; each index once)."""
        properties = {self._renamed[k]: _plain(v) for k, v in attributes.items() if k in self._renamed}
        result = dict(result, area_m2=self.areas.area_m2(geometry))
        properties.update({self._result_names[k]: v for k, v in result.items()})
        self._pending.append({"geometry": mapping(geometry) if geometry is not None else None,
                              "properties": {f"p{i}": properties.get(n) for i, n in enumerate(self._names)}})
        self._fids[index] = len(self._fids) + 1  # a new GeoPackage table numbers features 1, 2, … as written
        if len(self._pending) >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._scratch.writerecords(self._pending)
        self._pending = []

    def close(self) -> None:
        """Write the layer in input order (once every feature was written)."""
        import fiona

        if self._pending:
            self._flush()
        self._scratch.close()
        with fiona.open(self._scratch_path) as scratch, \
                _open_layer(self._path, vector_driver(self._path), self.schema, self._crs_wkt, self._layer_name,
                            self._tags) as out:
            chunk = []
            for index in sorted(self._fids):
                feature = scratch[self._fids[index]]
                props = feature["properties"]
                chunk.append({"geometry": feature["geometry"],
                              "properties": {n: props[f"p{i}"] for i, n in enumerate(self._names)}})
                if len(chunk) >= WRITE_CHUNK:
                    out.writerecords(chunk)
                    chunk = []
            if chunk:
                out.writerecords(chunk)

    def abandon(self) -> None:
        """Close the scratch layer without writing the output (a failed or cancelled run)."""
        self._pending = []
        self._scratch.close()

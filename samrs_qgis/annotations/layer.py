"""Writing annotations as a GeoPackage box layer: one Polygon feature per annotation, in map coordinates.

Fields: ``class_name`` (text), ``class_id`` (integer), ``difficult`` (integer, null when the file has none),
``source`` (annotation file name), ``line`` (1-based line of the object in that file, null when unknown),
``object_no`` (1-based position of the object in that file), then every extra attribute of the formats
(``truncated``, ``pose``, ``gsd``, ``angle``, CSV columns, …), typed by their values. An extra attribute
named like one of these fields (or ``fid``/``geom``) is written as ``attr_<name>``.

A GeoPackage cannot hold a layer without CRS. A layer in pixel space (no CRS) gets the GeoPackage's
"Undefined Cartesian SRS" (srs_id -1): QGIS 3.22 never reprojects it, so it stays over the ungeoreferenced
image whatever the project CRS. (GDAL's default for no CRS, srs_id 0 "Undefined geographic SRS", is
reprojected by QGIS as if it were degrees: measured, it lands elsewhere in an EPSG:3857 project.)
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import fiona
import numpy as np
from affine import Affine

from ..errors import InputError
from ..georef import UNDEFINED_CARTESIAN_WKT
from ..transaction import OutputTransaction
from .model import Annotation

CORE_FIELDS = {"class_name": "str", "class_id": "int", "difficult": "int", "source": "str", "line": "int",
               "object_no": "int"}
RESERVED = set(CORE_FIELDS) | {"fid", "geom"}


def _field_type(values: Iterable[Any]) -> str:
    """The fiona type holding all values: int if all are integers, float if all are numbers, else str."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, bool}:
        return "int" if kinds else "str"
    return "float" if kinds <= {int, bool, float} else "str"


def attribute_fields(annotations: Sequence[Annotation]) -> Dict[str, tuple]:
    """Extra attribute name -> (field name, fiona type), in first-seen order."""
    names: Dict[str, None] = {}
    for a in annotations:
        names.update(dict.fromkeys(a.attributes))
    fields = {}
    for name in names:
        field = f"attr_{name}" if name.lower() in RESERVED else name
        fields[name] = (field, _field_type(a.attributes.get(name) for a in annotations))
    return fields


def map_ring(corners: np.ndarray, transform: Affine) -> List[tuple]:
    """The closed ring (5 points) of a box's (4, 2) pixel corners in map coordinates."""
    xs, ys = transform * (corners[:, 0], corners[:, 1])
    ring = [(float(x), float(y)) for x, y in zip(xs, ys)]
    return ring + ring[:1]


def write_box_layer(output_gpkg: str, annotations: Sequence[Annotation], class_ids: Mapping[str, int],
                    transform: Affine, crs_wkt: str = "", layer: str = "boxes") -> None:
    """Write the annotations to a new GeoPackage ``output_gpkg`` (replacing the file) as layer ``layer``.

    Corners go from pixel to map coordinates through ``transform`` (see :mod:`.georef`); ``crs_wkt`` is
    the layer's CRS ('' for none: written as the undefined Cartesian SRS). ``class_ids`` maps each class
    name to its id. The file is written under a temporary name beside ``output_gpkg`` and moved into
    place only when complete.
    """
    if not output_gpkg.lower().endswith(".gpkg"):
        raise InputError(f"The box layer '{output_gpkg}' must be a GeoPackage; give a name ending in .gpkg.")
    extras = attribute_fields(annotations)
    schema = {"geometry": "Polygon",
              "properties": {**CORE_FIELDS, **{field: kind for field, kind in extras.values()}}}

    def features():
        for a in annotations:
            properties = {"class_name": a.class_name, "class_id": class_ids[a.class_name],
                          "difficult": a.difficult, "source": os.path.basename(a.source), "line": a.line,
                          "object_no": a.number}
            for name, (field, kind) in extras.items():
                value = a.attributes.get(name)
                properties[field] = str(value) if kind == "str" and value is not None else value
            yield {"geometry": {"type": "Polygon", "coordinates": [map_ring(a.corners, transform)]},
                   "properties": properties}

    with OutputTransaction() as transaction:
        temp = transaction.stage(output_gpkg, "box layer")
        with fiona.open(temp, "w", driver="GPKG", layer=layer, schema=schema,
                        crs_wkt=crs_wkt or UNDEFINED_CARTESIAN_WKT) as out:
            out.writerecords(features())

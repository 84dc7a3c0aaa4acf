"""What an evaluation is given: mask sources (polygon layers, instance rasters) and the (produced, reference,
grid) pairs of a dataset, and how a plain path is told to be one or the other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

from ..errors import InputError
from ..vector_output import VECTOR_DRIVERS

Key = Union[int, str]  # an instance's key: produced instance k is matched with reference instance k

RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".nc", ".asc")


@dataclass(frozen=True)
class PolygonMasks:
    """Masks as a polygon layer (any OGR source); ``layer`` picks one layer of a multi-layer source.

    A plain path is read as this when OGR opens it as a vector source.
    """

    path: str
    layer: Optional[str] = None


@dataclass(frozen=True)
class InstanceRaster:
    """Masks as an instance raster: integer ids, 0 (and the nodata value) = no instance; ``band`` is 1-based."""

    path: str
    band: int = 1


MaskSource = Union[str, "os.PathLike[str]", PolygonMasks, InstanceRaster]


@dataclass(frozen=True)
class EvaluationPair:
    """One image of a dataset: its produced masks, its reference masks and the grid they are compared on.

    ``grid_raster`` may be omitted when one of the two is an instance raster (its grid is used);
    ``name`` labels the image in per-instance output (default: the produced file's name).
    """

    produced: MaskSource
    reference: MaskSource
    grid_raster: Optional[str] = None
    name: Optional[str] = None


def source_spec(source: MaskSource, role: str) -> Union[PolygonMasks, InstanceRaster]:
    """``source`` as an explicit spec: plain paths are told apart by extension, else by whether OGR opens them."""
    if isinstance(source, (PolygonMasks, InstanceRaster)):
        return source
    path = os.fspath(source)
    if not path.startswith("/vsi") and not os.path.exists(path):
        raise InputError(f"The {role} '{path}' does not exist. Give an existing polygon layer or instance raster.")
    ext = os.path.splitext(path)[1].lower()
    if ext in RASTER_EXTENSIONS:
        return InstanceRaster(path)
    if ext in VECTOR_DRIVERS:
        return PolygonMasks(path)
    import fiona

    try:
        if fiona.listlayers(path):
            return PolygonMasks(path)
    except Exception:  # not a vector source: try it as a raster
        pass
    return InstanceRaster(path)

"""Evaluating produced masks against reference masks, as SAMRS chose its prompt on HRSC2016.

Matching is *per box*: produced instance ``k`` is compared with reference instance ``k`` (same key;
the produced layer's ``instance_id`` against the reference's key field, or the id value in instance
rasters). The measures, overall and per class:

* **mean IoU**: the mean of the per-instance IoU over the reference instances;
* **area-weighted IoU**: ΣI / ΣU, intersections and unions summed over the reference instances (large
  objects weigh more);
* **COCO mask AP** (AP@[.5:.95], AP50, AP75) by pycocotools' ``COCOeval`` with ``iouType="segm"``;
  a produced mask's score is its ``score`` field (1.0 where it is empty or missing).

Rules:

* A reference instance without a produced mask (no produced feature with its key, a null geometry, a
  ``status`` other than ``ok`` (whatever the geometry), no pixel centre inside) has IoU 0 and is a
  missed object for AP.
* A produced feature whose key is not in the reference is counted (``unmatched_produced``) and left out
  of IoU and, by default, of AP (``unmatched_in_ap=True`` makes it a false positive there).
* A reference instance whose mask has no pixel on the grid (null geometry, outside the grid, thinner
  than a pixel centre) cannot be scored: it is listed in ``skipped_reference`` and left out, with the
  produced mask of the same key.
* An empty produced mask is no detection for AP (it cannot match anything; its reference counts as missed).
* Class of an instance: the reference's class field when given (and not empty), else the produced
  ``class_name``. An instance left without a class (no class field, no produced feature, or instance
  rasters) takes the evaluation's only class when there is exactly one, ``object`` (the engine's class
  without a class field) when there is none, and ``(unknown)`` among several. An unknown class is a
  class of its own, also for AP.

Coordinate spaces and units:

* All masks live on one **pixel grid** per image: the grid of ``grid_raster`` (the source image or an
  instance raster; width ``W``, height ``H``, its geotransform and CRS). Pixel ``(c, r)`` covers
  ``[c, c+1) x [r, r+1)`` in pixel space (GDAL's corner convention, as in ``raster_input``). Areas,
  intersections and unions are in **pixels** of that grid.
* Polygons are rasterized with ``rasterio.features.rasterize`` (a pixel belongs to a polygon when its
  centre lies inside, ``all_touched=False``), each instance on its own over its bounding window
  (rows, cols) of the grid, never over the whole grid. Parts outside the grid are not counted.
* **CRS**: polygon layers in another CRS than the grid are *reprojected* to it (pyproj, edges densified
  first so that long straight edges follow their true curved path), then mapped through the inverse
  geotransform. A layer without a CRS over a grid with one (or the reverse) is refused. Instance rasters
  are never resampled: one that is not on the grid (size, geotransform, CRS) is refused with the
  ``gdalwarp`` command that puts it there.

Memory: each mask is kept as a COCO run-length encoding (RLE) of the full ``H x W`` grid, built directly
from its window (column-major runs), so no full-grid array is ever allocated. Polygon layers are
streamed feature by feature; instance rasters are read in two passes: a blockwise pass collecting each
id's bounding box, then one windowed read per id. Peak memory follows the largest instance's bounding
box (and one read block of at most :data:`CHUNK_PIXELS`), plus the RLEs.

AP over many instances: ``COCOeval`` matches detections in pure Python (cost ~ detections x references
per image and class). Since a detection can only match a reference it overlaps, each image is split
internally into clusters of instances whose bounding boxes overlap and every cluster is given to COCOeval
as its own image. Annotation ids are assigned cluster by cluster, so the greedy matching and the ranking
are those of COCOeval on the whole image with its annotations in that order (which only matters for ties
in score, which COCOeval ranks by annotation order), only faster.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio import features as rio_features
from rasterio.windows import Window

from .errors import InputError
from .progress import Progress
from .vector_output import SHAPEFILE_RESULT_NAMES, VECTOR_DRIVERS

Key = Union[int, str]

OVERALL = "(all)"  # class column of the overall row; parentheses keep it apart from real class names
DEFAULT_CLASS = "object"  # class when no input gives any (as the engine's default without a class field)
UNKNOWN_CLASS = "(unknown)"  # class of an unclassed instance among several known classes
DEFAULT_SCORE = 1.0  # COCO needs a score for every detection; an empty score field (GrabCut) ranks all alike
STATUS_OK = "ok"  # the produced layer's status of a box with a mask; other statuses mean no mask

CHUNK_PIXELS = 1 << 22  # pixels per block read in an instance raster's first pass (16 MB of uint32)
DENSIFY_PARTS = 32  # when reprojecting, no edge is longer than 1/32 of the geometry's larger extent
RLE_LIMIT = 1 << 32  # pycocotools counts runs in uint32: a grid must hold fewer pixels than this

RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".nc", ".asc")

METRICS_COLUMNS = ("class", "instances", "mean_iou", "weighted_iou", "ap", "ap50", "ap75", "unmatched_produced")
INSTANCE_COLUMNS = ("key", "class", "iou", "intersection_px", "union_px", "produced_px", "reference_px", "image")
COMPARISON_COLUMNS = ("name",) + METRICS_COLUMNS[1:]


# ----------------------------------------------------------------------------------------------------------
# Inputs


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


@dataclass(frozen=True)
class Grid:
    """A pixel grid: ``width`` x ``height`` pixels, ``transform`` pixel -> map coordinates, ``crs`` (or None)."""

    path: str
    width: int
    height: int
    transform: Affine
    crs: Optional[rasterio.crs.CRS]


def _source_spec(source: MaskSource, role: str) -> Union[PolygonMasks, InstanceRaster]:
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


def _open_raster(path: str, role: str):
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"The {role} '{path}' cannot be opened by GDAL ({exc}). "
                         "Give a GDAL-readable raster (GeoTIFF, VRT, …).") from exc


def read_grid(path: str) -> Grid:
    """The pixel grid of a raster file (the source image or an instance raster)."""
    with _open_raster(path, "grid raster") as ds:
        if ds.width * ds.height >= RLE_LIMIT:
            raise InputError(f"The grid raster '{path}' has {ds.width} x {ds.height} pixels; COCO's run-length "
                             f"masks hold fewer than {RLE_LIMIT} pixels per image. Cut the image and its masks "
                             "into tiles (e.g. `gdal_retile.py`) and evaluate the tiles together as a dataset.")
        return Grid(path=path, width=ds.width, height=ds.height, transform=ds.transform, crs=ds.crs)


def _pair_grid(pair: EvaluationPair, produced, reference) -> Grid:
    if pair.grid_raster:
        return read_grid(os.fspath(pair.grid_raster))
    for spec in (produced, reference):
        if isinstance(spec, InstanceRaster):
            return read_grid(spec.path)
    raise InputError(f"No pixel grid to compare the polygon layers '{produced.path}' and '{reference.path}' on. "
                     "Give grid_raster: the source image the masks were made from (or one of the instance rasters).")


# ----------------------------------------------------------------------------------------------------------
# Masks as full-grid RLEs, built from windows


def window_rle(mask: np.ndarray, row: int, col: int, height: int, width: int) -> dict:
    """Compressed COCO RLE over a ``height`` x ``width`` grid of a bool window ``mask`` (rows, cols) whose
    top-left pixel is grid pixel ``(col, row)``.

    COCO RLE counts alternate runs of 0 and 1 in column-major order over the whole grid, starting with 0.
    The set pixels' column-major indices come out sorted from ``nonzero`` of the transposed window, so the
    runs are found without a full-grid array (what ``pycocotools.mask.encode`` would need).
    """
    from pycocotools import mask as mask_utils

    total = height * width
    cols_idx, rows_idx = np.nonzero(mask.T)  # (col, row) pairs in column-major order of the window
    if cols_idx.size == 0:
        counts = [total]
    else:
        linear = (cols_idx.astype(np.int64) + col) * height + (rows_idx.astype(np.int64) + row)
        breaks = np.flatnonzero(np.diff(linear) != 1)
        starts = np.concatenate([linear[:1], linear[breaks + 1]])
        ends = np.concatenate([linear[breaks], linear[-1:]]) + 1
        gaps = starts - np.concatenate([[0], ends[:-1]])
        runs = np.empty(2 * starts.size, dtype=np.int64)
        runs[0::2] = gaps
        runs[1::2] = ends - starts
        counts = runs.tolist()
        if ends[-1] < total:  # COCO's encoder writes no trailing run of length 0
            counts.append(int(total - ends[-1]))
    return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)


@dataclass
class _Mask:
    """One instance as read from a source: its mask over the grid (compressed RLE) and what came with it."""

    rle: dict
    area: int  # pixels
    class_name: Optional[str]
    score: Optional[float]


# ----------------------------------------------------------------------------------------------------------
# Polygon layers


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
        if layer_crs_wkt and CRS.from_wkt(layer_crs_wkt).name.startswith("Undefined "):
            layer_crs_wkt = ""  # a GeoPackage layer without CRS reports "Undefined geographic/cartesian SRS"
        if layer_crs_wkt and grid_wkt:
            src, dst = CRS.from_wkt(layer_crs_wkt), CRS.from_wkt(grid_wkt)
            if not src.equals(dst, ignore_axis_order=True):
                self.transformer = Transformer.from_crs(src, dst, always_xy=True)
        elif bool(layer_crs_wkt) != bool(grid_wkt):
            which = f"the grid raster '{grid.path}'" if not grid_wkt else layer_label
            raise InputError(f"{which[0].upper()}{which[1:]} has no CRS, so its polygons cannot be placed on the "
                             f"grid of '{grid.path}'. Assign the right CRS to it (in QGIS: Layer Properties > "
                             "Source, or `ogr2ogr -a_srs` / `gdal_edit.py -a_srs`).")

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


def rasterize_window(pixel_parts: Sequence, grid: Grid) -> Tuple[np.ndarray, int, int]:
    """Rasterize pixel-space polygons over their bounding window clipped to the grid.

    Returns ``(mask, row, col)``: bool ``mask`` (rows, cols) whose top-left pixel is grid pixel
    ``(col, row)``; a pixel is set when its centre lies inside (``all_touched=False``).
    """
    from shapely.geometry import mapping

    bounds = np.array([p.bounds for p in pixel_parts])
    c0 = max(int(math.floor(bounds[:, 0].min())), 0)
    r0 = max(int(math.floor(bounds[:, 1].min())), 0)
    c1 = min(int(math.ceil(bounds[:, 2].max())), grid.width)
    r1 = min(int(math.ceil(bounds[:, 3].max())), grid.height)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((0, 0), bool), 0, 0
    # The geometry is already in pixel space: the window's transform is a plain shift.
    mask = rio_features.rasterize([(mapping(p), 1) for p in pixel_parts], out_shape=(r1 - r0, c1 - c0), fill=0,
                                  transform=Affine.translation(c0, r0), all_touched=False, dtype="uint8")
    return mask.astype(bool), r0, c0


def _find_field(fields: Sequence[str], name: str) -> Optional[str]:
    """The layer's field called ``name`` (case-insensitive, as OGR is); the Shapefile short name of ours too."""
    lowered = {f.lower(): f for f in fields}
    for candidate in (name, SHAPEFILE_RESULT_NAMES.get(name)):
        if candidate and candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def _read_polygon_masks(spec: PolygonMasks, role: str, grid: Grid, key_field: str, class_field: Optional[str],
                        score_field: Optional[str], progress: Progress,
                        status_field: Optional[str] = None) -> Dict[Key, _Mask]:
    """Stream a polygon layer feature by feature into per-key masks on ``grid``.

    Only the feature at hand and its mask window are in memory; what is kept per feature is its RLE.
    ``score_field`` / ``status_field`` are read where the layer has them (the produced layer).
    """
    import fiona
    from shapely.geometry import shape

    label = f"{role} layer '{spec.path}'" + (f" (layer '{spec.layer}')" if spec.layer else "")
    try:
        collection = fiona.open(spec.path, layer=spec.layer) if spec.layer else fiona.open(spec.path)
    except Exception as exc:  # fiona raises several types for unreadable sources
        raise InputError(f"The {label} cannot be opened by OGR ({exc}). Give a polygon layer "
                         "(GPKG, Shapefile, GeoJSON, …) or an instance raster.") from exc
    masks: Dict[Key, _Mask] = {}
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
            window, row, col = np.zeros((0, 0), bool), 0, 0
            if parts:
                try:
                    pixel_parts = [to_pixels(p) for p in parts]
                except ValueError:
                    pixel_parts = None
                if pixel_parts is None or not all(np.all(np.isfinite(p.bounds)) for p in pixel_parts):
                    raise InputError(f"Feature {fid} (key {key!r}) of the {label} cannot be transformed to the "
                                     f"CRS of the grid raster '{grid.path}'. Check the layer's CRS.")
                window, row, col = rasterize_window(pixel_parts, grid)
            rle = window_rle(window, row, col, grid.height, grid.width)
            score = None
            if score_name is not None:
                value = props.get(score_name)
                score = float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) \
                    else None
            masks[key] = _Mask(rle=rle, area=int(window.sum()),
                               class_name=_class_text(props.get(class_name)) if class_name else None, score=score)
    return masks


# ----------------------------------------------------------------------------------------------------------
# Instance rasters


def _chunks(ds) -> Iterator[Window]:
    """Read windows covering the raster, aligned to its blocks, of about :data:`CHUNK_PIXELS` pixels."""
    block_h, block_w = ds.block_shapes[0]
    block_h, block_w = max(1, min(block_h, ds.height)), max(1, min(block_w, ds.width))
    if ds.width * block_h <= CHUNK_PIXELS or block_w >= ds.width:
        chunk_w = ds.width  # whole rows: strips, or tiles that are as wide as the raster
    else:
        chunk_w = max(block_w, (CHUNK_PIXELS // block_h) // block_w * block_w)
    chunk_h = max(block_h, (CHUNK_PIXELS // chunk_w) // block_h * block_h)
    for row in range(0, ds.height, chunk_h):
        for col in range(0, ds.width, chunk_w):
            yield Window(col, row, min(chunk_w, ds.width - col), min(chunk_h, ds.height - row))


def _check_on_grid(ds, path: str, role: str, grid: Grid) -> None:
    """Refuse an instance raster that is not on the grid (never resampled: ids cannot be interpolated)."""
    problem = None
    if (ds.width, ds.height) != (grid.width, grid.height):
        problem = f"it has {ds.width} x {ds.height} pixels, the grid {grid.width} x {grid.height}"
    else:
        # The instance raster's pixel space in the grid's: identity when the rasters are aligned.
        rel = ~grid.transform * ds.transform
        if max(abs(rel.a - 1), abs(rel.b), abs(rel.d), abs(rel.e - 1)) > 1e-6 or max(abs(rel.c), abs(rel.f)) > 1e-3:
            problem = "its geotransform differs from the grid's (pixel size or origin)"
    if problem is None and ds.crs and grid.crs and ds.crs != grid.crs:
        from pyproj import CRS

        if not CRS.from_wkt(ds.crs.to_wkt()).equals(CRS.from_wkt(grid.crs.to_wkt()), ignore_axis_order=True):
            problem = "its CRS differs from the grid's"
    if problem:
        left, bottom, right, top = rasterio.transform.array_bounds(grid.height, grid.width, grid.transform)
        srs = f" -t_srs {grid.crs.to_string()}" if grid.crs else ""
        raise InputError(f"The {role} instance raster '{path}' is not on the grid of '{grid.path}': {problem}. "
                         f"Ids cannot be resampled silently; warp it onto the grid with nearest neighbour, e.g. "
                         f"`gdalwarp -r near{srs} -te {left} {bottom} {right} {top} -ts {grid.width} {grid.height} "
                         f"{os.path.basename(path)} on_grid.tif`, or give it as the grid raster.")


def _read_instance_raster(spec: InstanceRaster, role: str, grid: Grid, progress: Progress) -> Dict[Key, _Mask]:
    """Per-id masks of an instance raster, in two passes (per-id bounding boxes, then one window per id)."""
    masks: Dict[Key, _Mask] = {}
    with _open_raster(spec.path, f"{role} instance raster") as ds:
        if not 1 <= spec.band <= ds.count:
            raise InputError(f"The {role} instance raster '{spec.path}' has {ds.count} band(s); band {spec.band} "
                             "does not exist. Give a band number from 1.")
        dtype = np.dtype(ds.dtypes[spec.band - 1])
        if not np.issubdtype(dtype, np.integer):
            raise InputError(f"The {role} instance raster '{spec.path}' holds {dtype} values; instance ids are "
                             "integers (the engine writes uint32). Give an instance raster, not a score or "
                             "class raster.")
        _check_on_grid(ds, spec.path, role, grid)
        nodata = ds.nodatavals[spec.band - 1]

        def instance_pixels(data: np.ndarray) -> np.ndarray:
            valid = data != 0
            if nodata is not None and not math.isnan(nodata) and nodata != 0:
                valid &= data != dtype.type(nodata)
            return valid

        # Pass 1: bounding box (rows r0..r1, cols c0..c1, inclusive) of every id, one block at a time.
        bounds: Dict[int, List[int]] = {}
        windows = list(_chunks(ds))
        for n, window in enumerate(windows):
            progress.check_cancelled()
            data = ds.read(spec.band, window=window)
            rows, cols = np.nonzero(instance_pixels(data))
            if rows.size == 0:
                continue
            ids = data[rows, cols]
            order = np.argsort(ids, kind="stable")
            ids, rows, cols = ids[order], rows[order] + window.row_off, cols[order] + window.col_off
            starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
            per_id = zip(ids[starts].tolist(), np.minimum.reduceat(rows, starts).tolist(),
                         np.minimum.reduceat(cols, starts).tolist(), np.maximum.reduceat(rows, starts).tolist(),
                         np.maximum.reduceat(cols, starts).tolist())
            for ident, r0, c0, r1, c1 in per_id:
                box = bounds.get(ident)
                if box is None:
                    bounds[ident] = [r0, c0, r1, c1]
                else:
                    box[0], box[1] = min(box[0], r0), min(box[1], c0)
                    box[2], box[3] = max(box[2], r1), max(box[3], c1)
        # Pass 2: each id over its own bounding box, read in raster order (neighbours share GDAL's block cache).
        for ident, (r0, c0, r1, c1) in sorted(bounds.items(), key=lambda item: (item[1][0], item[1][1])):
            progress.check_cancelled()
            data = ds.read(spec.band, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1))
            window = data == dtype.type(ident)
            masks[int(ident)] = _Mask(rle=window_rle(window, r0, c0, grid.height, grid.width),
                                      area=int(window.sum()), class_name=None, score=None)
    return masks


def _read_masks(spec, role: str, grid: Grid, key_field: str, class_field: Optional[str],
                score_field: Optional[str], progress: Progress, status_field: Optional[str] = None) -> Dict[Key, _Mask]:
    if isinstance(spec, InstanceRaster):
        return _read_instance_raster(spec, role, grid, progress)
    return _read_polygon_masks(spec, role, grid, key_field, class_field, score_field, progress, status_field)


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class MetricsRow:
    """Measures over a set of reference instances (one class, or all: ``class_name == OVERALL``).

    IoUs are fractions 0 … 1; ``None`` where undefined (no instance; AP for a class without reference
    instance). ``intersection_px`` / ``union_px`` are the sums behind ``weighted_iou``, in grid pixels.
    """

    class_name: str
    instances: int
    mean_iou: Optional[float]
    weighted_iou: Optional[float]
    ap: Optional[float]
    ap50: Optional[float]
    ap75: Optional[float]
    unmatched_produced: int
    intersection_px: int
    union_px: int


@dataclass
class InstanceScore:
    """One scored reference instance. Pixel counts on its image's grid; ``score`` None without a produced feature."""

    image: str
    key: Key
    class_name: str
    intersection_px: int
    union_px: int
    produced_px: int
    reference_px: int
    score: Optional[float]
    has_produced: bool  # a produced feature with this key exists (its mask may be empty)

    @property
    def iou(self) -> float:
        return self.intersection_px / self.union_px if self.union_px else 0.0


@dataclass
class EvaluationResult:
    """Per-class rows (sorted by class name), the overall row, and the per-instance scores behind them.

    ``unmatched_produced`` / ``skipped_reference`` list ``(image, key)`` of produced features without a
    reference and of reference instances without a pixel on the grid.
    """

    overall: MetricsRow
    classes: List[MetricsRow]
    instances: List[InstanceScore]
    unmatched_produced: List[Tuple[str, Key]] = field(default_factory=list)
    skipped_reference: List[Tuple[str, Key]] = field(default_factory=list)
    images: List[str] = field(default_factory=list)

    def rows(self) -> List[MetricsRow]:
        """Per-class rows, then the overall row (the order of the CSV table)."""
        return list(self.classes) + [self.overall]

    def row(self, class_name: str) -> MetricsRow:
        for r in self.rows():
            if r.class_name == class_name:
                return r
        raise KeyError(class_name)

    def describe(self) -> str:
        o = self.overall

        def pct(v):
            return "n/a" if v is None else f"{v:.3f}"

        text = (f"{o.instances} instances in {len(self.images)} image(s): mean IoU {pct(o.mean_iou)}, "
                f"area-weighted IoU {pct(o.weighted_iou)}, AP {pct(o.ap)}, AP50 {pct(o.ap50)}, AP75 {pct(o.ap75)}")
        if o.unmatched_produced:
            text += f"; {o.unmatched_produced} produced mask(s) without reference"
        if self.skipped_reference:
            text += f"; {len(self.skipped_reference)} reference instance(s) without a pixel on the grid skipped"
        return text


# ----------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(produced: MaskSource, reference: MaskSource, grid_raster: Optional[str] = None, *,
             key_field: str = "instance_id", class_field: Optional[str] = None,
             produced_key_field: str = "instance_id", name: Optional[str] = None, unmatched_in_ap: bool = False,
             progress: Optional[Progress] = None) -> EvaluationResult:
    """Evaluate one image's produced masks against its reference masks.

    ``produced``: our polygon layer (``instance_id``, ``class_name``, ``score``; null geometries are empty
    masks) or our instance raster. ``reference``: a polygon layer whose ``key_field`` holds the produced
    instance ids (``class_field`` optional) or an instance raster with the same ids. ``grid_raster``: the
    raster whose pixel grid the masks are compared on (optional when an input is an instance raster).
    """
    pair = EvaluationPair(produced, reference, grid_raster, name)
    return evaluate_dataset([pair], key_field=key_field, class_field=class_field,
                            produced_key_field=produced_key_field, unmatched_in_ap=unmatched_in_ap, progress=progress)


def _as_pair(item) -> EvaluationPair:
    if isinstance(item, EvaluationPair):
        return item
    if isinstance(item, (tuple, list)) and 2 <= len(item) <= 4:
        return EvaluationPair(*item)
    raise InputError(f"A dataset item must be an EvaluationPair or a tuple (produced, reference[, grid_raster"
                     f"[, name]]), not {item!r}.")


def _image_name(pair: EvaluationPair, produced, taken: set) -> str:
    base = pair.name or os.path.splitext(os.path.basename(produced.path))[0]
    name, n = base, 2
    while name in taken:  # several images may share a file name (tiles in separate folders)
        name, n = f"{base}#{n}", n + 1
    taken.add(name)
    return name


@dataclass
class _Scored:
    """What AP needs of one image: its grid, references and detections ``(class, rle, score)``."""

    image: str
    grid: Grid
    references: List[Tuple[str, dict, int]]  # (class, rle, area)
    detections: List[Tuple[str, dict, int, float]]  # (class, rle, area, score)


def evaluate_dataset(pairs: Iterable[Union[EvaluationPair, tuple]], *, key_field: str = "instance_id",
                     class_field: Optional[str] = None, produced_key_field: str = "instance_id",
                     unmatched_in_ap: bool = False, progress: Optional[Progress] = None) -> EvaluationResult:
    """Evaluate several images as one dataset: every pair is an image (its own grid and keys) and the
    measures pool all instances (AP as COCO over all images).

    Raises :class:`InputError` when no reference instance has a pixel on its grid.
    """
    progress = progress or Progress()
    pairs = [_as_pair(p) for p in pairs]
    if not pairs:
        raise InputError("No (produced, reference) pair to evaluate. Give at least one.")
    instances: List[InstanceScore] = []
    unmatched: List[Tuple[str, Key, str]] = []
    skipped: List[Tuple[str, Key]] = []
    scored: List[_Scored] = []
    names: set = set()
    images: List[str] = []
    for index, pair in enumerate(pairs):
        produced = _source_spec(pair.produced, "produced masks")
        reference = _source_spec(pair.reference, "reference masks")
        grid = _pair_grid(pair, produced, reference)
        image = _image_name(pair, produced, names)
        images.append(image)
        progress.info(f"Evaluating {image} on the {grid.width} x {grid.height} grid of {grid.path}")
        ref = _read_masks(reference, "reference", grid, key_field, class_field, None, progress)
        progress.set_fraction((index + 0.4) / len(pairs))
        prod = _read_masks(produced, "produced", grid, produced_key_field, "class_name", "score", progress, "status")
        progress.set_fraction((index + 0.8) / len(pairs))
        image_scored = _Scored(image, grid, [], [])
        _match(image, ref, prod, instances, unmatched, skipped, image_scored, unmatched_in_ap)
        scored.append(image_scored)
    if not instances:
        sources = ", ".join(f"'{_source_spec(p.reference, 'reference masks').path}'" for p in pairs)
        raise InputError(f"The reference {sources} holds no instance with a pixel on the grid, so there is nothing "
                         "to evaluate. Check that it is the right layer, that it overlaps the grid raster (extent, "
                         "CRS), and that its polygons are at least a pixel wide.")
    _resolve_classes(instances, unmatched, scored)
    ap = _coco_ap(scored, progress)
    result = _summarise(instances, unmatched, ap)
    result.unmatched_produced = [(image, key) for image, key, _ in unmatched]
    result.skipped_reference = skipped
    result.images = images
    progress.set_fraction(1.0)
    return result


def _match(image: str, ref: Dict[Key, _Mask], prod: Dict[Key, _Mask], instances: List[InstanceScore],
           unmatched: List[Tuple[str, Key, str]], skipped: List[Tuple[str, Key]], scored: _Scored,
           unmatched_in_ap: bool) -> None:
    """Per-box matching of one image: reference k against produced k."""
    from pycocotools import mask as mask_utils

    for key in sorted(ref, key=_key_order):
        r = ref[key]
        p = prod.get(key)
        if r.area == 0:
            skipped.append((image, key))
            continue
        cls = r.class_name or (p.class_name if p is not None else None)  # None: resolved for the dataset
        produced_px = p.area if p is not None else 0
        inter = int(mask_utils.area(mask_utils.merge([r.rle, p.rle], intersect=True))) if produced_px else 0
        score = None if p is None else (p.score if p.score is not None else DEFAULT_SCORE)
        instances.append(InstanceScore(image=image, key=key, class_name=cls, intersection_px=inter,
                                       union_px=r.area + produced_px - inter, produced_px=produced_px,
                                       reference_px=r.area, score=score, has_produced=p is not None))
        scored.references.append((cls, r.rle, r.area))
        if produced_px:
            scored.detections.append((cls, p.rle, produced_px, score))
    for key in sorted(set(prod) - set(ref), key=_key_order):
        p = prod[key]
        cls = p.class_name
        unmatched.append((image, key, cls))
        if unmatched_in_ap and p.area:
            scored.detections.append((cls, p.rle, p.area, p.score if p.score is not None else DEFAULT_SCORE))


def _resolve_classes(instances: List[InstanceScore], unmatched: List[Tuple[str, Key, Optional[str]]],
                     scored: List[_Scored]) -> None:
    """Give instances left without a class (None) the dataset's only class, or a default (module docstring)."""
    known = {i.class_name for i in instances if i.class_name} | {c for *_, c in unmatched if c}
    fallback = next(iter(known)) if len(known) == 1 else (UNKNOWN_CLASS if known else DEFAULT_CLASS)
    for i in instances:
        i.class_name = i.class_name or fallback
    unmatched[:] = [(image, key, cls or fallback) for image, key, cls in unmatched]
    for s in scored:
        s.references = [(cls or fallback, *rest) for cls, *rest in s.references]
        s.detections = [(cls or fallback, *rest) for cls, *rest in s.detections]


def _key_order(key: Key):
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


def _clusters(xywh: np.ndarray) -> List[int]:
    """Cluster index of each mask given its bounding box (x, y, width, height) in pixels, (n, 4): masks
    whose boxes overlap or touch (transitively) share a cluster.

    Clusters are numbered by their first member, so the order of the input is kept between clusters.
    """
    n = len(xywh)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Sweep along x: a box meets only boxes that are still open (started earlier, not yet ended).
    x0, y0 = xywh[:, 0], xywh[:, 1]
    x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
    active: List[int] = []
    for i in np.argsort(x0, kind="stable").tolist():
        active = [j for j in active if x1[j] >= x0[i]]
        for j in active:
            if y0[j] <= y1[i] and y0[i] <= y1[j]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)  # the root is the cluster's first member
        active.append(i)
    numbering: Dict[int, int] = {}
    return [numbering.setdefault(find(i), len(numbering)) for i in range(n)]


def _coco_ap(scored: List[_Scored], progress: Progress, split_clusters: bool = True) -> Dict[Optional[str], Tuple]:
    """COCO mask AP: class -> (AP@[.5:.95], AP50, AP75), and ``None`` -> the overall values (mean over classes
    with reference instances, as COCOeval's summary). Classes without reference instances get Nones.

    Every image is cut into clusters of overlapping instances, each given to COCOeval as an image (see the
    module docstring): detections only match references they overlap, and annotation ids are assigned
    cluster by cluster, so the result equals COCOeval on whole images. ``split_clusters=False`` skips the
    cut (kept for checking that equality).
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({c for s in scored for c, *_ in s.references} | {c for s in scored for c, *_ in s.detections})
    category = {c: i + 1 for i, c in enumerate(classes)}
    images, gts, dts = [], [], []
    max_dets = 1
    for s in scored:
        items = [("gt", *r) for r in s.references] + [("dt", *d) for d in s.detections]
        xywh = mask_utils.toBbox([item[2] for item in items]).reshape(-1, 4) if items else np.zeros((0, 4))
        groups = _clusters(xywh)
        # Ids cluster by cluster (stable: original order within a cluster); COCOeval breaks ties in score by
        # this order, whether the clusters are separate images or not.
        order = sorted(range(len(items)), key=lambda i: groups[i])
        image_of = groups if split_clusters else [0] * len(items)
        first_image = len(images) + 1
        for g in range(max(image_of, default=-1) + 1):
            images.append({"id": first_image + g, "height": s.grid.height, "width": s.grid.width})
        per_image: Dict[int, int] = {}
        for i in order:
            kind, cls, rle, area, *rest = items[i]
            ann = {"id": len(gts) + len(dts) + 1, "image_id": first_image + image_of[i], "category_id": category[cls],
                   "segmentation": rle, "area": float(area), "iscrowd": 0,
                   "bbox": [float(v) for v in xywh[i]]}
            if kind == "gt":
                gts.append(ann)
            else:
                ann["score"] = float(rest[0])
                dts.append(ann)
                per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        max_dets = max([max_dets] + list(per_image.values()))
    progress.check_cancelled()
    cats = [{"id": i, "name": c} for c, i in category.items()]
    quiet = io.StringIO()  # pycocotools prints its progress
    with contextlib.redirect_stdout(quiet):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "annotations": gts, "categories": cats}
        coco_dt.dataset = {"images": images, "annotations": dts, "categories": cats}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        params = evaluator.params
        params.imgIds = [im["id"] for im in images]
        params.catIds = [c["id"] for c in cats]
        params.areaRng, params.areaRngLbl = [[0.0, 1e5 ** 2]], ["all"]  # COCO's 'all' range only
        params.maxDets = [max_dets]  # COCO's default of 100 per image would drop detections here
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall thresholds, classes)
    thresholds = params.iouThrs
    at50, at75 = int(np.argmin(np.abs(thresholds - 0.5))), int(np.argmin(np.abs(thresholds - 0.75)))

    def summary(p: np.ndarray) -> Tuple[Optional[float], Optional[float], Optional[float]]:
        # As COCOeval.summarize: the mean of the valid (> -1) precisions; -1 marks classes without reference.
        values = []
        for sub in (p, p[at50], p[at75]):
            valid = sub[sub > -1]
            values.append(float(valid.mean()) if valid.size else None)
        return tuple(values)  # type: ignore[return-value]

    out: Dict[Optional[str], Tuple] = {c: summary(precision[:, :, category[c] - 1]) for c in classes}
    out[None] = summary(precision)
    return out


def _summarise(instances: List[InstanceScore], unmatched: List[Tuple[str, Key, str]],
               ap: Dict[Optional[str], Tuple]) -> EvaluationResult:
    def row(name: str, members: List[InstanceScore], n_unmatched: int, ap_values) -> MetricsRow:
        inter = sum(i.intersection_px for i in members)
        union = sum(i.union_px for i in members)
        return MetricsRow(class_name=name, instances=len(members),
                          mean_iou=float(np.mean([i.iou for i in members])) if members else None,
                          weighted_iou=inter / union if union else None,
                          ap=ap_values[0], ap50=ap_values[1], ap75=ap_values[2],
                          unmatched_produced=n_unmatched, intersection_px=inter, union_px=union)

    classes = sorted({i.class_name for i in instances} | {c for _, _, c in unmatched})
    rows = [row(c, [i for i in instances if i.class_name == c], sum(1 for *_, u in unmatched if u == c),
                ap.get(c, (None, None, None))) for c in classes]
    overall = row(OVERALL, instances, len(unmatched), ap[None])
    return EvaluationResult(overall=overall, classes=rows, instances=instances)


# ----------------------------------------------------------------------------------------------------------
# Writing


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_csv_atomic(path: str, header: Sequence[str], rows: Iterable[Sequence], role: str) -> str:
    """Write a CSV table under a temporary name in the destination's folder, then move it into place, so a
    reader never sees a half-written table and an earlier table survives a failure."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise InputError(f"The {role} '{path}' is a folder; give a file name.")
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise InputError(f"The {role} '{path}' cannot be written ({exc.strerror}). Choose a writable folder.") from exc
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            for r in rows:
                writer.writerow([_number(v) for v in r])
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    return path


def _metric_values(r: MetricsRow) -> list:
    return [r.instances, r.mean_iou, r.weighted_iou, r.ap, r.ap50, r.ap75, r.unmatched_produced]


def write_metrics_csv(result: EvaluationResult, path: str) -> str:
    """The metrics table: one row per class (sorted), then the overall row (class ``(all)``).

    Columns :data:`METRICS_COLUMNS`; IoUs and APs as fractions with 6 decimals, empty where undefined.
    """
    return _write_csv_atomic(path, METRICS_COLUMNS, ([r.class_name] + _metric_values(r) for r in result.rows()),
                             "metrics table")


def write_instances_csv(result: EvaluationResult, path: str) -> str:
    """One row per scored reference instance: columns :data:`INSTANCE_COLUMNS` (pixel counts on the grid;
    ``image`` tells the images of a dataset apart)."""
    rows = ([i.key, i.class_name, i.iou, i.intersection_px, i.union_px, i.produced_px, i.reference_px, i.image]
            for i in result.instances)
    return _write_csv_atomic(path, INSTANCE_COLUMNS, rows, "per-instance table")


def write_comparison_csv(results: Mapping[str, EvaluationResult], path: str) -> str:
    """A prompt-ablation table: one row per named result (e.g. ``{"box": r1, "point": r2}``, in the
    mapping's order) with its overall measures; columns :data:`COMPARISON_COLUMNS`."""
    if not results:
        raise InputError("No results to compare. Give at least one named evaluation result.")
    rows = ([name] + _metric_values(result.overall) for name, result in results.items())
    return _write_csv_atomic(path, COMPARISON_COLUMNS, rows, "comparison table")

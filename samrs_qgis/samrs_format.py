"""The SAMRS dataset files of one image, and the COCO file of a whole dataset.

Per image (as SAMRS published its SOTA/SIOR/FAST subsets):

* **class-index PNG**: the semantic raster's pixels unchanged (class id per pixel, background 255 by
  default), single band, greyscale (no palette, no transparency), uint8 (uint16 only when a class id
  exceeds 255);
* **colour PNG**: the same pixels through the semantic raster's colour table (:func:`.classes.class_colours`
  per class, background black), RGB uint8;
* **instance file** (JSON): a list with one record per box of the image, in ``instance_id`` order:
  ``instance_id``, ``category_id`` (the class id, as in the class-index PNG), ``category`` (class name),
  ``bbox`` ``[x, y, w, h]`` of the mask in pixels (COCO convention: x = first column, y = first row,
  w/h in pixels; ``[0, 0, 0, 0]`` without a mask), ``rbox`` (the box's 4 corners as the annotation gave
  them, ``[x1, y1, …, x4, y4]`` in pixel coordinates, pixel-corner convention), ``status`` and ``detail``
  (see the README: ok, empty, outside, invalid), ``difficult``, ``area`` (mask pixels), ``score`` (SAM's
  predicted IoU, null for GrabCut) and ``segmentation`` (COCO compressed RLE of the mask over the whole
  image, ``{"size": [height, width], "counts": str}``).

Masks come from the polygon layer: each polygon traces pixel edges, so rasterizing it by pixel centres
(:mod:`.window_masks`) returns the mask exactly. Overlapping masks therefore stay whole here (unlike in the rasters, where the
smaller mask owns a contested pixel). Each mask is rasterized over its own bounding window only.

All files are written under a temporary name and moved into place (:func:`write_json_atomic`, and the
caller's :class:`.transaction.OutputTransaction` for the PNGs).
"""
from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from affine import Affine

from .errors import SamrsError
from .transaction import write_text_files
from .window_masks import feature_window_mask, window_rle

MASK_LAYER = "masks"  # the layer name the pipeline gives its polygon output in a GeoPackage


def write_json_atomic(path: str, value, compact: bool = False) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file beside it and ``os.replace``
    (:func:`.transaction.write_text_files`), so readers see either the old file or the complete new one."""
    if compact:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(value, indent=1, ensure_ascii=False)
    write_text_files([(path, text + "\n")], "dataset file")


def write_pngs(semantic_tif: str, class_index_png: Optional[str], colour_png: Optional[str]) -> None:
    """Copy the semantic GeoTIFF to the class-index PNG and, through its colour table, to the colour PNG.

    GDAL copies block by block (through a virtual dataset), so no whole-image array is held in Python.
    No ``.aux.xml`` sidecar is written (the PNGs carry pixels only; the GeoTIFF keeps the georeferencing).
    """
    from osgeo import gdal

    src = gdal.Open(semantic_tif)
    if src is None:
        raise SamrsError(f"The semantic raster '{semantic_tif}' cannot be read back: {gdal.GetLastErrorMsg()}")
    previous = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        for path, expand in ((class_index_png, None), (colour_png, "rgb")):
            if not path:
                continue
            vrt = gdal.Translate("", src, format="VRT", rgbExpand=expand)
            for i in range(1, vrt.RasterCount + 1):
                band = vrt.GetRasterBand(i)
                band.DeleteNoDataValue()  # else the PNG driver writes it as a transparent colour
                if expand is None:
                    band.SetColorTable(None)  # ids stay ids for every reader (a palette PNG reads as RGB in some)
                    band.SetColorInterpretation(gdal.GCI_GrayIndex)
            out = gdal.GetDriverByName("PNG").CreateCopy(path, vrt)
            if out is None:
                raise OSError(f"GDAL could not write '{path}': {gdal.GetLastErrorMsg()}")
            out = None  # noqa: F841 - closing the dataset flushes the file
            vrt = None
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", previous)
        src = None


def _rle_counts(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def instance_records(polygons_path: str, transform: Affine, width: int, height: int,
                     rboxes: Sequence[np.ndarray], class_names: Sequence[str], exact: bool = True) -> List[Dict]:
    """The instance file's records of one image, read from the pipeline's polygon layer.

    ``transform`` maps the image's pixel coordinates (pixel corners) to the layer's map coordinates (the
    transform the pipeline placed the polygons with); ``width`` x ``height`` is the image grid in pixels.
    ``rboxes[i]`` holds the (4, 2) pixel corners of the box with ``instance_id`` ``i + 1``; ``class_names[id]``
    names class ``id``. Raises :class:`SamrsError` if a rasterized polygon's pixel count differs from the
    layer's ``area_px`` (the polygons would not be on this grid), unless not ``exact``: shaped polygons, whose
    masks (and COCO masks) are then the pixels they cover.
    """
    import fiona

    records = []
    with fiona.open(polygons_path, layer=MASK_LAYER) as layer:
        for feature in layer:
            p = feature["properties"]
            mask, row, col = feature_window_mask(feature, transform, width, height, polygons_path, exact)
            area = int(mask.sum())
            if area:
                rows, cols = np.nonzero(mask)
                bbox = [col + int(cols.min()), row + int(rows.min()), int(cols.max() - cols.min()) + 1,
                        int(rows.max() - rows.min()) + 1]
            else:
                bbox = [0, 0, 0, 0]
            instance_id, class_id = int(p["instance_id"]), int(p["class_id"])
            records.append({
                "instance_id": instance_id,
                "category_id": class_id,
                "category": class_names[class_id] if 0 <= class_id < len(class_names) else p["class_name"],
                "bbox": bbox,
                "rbox": [float(v) for v in np.asarray(rboxes[instance_id - 1], dtype=float).ravel()],
                "status": p["status"],
                "detail": p.get("detail"),
                "difficult": p.get("difficult"),
                "area": area,
                "score": p.get("score"),
                "segmentation": _rle_counts(window_rle(mask, row, col, height, width)),
            })
    records.sort(key=lambda r: r["instance_id"])
    return records


def coco_dataset(images: Iterable[Dict], class_names: Sequence[str], description: str = "") -> Dict:
    """A COCO instances dictionary from per-image records.

    ``images``: dicts with ``id`` (≥ 1), ``file_name``, ``width``, ``height`` and ``instances`` (the image's
    instance records, or an empty list). Only instances with a mask (area > 0) become annotations; ids
    count from 1 in image and ``instance_id`` order (COCOeval treats id 0 as "no match"). ``category_id``
    is the class id (the class-index PNG's value), so it may be 0.
    """
    coco = {"info": {"description": description or "SAMRS segmentation masks"},
            "images": [], "annotations": [],
            "categories": [{"id": i, "name": name} for i, name in enumerate(class_names)]}
    next_id = 1
    for image in images:
        coco["images"].append({k: image[k] for k in ("id", "file_name", "width", "height")})
        for record in image.get("instances", []):
            if not record["area"]:
                continue
            coco["annotations"].append({
                "id": next_id, "image_id": image["id"], "category_id": record["category_id"],
                "segmentation": record["segmentation"], "area": record["area"], "bbox": record["bbox"],
                "iscrowd": 0, "score": record["score"], "instance_id": record["instance_id"]})
            next_id += 1
    return coco

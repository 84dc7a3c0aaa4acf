"""Which produced masks are evaluated against which reference masks, when a dataset is given as folders.

Files of the produced, reference (and grid) folders pair by image name: a trailing ``_masks`` or
``_instances`` is ignored (``tile_masks.gpkg`` and ``tile_instances.tif`` belong to ``tile``), a
``*_semantic`` class raster is never taken for masks, and a polygon layer is preferred over an instance
raster of the same image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from .sources import RASTER_EXTENSIONS

OUTPUT_SUFFIXES = ("_masks", "_instances")  # segment's outputs '<image>_masks.gpkg', '<image>_instances.tif'
NOT_MASKS_SUFFIX = "_semantic"  # a class raster beside the instance masks
POLYGON_EXTENSIONS = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".sqlite")
GRID_EXTENSIONS = RASTER_EXTENSIONS + (".jpg", ".jpeg", ".bmp")  # a grid may be the source image itself



@dataclass
class Pairing:
    pairs: List[tuple]  # (produced, reference, grid or None[, image name])
    unpaired: List[str] = field(default_factory=list)  # image names found in only one of the two folders


def image_stem(path: str) -> str:
    """The image a mask file belongs to: its name without extension and without an output suffix."""
    stem = os.path.splitext(os.path.basename(path))[0]
    for suffix in OUTPUT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def masks_in_folder(folder: str, role: str, extensions: Sequence[str] = POLYGON_EXTENSIONS + RASTER_EXTENSIONS
                    ) -> Dict[str, str]:
    """Image name -> file of a folder's mask files (hidden files and class rasters left out); a polygon layer
    wins over a raster of the same name. An InputError names the folder when it holds none."""
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        ext = os.path.splitext(name)[1].lower()
        if not os.path.isfile(path) or ext not in extensions or name.startswith("."):
            continue
        if os.path.splitext(name)[0].endswith(NOT_MASKS_SUFFIX):
            continue
        stem = image_stem(path)
        if stem in found and os.path.splitext(found[stem])[1].lower() in POLYGON_EXTENSIONS:
            continue
        found[stem] = path
    if not found:
        raise InputError(f"The {role} folder '{folder}' holds no polygon layers or rasters.")
    return found


def folder_pairs(produced: str, reference: str, grid: Optional[str] = None) -> Pairing:
    """Pair the files of a produced and a reference folder (and a grid folder) by image name."""
    prod = masks_in_folder(produced, "produced")
    ref = masks_in_folder(reference, "reference")
    grids = masks_in_folder(grid, "grid", GRID_EXTENSIONS) if grid else {}
    common = [s for s in prod if s in ref]
    if not common:
        raise InputError(f"No file of the produced folder '{produced}' matches a file of the reference folder "
                         f"'{reference}' by name ({', '.join(list(prod)[:3])} vs {', '.join(list(ref)[:3])}). "
                         "Name them alike (tile_masks.gpkg matches tile.gpkg).")
    missing = [s for s in common if grid and s not in grids]
    if missing:
        raise InputError(f"The grid folder '{grid}' has no raster for {', '.join(missing[:5])}.")
    return Pairing([(prod[s], ref[s], grids.get(s), s) for s in common], sorted(set(prod) ^ set(ref)))


def evaluation_pairs(produced: Optional[str], reference: Optional[str], grid: Optional[str] = None,
                     pair_lists: Sequence[Sequence[str]] = ()) -> Pairing:
    """What to evaluate: one image (PRODUCED REFERENCE [grid]), a dataset as folders, or a dataset as explicit
    ``pair_lists`` of PRODUCED REFERENCE [GRID] (``grid`` for those without their own)."""
    if pair_lists:
        if produced or reference:
            raise InputError("Give either PRODUCED REFERENCE or --pair options, not both.")
        pairs = []
        for items in pair_lists:
            if len(items) not in (2, 3):
                raise InputError(f"--pair takes PRODUCED REFERENCE [GRID], not {len(items)} path(s): "
                                 f"{' '.join(items)}.")
            pairs.append(tuple(items) if len(items) == 3 else (items[0], items[1], grid))
        return Pairing(pairs)
    if not (produced and reference):
        raise InputError("Give PRODUCED and REFERENCE (files or folders), or one --pair PRODUCED REFERENCE [GRID] "
                         "per image.")
    dirs = [os.path.isdir(p) for p in (produced, reference)]
    if all(dirs):
        if grid and not os.path.isdir(grid):
            raise InputError(f"With PRODUCED and REFERENCE folders, --grid must be a folder too, not '{grid}'.")
        return folder_pairs(produced, reference, grid)
    if any(dirs):
        raise InputError("PRODUCED and REFERENCE must both be folders or both be files.")
    return Pairing([(produced, reference, grid)])

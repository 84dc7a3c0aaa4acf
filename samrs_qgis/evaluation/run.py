"""Running an evaluation: each (produced, reference) pair read onto its grid, matched box by box, then AP
and the summary rows over all pairs."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ..errors import InputError
from ..progress import Progress
from .coco_ap import ScoredImage, coco_mask_ap
from .grid import Grid, GridMask, pair_grid
from .instance_rasters import read_instance_raster
from .iou import match_instances, resolve_classes, summarise
from .polygons import read_polygon_masks
from .results import EvaluationResult, InstanceScore
from .sources import EvaluationPair, InstanceRaster, Key, MaskSource, source_spec


def _read_masks(spec, role: str, grid: Grid, key_field: str, class_field: Optional[str], score_field: Optional[str],
                progress: Progress, status_field: Optional[str] = None) -> Dict[Key, GridMask]:
    """The masks of one source on ``grid``, by key (an instance raster's ids, a polygon layer's key field)."""
    if isinstance(spec, InstanceRaster):
        return read_instance_raster(spec, role, grid, progress)
    return read_polygon_masks(spec, role, grid, key_field, class_field, score_field, progress, status_field)


def evaluate(produced: MaskSource, reference: MaskSource, grid_raster: Optional[str] = None, *,
             key_field: str = "instance_id", reference_class_field: Optional[str] = None,
             produced_key_field: str = "instance_id", name: Optional[str] = None, unmatched_in_ap: bool = False,
             progress: Optional[Progress] = None) -> EvaluationResult:
    """Evaluate one image's produced masks against its reference masks.

    ``produced``: our polygon layer (``instance_id``, ``class_name``, ``score``; null geometries are empty
    masks) or our instance raster. ``reference``: a polygon layer whose ``key_field`` holds the produced
    instance ids (``reference_class_field`` optional) or an instance raster with the same ids. ``grid_raster``: the
    raster whose pixel grid the masks are compared on (optional when an input is an instance raster).
    """
    pair = EvaluationPair(produced, reference, grid_raster, name)
    return evaluate_dataset([pair], key_field=key_field, reference_class_field=reference_class_field,
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


def evaluate_dataset(pairs: Iterable[Union[EvaluationPair, tuple]], *, key_field: str = "instance_id",
                     reference_class_field: Optional[str] = None, produced_key_field: str = "instance_id",
                     unmatched_in_ap: bool = False, progress: Optional[Progress] = None) -> EvaluationResult:
    """Evaluate several images as one dataset: every pair is an image (its own grid and keys) and the
    measures pool all instances (AP as COCO over all images). The keyword arguments are the fields of
    :class:`samrs_qgis.settings.MatchingOptions`.

    Raises :class:`InputError` when no reference instance has a pixel on its grid.
    """
    progress = progress or Progress()
    pairs = [_as_pair(p) for p in pairs]
    if not pairs:
        raise InputError("No (produced, reference) pair to evaluate. Give at least one.")
    instances: List[InstanceScore] = []
    unmatched: List[Tuple[str, Key, str]] = []
    skipped: List[Tuple[str, Key]] = []
    scored: List[ScoredImage] = []
    names: set = set()
    images: List[str] = []
    for index, pair in enumerate(pairs):
        produced = source_spec(pair.produced, "produced masks")
        reference = source_spec(pair.reference, "reference masks")
        grid = pair_grid(pair, produced, reference)
        image = _image_name(pair, produced, names)
        images.append(image)
        progress.info(f"Evaluating {image} on the {grid.width} x {grid.height} grid of {grid.path}")
        ref = _read_masks(reference, "reference", grid, key_field, reference_class_field, None, progress)
        progress.set_fraction((index + 0.4) / len(pairs))
        prod = _read_masks(produced, "produced", grid, produced_key_field, "class_name", "score", progress, "status")
        progress.set_fraction((index + 0.8) / len(pairs))
        image_scored = ScoredImage(image, grid, [], [])
        match_instances(image, ref, prod, instances, unmatched, skipped, image_scored, unmatched_in_ap)
        scored.append(image_scored)
    if not instances:
        sources = ", ".join(f"'{source_spec(p.reference, 'reference masks').path}'" for p in pairs)
        raise InputError(f"The reference {sources} holds no instance with a pixel on the grid, so there is nothing "
                         "to evaluate. Check that it is the right layer, that it overlaps the grid raster (extent, "
                         "CRS), and that its polygons are at least a pixel wide.")
    resolve_classes(instances, unmatched, scored)
    ap = coco_mask_ap(scored, progress)
    result = summarise(instances, unmatched, ap)
    result.unmatched_produced = [(image, key) for image, key, _ in unmatched]
    result.skipped_reference = skipped
    result.images = images
    progress.set_fraction(1.0)
    return result

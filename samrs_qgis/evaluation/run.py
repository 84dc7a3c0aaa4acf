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
from .sources import EvaluationPair, InstanceRaster, Key, MaskSource, PolygonMasks, source_spec


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


IMAGES_NAMED = 3  # images named in a warning about several images; the rest are counted
KEYS_SHOWN = 3  # example keys of each side in the warning about keys that never match


def _images(names: List[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:IMAGES_NAMED])
    return shown + (f" and {len(names) - IMAGES_NAMED} more" if len(names) > IMAGES_NAMED else "")


def _keys(keys) -> str:
    ordered = sorted(keys, key=lambda k: (isinstance(k, str), str(k) if isinstance(k, str) else k))
    return ", ".join(map(str, ordered[:KEYS_SHOWN])) + (", …" if len(ordered) > KEYS_SHOWN else "")


def _key_fields(reference, produced, key_field: str, produced_key_field: str) -> Tuple[str, str]:
    """How the keys were read (``key field 'instance_id'``, the two fields, or the instance rasters' ids) and
    what to check when they never match."""
    ref_polygons, prod_polygons = isinstance(reference, PolygonMasks), isinstance(produced, PolygonMasks)
    if not (ref_polygons or prod_polygons):
        return "id", "check that both instance rasters are of this image and number its boxes alike"
    ref = f"'{key_field}'" if ref_polygons else "the instance raster's ids"
    prod = f"'{produced_key_field}'" if prod_polygons else "the instance raster's ids"
    hint = "check " + " / ".join(flag for flag, used in (("--key-field", ref_polygons),
                                                           ("--produced-key-field", prod_polygons)) if used)
    if ref_polygons and prod_polygons and key_field == produced_key_field:
        return f"key field {ref}", hint
    return f"key ({ref} in the reference, {prod} in the produced masks)", hint


class _PairingCheck:
    """What per-box matching found that would otherwise pass as silent zeros: images where no produced mask
    has a reference partner (an empty produced source, or keys that never match) and images whose matched
    produced masks are all empty. Reported as warnings once for the whole evaluation."""

    def __init__(self):
        self.empty_produced: List[str] = []  # images whose produced source holds no instance
        self.no_partner: List[Tuple[str, list, list]] = []  # (image, reference keys, produced keys)
        self.all_empty: List[str] = []  # images whose produced partners are all empty masks
        self.keys: Optional[Tuple[str, str]] = None  # (how keys are read, what to check): of the first image

    def add(self, image: str, ref: Dict[Key, GridMask], prod: Dict[Key, GridMask], keys: Tuple[str, str]) -> None:
        self.keys = self.keys or keys
        scorable = [k for k, m in ref.items() if m.area]
        partners = [k for k in scorable if k in prod]
        if scorable and not partners:
            if prod:
                self.no_partner.append((image, scorable, list(prod)))
            else:
                self.empty_produced.append(image)
        elif partners and not any(prod[k].area for k in partners):
            self.all_empty.append(image)

    def warn(self, progress: Progress, images: int) -> None:
        def where(names: List[str]) -> str:
            return f" in {len(names)} of {images} images ({_images(names)})" if images > 1 else ""

        if self.no_partner:
            names = [n for n, _, _ in self.no_partner]
            _, ref_keys, prod_keys = self.no_partner[0]
            keys, hint = self.keys
            progress.warning(f"no produced mask matches a reference instance by {keys}{where(names)} (reference "
                             f"keys {_keys(ref_keys)}; produced keys {_keys(prod_keys)}), so every reference "
                             f"instance there counts as missed: {hint}")
        if self.empty_produced:
            progress.warning(f"the produced masks hold no instance at all{where(self.empty_produced)}, so every "
                             "reference instance there counts as missed (IoU 0, AP 0): check that the produced "
                             "layer or raster is the one made for the image")
        if self.all_empty:
            progress.warning(f"every produced mask that matches a reference instance is empty{where(self.all_empty)} "
                             "(no geometry, or a status other than 'ok'), so their IoU is 0: check the produced "
                             "layer's status and detail fields")


def evaluate_dataset(pairs: Iterable[Union[EvaluationPair, tuple]], *, key_field: str = "instance_id",
                     reference_class_field: Optional[str] = None, produced_key_field: str = "instance_id",
                     unmatched_in_ap: bool = False, progress: Optional[Progress] = None) -> EvaluationResult:
    """Evaluate several images as one dataset: every pair is an image (its own grid and keys) and the
    measures pool all instances (AP as COCO over all images). The keyword arguments are the fields of
    :class:`samrs_qgis.settings.MatchingOptions`.

    Raises :class:`InputError` when no reference instance has a pixel on its grid.

    Results that would otherwise be silent zeros are warned about through ``progress`` (the CLI prints the
    warning, Processing pushes it): images where no produced mask matches a reference instance by key
    (wrong key fields: the warning shows example keys of both sides), images whose produced masks hold no
    instance at all, and images whose matched produced masks are all empty. None of these is an error,
    not even when the produced masks of every image are empty: a method that found nothing is truly
    scored 0 (every reference instance missed), and a comparison or ablation table keeps its row.
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
    check = _PairingCheck()
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
        check.add(image, ref, prod, _key_fields(reference, produced, key_field, produced_key_field))
        image_scored = ScoredImage(image, grid, [], [])
        match_instances(image, ref, prod, instances, unmatched, skipped, image_scored, unmatched_in_ap)
        scored.append(image_scored)
    if not instances:
        sources = ", ".join(f"'{source_spec(p.reference, 'reference masks').path}'" for p in pairs)
        raise InputError(f"The reference {sources} holds no instance with a pixel on the grid, so there is nothing "
                         "to evaluate. Check that it is the right layer, that it overlaps the grid raster (extent, "
                         "CRS), and that its polygons are at least a pixel wide.")
    check.warn(progress, len(pairs))
    resolve_classes(instances, unmatched, scored)
    ap = coco_mask_ap(scored, progress)
    result = summarise(instances, unmatched, ap)
    result.unmatched_produced = [(image, key) for image, key, _ in unmatched]
    result.skipped_reference = skipped
    result.images = images
    progress.set_fraction(1.0)
    return result

"""Per-box matching and IoU: reference instance k against produced instance k on one grid, the classes of
unclassed instances, and the per-class and overall IoU rows (with the AP values added).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .coco_ap import ScoredImage
from .grid import GridMask
from .results import OVERALL, EvaluationResult, InstanceScore, MetricsRow
from .sources import Key

DEFAULT_CLASS = "object"  # class when no input gives any (as the engine's default without a class field)
UNKNOWN_CLASS = "(unknown)"  # class of an unclassed instance among several known classes
DEFAULT_SCORE = 1.0  # COCO needs a score for every detection; an empty score field (GrabCut) ranks all alike


def match_instances(image: str, ref: Dict[Key, GridMask], prod: Dict[Key, GridMask], instances: List[InstanceScore],
                    unmatched: List[Tuple[str, Key, str]], skipped: List[Tuple[str, Key]], scored: ScoredImage,
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


def resolve_classes(instances: List[InstanceScore], unmatched: List[Tuple[str, Key, Optional[str]]],
                    scored: List[ScoredImage]) -> None:
    """Give instances left without a class (None) the dataset's only class, or a default (see the package docstring)."""
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


def summarise(instances: List[InstanceScore], unmatched: List[Tuple[str, Key, str]],
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

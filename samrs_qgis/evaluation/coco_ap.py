"""COCO mask AP (AP@[.5:.95], AP50, AP75) by pycocotools' ``COCOeval`` with ``iouType="segm"``.

AP over many instances: ``COCOeval`` matches detections in pure Python (cost ~ detections x references
per image and class). Since a detection can only match a reference it overlaps, each image is split
internally into clusters of instances whose bounding boxes overlap and every cluster is given to COCOeval
as its own image. Annotation ids are assigned cluster by cluster, so the greedy matching and the ranking
are those of COCOeval on the whole image with its annotations in that order (which only matters for ties
in score, which COCOeval ranks by annotation order), only faster.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..progress import Progress
from .grid import Grid


@dataclass
class ScoredImage:
    """What AP needs of one image: its grid, references and detections ``(class, rle, score)``."""

    image: str
    grid: Grid
    references: List[Tuple[str, dict, int]]  # (class, rle, area)
    detections: List[Tuple[str, dict, int, float]]  # (class, rle, area, score)


def overlap_clusters(xywh: np.ndarray) -> List[int]:
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


def coco_mask_ap(scored: List[ScoredImage], progress: Progress,
                 split_clusters: bool = True) -> Dict[Optional[str], Tuple]:
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
        groups = overlap_clusters(xywh)
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

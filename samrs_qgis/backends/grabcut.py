"""OpenCV GrabCut as a weights-free backend: the box is GrabCut's rectangle, its surroundings the background.

It needs no checkpoint, so the demo and the end-to-end quality tests give meaningful masks anywhere.
Its masks are not SAM's; outputs record which backend made them.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ..errors import missing_packages
from ..prompts import Prompts
from .base import Backend, BoxLogits

CONTEXT = 0.5  # background context around the box, as a fraction of its larger side
MIN_CONTEXT = 8  # pixels
ITERATIONS = 5


CORE = 0.25  # semi-axes of the sure-foreground ellipse at the box centre, as fractions of the box size


def seed_mask(shape_rc, rect):
    """GrabCut's starting labels: outside the box sure background, inside probable foreground, and a small
    ellipse at the box centre sure foreground (detection boxes are centred on their object; without this
    seed GrabCut tends to give up on objects whose colours resemble their surroundings, e.g. tree crowns)."""
    import cv2

    mask = np.full(shape_rc, cv2.GC_BGD, np.uint8)
    x, y, w, h = rect
    mask[y:y + h, x:x + w] = cv2.GC_PR_FGD
    centre = (int(x + w / 2), int(y + h / 2))
    axes = (max(int(w * CORE), 1), max(int(h * CORE), 1))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, int(cv2.GC_FGD), -1)
    return mask


class GrabCutBackend(Backend):
    name = "grabcut"

    @classmethod
    def from_options(cls, options) -> "GrabCutBackend":
        return cls()

    def __init__(self, iterations: int = ITERATIONS):
        try:
            import cv2
        except ImportError as exc:
            raise missing_packages("The GrabCut backend needs OpenCV", exc, "light") from exc
        self._cv2 = cv2
        self.iterations = iterations
        self._frame = None

    def encode(self, frame: np.ndarray) -> None:
        self._frame = frame

    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        return [self._segment_one(b) for b in boxes]

    def _segment_one(self, box: np.ndarray) -> BoxLogits:
        cv2 = self._cv2
        rows, cols = self._frame.shape[:2]
        x0, y0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
        x1, y1 = min(math.ceil(box[2]), cols), min(math.ceil(box[3]), rows)
        pad = max(MIN_CONTEXT, int(CONTEXT * max(x1 - x0, y1 - y0)))
        cx0, cy0, cx1, cy1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, cols), min(y1 + pad, rows)
        crop = np.ascontiguousarray(self._frame[cy0:cy1, cx0:cx1, ::-1])  # OpenCV wants BGR
        rect = (x0 - cx0, y0 - cy0, max(x1 - x0, 1), max(y1 - y0, 1))
        mask = seed_mask(crop.shape[:2], rect)
        try:
            cv2.setRNGSeed(0)  # GrabCut starts from random k-means: seeded, a box's mask never depends on earlier boxes
            cv2.grabCut(crop, mask, None, np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64),
                        self.iterations, cv2.GC_INIT_WITH_MASK)
            inside = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        except cv2.error:
            # No background around the rectangle (the box fills the frame) or a flat image:
            # GrabCut has nothing to model, so the box itself is the answer.
            inside = np.zeros(crop.shape[:2], bool)
            inside[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = True
        grid = np.where(inside, 1.0, -1.0).astype(np.float32)
        return BoxLogits(grid=grid, origin_x=float(cx0), origin_y=float(cy0), cell=1.0, score=None)

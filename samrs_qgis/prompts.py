"""What SAM is given for each box: the prompt modes SAMRS compared, in frame pixels.

Modes (SAMRS chose ``box`` on HRSC2016; the others are its ablation):

* ``box`` - the horizontal box enclosing the box polygon: the box itself for a horizontal box, the
  "RH-box" for a rotated one.
* ``rbox-mask`` - the (rotated) box polygon as a dense mask prompt: SAM's 256x256 mask input over the
  1024x1024 padded frame, +1000 inside and -1000 outside (SAMRS's values).
* ``point`` - one positive point at the centre of the box polygon.
* ``box+point`` - the enclosing box and the centre point together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .errors import InputError

PROMPT_MODES = ("box", "rbox-mask", "point", "box+point")
MASK_PROMPT_LOGIT = 1000.0  # magnitude of the dense mask prompt inside / outside the box (as SAMRS)


@dataclass
class Prompts:
    """Prompts for a batch of n boxes, frame pixels, pixel-corner convention (x right, y down).

    ``boxes`` (n, 4) x0, y0, x1, y1 enclosing horizontal boxes or None; ``points`` (n, 2) x, y
    centres or None; ``polygons`` the box polygons' exterior rings, each (k, 2), for a mask prompt, or None.
    """

    boxes: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    polygons: Optional[List[np.ndarray]] = None

    @property
    def count(self) -> int:
        for part in (self.boxes, self.points, self.polygons):
            if part is not None:
                return len(part)
        return 0


def check_prompt_mode(mode: str) -> str:
    if mode not in PROMPT_MODES:
        raise InputError(f"Unknown prompt mode '{mode}'. Choose one of: {', '.join(PROMPT_MODES)}.")
    return mode


def build_prompts(mode: str, boxes: np.ndarray, polygons: Sequence[np.ndarray]) -> Prompts:
    """The prompts of ``mode`` from frame-space enclosing boxes (n, 4) and box polygon rings (each (k, 2))."""
    check_prompt_mode(mode)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = np.array([polygon_centre(p) for p in polygons], dtype=np.float64).reshape(-1, 2)
    return Prompts(boxes=boxes if mode in ("box", "box+point") else None,
                   points=centres if mode in ("point", "box+point") else None,
                   polygons=list(polygons) if mode == "rbox-mask" else None)


def polygon_centre(ring: np.ndarray) -> np.ndarray:
    """Area centroid of a closed or open ring (k, 2); the mean of its vertices if it has no area."""
    ring = np.asarray(ring, dtype=np.float64)
    if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]
    x, y = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    if abs(area) < 1e-9:
        return ring.mean(axis=0)
    return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)

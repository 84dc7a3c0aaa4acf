"""The interface every segmentation backend implements, and the logits it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np


@dataclass
class BoxLogits:
    """A backend's answer for one box: a grid of logits (> 0 means object) placed in frame space.

    Grid cell ``(i, j)`` has its centre at frame coordinates
    ``x = origin_x + (j + 0.5) * cell``, ``y = origin_y + (i + 0.5) * cell`` (pixel-corner convention).
    SAM gives a 256x256 grid with ``cell = 4`` over the 1024x1024 padded frame; GrabCut one cell per frame pixel.
    """

    grid: np.ndarray  # float32 (rows, cols)
    origin_x: float
    origin_y: float
    cell: float
    score: Optional[float]  # the backend's own quality estimate (SAM: predicted IoU); None if it has none


class Backend:
    """Segments boxes in one window at a time: ``encode`` the window's frame, then ``decode`` its boxes.

    Box coordinates given to ``decode`` are frame-space, pixel-corner ``(x0, y0, x1, y1)``.
    """

    name = "backend"
    input_size = 1024  # longest side of the frame the backend wants, in pixels

    def encode(self, frame: np.ndarray) -> None:
        """Take the frame, uint8 (rows, cols, 3) RGB, whose longest side is ``input_size``."""
        raise NotImplementedError

    def decode(self, boxes: np.ndarray) -> List[BoxLogits]:
        """Boxes (n, 4) float frame coordinates -> one :class:`BoxLogits` per box."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

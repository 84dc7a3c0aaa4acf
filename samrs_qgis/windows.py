"""Planning the windows the backend encodes: every usable box lies wholly inside exactly one window.

Windows are ``window_size`` pixels square at native resolution (SAM's input is 1024 px), smaller only
where the raster is. They are placed from the boxes, not on a fixed grid, so empty areas cost nothing.
A box larger than a window gets a window of its own around it, which the backend sees shrunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .boxes import PixelBox
from .raster_input import PixelWindow

BIG_BOX_MARGIN = 0.05  # context added around a box that gets its own window, as a fraction of its size


@dataclass
class WindowPlan:
    """One window to encode and the boxes to decode in it."""

    window: PixelWindow
    boxes: List[PixelBox]
    frame_shape: Tuple[int, int]  # (rows, cols) of the image the backend sees

    @property
    def scale(self) -> Tuple[float, float]:
        """Frame pixels per native pixel along (x, y)."""
        return self.frame_shape[1] / self.window.width, self.frame_shape[0] / self.window.height


def frame_shape_for(window: PixelWindow, model_size: int) -> Tuple[int, int]:
    """(rows, cols) with the longest side ``model_size``, rounded as segment-anything's ResizeLongestSide."""
    scale = model_size / max(window.width, window.height)
    return int(window.height * scale + 0.5), int(window.width * scale + 0.5)


def box_pixel_extent(bounds: Tuple[float, float, float, float]) -> Tuple[int, int, int, int]:
    """Integer pixel extent (c0, r0, c1, r1) covering pixel-space bounds."""
    x0, y0, x1, y1 = bounds
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


def plan_windows(boxes: Sequence[PixelBox], raster_size: Tuple[int, int], window_size: int = 1024,
                 model_size: int = 1024) -> List[WindowPlan]:
    """Windows covering all usable boxes (``status == ok``), in raster row order.

    Boxes larger than a window get one each. The others are placed greedily: take the top-most
    unplaced box, put the window's top edge at it, and slide the window horizontally either to
    the position holding the most unplaced boxes or flush with the left-most box it can reach.
    Neither placement wins on every scene, planning costs milliseconds, so both are run and the
    plan with fewer windows (fewer encoder passes) is kept.
    """
    width, height = raster_size
    win_w, win_h = min(window_size, width), min(window_size, height)
    usable = [b for b in boxes if b.is_usable]
    extents = np.array([box_pixel_extent(b.bounds) for b in usable], dtype=np.int64).reshape(-1, 4)
    big = (extents[:, 2] - extents[:, 0] > win_w) | (extents[:, 3] - extents[:, 1] > win_h)

    windows: List[Tuple[PixelWindow, np.ndarray]] = []
    for i in np.flatnonzero(big):
        c0, r0, c1, r1 = extents[i]
        mx, my = math.ceil((c1 - c0) * BIG_BOX_MARGIN), math.ceil((r1 - r0) * BIG_BOX_MARGIN)
        c0, r0, c1, r1 = max(c0 - mx, 0), max(r0 - my, 0), min(c1 + mx, width), min(r1 + my, height)
        windows.append((PixelWindow(int(c0), int(r0), int(c1 - c0), int(r1 - r0)), np.array([i])))

    candidates = [_greedy(extents, big, (width, height), (win_w, win_h), most_boxes)
                  for most_boxes in (True, False)]
    windows += min(candidates, key=len)
    plans = [WindowPlan(w, [usable[j] for j in members], frame_shape_for(w, model_size)) for w, members in windows]
    plans.sort(key=lambda p: (p.window.row, p.window.col))
    return plans


def _greedy(extents: np.ndarray, big: np.ndarray, raster_size: Tuple[int, int], window: Tuple[int, int],
            most_boxes: bool) -> List[Tuple[PixelWindow, np.ndarray]]:
    """Windows (and the indices of the boxes they hold) for the boxes that fit in a window."""
    width, height = raster_size
    win_w, win_h = window
    todo = np.flatnonzero(~big)
    todo = todo[np.lexsort((extents[todo, 0], extents[todo, 1]))]
    placed = big.copy()
    out = []
    for i in todo:
        if placed[i]:
            continue
        c0, r0, c1, r1 = extents[i]
        row = int(min(max(r0, 0), height - win_h))
        free = np.flatnonzero(~placed)
        fits_rows = free[(extents[free, 1] >= row) & (extents[free, 3] <= row + win_h)]
        lo, hi = max(c1 - win_w, 0), min(c0, width - win_w)
        if most_boxes:
            starts = np.unique(np.clip(np.concatenate([[lo, hi], extents[fits_rows, 0]]), lo, hi))
            inside = ((extents[fits_rows, 0][None, :] >= starts[:, None])
                      & (extents[fits_rows, 2][None, :] <= starts[:, None] + win_w))
            col = int(starts[np.argmax(inside.sum(axis=1))])
        else:
            reachable = fits_rows[extents[fits_rows, 0] >= lo]
            col = int(min(max(extents[reachable, 0].min(), lo), hi))
        members = fits_rows[(extents[fits_rows, 0] >= col) & (extents[fits_rows, 2] <= col + win_w)]
        placed[members] = True
        out.append((PixelWindow(col, row, win_w, win_h), members))
    return out


def window_lower_bound(boxes: Sequence[PixelBox], raster_size: Tuple[int, int], window_size: int = 1024) -> int:
    """A lower bound on the windows any plan needs: the size of a set of boxes no two of which fit in one
    window together (found greedily, left to right). Boxes larger than a window need one each."""
    width, height = raster_size
    win_w, win_h = min(window_size, width), min(window_size, height)
    extents = np.array([box_pixel_extent(b.bounds) for b in boxes if b.is_usable], dtype=np.int64).reshape(-1, 4)
    big = (extents[:, 2] - extents[:, 0] > win_w) | (extents[:, 3] - extents[:, 1] > win_h)
    small = extents[~big]
    small = small[np.argsort(small[:, 0], kind="stable")]
    chosen = np.empty((0, 4), dtype=np.int64)
    for e in small:
        if len(chosen):
            union_w = np.maximum(chosen[:, 2], e[2]) - np.minimum(chosen[:, 0], e[0])
            union_h = np.maximum(chosen[:, 3], e[3]) - np.minimum(chosen[:, 1], e[1])
            if np.any((union_w <= win_w) & (union_h <= win_h)):
                continue  # shares a window with a chosen box
        chosen = np.vstack([chosen, e])
    return int(big.sum()) + len(chosen)

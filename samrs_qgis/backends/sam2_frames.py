"""SAM 2's frames: a frame stretched to the model's square input, prompts taken there and logits brought back.

``SAM2ImagePredictor`` resizes a frame of W x H pixels to the square input of S x S (S = 1024) *without* keeping
its aspect ratio: S / W input pixels per frame pixel across, S / H down (:class:`StretchedFrame`). The input is the
frame in [0, 1], resized bilinearly with antialiasing and normalised with ImageNet's mean and std
(``SAM2Transforms``; :func:`input_image` without torch). Prompt coordinates go to the input by the two scales
(``SAM2Transforms.transform_coords``).

SAM 2's low-resolution logits are a 256 x 256 grid over the input, 4 input pixels per cell. A square frame (the
engine's frames are square except where a raster is smaller than a window or not square itself) maps to it by one
scale, so a box's logits are its crop of that grid, as for SAM. A frame with W != H has cells of 4 W / S by
4 H / S frame pixels, which one cell size cannot place: there each box's logits are brought to one cell per frame
pixel over its region, by the bilinear interpolation ``SAM2ImagePredictor`` uses to bring its masks to the image's
size (``align_corners=False``), evaluated at those pixels' centres only.

Pure numpy (and PIL): shared by the torch backend (:mod:`.sam2_backend`) and the ONNX one (:mod:`.onnx_sam2`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..logits import _axis_weights
from ..prompts import Prompts
from .base import BoxLogits
from .sam import sam_box_prompt, sam_mask_prompt, sam_point_prompt
from .sam_decoder import EMBED_CELL, LOGIT_CELL

PIXEL_MEAN = (0.485, 0.456, 0.406)  # SAM2Transforms' normalisation of [0, 1] pixel values
PIXEL_STD = (0.229, 0.224, 0.225)
BOX_LABELS = (2, 3)  # the prompt encoder's labels of a box's top-left and bottom-right corners

# A decoded box: (logits float32 over embedding cells [row0, ...) x [col0, ...) of the input at LOGIT_CELL input
# pixels per value, row0, col0, score)
Decoded = Tuple[np.ndarray, int, int, float]


def input_image(frame: np.ndarray, size: int) -> np.ndarray:
    """The frame, uint8 (rows, cols, 3) RGB, as SAM 2's image encoder takes it: float32 (1, 3, size, size).

    ``SAM2Transforms``' steps: to [0, 1], resized to size x size bilinearly with antialiasing (PIL's bilinear
    filter on float32 images is the kernel torch's ``antialias=True`` copies: measured within 2.4e-7 of
    ``SAM2Transforms`` on [0, 1] values, enlarging and reducing), normalised with ImageNet's mean and std."""
    from PIL import Image

    frame = np.ascontiguousarray(frame[..., :3])
    if frame.shape[:2] == (size, size):
        planes = frame.transpose(2, 0, 1).astype(np.float32)
    else:  # mode "F": resampled in float32, not rounded back to uint8
        planes = np.stack([np.asarray(Image.fromarray(frame[..., c].astype(np.float32), mode="F")
                                      .resize((size, size), Image.BILINEAR)) for c in range(3)])
    mean = np.float32(PIXEL_MEAN)[:, None, None]
    std = np.float32(PIXEL_STD)[:, None, None]
    return ((planes / np.float32(255) - mean) / std)[None].astype(np.float32)


def pixel_span(lo: float, hi: float, size: int) -> Tuple[int, int]:
    """Frame pixels [p0, p1) whose centres bracket every position in [lo, hi] (bilinear sampling reads the two
    pixels around a position), within [0, size)."""
    p0 = min(max(math.floor(lo - 0.5), 0), size - 1)
    p1 = min(max(math.floor(hi - 0.5) + 2, p0 + 1), size)
    return p0, p1


@dataclass(frozen=True)
class StretchedFrame:
    """A frame of ``rows`` x ``cols`` pixels stretched to the square input of ``size`` x ``size``."""

    rows: int
    cols: int
    size: int = 1024

    @property
    def scale(self) -> Tuple[float, float]:
        """Input pixels per frame pixel (x, y)."""
        return self.size / self.cols, self.size / self.rows

    @property
    def isotropic(self) -> bool:
        """True when one scale maps the frame to the input (a square frame): logits keep SAM 2's own grid."""
        sx, sy = self.scale
        return sx == sy

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Frame (x, y) -> input (x, y), as ``SAM2Transforms.transform_coords``: divided by the frame's size, times
        the input's (float32)."""
        return np.asarray(xy, dtype=np.float32) / np.float32([self.cols, self.rows]) * np.float32(self.size)

    # -- prompts ------------------------------------------------------------------------------------
    def prompt_points(self, prompts: Prompts) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(coords float32 (n, k, 2) in the input, labels int32 (n, k)) as ``SAM2ImagePredictor._predict`` puts
        them together: a box's corners labelled 2 and 3, then the point labelled 1 (the prompt encoder appends its
        padding point). None when there are neither boxes nor points (a mask alone: no sparse prompt at all)."""
        count, coords, labels = prompts.count, [], []
        if prompts.boxes is not None:
            coords.append(self.to_input(sam_box_prompt(prompts.boxes).reshape(-1, 2, 2)))
            labels.append(np.tile(np.int32(BOX_LABELS), (count, 1)))
        if prompts.points is not None:
            coords.append(self.to_input(sam_point_prompt(prompts.points)))
            labels.append(np.ones((count, 1), dtype=np.int32))
        if not coords:
            return None
        return np.concatenate(coords, axis=1).astype(np.float32), np.concatenate(labels, axis=1)

    def mask_prompt(self, polygons: Sequence[np.ndarray], grid: int) -> np.ndarray:
        """The polygons (frame pixels) as dense mask prompts over the input: float32 (n, 1, grid, grid)."""
        sx, sy = self.scale
        rings = [np.asarray(ring, dtype=np.float64) * (sx, sy) for ring in polygons]
        return sam_mask_prompt(rings, grid, self.size / grid)

    # -- logits -------------------------------------------------------------------------------------
    def pixel_spans(self, regions: Optional[np.ndarray], count: int) -> Optional[List[Tuple[int, int, int, int]]]:
        """Per box, the frame pixels (x0, y0, x1, y1) its logits are given at, one cell per pixel, when the frame is
        not square; None for a square frame (its logits keep the input's grid)."""
        if self.isotropic:
            return None
        spans = []
        for i in range(count):
            x0, y0, x1, y1 = (0.0, 0.0, float(self.cols), float(self.rows)) if regions is None else regions[i]
            (px0, px1), (py0, py1) = pixel_span(x0, x1, self.cols), pixel_span(y0, y1, self.rows)
            spans.append((px0, py0, px1, py1))
        return spans

    def input_regions(self, regions: Optional[np.ndarray], spans) -> Optional[np.ndarray]:
        """Where in the input each box's logits are read, (n, 4) input pixels: its region scaled (square frame),
        or the centres of its pixels (``spans``, a frame that is not square); None: the whole input."""
        sx, sy = self.scale
        if spans is None:
            return None if regions is None else np.asarray(regions, dtype=np.float64) * sx
        return np.array([((x0 + 0.5) * sx, (y0 + 0.5) * sy, (x1 - 0.5) * sx, (y1 - 0.5) * sy)
                         for x0, y0, x1, y1 in spans], dtype=np.float64).reshape(-1, 4)

    def place(self, decoded: Sequence[Decoded], spans) -> List[BoxLogits]:
        """Decoded crops of the input's logit grid -> BoxLogits in frame space: the crop scaled (square frame), or
        resampled at the centres of the box's pixels (``spans`` from :meth:`pixel_spans`)."""
        if spans is None:
            per = 1.0 / self.scale[0]
            return [BoxLogits(grid=grid, origin_x=col * EMBED_CELL * per, origin_y=row * EMBED_CELL * per,
                              cell=LOGIT_CELL * per, score=score) for grid, row, col, score in decoded]
        sx, sy = self.scale
        out = []
        for (grid, row, col, score), (x0, y0, x1, y1) in zip(decoded, spans):
            y_lo, y_hi, wy = _axis_weights(y0, y1, sy, row * EMBED_CELL, LOGIT_CELL, grid.shape[0])
            x_lo, x_hi, wx = _axis_weights(x0, x1, sx, col * EMBED_CELL, LOGIT_CELL, grid.shape[1])
            rows = grid[y_lo] * (1.0 - wy)[:, None] + grid[y_hi] * wy[:, None]
            pixels = rows[:, x_lo] * (1.0 - wx)[None, :] + rows[:, x_hi] * wx[None, :]
            out.append(BoxLogits(grid=pixels.astype(np.float32), origin_x=float(x0), origin_y=float(y0), cell=1.0,
                                 score=score))
        return out

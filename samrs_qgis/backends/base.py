"""The interface every segmentation backend implements, and the logits it returns.

Everything the pipeline asks of a backend is here, with defaults for what a backend may lack (an
embedding to cache, a decoder to compile), so a new model family is one module with one subclass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..prompts import Prompts


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


class PendingLogits:
    """A batch's logits on their way: :meth:`result` waits for the device (a GPU decodes while the host
    post-processes the previous batch) and gives one :class:`BoxLogits` per box, in batch order."""

    def __init__(self, finish: Callable[[], List[BoxLogits]]):
        self._finish = finish

    @classmethod
    def ready(cls, logits: List[BoxLogits]) -> "PendingLogits":
        return cls(lambda: logits)

    def result(self) -> List[BoxLogits]:
        return self._finish()


class Backend:
    """Segments boxes in one window at a time: ``encode`` the window's frame, then ``decode`` its boxes.

    Box coordinates given to ``decode`` are frame-space, pixel-corner ``(x0, y0, x1, y1)``.
    """

    name = "backend"
    input_size = 1024  # longest side of the frame the backend wants, in pixels
    preferred_batch = 4  # boxes per decode call when the user sets none
    prompt_modes = ("box",)  # the prompt modes (see :mod:`samrs_qgis.prompts`) this backend understands
    notes: Tuple[str, ...] = ()  # what the user is warned of once the backend is made (e.g. why not on the GPU)
    remarks: Tuple[str, ...] = ()  # what the user is told as information once it is made (e.g. what auto chose)

    @classmethod
    def from_options(cls, options) -> "Backend":
        """The backend loaded as ``options`` (:class:`samrs_qgis.settings.SegmentOptions`) say."""
        raise NotImplementedError

    @classmethod
    def check_prompt_mode(cls, prompt: str) -> None:
        """Raise an InputError when this backend cannot be prompted with ``prompt``."""
        if prompt not in cls.prompt_modes:
            raise InputError(f"The {cls.name} backend takes the prompt modes {', '.join(cls.prompt_modes)}, not "
                             f"'{prompt}'. Choose one of those, or another backend (SAM with a checkpoint).")
    device = "cpu"  # where it computes, as torch names it: "cpu", "cuda", "cuda:1", "mps"
    device_name = ""  # the device's own name (a GPU's, the CPU model); "" when the backend does not say
    compilable = False  # whether compile_decoder can make decoding faster; False: the backend cannot compile
    compile_run_boxes = 0  # the most boxes announced for runs ahead with no embedding yet (a dataset's total)

    def encode(self, frame: np.ndarray) -> None:
        """Take the frame, uint8 (rows, cols, 3) RGB, whose longest side is ``input_size``."""
        raise NotImplementedError

    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        """Boxes (n, 4) float frame coordinates -> one :class:`BoxLogits` per box.

        ``regions`` (n, 4) frame-space (x0, y0, x1, y1): where each box's logits will be sampled; a
        backend may return a grid that covers only that area. None: the whole frame.
        ``prompts``: what to prompt with (a mode of :attr:`prompt_modes`); None: the boxes themselves.
        """
        raise NotImplementedError

    def decode_async(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
                     prompts: Optional[Prompts] = None) -> PendingLogits:
        """:meth:`decode`, started: a backend whose device runs apart from the host returns once the work is
        queued; errors of starting (out of memory) are raised here. By default it decodes at once."""
        return PendingLogits.ready(self.decode(boxes, regions, prompts))

    def free_cached_memory(self) -> None:
        """Give memory the device keeps cached back to it (after an out-of-memory error)."""

    def is_out_of_memory(self, error: BaseException) -> bool:
        """True when ``error`` means the device ran out of memory (the caller retries with fewer boxes)."""
        return False

    @property
    def embedding(self):
        """The encoded window for the embedding cache: named float32 arrays (``Dict[str, np.ndarray]``, see
        :mod:`samrs_qgis.embedding_cache`); None for backends without one."""
        return None

    def load_embedding(self, embedding, frame_shape) -> None:
        """Decode the next boxes against ``embedding`` (as :attr:`embedding` gave it) of a frame of
        ``frame_shape`` (rows, cols) instead of encoding that frame."""
        raise NotImplementedError

    @property
    def compiled(self) -> bool:
        """True once :meth:`compile_decoder` has taken effect."""
        return False

    def compile_decoder(self) -> None:
        """Compile the decoder (same results, faster per box). A backend that cannot compile does nothing."""

    def compile_threshold(self) -> int:
        """Boxes of a CPU run from which compiling the decoder pays off where it measured faster; asked only
        of a compilable backend."""
        raise NotImplementedError

    def compile_verdict(self):
        """What measuring on this machine found (a :class:`.compile_verdict.CompileVerdict`: is the compiled
        decoder faster?); None when not measured yet. Asked only of a compilable backend."""
        return None

    def measure_compile(self, boxes: np.ndarray, regions: Optional[np.ndarray], progress):
        """Time the eager against the compiled decoder on ``boxes`` (with their ``regions``) of the current
        window, keep the verdict for this machine and leave the decoder compiled iff it was faster; returns the
        verdict. Checks ``progress`` for cancelling. Asked only of a compilable backend."""
        raise NotImplementedError

    def identity(self) -> str:
        """What besides the frame decides the embedding (model, precision); '' = not cacheable."""
        return ""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Free the model and what the device keeps for it; the backend is not used afterwards (describe()
        still works). Whoever made a backend closes it, in a ``finally``."""

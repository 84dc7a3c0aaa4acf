"""The segmentation settings: what decides what a run computes, one definition for every front end.

(Provisional: the declarative table of settings is built here.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

BACKENDS = ("sam", "grabcut")


@dataclass
class SegmentOptions:
    """Everything that decides what is computed. Defaults follow SAMRS."""

    backend: str = "sam"
    checkpoint: Optional[str] = None
    model_type: str = "auto"
    device: str = "auto"
    multimask: bool = False  # True: best of three candidate masks by predicted IoU
    prompt: str = "box"  # see samrs_qgis.prompts: box, rbox-mask, point, box+point
    clip_to_box: bool = False  # keep only mask pixels whose centre lies inside the (rotated) box
    fill_holes: bool = False
    min_island_px: int = 0  # drop mask components with fewer pixels (native raster pixels)
    keep_largest: bool = False  # keep only the largest mask component
    batch_size: Optional[int] = None  # boxes per decoder call; None: what suits the device (CPU 4, CUDA 64)
    precision: str = "auto"  # auto: fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32
    compile_decoder: str = "auto"  # on / off / auto: on for CPU runs of many boxes (see backends.sam)
    embedding_cache: bool = True  # keep window embeddings on disk for later runs
    cache_dir: Optional[str] = None  # default ~/.cache/samrs/embeddings
    cache_limit_mb: float = 2048
    window_size: int = 1024
    bands: Optional[Sequence[int]] = None
    stretch: str = "auto"
    class_field: Optional[str] = None
    id_field: Optional[str] = None
    class_names: Optional[Sequence[str]] = None  # explicit class list: ids by position
    background: int = 255

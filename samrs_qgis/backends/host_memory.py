"""How this process's C allocator treats the large, short-lived arrays of a model on the CPU.

Decoding a batch of boxes makes and frees a few (B, 4096, 256) float tensors per layer (16 MB for a CPU batch of
4). glibc's malloc serves blocks that large with fresh ``mmap`` pages and gives them back on free, so every batch
touches its memory anew: about 12 MB of page faults per box, a quarter of the decoder's time (measured as an AVX2
CPU: 16.5 -> 12 ms per box with freed blocks kept, 150,000 minor faults per 48 boxes -> 0). The same holds for
the per-window tensors of every family and for ONNX Runtime's encoder without its arena.

:func:`keep_freed_memory` makes glibc serve blocks below ``MMAP_THRESHOLD`` from its heap and keep up to
``TRIM_THRESHOLD`` of freed memory for the next batch, instead of returning it at once. Peak memory is unchanged
(freed blocks are reused, not added); what stays mapped after a run is at most ``TRIM_THRESHOLD``. Elsewhere
(macOS, Windows, musl) the system allocator keeps its own policy and this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024 * 1024  # bytes: larger blocks (a ViT's attention scores) still come from mmap
TRIM_THRESHOLD = 256 * 1024 * 1024  # bytes of free heap top kept for the next batch

_applied = False


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process (see the module docstring); True when they are set. Setting
    M_MMAP_THRESHOLD turns off glibc's own adjustment of it, which would keep raising and trimming around
    blocks of a decoder batch's size."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied

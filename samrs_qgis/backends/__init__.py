"""Segmentation backends behind one interface (:class:`.base.Backend`), made by name.

A model family is one module here holding a :class:`~.base.Backend` subclass (with its ``from_options``),
plus its entry in :data:`BACKEND_CLASSES` and its name in :data:`samrs_qgis.settings.BACKENDS`.
Backend modules are light to import; what is heavy (torch for SAM, OpenCV for GrabCut) loads only when a
backend is made.
"""
from __future__ import annotations

import importlib
from typing import Dict, Tuple, Type

from ..errors import InputError
from .base import Backend

BACKEND_CLASSES: Dict[str, Tuple[str, str]] = {"sam": (".sam", "SamBackend"),
                                                "grabcut": (".grabcut", "GrabCutBackend")}  # name -> (module, class)


def backend_class(name: str) -> Type[Backend]:
    """The Backend subclass of a backend name (nothing loaded); an InputError for an unknown name."""
    if name not in BACKEND_CLASSES:
        raise InputError(f"Unknown backend '{name}'. Choose one of: {', '.join(BACKEND_CLASSES)}.")
    module, cls = BACKEND_CLASSES[name]
    return getattr(importlib.import_module(module, __package__), cls)


def make_backend(options, progress=None) -> Backend:
    """The backend ``options.backend`` names (options: :class:`samrs_qgis.settings.SegmentOptions`; ``auto``
    as :func:`samrs_qgis.settings.resolve_backend` resolves it), loaded and ready (checkpoint errors surface
    here); its notes (e.g. why it runs on the CPU) go to ``progress`` as warnings."""
    from ..settings import resolve_backend  # not at the top: settings reads the backends' choices

    options = resolve_backend(options)
    backend = backend_class(options.backend).from_options(options)
    for note in backend.notes if progress is not None else ():
        progress.warning(note)
    return backend

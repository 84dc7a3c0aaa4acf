"""Segmentation backends behind one interface (:class:`.base.Backend`), made by name.

A model family is one module here holding a :class:`~.base.Backend` subclass, plus its entry in
:data:`FACTORIES` (how the options make it) and its name in :data:`samrs_qgis.settings.BACKENDS`.
Backends are imported only when made: SAM's brings torch.
"""
from __future__ import annotations

from typing import Callable, Dict

from ..errors import InputError
from .base import Backend


def _sam(options) -> Backend:
    from .sam import SamBackend

    return SamBackend(options.checkpoint, options.model_type, options.device, options.multimask, options.precision)


def _grabcut(options) -> Backend:
    from .grabcut import GrabCutBackend

    return GrabCutBackend()


FACTORIES: Dict[str, Callable[..., Backend]] = {"sam": _sam, "grabcut": _grabcut}  # name -> maker from options


def make_backend(options) -> Backend:
    """The backend ``options.backend`` names (options: :class:`samrs_qgis.settings.SegmentOptions`; ``auto``
    as :func:`samrs_qgis.settings.resolve_backend` resolves it), loaded and ready (checkpoint errors surface
    here)."""
    from ..settings import BACKENDS, resolve_backend  # not at the top: settings reads the backends' choices

    options = resolve_backend(options)
    factory = FACTORIES.get(options.backend)
    if factory is None:
        raise InputError(f"Unknown backend '{options.backend}'. Choose one of: {', '.join(BACKENDS)}.")
    return factory(options)

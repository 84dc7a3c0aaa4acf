"""Segmentation backends behind one interface (:class:`.base.Backend`), made by name.

The user chooses a backend by name (:data:`BACKEND_CLASSES`: ``sam`` or ``grabcut``). The ``sam`` backend runs
whatever SAM model file it is given: the file's family (:func:`.model_files.identify`) picks the class that
runs it from :data:`FAMILY_CLASSES`. A model family is one module here holding a :class:`~.base.Backend`
subclass (with its ``from_options``) plus its line in :data:`FAMILY_CLASSES`. Backend modules are light to
import; what is heavy (torch, ONNX Runtime, OpenCV) loads only when a backend is made.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Dict, Tuple, Type

from ..errors import InputError
from .base import Backend
from .host_memory import keep_freed_memory

BACKEND_CLASSES: Dict[str, Tuple[str, str]] = {"sam": (".sam", "SamBackend"),
                                                "grabcut": (".grabcut", "GrabCutBackend")}  # name -> (module, class)

# The class that runs a model file of each family (keys of :data:`.model_files.FAMILIES`) -> (module, class).
FAMILY_CLASSES: Dict[str, Tuple[str, str]] = {
    "sam": (".sam", "SamBackend"),
    "onnx_sam": (".onnx_sam", "OnnxSamBackend"),
    "mobile_sam": (".sam", "SamBackend"),
    "sam_hq": (".sam_hq", "SamHqBackend"),
    "sam2": (".sam2_backend", "Sam2Backend"),
    "sam3": (".sam3_backend", "Sam3Backend"),
    "onnx_sam2": (".onnx_sam2", "OnnxSam2Backend"),
}


def backend_class(name: str) -> Type[Backend]:
    """The Backend subclass of a backend name (nothing loaded); an InputError for an unknown name."""
    if name not in BACKEND_CLASSES:
        raise InputError(f"Unknown backend '{name}'. Choose one of: {', '.join(BACKEND_CLASSES)}.")
    module, cls = BACKEND_CLASSES[name]
    return getattr(importlib.import_module(module, __package__), cls)


def identify_model(checkpoint: str, model_type: str = "auto"):
    """The :class:`.model_files.ModelFile` of ``checkpoint``, a model file or a folder holding an ONNX encoder and
    decoder (then the first ONNX file inside, which tells the family). An InputError naming the file when it is
    not a model run here or is not of ``model_type`` (see :func:`.model_files.check_model_type`)."""
    from .model_files import check_model_type, identify, unsupported_message

    path = checkpoint
    if os.path.isdir(checkpoint):
        onnx = sorted(n for n in os.listdir(checkpoint) if n.lower().endswith(".onnx"))
        if not onnx:
            raise InputError(f"Model folder '{checkpoint}' holds no .onnx files; give a model file (.pth, .pt) or "
                             "a folder holding an ONNX encoder and decoder.")
        path = os.path.join(checkpoint, onnx[0])
    model = identify(path)
    if model.family not in FAMILY_CLASSES:
        raise InputError(unsupported_message(model))
    check_model_type(model, model_type)
    return model


def family_class(family: str) -> Type[Backend]:
    """The Backend subclass that runs model files of ``family`` (nothing loaded)."""
    module, cls = FAMILY_CLASSES[family]
    return getattr(importlib.import_module(module, __package__), cls)


def make_backend(options, progress=None) -> Backend:
    """The backend ``options.backend`` names (options: :class:`samrs_qgis.settings.SegmentOptions`; ``auto``
    as :func:`samrs_qgis.settings.resolve_backend` resolves it), loaded and ready (checkpoint errors surface
    here); its notes (e.g. why it runs on the CPU) go to ``progress`` as warnings, its remarks (e.g. what precision
    ``auto`` chose) as information."""
    from ..settings import resolve_backend, resolve_official_model  # not at the top: settings reads the backends

    options = resolve_backend(resolve_official_model(options))
    keep_freed_memory()  # before the model's first arrays (see host_memory)
    if options.backend == "sam":  # the model file says which family, and so which class runs it
        model = identify_model(options.checkpoint, options.model_type)
        # the model type is checked here for every family: the class loads whatever the file holds
        backend = family_class(model.family).from_options(dataclasses.replace(options, model_type="auto"))
    else:
        backend = backend_class(options.backend).from_options(options)
    for note in backend.notes if progress is not None else ():
        progress.warning(note)
    for remark in backend.remarks if progress is not None else ():
        progress.info(remark)
    return backend

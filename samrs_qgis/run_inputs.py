"""What a segmentation run works on, checked before any heavy work: :func:`prepare_run` makes a :class:`PreparedRun`.

Preparing checks the outputs asked for and the settings, opens the raster, reads the box layer, builds the
classes, gives every box its instance id and places it on the raster's pixel grid (with a status: ok,
outside, invalid), and loads the backend. Each failure is an :class:`.errors.InputError` naming the input
at fault and the fix. What a run then does window by window is :mod:`.pipeline`'s.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .backends import make_backend
from .backends.base import Backend
from .backends.devices import cpu_name, device_label, device_type
from .boxes import STATUS_OK, STATUS_OUTSIDE, BoxFeature, BoxSource, PixelBox, PixelProjector, check_layer, project_box
from .classes import ClassCatalog
from .errors import InputError
from .path_safety import check_output_paths
from .raster_input import RasterInput
from .settings import SegmentOptions, check_options, resolve_backend, resolve_official_model
from .vector_output import vector_driver


@dataclass
class OutputPaths:
    """The files a run writes; None: not asked for."""

    instances: Optional[str] = None
    semantic: Optional[str] = None
    polygons: Optional[str] = None


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to go: every input checked, every box on the raster's pixel grid, the backend loaded.

    ``raster`` is open (the run closes it). ``boxes`` are in input order; a run does not change them.
    """

    raster_path: str
    raster: RasterInput
    layer_fields: Dict[str, str]  # the box layer's fields (name -> fiona type), carried into the polygon layer
    boxes: Tuple[PixelBox, ...]
    catalog: ClassCatalog
    outputs: OutputPaths
    options: SegmentOptions
    backend: Backend

    @property
    def usable_boxes(self) -> int:
        """Boxes with a mask to compute (status ok)."""
        return sum(b.is_usable for b in self.boxes)

    def provenance(self) -> Dict[str, str]:
        """Metadata written into every output so that a result can be traced to its inputs and settings."""
        settings = {k: v for k, v in asdict(self.options).items() if k not in ("class_names",)}
        return {"SAMRS_BACKEND": self.backend.describe(), "SAMRS_DEVICE": self.device(),
                "SAMRS_SETTINGS": json.dumps(settings, default=str), "SAMRS_SOURCE_RASTER": self.raster_path}

    def device(self) -> str:
        """Where the masks were computed, e.g. ``cuda:0 (NVIDIA GeForce RTX 4090)``, ``cpu (Intel(R) Xeon(R) …)``."""
        device = self.backend.device
        name = self.backend.device_name or (cpu_name() if device_type(device) == "cpu" else "")
        return f"{device_label(device)} ({name})" if name else device_label(device)


def check_outputs(outputs: OutputPaths, raster_path: str, source: BoxSource) -> None:
    """At least one output, each of a format the run writes, none of them an input or another output."""
    if not any(asdict(outputs).values()):
        raise InputError("No output was asked for: give at least one of the instance raster, "
                         "semantic raster or polygon layer.")
    for role, path in (("instance raster", outputs.instances), ("semantic raster", outputs.semantic)):
        if path and not path.lower().endswith((".tif", ".tiff")):
            raise InputError(f"The {role} output '{path}' must be a GeoTIFF (.tif).")
    if outputs.polygons:
        vector_driver(outputs.polygons)
    check_output_paths({"instance raster": outputs.instances, "semantic raster": outputs.semantic,
                        "polygon layer": outputs.polygons},
                       {"raster": raster_path, "box layer": (source.path or "").split("|")[0] or None})


def instance_ids(features: Sequence[BoxFeature], id_field: Optional[str]) -> List[int]:
    """1-based input order, or the values of the id field (unique integers ≥ 1)."""
    if not id_field:
        return [f.index + 1 for f in features]
    values = [f.attributes.get(id_field) for f in features]
    bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < 2 ** 32]
    if bad:
        raise InputError(f"The id field '{id_field}' must hold integers from 1 to 4294967295 "
                         f"(they become instance raster values); found {bad[0]!r}.")
    if len(set(values)) != len(values):
        dup = Counter(values).most_common(1)[0][0]
        raise InputError(f"The id field '{id_field}' must be unique; {dup} appears more than once.")
    return values


def prepare_run(raster_path: str, source: BoxSource, outputs: OutputPaths, options: SegmentOptions,
                backend: Optional[Backend] = None, progress=None,
                load_backend: Callable[[SegmentOptions, object], Backend] = make_backend) -> PreparedRun:
    """Check all inputs and place the boxes; then, unless ``backend`` is given, load the backend the options name
    with ``load_backend(options, progress)`` (its notes, e.g. why it runs on the CPU, go to ``progress``).

    Raises :class:`InputError` naming the input at fault. The box features' map geometries are dropped
    (only their pixel-space polygons are used from here on).
    """
    check_outputs(outputs, raster_path, source)
    options = resolve_backend(resolve_official_model(options))
    check_options(options)
    raster = RasterInput(raster_path, options.bands, options.stretch)
    given_backend = backend
    try:
        boxes, catalog = _place_boxes(raster_path, raster, source, options)
        if backend is None:
            backend = load_backend(options, progress)
        backend.check_prompt_mode(options.prompt)  # a backend given by the caller may be another than options say
    except BaseException:
        raster.close()
        if backend is not None and backend is not given_backend:
            backend.close()
        raise
    return PreparedRun(raster_path=raster_path, raster=raster, layer_fields=dict(source.fields), boxes=tuple(boxes),
                       catalog=catalog, outputs=outputs, options=options, backend=backend)


def _place_boxes(raster_path: str, raster: RasterInput, source: BoxSource,
                 options: SegmentOptions) -> Tuple[List[PixelBox], ClassCatalog]:
    """The layer's boxes with their classes and instance ids, on the raster's pixel grid."""
    check_layer(source, options.class_field, options.id_field)
    projector = PixelProjector(source.crs_wkt, raster.crs, raster.transform, (raster.width, raster.height),
                               source.name)
    features = list(source.features)
    if not features:
        raise InputError(f"Box layer '{source.name}' has no features; there is nothing to segment.")
    class_field = options.class_field
    class_values = [f.attributes.get(class_field) for f in features] if class_field else [None] * len(features)
    catalog = ClassCatalog.build(class_values, source.fields.get(class_field) if class_field else None,
                                 options.class_names, class_field or "class")
    if options.background in catalog.names:
        raise InputError(f"Class id {options.background} ('{catalog.names[options.background]}') equals the "
                         "background value; choose another background value.")
    ids = instance_ids(features, options.id_field)
    boxes = [project_box(f, projector, instance_id, *catalog.lookup(value))
             for f, instance_id, value in zip(features, ids, class_values)]
    for feature in features:
        feature.geometry = None  # only the pixel-space polygon is used from here on
    counts = Counter(b.status for b in boxes)
    if not counts[STATUS_OK]:
        raise InputError(
            f"None of the {len(boxes)} boxes of '{source.name}' overlaps raster '{raster_path}' "
            f"({counts[STATUS_OUTSIDE]} outside, {len(boxes) - counts[STATUS_OUTSIDE]} invalid). "
            "Check that the box layer's CRS is set correctly and that the boxes belong to this raster.")
    return boxes, catalog

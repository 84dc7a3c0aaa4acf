"""The settings users choose, as declarative tables from which every front end is made.

Each :class:`Setting` row names one field of an options value the engine runs on and says everything a front
end needs to offer it: its kind, choices with their labels, default, bounds, help text, group and whether it
is advanced. Tables: :data:`SEGMENT_SETTINGS` (:class:`SegmentOptions`: what a segmentation computes),
:data:`MATCHING_SETTINGS` (:class:`MatchingOptions`: how an evaluation pairs masks) and
:data:`ANNOTATION_SETTINGS` (:class:`AnnotationOptions`: how annotation files are read). The command line
(:mod:`samrs_qgis.cli_options`) and the Processing algorithms (``processing/settings_parameters.py``) make
their options, parameters, checks and the mapping back onto the options from these tables; adding a setting
means adding one row.

Names seen by users follow from a row's ``key``: the CLI flag ``--<key with dashes>`` and the Processing
parameter ``<KEY>``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .annotations import DATASET_CLASSES, FORMATS
from .backends import BACKEND_CLASSES, backend_class
from .backends.devices import DEVICE_PATTERN, DEVICES, PRECISIONS
from .backends.model_files import MODEL_TYPE_CHOICES
from .checkpoints import OFFICIAL_CHECKPOINTS, describe_official
from .errors import InputError
from .prompts import PROMPT_MODES
from .stretch import STRETCH_MODES

BACKENDS = tuple(BACKEND_CLASSES)  # "sam", "grabcut"
AUTO_BACKEND = "auto"  # SAM when a checkpoint is given, else GrabCut
COMPILE_CHOICES = ("auto", "on", "off")

# Kinds of value a setting holds; each front end knows how to offer each kind.
CHOICE, BOOL, INT, FLOAT, FILE, FOLDER, FIELD, BANDS, NAMES = (
    "choice", "bool", "int", "float", "file", "folder", "field", "bands", "names")

# Groups: the CLI's help sections; commands leave out groups they set themselves.
MODEL, POSTPROCESSING, POLYGONS, DATA, BOX_LAYER = (
    "model", "mask post-processing", "polygon post-processing", "data", "box layer")


@dataclass(frozen=True)
class Setting:
    """One row of the table. ``default`` is the engine's default; None means "not set" (the engine decides)."""

    name: str  # the SegmentOptions field
    kind: str  # CHOICE, BOOL, INT, FLOAT, FILE, FOLDER, FIELD, BANDS or NAMES
    default: Any
    label: str  # short description: the Processing parameter's label
    help: str  # one or two sentences: CLI help and the Processing parameter's tooltip
    group: str
    choices: Tuple[Tuple[str, str], ...] = ()  # (value, label) in the order Processing numbers them
    advanced: bool = False
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    zero_means_unset: bool = False  # Processing numbers have no "unset": 0 stands for None there
    numeric_field: bool = False  # FIELD: the field must be numeric
    file_filter: str = ""  # FILE: what file pickers offer, Qt style ("Models (*.pth *.onnx);;All files (*.*)")
    key: str = ""  # user-facing name when it differs from ``name``
    cli_aliases: Tuple[str, ...] = ()  # further CLI spellings kept for compatibility
    noun: str = ""  # what the value is called in messages; default: the name in words
    parent: str = ""  # FIELD: the role of the layer whose field it is ("boxes", "reference", "produced")
    none_label: str = ""  # CHOICE whose default is None: what choosing none means (Processing's first choice)
    also_accepts: Tuple[str, ...] = ()  # CHOICE: (regular expression, how it is written) of further values the
    # command line and the engine take besides the choices (Processing offers the choices only)

    @property
    def flag(self) -> str:
        return "--" + (self.key or self.name).replace("_", "-")

    @property
    def parameter(self) -> str:
        return (self.key or self.name).upper()

    @property
    def what(self) -> str:
        return self.noun or self.name.replace("_", " ")

    @property
    def values(self) -> Tuple[str, ...]:
        return tuple(value for value, _ in self.choices)

    def accepts(self, value) -> bool:
        """CHOICE: the value is one of the choices or of the form ``also_accepts`` allows."""
        return value in self.values or bool(self.also_accepts) and isinstance(value, str) and \
            re.fullmatch(self.also_accepts[0], value) is not None

    @property
    def spelled_values(self) -> Tuple[str, ...]:
        """CHOICE: the values as users can write them: the choices and the form of further ones."""
        return self.values + self.also_accepts[1:]


def labelled(values: Sequence[str], labels: Dict[str, str]) -> Tuple[Tuple[str, str], ...]:
    """``(value, label)`` pairs in the engine's own order; a value without a label is shown as itself.
    Labels are looked up by value, so reordering the engine's tuple cannot mislabel a choice."""
    unknown = set(labels) - set(values)
    if unknown:
        raise ValueError(f"labels for unknown values: {sorted(unknown)}")
    return tuple((value, labels.get(value, value)) for value in values)


SEGMENT_SETTINGS: Tuple[Setting, ...] = (
    Setting("class_field", FIELD, None, "Class field", "field holding each box's class (text or integer)",
            BOX_LAYER, parent="boxes"),
    Setting("id_field", FIELD, None, "Instance id field (unique integers)",
            "field of unique integers (1 or more) used as instance ids; default: input order, 1-based",
            BOX_LAYER, numeric_field=True, parent="boxes"),
    Setting("backend", CHOICE, AUTO_BACKEND, "Backend",
            "sam (needs a checkpoint) or grabcut (no weights, not SAM); auto: sam when a checkpoint is given, "
            "else grabcut", MODEL,
            choices=labelled(BACKENDS + (AUTO_BACKEND,), {
                "sam": "SAM (needs a checkpoint)", "grabcut": "GrabCut (no weights; not SAM)",
                AUTO_BACKEND: "auto (SAM when a checkpoint is given, else GrabCut)"})),
    Setting("official_model", CHOICE, None, "Official model (downloaded into the models folder)",
            "an official model file downloaded into the plugin's per-user models folder (samrs:downloadmodel, "
            "download-checkpoints), instead of a model file", MODEL,
            choices=tuple((spec.name, describe_official(spec)) for spec in OFFICIAL_CHECKPOINTS.values()),
            none_label="none: the model file below", noun="official model"),
    Setting("checkpoint", FILE, None, "SAM model file (.pth, .pt; ONNX: the encoder .onnx)",
            "SAM model file, e.g. sam_vit_h_4b8939.pth (official files: download-checkpoints), or an ONNX encoder "
            "(its decoder beside it) or a folder holding an ONNX encoder and decoder", MODEL,
            file_filter="SAM models (*.pth *.pt *.onnx);;All files (*.*)"),
    Setting("model_type", CHOICE, "auto", "Model type", "checked against the checkpoint; auto detects it", MODEL,
            choices=labelled(MODEL_TYPE_CHOICES, {}), noun="model type"),
    Setting("prompt", CHOICE, "box", "Prompt",
            "what SAM is prompted with: box (the enclosing horizontal box, SAMRS's choice), rbox-mask (the rotated "
            "box as a mask prompt), point (the box centre), box+point; GrabCut takes box only", MODEL,
            choices=labelled(PROMPT_MODES, {
                "box": "box (enclosing horizontal box; SAMRS)", "rbox-mask": "rbox-mask (rotated box as a mask prompt)",
                "point": "point (box centre)", "box+point": "box+point (box and centre)"}), noun="prompt mode"),
    Setting("multimask", BOOL, False, "Best of three masks by predicted IoU (SAMRS: off)",
            "keep the best of SAM's three candidate masks by predicted IoU", MODEL),
    Setting("clip_to_box", BOOL, False, "Clip masks to the (rotated) box",
            "keep only mask pixels whose centre lies inside the (rotated) box", POSTPROCESSING),
    Setting("fill_holes", BOOL, False, "Fill holes in masks", "fill holes inside each mask", POSTPROCESSING),
    Setting("min_island_px", INT, 0, "Remove mask parts smaller than (raster pixels; 0: keep all)",
            "drop mask parts smaller than this many raster pixels (0: keep all)", POSTPROCESSING, minimum=0,
            noun="minimum island area"),
    Setting("keep_largest", BOOL, False, "Keep only the largest part of each mask",
            "keep only each mask's largest part", POSTPROCESSING),
    Setting("min_hole_px", INT, 0, "Fill mask holes smaller than (raster pixels; 0: none)",
            "fill holes of fewer than this many raster pixels in each mask (0: none)", POSTPROCESSING, minimum=0,
            noun="minimum hole area"),
    Setting("min_island_area", FLOAT, 0.0, "Remove mask parts smaller than (map units²; 0: keep all)",
            "drop mask parts smaller than this area in the raster's map units squared (m² for a projected CRS; "
            "0: keep all); with the pixel threshold too, the larger one counts", POSTPROCESSING, minimum=0,
            advanced=True, noun="minimum island area in map units"),
    Setting("min_hole_area", FLOAT, 0.0, "Fill mask holes smaller than (map units²; 0: none)",
            "fill holes smaller than this area in the raster's map units squared (0: none); with the pixel "
            "threshold too, the larger one counts", POSTPROCESSING, minimum=0, advanced=True,
            noun="minimum hole area in map units"),
    Setting("regularise", BOOL, False, "Regularise polygons (buildings: straight, right-angled walls)",
            "snap each polygon's edges to its dominant orientation (the rotated box's, else its outline's) and the "
            "perpendicular, merging short steps; shapes that are not rectilinear are left as traced and say so in "
            "detail", POLYGONS),
    Setting("smooth_px", FLOAT, 0.0, "Smooth polygons (radius, raster pixels; 0: off)",
            "round each polygon's pixel stairs and corners (a closing then an opening with a disc of this radius in "
            "raster pixels; parts narrower than twice it go; 0: off), for natural objects", POLYGONS, minimum=0,
            noun="smoothing radius"),
    Setting("simplify_px", FLOAT, 0.0, "Simplify polygons (tolerance, raster pixels; 0: off)",
            "simplify each polygon (Douglas-Peucker, topology-preserving: parts and holes never cross) with this "
            "tolerance in raster pixels (0: off)", POLYGONS, minimum=0, noun="simplification tolerance"),
    Setting("device", CHOICE, "auto", "Device",
            "auto: a CUDA GPU when torch can use one, else an Apple GPU (mps), else the CPU; cuda: the first card "
            "(cuda:N on the command line for another)", MODEL,
            choices=labelled(DEVICES, {}), advanced=True, also_accepts=(DEVICE_PATTERN, "cuda:N")),
    Setting("bands", BANDS, None, "Bands fed to SAM (one or three; default RGB)",
            "three bands (or one) fed to SAM, e.g. 4,3,2; default: RGB by colour interpretation, else the first "
            "three", DATA, advanced=True),
    Setting("class_names", NAMES, None, "Class list, comma-separated (ids by position)",
            "comma-separated class list giving class ids by position (stable across runs)", BOX_LAYER,
            advanced=True, key="classes"),
    Setting("stretch", CHOICE, "auto", "Value stretch to 8 bit",
            "auto: 8-bit as is, other types by 2-98 % percentiles; none: values as they are", DATA,
            choices=labelled(STRETCH_MODES, {}), advanced=True, noun="stretch"),
    Setting("background", INT, 255, "Semantic background value",
            "semantic raster value for no object (SAMRS: 255)", DATA, advanced=True, minimum=0, maximum=65535,
            noun="background value"),
    Setting("precision", CHOICE, "auto", "Precision (auto: fp16 on CUDA, bf16 on CPUs that have it; int8: CPU)",
            "auto: fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32; int8 (CPU only): the image "
            "encoder's MLP layers in torch's int8, 1.4x faster than fp32 with VNNI instructions, little without "
            "(an int8 ONNX pair is ~2x faster on any CPU), masks slightly different", MODEL,
            choices=labelled(PRECISIONS, {}), advanced=True, noun="precision"),
    Setting("batch_size", INT, None, "Boxes decoded per batch (0: suited to the device)",
            "boxes decoded together; default (0 in Processing): suited to the device, CPU 4, CUDA 64", MODEL,
            advanced=True, minimum=1, zero_means_unset=True),
    Setting("compile_decoder", CHOICE, "auto", "Compile the mask decoder (auto: where measured faster here)",
            "torch.compile the mask decoder (faster per box on some CPUs, slower on others; 10-35 s to compile); "
            "auto: a CPU run of 2000+ boxes first times compiled against eager once per machine and settings, "
            "then runs of 300+ boxes are compiled only where compiled measured at least 10 % faster", MODEL,
            choices=labelled(COMPILE_CHOICES, {}), advanced=True, noun="decoder compile choice"),
    Setting("embedding_cache", BOOL, True, "Cache window embeddings on disk for later runs",
            "keep window embeddings on disk, so a later run over the same windows skips the image encoder",
            MODEL, advanced=True, cli_aliases=("cache",)),
    Setting("cache_dir", FOLDER, None, "Embedding cache folder (default ~/.cache/samrs/embeddings)",
            "embedding cache folder (default ~/.cache/samrs/embeddings)", MODEL, advanced=True),
    Setting("cache_limit_mb", FLOAT, 2048.0, "Embedding cache size limit (MB; oldest use deleted first)",
            "embedding cache size limit in MB (the least recently used embeddings are deleted first)", MODEL,
            advanced=True, minimum=0, noun="embedding cache limit"),
    Setting("window_size", INT, 1024, "Window size (pixels)", "window side in raster pixels (native resolution)",
            DATA, advanced=True, minimum=64,
            noun="window size"),
    Setting("cog", BOOL, False, "Write the rasters as Cloud Optimized GeoTIFF",
            "write the instance and semantic rasters as Cloud Optimized GeoTIFF: tiled, DEFLATE-compressed, with "
            "overviews (mode resampling: ids stay ids), colour table and class names kept", DATA, advanced=True),
)

MATCHING = "matching"
ANNOTATIONS = "annotations"

# How annotation files are read (importing them, or segmenting a dataset).
ANNOTATION_SETTINGS: Tuple[Setting, ...] = (
    Setting("annotation_format", CHOICE, "auto", "Annotation format",
            "annotation format: auto detects it per file", ANNOTATIONS, choices=labelled(FORMATS, {}),
            key="format", noun="annotation format"),
    Setting("dataset", CHOICE, None, "Dataset class list",
            "dataset class list fixing the class ids (objects of other classes are reported as problems); "
            "default: ids by sorted class name", ANNOTATIONS, choices=labelled(tuple(DATASET_CLASSES), {}),
            none_label="none (ids by sorted class name)", noun="dataset class list"),
)

# How evaluation pairs produced masks with reference masks (samrs_qgis.evaluation).
MATCHING_SETTINGS: Tuple[Setting, ...] = (
    Setting("key_field", FIELD, "instance_id", "Reference key field (holds the produced instance ids)",
            "reference field holding the produced instance ids", MATCHING, parent="reference"),
    Setting("reference_class_field", FIELD, None, "Reference class field (default: the produced class_name)",
            "reference field holding the class (default: the produced class_name)", MATCHING, parent="reference"),
    Setting("produced_key_field", FIELD, "instance_id", "Produced key field", "produced field holding the ids",
            MATCHING, advanced=True, parent="produced"),
    Setting("unmatched_in_ap", BOOL, False, "Count produced masks without reference as false positives in AP",
            "count produced masks without a reference as false positives in AP", MATCHING, advanced=True),
)

_TYPES = {CHOICE: Optional[str], BOOL: bool, INT: Optional[int], FLOAT: float, FILE: Optional[str], FOLDER: Optional[str],
          FIELD: Optional[str], BANDS: Optional[Sequence[int]], NAMES: Optional[Sequence[str]]}


def _options_class(name: str, rows: Sequence[Setting], doc: str):
    """A dataclass with one field per row, typed by its kind, defaulting to the row's default."""
    fields = [(s.name, _TYPES[s.kind], dataclasses.field(default=s.default)) for s in rows]
    return dataclasses.make_dataclass(name, fields, namespace={"__doc__": doc, "__module__": __name__})


SegmentOptions = _options_class(
    "SegmentOptions", SEGMENT_SETTINGS,
    "Everything that decides what a segmentation computes: one field per row of SEGMENT_SETTINGS (defaults "
    "follow SAMRS), e.g. ``SegmentOptions(checkpoint='sam_vit_h_4b8939.pth')``.")
AnnotationOptions = _options_class(
    "AnnotationOptions", ANNOTATION_SETTINGS,
    "How annotation files are read: one field per row of ANNOTATION_SETTINGS.")
MatchingOptions = _options_class(
    "MatchingOptions", MATCHING_SETTINGS,
    "How an evaluation pairs produced and reference masks: one field per row of MATCHING_SETTINGS.")


def settings_for(exclude: Iterable[str] = (), table: Sequence[Setting] = SEGMENT_SETTINGS) -> List[Setting]:
    """The rows of ``table`` a command or algorithm offers: all but those whose name or group is in ``exclude``."""
    exclude = set(exclude)
    return [s for s in table if s.name not in exclude and s.group not in exclude]


def parse_bands(text: Optional[str]) -> Optional[List[int]]:
    """``"4,3,2"`` -> ``[4, 3, 2]``; None or blank -> None. An InputError names the bad text."""
    if text is None or not str(text).strip():
        return None
    try:
        return [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise InputError(f"Bands must be comma-separated band numbers such as 4,3,2, not '{text}'.") from None


def resolve_backend(options) -> "SegmentOptions":
    """The options with backend ``auto`` made concrete: ``sam`` when a checkpoint is given, else ``grabcut``."""
    if options.backend != AUTO_BACKEND:
        return options
    return dataclasses.replace(options, backend="sam" if options.checkpoint else "grabcut")


def resolve_official_model(options) -> "SegmentOptions":
    """The options with an official model made the checkpoint: its file in the per-user models folder, which
    must be there (an InputError saying how to download it)."""
    if options.official_model is None:
        return options
    from .environment.locations import models_folder

    check_values(options, [s for s in SEGMENT_SETTINGS if s.name == "official_model"])
    spec = OFFICIAL_CHECKPOINTS[options.official_model]
    path = os.path.join(str(models_folder()), spec.file_name)
    if options.checkpoint and os.path.abspath(options.checkpoint) != os.path.abspath(path):
        raise InputError(f"Give either an official model (--official-model, OFFICIAL_MODEL: {spec.name}) or a model "
                         f"file (--checkpoint, CHECKPOINT: '{options.checkpoint}'), not both.")
    if not os.path.isfile(path):
        raise InputError(f"The official model {spec.name} ({describe_official(spec)}) is not downloaded yet: it is "
                         f"looked for as '{path}'. Download it with samrs:downloadmodel (Processing toolbox › SAMRS › "
                         f"Set-up) or `python -m samrs_qgis download-checkpoints {spec.name}`, or give a model file.")
    return dataclasses.replace(options, checkpoint=path)


def make_options(values: Dict[str, Any]) -> "SegmentOptions":
    """``SegmentOptions`` from a front end's values (setting name -> value; missing ones keep their default),
    with an official model and the backend resolved and every value checked (:func:`check_options`)."""
    options = resolve_backend(resolve_official_model(SegmentOptions(**values)))
    check_options(options)
    return options


def check_values(options, table: Sequence[Setting]) -> None:
    """Raise an InputError naming the setting for the first choice outside its list or number out of bounds."""
    for s in table:
        value = getattr(options, s.name)
        if s.kind == CHOICE and not s.accepts(value) and not (value is None and s.none_label):
            raise InputError(f"Unknown {s.what} '{value}'. Choose one of: {', '.join(s.spelled_values)} "
                             f"({s.flag}, {s.parameter}).")
        if s.kind in (INT, FLOAT) and value is not None:
            if s.minimum is not None and value < s.minimum or s.maximum is not None and value > s.maximum:
                bounds = (f"between {s.minimum:g} and {s.maximum:g}" if s.maximum is not None
                          else f"{s.minimum:g} or more")
                raise InputError(f"The {s.what} {value} must be {bounds} ({s.flag}, {s.parameter}).")


def check_options(options) -> None:
    """Raise an InputError naming the setting and the fix for the first value that cannot run: a choice
    outside its list, a number outside its bounds, a backend without what it needs."""
    check_values(options, SEGMENT_SETTINGS)
    backend = resolve_backend(options).backend
    if backend == "sam" and not options.checkpoint:
        raise InputError("The SAM backend needs a model file: download sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, "
                         "sam_vit_h_4b8939.pth or another family's official file (python -m samrs_qgis "
                         "download-checkpoints --list), give an ONNX pair, or choose the GrabCut backend.")
    if backend == "sam" and os.path.isdir(options.checkpoint):  # an ONNX pair's folder, or a slip: the download folder
        try:
            names = os.listdir(options.checkpoint)
        except OSError:
            names = []
        if any(n.lower().endswith(".onnx") for n in names):
            return backend_class(backend).check_prompt_mode(options.prompt)
        inside = sorted(n for n in names if n.lower().endswith((".pth", ".pt")))
        if inside:
            raise InputError(f"SAM checkpoint '{options.checkpoint}' is a folder; give the model file inside it "
                             f"({', '.join(inside[:3])}{', …' if len(inside) > 3 else ''}).")
        raise InputError(f"SAM checkpoint '{options.checkpoint}' is a folder without a model file; give the path of "
                         "a SAM checkpoint file, or a folder holding an ONNX encoder and decoder (python -m samrs_qgis "
                         "download-checkpoints fetches the official checkpoints).")
    if backend == "sam" and not os.path.isfile(options.checkpoint):
        raise InputError(f"SAM checkpoint '{options.checkpoint}' does not exist. Give the path of a SAM checkpoint "
                         "file (.pth, .pt) or of a folder holding an ONNX encoder and decoder; python -m samrs_qgis "
                         "download-checkpoints fetches the official checkpoints.")
    backend_class(backend).check_prompt_mode(options.prompt)


def not_sam_note(backend: str) -> Optional[str]:
    """What to tell the user after a run whose masks are not SAM's (None when they are)."""
    if backend.startswith("grabcut"):
        return ("These masks were made by GrabCut, not SAM. Give a SAM checkpoint for SAM masks (python -m "
                "samrs_qgis download-checkpoints fetches the official ones).")
    return None

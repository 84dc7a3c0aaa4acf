"""Command line: ``python -m samrs_qgis <command> …``.

Commands: ``segment`` (boxes over a raster -> masks; ``--preview`` draws PNG previews with QGIS),
``segment-dataset`` (a folder of images and one of annotations -> the SAMRS dataset layout),
``import-annotations`` (DOTA/VOC/FAIR1M/HRSC2016/CSV -> a box layer), ``report`` (dataset statistics as HTML and CSV), ``evaluate`` (masks against reference
masks), ``compare`` (several produced mask sets against one reference, one table), ``ablation`` (segment
with several prompt modes, evaluate each, one table) and ``download-checkpoints``.

Errors in the inputs print one clear line and exit with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

from .errors import Cancelled, InputError, SamrsError
from .progress import Progress, ProgressSlice

EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130
MAX_PROBLEMS_SHOWN = 50  # annotation problems printed one per line; the rest are counted

# File suffixes of segment's outputs: '<image>_masks.gpkg' and '<image>_instances.tif' both belong to <image>.
OUTPUT_SUFFIXES = ("_masks", "_instances")
NOT_MASKS_SUFFIX = "_semantic"  # a class raster beside the instance masks: never taken for masks
POLYGON_EXTENSIONS = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".sqlite")
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png")


class BarProgress(Progress):
    """A tqdm progress bar on stderr; log lines go above it."""

    def __init__(self, quiet: bool = False):
        from tqdm import tqdm

        self._bar = tqdm(total=1000, unit="‰", disable=quiet, dynamic_ncols=True,
                         bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        self._quiet = quiet

    def set_fraction(self, fraction: float) -> None:
        self._bar.update(max(0, int(fraction * 1000) - self._bar.n))

    def info(self, message: str) -> None:
        if not self._quiet:
            self._bar.write(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        self._bar.write(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


def _bands(text: str) -> List[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be comma-separated band numbers such as 4,3,2, not '{text}'")


def _prompt_list(text: str) -> List[str]:
    from .prompts import PROMPT_MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in PROMPT_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"prompt modes must be comma-separated among {', '.join(PROMPT_MODES)}, "
                                         f"not '{text}'")
    if len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"prompt mode given twice in '{text}'")
    return modes


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, 0 or more, not '{text}'")
    return value


def default_output_paths(raster: str, out_dir: str):
    """``<out_dir>/<raster name>_instances.tif``, ``…_semantic.tif``, ``…_masks.gpkg``."""
    from .pipeline import OutputPaths

    stem = os.path.splitext(os.path.basename(raster))[0]
    return OutputPaths(instances=os.path.join(out_dir, f"{stem}_instances.tif"),
                       semantic=os.path.join(out_dir, f"{stem}_semantic.tif"),
                       polygons=os.path.join(out_dir, f"{stem}_masks.gpkg"))


# -- parser ---------------------------------------------------------------------------------------

def _add_segment_options(parser: argparse.ArgumentParser, prompt: bool = True, box_fields: bool = True) -> None:
    """The model, prompt, post-processing and data options shared by ``segment``, ``segment-dataset`` and
    ``ablation``. ``box_fields=False`` leaves out the options about one box layer (layer, class and id fields,
    class list), which ``segment-dataset`` sets itself."""
    from .backends.sam import PRECISIONS
    from .backends.sam_checkpoint import MODEL_TYPES
    from .settings import BACKENDS, SegmentOptions
    from .prompts import PROMPT_MODES
    from .stretch import STRETCH_MODES

    defaults = SegmentOptions()
    model = parser.add_argument_group("model")
    model.add_argument("--backend", choices=BACKENDS, default=None,
                       help="sam (needs --checkpoint) or grabcut (no weights); default: sam when a "
                            "checkpoint is given, else grabcut")
    model.add_argument("--checkpoint", help="SAM checkpoint, e.g. sam_vit_h_4b8939.pth")
    model.add_argument("--model-type", choices=MODEL_TYPES, default=defaults.model_type,
                       help="checked against the checkpoint; auto detects it")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    model.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="boxes decoded together (default: suited to the device, CPU 4, CUDA 64)")
    model.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                       help="auto: fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32")
    model.add_argument("--compile-decoder", choices=("auto", "on", "off"), default=defaults.compile_decoder,
                       help="torch.compile the mask decoder (about 2x faster per box on a CPU, 10-35 s to "
                            "compile); auto: on for CPU runs of 2000+ boxes")
    if prompt:
        model.add_argument("--no-cache", action="store_true", help="do not cache window embeddings on disk")
    model.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/samrs/embeddings)")
    model.add_argument("--cache-limit-mb", type=float, default=defaults.cache_limit_mb,
                       help="embedding cache size limit (oldest use deleted first)")
    model.add_argument("--window-size", type=int, default=defaults.window_size,
                       help="window side in raster pixels (native resolution)")
    model.add_argument("--multimask", action="store_true", help="best of three masks by predicted IoU")
    if prompt:
        model.add_argument("--prompt", choices=PROMPT_MODES, default=defaults.prompt,
                           help="what SAM is prompted with: box (the enclosing horizontal box, SAMRS's choice), "
                                "rbox-mask (the rotated box as a mask prompt), point (the box centre), box+point; "
                                "GrabCut takes box only")
    post = parser.add_argument_group("mask post-processing (in this order; SAMRS used none)")
    post.add_argument("--clip-to-box", action="store_true", help="clip each mask to its (rotated) box")
    post.add_argument("--fill-holes", action="store_true", help="fill holes inside each mask")
    post.add_argument("--min-island-px", type=_non_negative, default=defaults.min_island_px, metavar="PX",
                      help="drop mask parts smaller than PX raster pixels (0: keep all)")
    post.add_argument("--keep-largest", action="store_true", help="keep only each mask's largest part")
    data = parser.add_argument_group("data")
    if box_fields:
        data.add_argument("--layer", help="layer name inside BOXES when it holds several")
        data.add_argument("--class-field", help="field holding each box's class (text or integer)")
        data.add_argument("--id-field", help="field of unique integer ids used as instance ids")
        data.add_argument("--classes", help="comma-separated class list giving ids by position (stable across runs)")
    data.add_argument("--bands", type=_bands, help="three bands (or one) fed to SAM, e.g. 4,3,2; "
                                                   "default RGB or the first three")
    data.add_argument("--stretch", choices=STRETCH_MODES, default=defaults.stretch,
                      help="auto: 8-bit as is, other types by 2–98 %% percentiles")
    data.add_argument("--background", type=int, default=defaults.background,
                      help="semantic raster value for no object (SAMRS: 255)")


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    ev = parser.add_argument_group("matching")
    ev.add_argument("--key-field", default="instance_id",
                    help="reference field holding the produced instance ids (default instance_id)")
    ev.add_argument("--class-field", dest="reference_class_field",
                    help="reference field holding the class (default: the produced class_name)")
    ev.add_argument("--produced-key-field", default="instance_id", help="produced key field (default instance_id)")
    ev.add_argument("--unmatched-in-ap", action="store_true",
                    help="count produced masks without a reference as false positives in AP")


def build_parser() -> argparse.ArgumentParser:
    from .checkpoints import OFFICIAL_CHECKPOINTS

    parser = argparse.ArgumentParser(prog="python -m samrs_qgis",
                                     description="Turn detection boxes into SAM segmentation masks.")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment the boxes of a layer over a raster",
                              description="Segment every box of BOXES over RASTER; writes an instance raster, "
                                          "a semantic raster and a polygon layer with one feature per box.")
    seg.add_argument("raster", help="georeferenced raster (any GDAL format)")
    seg.add_argument("boxes", help="box layer (any OGR format: GPKG, Shapefile, GeoJSON, …), any CRS")
    out = seg.add_argument_group("outputs (at least one; --out-dir names all three after the raster)")
    out.add_argument("--out-dir", help="folder for <raster>_instances.tif, <raster>_semantic.tif, <raster>_masks.gpkg")
    out.add_argument("--instances", help="instance raster (.tif; uint32, 0 = none, value = instance id)")
    out.add_argument("--semantic", help="semantic raster (.tif; class index, background --background)")
    out.add_argument("--polygons", help="polygon layer (.gpkg, .shp, .geojson, .fgb, …)")
    out.add_argument("--preview", action="store_true",
                     help="after the run, draw <polygons>_preview.png (every mask over the raster) and "
                          "<polygons>_worst.png (the lowest-scoring masks) beside the polygon layer with QGIS's "
                          "renderer (needs PyQGIS; no display needed)")
    _add_segment_options(seg)
    seg.add_argument("--quiet", action="store_true", help="no progress bar")

    from .annotations import DATASET_CLASSES, FORMATS

    sds = commands.add_parser(
        "segment-dataset", help="segment every annotated box of a folder of images (SAMRS dataset layout)",
        description="Segment every box of every image in IMAGES, whose annotation files (same name, DOTA .txt, "
                    "VOC/DIOR/FAIR1M/HRSC2016 .xml, .csv) are in ANNOTATIONS, and write the SAMRS layout into "
                    "--out-dir: boxes/, geo/ (rasters and mask polygons per image), class_index/, colour/, "
                    "instances/, coco_instances.json and manifest.json. A rerun into the same folder keeps the "
                    "images already done. Images that fail are listed; the run goes on.")
    sds.add_argument("images", help="folder of images (GeoTIFF, PNG, JPEG, BMP)")
    sds.add_argument("annotations", help="folder of annotation files, one per image, named after it")
    sds.add_argument("--out-dir", required=True, help="output folder (resumable)")
    sds.add_argument("--dataset", choices=list(DATASET_CLASSES),
                     help="dataset class list fixing the class ids (default: sorted class names of all files)")
    sds.add_argument("--format", choices=FORMATS, default="auto", help="annotation format (default: detected)")
    sds.add_argument("--recursive", action="store_true", help="include images in subfolders")
    _add_segment_options(sds, box_fields=False)
    sds.add_argument("--quiet", action="store_true", help="no progress bar")

    imp = commands.add_parser(
        "import-annotations", help="import detection annotations (DOTA, VOC/DIOR, FAIR1M, HRSC2016, CSV) as boxes",
        description="Read annotation files (or every annotation file of the given folders) and write one "
                    "GeoPackage box layer (layer 'boxes'), placed on the map by --image's georeferencing, or in "
                    "pixel space (x = column, y = -row, no CRS) without it. Objects that cannot be read are "
                    "listed as file:line problems; the rest is written.")
    imp.add_argument("annotations", nargs="+", metavar="PATH", help="annotation files or folders holding them")
    imp.add_argument("--out", required=True, help="box layer to write (.gpkg)")
    imp.add_argument("--image", help="the image the annotations belong to (georeferencing; restricts a CSV to its rows)")
    imp.add_argument("--format", choices=FORMATS, default="auto", help="annotation format (default: detected per file)")
    imp.add_argument("--dataset", choices=list(DATASET_CLASSES),
                     help="dataset class list giving stable class ids (objects of other classes are problems)")
    imp.add_argument("--layer-name", default="boxes", help="layer name in the GeoPackage (default boxes)")

    rep = commands.add_parser(
        "report", help="dataset statistics report (HTML, CSV) of segmentation results",
        description="Statistics per subset: instances and pixels per class, mask sizes, scores, box statuses. "
                    "Each SUBSET is [NAME=]PATH: an output folder of segmentdataset, a folder whose subfolders are "
                    "such folders (train/, val/, …: one subset each), or a polygon layer written by segment; "
                    "a subset's name defaults to its folder or file name.")
    rep.add_argument("subsets", nargs="+", metavar="SUBSET", help="[NAME=]folder or [NAME=]polygon layer")
    rep.add_argument("--html", required=True, help="report file to write (.html)")
    rep.add_argument("--csv-dir", help="folder for the CSV tables (instances_per_class.csv, …)")
    classes = rep.add_mutually_exclusive_group()
    classes.add_argument("--classes", help="comma-separated class list fixing ids by position")
    classes.add_argument("--dataset", choices=list(DATASET_CLASSES), help="a dataset's class list fixing ids")
    rep.add_argument("--title", default="SAMRS dataset statistics", help="report title")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = commands.add_parser(
        "evaluate", help="evaluate produced masks against reference masks (IoU, COCO mask AP)",
        description="Per-box evaluation: produced instance k against reference instance k. Give one image as "
                    "PRODUCED REFERENCE [--grid RASTER], or a dataset as repeated --pair PRODUCED REFERENCE [GRID], "
                    "or as folders: PRODUCED and REFERENCE folders (and --grid folder) whose files match by name "
                    "(a trailing _masks or _instances is ignored, so tile_masks.gpkg matches tile.gpkg and "
                    "tile.tif; a polygon layer is preferred over an instance raster of the same name).")
    ev.add_argument("produced", nargs="?", help="produced masks: polygon layer or instance raster (or a folder)")
    ev.add_argument("reference", nargs="?", help="reference masks: polygon layer or instance raster (or a folder)")
    ev.add_argument("--grid", help="raster whose pixel grid the masks are compared on (the source image); "
                                   "a folder in folder mode; optional when an input is an instance raster")
    ev.add_argument("--pair", action="append", nargs="+", metavar="PATH",
                    help="PRODUCED REFERENCE [GRID]: one image of a dataset; repeat for every image")
    _add_evaluation_options(ev)
    ev.add_argument("--metrics", help="metrics table to write (.csv): one row per class and the overall row")
    ev.add_argument("--instances-csv", help="per-instance table to write (.csv)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    cmp_ = commands.add_parser(
        "compare", help="compare several produced mask sets against one reference (one table)",
        description="Evaluate each NAME=PRODUCED against REFERENCE and write one comparison table: a row per "
                    "name with its overall measures.")
    cmp_.add_argument("produced", nargs="+", metavar="NAME=PRODUCED", help="named produced masks")
    cmp_.add_argument("--reference", required=True, help="reference masks (polygon layer or instance raster)")
    cmp_.add_argument("--grid", help="raster whose pixel grid the masks are compared on (the source image)")
    _add_evaluation_options(cmp_)
    cmp_.add_argument("--out", required=True, help="comparison table to write (.csv)")
    cmp_.add_argument("--quiet", action="store_true", help="no progress bar")

    abl = commands.add_parser(
        "ablation", help="segment with several prompt modes, evaluate each, write one comparison table",
        description="SAMRS's prompt ablation: segment BOXES over RASTER once per prompt mode (the embedding "
                    "cache is on, so the image encoder runs once per window for all modes), evaluate each "
                    "against --reference on the raster's grid, and write OUT_DIR/comparison.csv plus, per mode, "
                    "OUT_DIR/<mode>/<raster>_masks.gpkg and OUT_DIR/<mode>/metrics.csv.")
    abl.add_argument("raster", help="georeferenced raster (any GDAL format)")
    abl.add_argument("boxes", help="box layer (any OGR format), any CRS")
    abl.add_argument("--reference", required=True,
                     help="reference masks: polygon layer whose --key-field holds the boxes' instance ids "
                          "(1-based box order, or --id-field), or an instance raster on the raster's grid")
    abl.add_argument("--out-dir", required=True, help="folder for the per-mode masks and the tables")
    abl.add_argument("--prompts", type=_prompt_list, default=None, metavar="MODES",
                     help="comma-separated prompt modes (default: all the backend takes: box,rbox-mask,point,"
                          "box+point for SAM, box for GrabCut)")
    _add_segment_options(abl, prompt=False)
    ev_ab = abl.add_argument_group("matching")
    ev_ab.add_argument("--key-field", default="instance_id",
                       help="reference field holding the instance ids (default instance_id)")
    ev_ab.add_argument("--reference-class-field", help="reference field holding the class")
    ev_ab.add_argument("--unmatched-in-ap", action="store_true",
                       help="count produced masks without a reference as false positives in AP")
    abl.add_argument("--quiet", action="store_true", help="no progress bar")

    abd = commands.add_parser(
        "ablation-dataset", help="the prompt ablation over a dataset: segment-dataset per prompt mode, evaluated",
        description="SAMRS's prompt ablation over a dataset (as it did on HRSC2016): segment IMAGES with the boxes "
                    "of ANNOTATIONS once per prompt mode into OUT_DIR/<mode>/ (segment-dataset's layout; the "
                    "embedding cache is on, so each image is encoded once for all modes), evaluate each mode "
                    "against the reference masks of --reference (files named after the images: polygon layers "
                    "keyed by --key-field, or instance rasters, whose ids are the annotation order, 1-based) and "
                    "write OUT_DIR/comparison.csv plus OUT_DIR/<mode>/metrics.csv.")
    abd.add_argument("images", help="folder of images")
    abd.add_argument("annotations", help="folder of annotation files, one per image, named after it")
    abd.add_argument("--reference", required=True, help="folder of reference masks, one file per image")
    abd.add_argument("--out-dir", required=True, help="folder for the per-mode datasets and the tables")
    abd.add_argument("--prompts", type=_prompt_list, default=None, metavar="MODES",
                     help="comma-separated prompt modes (default: all the backend takes)")
    abd.add_argument("--dataset", choices=list(DATASET_CLASSES), help="dataset class list fixing the class ids")
    abd.add_argument("--format", choices=FORMATS, default="auto", help="annotation format (default: detected)")
    _add_segment_options(abd, prompt=False, box_fields=False)
    _add_evaluation_options(abd)
    abd.add_argument("--quiet", action="store_true", help="no progress bar")

    exr = commands.add_parser(
        "export-reviewed", help="export a reviewed dataset: rejected masks dropped, relabelled ones moved",
        description="Write DATASET (an output folder of segment-dataset whose mask layers were reviewed in QGIS) "
                    "again into OUT_DIR, honouring each mask's review: rejected masks leave every output, "
                    "relabelled masks move to their new class, the rest is kept as it is.")
    exr.add_argument("dataset", help="output folder of segment-dataset")
    exr.add_argument("out_dir", help="folder to write the reviewed dataset into (new, or an earlier export)")
    exr.add_argument("--quiet", action="store_true", help="no progress bar")

    dl = commands.add_parser("download-checkpoints", help="download official SAM checkpoints and verify their MD5")
    dl.add_argument("models", nargs="*", default=["vit_b"], metavar="MODEL",
                    help=f"model types among {', '.join(OFFICIAL_CHECKPOINTS)} (default vit_b)")
    dl.add_argument("--dir", default="checkpoints", help="target folder (default ./checkpoints)")
    return parser


# -- segment --------------------------------------------------------------------------------------

def _segment_options(args, **overrides):
    from .classes import parse_class_list
    from .settings import SegmentOptions

    backend = args.backend or ("sam" if args.checkpoint else "grabcut")
    values = dict(
        backend=backend, checkpoint=args.checkpoint, model_type=args.model_type, device=args.device,
        multimask=args.multimask, prompt=getattr(args, "prompt", "box"), clip_to_box=args.clip_to_box,
        fill_holes=args.fill_holes, min_island_px=args.min_island_px, keep_largest=args.keep_largest,
        batch_size=args.batch_size, precision=args.precision, compile_decoder=args.compile_decoder,
        embedding_cache=not getattr(args, "no_cache", False), cache_dir=args.cache_dir,
        cache_limit_mb=args.cache_limit_mb, window_size=args.window_size, bands=args.bands, stretch=args.stretch,
        class_field=getattr(args, "class_field", None), id_field=getattr(args, "id_field", None),
        class_names=parse_class_list(getattr(args, "classes", None)), background=args.background)
    values.update(overrides)
    return SegmentOptions(**values)


def _grabcut_note(backend: str) -> None:
    if backend == "grabcut":
        print("Note: masks made by GrabCut, not SAM. Give --checkpoint for SAM "
              "(python -m samrs_qgis download-checkpoints fetches the official ones).")


def _segment(args) -> int:
    from .boxes import read_box_file
    from .pipeline import OutputPaths, segment_boxes

    outputs = default_output_paths(args.raster, args.out_dir) if args.out_dir else OutputPaths()
    outputs.instances = args.instances or outputs.instances
    outputs.semantic = args.semantic or outputs.semantic
    outputs.polygons = args.polygons or outputs.polygons
    options = _segment_options(args)
    render = None
    if args.preview:
        if not outputs.polygons:
            raise InputError("--preview draws the mask polygons: give --polygons or --out-dir as well.")
        render = _preview_renderer()  # before the run: no QGIS, no run
    progress = BarProgress(quiet=args.quiet)
    try:
        summary = segment_boxes(args.raster, read_box_file(args.boxes, args.layer), outputs, options, progress)
    finally:
        progress.close()
    print(summary.describe())
    if render is not None:
        _previews(render, args.raster, outputs.polygons)
    _grabcut_note(options.backend)
    return 0


PREVIEW_SIZE = 1200  # the overview's longest side at most; a smaller raster is drawn one pixel per pixel
PREVIEW_MASKS = 16  # masks in the contact sheet
POLYGON_LAYER_FORMATS = (".gpkg", ".sqlite")  # polygon outputs that are the layer 'masks' of their file


def preview_paths(polygons: str) -> Tuple[str, str]:
    """``<polygons stem>_preview.png`` and ``<polygons stem>_worst.png`` beside the polygon layer."""
    stem = os.path.splitext(polygons)[0]
    return stem + "_preview.png", stem + "_worst.png"


def _preview_renderer():
    """``samrs_previews.render_previews``, which draws with QGIS (an offscreen QgsApplication, no display
    needed); an InputError when PyQGIS cannot be imported. Inside the plugin package it is the sibling
    package; run from a checkout (``python -m samrs_qgis``) the checkout is put on ``sys.path``."""
    import importlib

    try:
        importlib.import_module("qgis.core")
    except ImportError as exc:
        raise InputError(f"--preview needs QGIS: previews are drawn by QGIS's renderer, but PyQGIS cannot be "
                         f"imported here ({exc}). Run with a Python that has QGIS (e.g. /usr/bin/python3 with "
                         "python3-qgis, or the venv made by make setup), or leave out --preview.") from exc
    parent = (__package__ or "").rpartition(".")[0]
    if parent:  # samrs_qgis inside the plugin package: samrs_previews is its sibling
        return importlib.import_module(f"{parent}.samrs_previews").render_previews
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)  # appended: the checkout's processing/ must not shadow QGIS's
    return importlib.import_module("samrs_previews").render_previews


def _previews(render, raster: str, polygons: str) -> None:
    import rasterio

    with rasterio.open(raster) as ds:
        size = min(PREVIEW_SIZE, max(ds.width, ds.height))
    overview, sheet = preview_paths(polygons)
    layer = "masks" if os.path.splitext(polygons)[1].lower() in POLYGON_LAYER_FORMATS else None
    files = render(raster, polygons, overview, sheet, layer_name=layer, size=size, count=PREVIEW_MASKS)
    print(f"preview: {files.overview}")
    if files.contact_sheet:
        print(f"lowest-scoring masks ({files.masks_shown}): {files.contact_sheet}")
    else:
        print("no mask to show in a contact sheet (no box has status ok)")


# -- segment-dataset ------------------------------------------------------------------------------

def _segment_dataset(args) -> int:
    from .dataset import segment_dataset

    options = _segment_options(args)
    progress = BarProgress(quiet=args.quiet)
    try:
        summary = segment_dataset(args.images, args.annotations, args.out_dir, options, dataset=args.dataset,
                                  progress=progress, annotation_format=args.format, recursive=args.recursive)
    finally:
        progress.close()
    print(summary.describe())
    if summary.done:
        _grabcut_note(options.backend)
    return 0


# -- import-annotations ---------------------------------------------------------------------------

def _import_annotations(args) -> int:
    from .annotations import import_annotations

    summary = import_annotations(args.annotations, args.out, image_path=args.image, fmt=args.format,
                                 dataset=args.dataset, layer=args.layer_name)
    print(summary.describe(max_problems=0).splitlines()[0])
    for class_id, name, count in summary.classes:
        print(f"  class {class_id} {name}: {count}")
    for problem in summary.problems[:MAX_PROBLEMS_SHOWN]:
        print(f"problem: {problem}", file=sys.stderr)
    if len(summary.problems) > MAX_PROBLEMS_SHOWN:
        print(f"… and {len(summary.problems) - MAX_PROBLEMS_SHOWN} more problem(s)", file=sys.stderr)
    return 0


# -- report ---------------------------------------------------------------------------------------

def _named(text: str, what: str) -> Tuple[Optional[str], str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain PATH (also one holding '=' that exists) -> (None, PATH)."""
    if "=" in text and not os.path.exists(text):
        name, path = text.split("=", 1)
        if not name.strip() or not path:
            raise InputError(f"'{text}' is not NAME=PATH. Give {what} as NAME=PATH or PATH.")
        return name.strip(), path
    return None, text


def _unique(name: str, taken: Dict) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}#{n}", n + 1
    return candidate


def _is_dataset_folder(folder: str) -> bool:
    if os.path.isfile(os.path.join(folder, "manifest.json")) or os.path.isdir(os.path.join(folder, "geo")):
        return True
    return any(n.lower().endswith(".gpkg") for n in os.listdir(folder))


def dataset_subsets(folder: str) -> List[Tuple[str, str]]:
    """The subsets of a folder as ``(name, folder)``: the folder itself when it is a dataset output folder
    (``manifest.json``, ``geo/`` or ``*.gpkg``), else each of its subfolders that is one (``train/``,
    ``val/``, …, by name). An InputError when there is neither."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise InputError(f"The dataset folder '{folder}' does not exist or is not a folder.")
    if _is_dataset_folder(folder):
        return [(os.path.basename(os.path.normpath(folder)), folder)]
    subsets = [(n, os.path.join(folder, n)) for n in sorted(os.listdir(folder))
               if os.path.isdir(os.path.join(folder, n)) and _is_dataset_folder(os.path.join(folder, n))]
    if not subsets:
        raise InputError(f"The folder '{folder}' is no dataset output folder (no manifest.json, geo/ or *.gpkg) "
                         "and has no subfolders that are. Give the output folder of 'segmentdataset', or a "
                         "folder holding one per subset (train/, val/, …).")
    return subsets


def _report(args) -> int:
    from .annotations import DATASET_CLASSES
    from .classes import parse_class_list
    from .report import collect_statistics, result_set_from_folder, write_report

    class_names = None
    if args.classes:
        class_names = dict(enumerate(parse_class_list(args.classes) or []))
    elif args.dataset:
        class_names = dict(enumerate(DATASET_CLASSES[args.dataset]))
    subsets: Dict = {}
    progress = BarProgress(quiet=args.quiet)
    try:
        for n, text in enumerate(args.subsets):
            part = ProgressSlice(progress, n / len(args.subsets), (n + 1) / len(args.subsets))
            name, path = _named(text, "a subset")
            if os.path.isdir(path):
                found = dataset_subsets(path)
                if name and len(found) > 1:
                    raise InputError(f"'{text}' names a folder of {len(found)} subsets ({', '.join(n for n, _ in found)}); "
                                     "give each subset folder on its own to name it.")
                for default, folder in found:
                    stats = collect_statistics(result_set_from_folder(folder), class_names=class_names, progress=part)
                    subsets[_unique(name or default, subsets)] = stats
            elif os.path.isfile(path):
                stats = collect_statistics([path], class_names=class_names, progress=part, source=path)
                subsets[_unique(name or os.path.splitext(os.path.basename(path))[0], subsets)] = stats
            else:
                raise InputError(f"Subset '{path}' does not exist. Give a dataset output folder or a polygon "
                                 "layer written by segment.")
        files = write_report(subsets, args.html, args.csv_dir, title=args.title)
    finally:
        progress.close()
    for name, stats in subsets.items():
        print(f"{name}: {stats.boxes} boxes, {stats.instances} instances in {len(stats.class_names)} class(es), "
              f"{stats.images} image(s)")
    print(f"report: {files.html}")
    for path in files.csv.values():
        print(f"csv: {path}")
    return 0


# -- evaluate / compare ---------------------------------------------------------------------------

def _image_stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    for suffix in OUTPUT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _masks_in_folder(folder: str, role: str, extensions=POLYGON_EXTENSIONS + RASTER_EXTENSIONS) -> Dict[str, str]:
    """Image name -> file of a folder's mask files; a polygon layer wins over a raster of the same name."""
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        ext = os.path.splitext(name)[1].lower()
        if not os.path.isfile(path) or ext not in extensions or name.startswith("."):
            continue
        if os.path.splitext(name)[0].endswith(NOT_MASKS_SUFFIX):
            continue
        stem = _image_stem(path)
        if stem in found and os.path.splitext(found[stem])[1].lower() in POLYGON_EXTENSIONS:
            continue
        found[stem] = path
    if not found:
        raise InputError(f"The {role} folder '{folder}' holds no polygon layers or rasters.")
    return found


def _folder_pairs(produced: str, reference: str, grid: Optional[str]) -> List[tuple]:
    prod = _masks_in_folder(produced, "produced")
    ref = _masks_in_folder(reference, "reference")
    from .dataset import IMAGE_EXTENSIONS

    grids = _masks_in_folder(grid, "grid", RASTER_EXTENSIONS + IMAGE_EXTENSIONS) if grid else {}
    common = [s for s in prod if s in ref]
    if not common:
        raise InputError(f"No file of the produced folder '{produced}' matches a file of the reference folder "
                         f"'{reference}' by name ({', '.join(list(prod)[:3])} vs {', '.join(list(ref)[:3])}). "
                         "Name them alike (tile_masks.gpkg matches tile.gpkg).")
    missing = [s for s in common if grid and s not in grids]
    if missing:
        raise InputError(f"The grid folder '{grid}' has no raster for {', '.join(missing[:5])}.")
    for stem in sorted(set(prod) ^ set(ref)):
        print(f"warning: '{stem}' is in only one of the produced and reference folders; left out", file=sys.stderr)
    return [(prod[s], ref[s], grids.get(s), s) for s in common]


def _evaluation_pairs(args) -> List[tuple]:
    if args.pair:
        if args.produced or args.reference:
            raise InputError("Give either PRODUCED REFERENCE or --pair options, not both.")
        pairs = []
        for items in args.pair:
            if len(items) not in (2, 3):
                raise InputError(f"--pair takes PRODUCED REFERENCE [GRID], not {len(items)} path(s): "
                                 f"{' '.join(items)}.")
            pairs.append(tuple(items) if len(items) == 3 else (items[0], items[1], args.grid))
        return pairs
    if not (args.produced and args.reference):
        raise InputError("Give PRODUCED and REFERENCE (files or folders), or one --pair PRODUCED REFERENCE [GRID] "
                         "per image.")
    dirs = [os.path.isdir(p) for p in (args.produced, args.reference)]
    if all(dirs):
        if args.grid and not os.path.isdir(args.grid):
            raise InputError(f"With PRODUCED and REFERENCE folders, --grid must be a folder too, not '{args.grid}'.")
        return _folder_pairs(args.produced, args.reference, args.grid)
    if any(dirs):
        raise InputError("PRODUCED and REFERENCE must both be folders or both be files.")
    return [(args.produced, args.reference, args.grid)]


def _evaluate(args) -> int:
    from .evaluation import evaluate_dataset, write_instances_csv, write_metrics_csv

    pairs = _evaluation_pairs(args)
    progress = BarProgress(quiet=args.quiet)
    try:
        result = evaluate_dataset(pairs, key_field=args.key_field, class_field=args.reference_class_field,
                                  produced_key_field=args.produced_key_field,
                                  unmatched_in_ap=args.unmatched_in_ap, progress=progress)
    finally:
        progress.close()
    print(result.describe())
    _print_metrics(result)
    if args.metrics:
        print(f"metrics: {write_metrics_csv(result, args.metrics)}")
    if args.instances_csv:
        print(f"instances: {write_instances_csv(result, args.instances_csv)}")
    return 0


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _print_metrics(result) -> None:
    print(f"{'class':<24} {'instances':>9} {'mean_iou':>8} {'w_iou':>8} {'ap':>8} {'ap50':>8} {'ap75':>8}")
    for r in result.rows():
        print(f"{r.class_name[:24]:<24} {r.instances:>9} {_fmt(r.mean_iou):>8} {_fmt(r.weighted_iou):>8} "
              f"{_fmt(r.ap):>8} {_fmt(r.ap50):>8} {_fmt(r.ap75):>8}")


def _print_comparison(results) -> None:
    print(f"{'name':<16} {'instances':>9} {'mean_iou':>8} {'w_iou':>8} {'ap':>8} {'ap50':>8} {'ap75':>8}")
    for name, result in results.items():
        r = result.overall
        print(f"{name[:16]:<16} {r.instances:>9} {_fmt(r.mean_iou):>8} {_fmt(r.weighted_iou):>8} "
              f"{_fmt(r.ap):>8} {_fmt(r.ap50):>8} {_fmt(r.ap75):>8}")


def _compare(args) -> int:
    from .evaluation import evaluate, write_comparison_csv

    named = []
    for text in args.produced:
        name, path = _named(text, "produced masks")
        if name is None:
            raise InputError(f"'{text}' has no name. Give each produced mask set as NAME=PATH, e.g. box=box_masks.gpkg.")
        if name in dict(named):
            raise InputError(f"The name '{name}' is given twice. Give each produced mask set its own name.")
        named.append((name, path))
    results = {}
    progress = BarProgress(quiet=args.quiet)
    try:
        for n, (name, path) in enumerate(named):
            results[name] = evaluate(path, args.reference, args.grid, key_field=args.key_field,
                                     class_field=args.reference_class_field,
                                     produced_key_field=args.produced_key_field, name=name,
                                     unmatched_in_ap=args.unmatched_in_ap,
                                     progress=ProgressSlice(progress, n / len(named), (n + 1) / len(named)))
    finally:
        progress.close()
    for name, result in results.items():
        print(f"{name}: {result.describe()}")
    _print_comparison(results)
    print(f"comparison: {write_comparison_csv(results, args.out)}")
    return 0


# -- ablation -------------------------------------------------------------------------------------

def _ablation(args) -> int:
    from .boxes import read_box_file
    from .evaluation import evaluate
    from .pipeline import OutputPaths, SegmentJob, make_backend

    options = _segment_options(args, embedding_cache=True)  # the encoder runs once; other modes read the cache
    backend = make_backend(options)
    modes = _ablation_modes(args, backend)
    stem = os.path.splitext(os.path.basename(args.raster))[0]
    progress = BarProgress(quiet=args.quiet)

    def run_mode(mode, folder, start, end):
        middle = start + 0.8 * (end - start)
        polygons = os.path.join(folder, f"{stem}_masks.gpkg")
        job = SegmentJob(args.raster, read_box_file(args.boxes, args.layer), OutputPaths(polygons=polygons),
                         _segment_options(args, embedding_cache=True, prompt=mode), ProgressSlice(progress, start, middle),
                         backend=backend)
        job.prepare()
        summary = job.run()
        cached = int(summary.timings.get("cached_windows", 0))
        print(f"{mode}: {summary.boxes} boxes, {summary.status_counts.get('ok', 0)} ok; "
              f"{cached} of {summary.windows} window(s) from the embedding cache")
        return evaluate(polygons, args.reference, args.raster, key_field=args.key_field,
                        class_field=args.reference_class_field, name=mode, unmatched_in_ap=args.unmatched_in_ap,
                        progress=ProgressSlice(progress, middle, end))

    code = _compare_modes(modes, args.out_dir, progress, run_mode)
    _grabcut_note(options.backend)
    return code


def _compare_modes(modes, out_dir: str, progress: Progress, run_mode) -> int:
    """The ablation loop: ``run_mode(mode, folder, part)`` segments and evaluates one prompt mode in
    ``folder`` (reporting into ``part``, its slice of the progress) and returns its EvaluationResult;
    the results are written as OUT_DIR/<mode>/metrics.csv and one OUT_DIR/comparison.csv."""
    from .evaluation import write_comparison_csv, write_metrics_csv

    results = {}
    try:
        for n, mode in enumerate(modes):
            progress.info(f"prompt mode {mode}")
            folder = os.path.join(out_dir, mode)
            result = run_mode(mode, folder, n / len(modes), (n + 1) / len(modes))
            write_metrics_csv(result, os.path.join(folder, "metrics.csv"))
            results[mode] = result
    finally:
        progress.close()
    _print_comparison(results)
    print(f"comparison: {write_comparison_csv(results, os.path.join(out_dir, 'comparison.csv'))}")
    return 0


def _ablation_modes(args, backend) -> List[str]:
    modes = args.prompts or list(backend.prompt_modes)
    refused = [m for m in modes if m not in backend.prompt_modes]
    if refused:
        raise InputError(f"The {backend.name} backend takes the prompt modes {', '.join(backend.prompt_modes)}, "
                         f"not {', '.join(refused)}. Give --prompts among those, or a SAM --checkpoint.")
    if not os.path.exists(args.reference):
        raise InputError(f"The reference masks '{args.reference}' do not exist. Give the true masks (a polygon "
                         "layer or instance raster; a folder of them for a dataset).")
    return modes


def _ablation_dataset(args) -> int:
    from .dataset import segment_dataset
    from .evaluation import evaluate_dataset
    from .pipeline import make_backend

    options = _segment_options(args, embedding_cache=True)  # each image is encoded once for all modes
    backend = make_backend(options)
    modes = _ablation_modes(args, backend)
    if not os.path.isdir(args.reference):
        raise InputError(f"--reference '{args.reference}' must be a folder of reference masks named after the images.")
    progress = BarProgress(quiet=args.quiet)

    def run_mode(mode, folder, start, end):
        middle = start + 0.8 * (end - start)
        summary = segment_dataset(args.images, args.annotations, folder,
                                  _segment_options(args, embedding_cache=True, prompt=mode), dataset=args.dataset,
                                  progress=ProgressSlice(progress, start, middle), annotation_format=args.format,
                                  backend=backend)
        print(f"{mode}: {summary.describe().splitlines()[0]}")
        pairs = _folder_pairs(os.path.join(folder, "geo"), args.reference, args.images)
        return evaluate_dataset(pairs, key_field=args.key_field, class_field=args.reference_class_field,
                                produced_key_field=args.produced_key_field, unmatched_in_ap=args.unmatched_in_ap,
                                progress=ProgressSlice(progress, middle, end))

    code = _compare_modes(modes, args.out_dir, progress, run_mode)
    _grabcut_note(options.backend)
    return code


def _export_reviewed(args) -> int:
    from .review_export import export_reviewed

    progress = BarProgress(quiet=args.quiet)
    try:
        summary = export_reviewed(args.dataset, args.out_dir, progress=progress)
    finally:
        progress.close()
    print(summary.describe())
    return 0


def _download(args) -> int:
    from .checkpoints import download_checkpoint

    for model_type in args.models:
        path = download_checkpoint(model_type, args.dir)
        print(f"{model_type}: {path} (MD5 verified)")
    return 0


COMMANDS = {"segment": _segment, "segment-dataset": _segment_dataset, "import-annotations": _import_annotations,
            "report": _report, "evaluate": _evaluate, "compare": _compare, "ablation": _ablation,
            "ablation-dataset": _ablation_dataset, "export-reviewed": _export_reviewed, "download-checkpoints": _download}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Cancelled as exc:
        print(f"samrs: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("samrs: interrupted; no output was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except SamrsError as exc:
        print(f"samrs: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR

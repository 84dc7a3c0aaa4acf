"""Command line: ``python -m samrs_qgis <command> …``.

Commands: ``segment`` (boxes over a raster -> masks; ``--preview`` draws PNG previews with QGIS),
``segment-dataset`` (a folder of images and one of annotations -> the SAMRS dataset layout),
``import-annotations`` (DOTA/VOC/FAIR1M/HRSC2016/CSV -> a box layer), ``report`` (dataset statistics as HTML
and CSV), ``evaluate`` (masks against reference masks), ``compare`` (several produced mask sets against one
reference, one table), ``ablation`` / ``ablation-dataset`` (segment with several prompt modes, evaluate each,
one table), ``export-reviewed``, ``download-checkpoints``, ``export-onnx`` (a SAM checkpoint as an ONNX
encoder/decoder pair, run without torch) and ``setup-env`` (the dependencies, into the plugin's managed
environment).

The CLI only parses and prints: the segmentation and matching options come from the settings tables
(:mod:`.settings`, via :mod:`.cli_options`), the work and its rules from the engine's modules.
Errors in the inputs print one clear line and exit with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import List, Optional, Tuple

from .cli_options import add_setting_options, options_from_args
from .errors import Cancelled, InputError, SamrsError
from .progress import Progress, ProgressSlice
from .settings import ANNOTATION_SETTINGS, BOX_LAYER, MATCHING_SETTINGS, MatchingOptions, not_sam_note

EXIT_INPUT_ERROR = 2
EXIT_IMAGES_FAILED = 3  # segment-dataset finished, but some images failed
EXIT_CANCELLED = 130  # Ctrl-C, as shells report SIGINT
EXIT_TERMINATED = 143  # SIGTERM, as shells report it
MAX_PROBLEMS_SHOWN = 50  # annotation problems printed one per line; the rest are counted


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


def _polygon_variants(text: str) -> List[str]:
    from .ablation import polygon_variants

    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        polygon_variants(names)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(set(names)) != len(names) or not names:
        raise argparse.ArgumentTypeError(f"give each polygon variant once, comma-separated, not '{text}'")
    return names


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


def default_output_paths(raster: str, out_dir: str):
    """``<out_dir>/<raster name>_instances.tif``, ``…_semantic.tif``, ``…_masks.gpkg``."""
    from .pipeline import OutputPaths

    stem = os.path.splitext(os.path.basename(raster))[0]
    return OutputPaths(instances=os.path.join(out_dir, f"{stem}_instances.tif"),
                       semantic=os.path.join(out_dir, f"{stem}_semantic.tif"),
                       polygons=os.path.join(out_dir, f"{stem}_masks.gpkg"))


# -- parser ---------------------------------------------------------------------------------------

def _add_matching_options(parser: argparse.ArgumentParser) -> None:
    add_setting_options(parser, table=MATCHING_SETTINGS)


def _matching(args) -> MatchingOptions:
    return MatchingOptions(**{s.name: getattr(args, s.name) for s in MATCHING_SETTINGS})


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
    seg.add_argument("--layer", help="layer name inside BOXES when it holds several")
    add_setting_options(seg)
    add_cluster_options(seg, "the raster")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")

    sds = commands.add_parser(
        "segment-dataset", help="segment every annotated box of a folder of images (SAMRS dataset layout)",
        description="Segment every box of every image in IMAGES, whose annotation files (same name, DOTA .txt, "
                    "VOC/DIOR/FAIR1M/HRSC2016 .xml, .csv) are in ANNOTATIONS, and write the SAMRS layout into "
                    "--out-dir: boxes/, geo/ (rasters and mask polygons per image), class_index/, colour/, "
                    "instances/, coco_instances.json and manifest.json. A rerun into the same folder keeps the "
                    "images already done whose image and annotation file have not changed since (changed ones are "
                    "segmented again). Images that fail are listed; the run goes on.",
        epilog=f"Exit status: 0 when every image was segmented (or had been), {EXIT_IMAGES_FAILED} when some images "
               f"failed (the others are done and listed in manifest.json), {EXIT_INPUT_ERROR} on bad input "
               f"(nothing written), {EXIT_CANCELLED} when interrupted.")
    sds.add_argument("images", help="folder of images (GeoTIFF, PNG, JPEG, BMP)")
    sds.add_argument("annotations", help="folder of annotation files, one per image, named after it")
    sds.add_argument("--out-dir", required=True, help="output folder (resumable)")
    add_setting_options(sds, table=ANNOTATION_SETTINGS)
    sds.add_argument("--recursive", action="store_true", help="include images in subfolders")
    add_setting_options(sds, exclude=(BOX_LAYER,))
    add_cluster_options(sds, "the images and the output folder")
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
    add_setting_options(imp, table=ANNOTATION_SETTINGS)
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
    rep.add_argument("--classes", help="comma-separated class list fixing ids by position (or --dataset)")
    add_setting_options(rep, exclude=("annotation_format",), table=ANNOTATION_SETTINGS)
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
    _add_matching_options(ev)
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
    _add_matching_options(cmp_)
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
    abl.add_argument("--polygon-options", type=_polygon_variants, default=None, metavar="VARIANTS",
                     help="compare polygon options instead of prompt modes: comma-separated variants among raw, "
                          "regularise, smooth=<pixels>, simplify=<pixels> (e.g. raw,regularise,simplify=1)")
    abl.add_argument("--layer", help="layer name inside BOXES when it holds several")
    add_setting_options(abl, exclude=("prompt", "embedding_cache"))
    _add_matching_options(abl)
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
    abd.add_argument("--polygon-options", type=_polygon_variants, default=None, metavar="VARIANTS",
                     help="compare polygon options instead of prompt modes (raw, regularise, smooth=<pixels>, "
                          "simplify=<pixels>, comma-separated)")
    add_setting_options(abd, table=ANNOTATION_SETTINGS)
    add_setting_options(abd, exclude=("prompt", "embedding_cache", BOX_LAYER))
    _add_matching_options(abd)
    abd.add_argument("--quiet", action="store_true", help="no progress bar")

    exr = commands.add_parser(
        "export-reviewed", help="export a reviewed dataset: rejected masks dropped, relabelled ones moved",
        description="Write DATASET (an output folder of segment-dataset whose mask layers were reviewed in QGIS) "
                    "again into OUT_DIR, honouring each mask's review: rejected masks leave every output, "
                    "relabelled masks move to their new class, the rest is kept as it is.")
    exr.add_argument("dataset", help="output folder of segment-dataset")
    exr.add_argument("out_dir", help="folder to write the reviewed dataset into (new, or an earlier export)")
    exr.add_argument("--quiet", action="store_true", help="no progress bar")

    dl = commands.add_parser(
        "download-checkpoints", help="download official SAM, SAM-HQ, MobileSAM and SAM 2.1 checkpoints, verified",
        description="Download the official checkpoints named by their model type and keep each only once verified: "
                    "by its published checksum, or, for a file with none published, by what it holds (family, "
                    "size and byte count). --list shows them. The files come from a mirror instead when --mirror "
                    "or the SAMRS_CHECKPOINT_MIRROR environment variable gives one (<mirror>/<file name>).")
    dl.add_argument("models", nargs="*", default=["vit_b"], metavar="MODEL",
                    help=f"model types among {', '.join(OFFICIAL_CHECKPOINTS)}, or their file names (default vit_b)")
    dl.add_argument("--dir", default=None,
                    help="target folder (default: the plugin's per-user models folder, where --official-model and the "
                         "toolbox's model list find the files)")
    dl.add_argument("--list", action="store_true", help="list the official checkpoints and exit")
    dl.add_argument("--mirror", default=None, metavar="URL",
                    help="fetch the files from URL/<file name> (default: $SAMRS_CHECKPOINT_MIRROR, else the "
                         "official servers)")

    onx = commands.add_parser(
        "export-onnx", help="export a SAM, MobileSAM or SAM 2 / 2.1 checkpoint to an ONNX encoder and decoder (runs "
                            "without torch)",
        description="Write CHECKPOINT's image encoder and its prompt encoder + mask decoder as two .onnx files into "
                    "--out (named after the checkpoint, _encoder.onnx and _decoder.onnx). Give that folder as the "
                    "checkpoint of the SAM backend: ONNX Runtime runs it, without torch.")
    onx.add_argument("checkpoint", help="SAM (.pth), MobileSAM (.pt) or SAM 2 / 2.1 (.pt) checkpoint")
    onx.add_argument("--out", required=True, help="folder to write the pair into")
    onx.add_argument("--quantize", choices=("int8",), default=None,
                     help="int8: 8-bit weights in the image encoder (faster on a CPU, embedding within a few percent)")
    env = commands.add_parser(
        "setup-env", help="install the dependencies (light: ONNX Runtime; full: torch and the SAM packages) into "
                          "the plugin's managed environment",
        description="Install a profile with pip into the environment the plugin manages for QGIS's Python (outside "
                    "the plugin folder, one per Python version; SAMRS_HOME moves it): light = ONNX Runtime and "
                    "OpenCV (SAM through ONNX pairs, no torch); full = torch (CUDA build matched to the NVIDIA "
                    "driver, else the CPU build), segment-anything, SAM-HQ, SAM 2 and OpenCV. QGIS's own numpy, "
                    "GDAL, PROJ and PyQt are kept. Ends with a check that imports everything in a new QGIS Python "
                    "and runs tiny models. --status only shows what is installed and working.")
    env.add_argument("--profile", choices=("light", "full"), default="light", help="what to install (default light)")
    env.add_argument("--env", default=None, metavar="DIR",
                     help="environment folder (default: the managed one, see --status)")
    env.add_argument("--index-url", default=None, metavar="URL", help="package index for everything but torch")
    env.add_argument("--torch-index-url", default=None, metavar="URL",
                     help="package index for torch (default: PyTorch's index of the chosen build; '' for pip's)")
    env.add_argument("--pip-option", action="append", default=[], metavar="OPTION",
                     help="an extra pip option, e.g. --pip-option=--proxy=http://host:3128 (repeatable)")
    env.add_argument("--dry-run", action="store_true",
                     help="resolve what would be installed (pip --dry-run --report), install nothing")
    env.add_argument("--status", action="store_true", help="show what is installed and working, install nothing")
    return parser


# -- segment --------------------------------------------------------------------------------------

def _print_note(backend: str) -> None:
    note = not_sam_note(backend)
    if note:
        print(f"Note: {note}")


def _segment(args) -> int:
    from .boxes import read_box_file
    from .pipeline import OutputPaths, segment_boxes

    outputs = default_output_paths(args.raster, args.out_dir) if args.out_dir else OutputPaths()
    outputs.instances = args.instances or outputs.instances
    outputs.semantic = args.semantic or outputs.semantic
    outputs.polygons = args.polygons or outputs.polygons
    options = options_from_args(args)
    draw = None
    if args.preview:
        if not outputs.polygons:
            raise InputError("--preview draws the mask polygons: give --polygons or --out-dir as well.")
        draw = _preview_drawer()  # before the run: no QGIS, no run
    progress = BarProgress(quiet=args.quiet)
    try:
        summary = segment_boxes(args.raster, read_box_file(args.boxes, args.layer), outputs, options, progress,
                                cluster=_cluster_spec(args))
    finally:
        progress.close()
    print(summary.describe())
    if draw is not None:
        for line in draw(args.raster, outputs.polygons).lines():
            print(line)
    _print_note(summary.backend)
    return 0


def _preview_drawer():
    """``samrs_previews.draw_result_previews``, which draws with QGIS (an offscreen QgsApplication, no display
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
        return importlib.import_module(f"{parent}.samrs_previews").draw_result_previews
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)  # appended: the checkout's processing/ must not shadow QGIS's
    return importlib.import_module("samrs_previews").draw_result_previews


# -- segment-dataset ------------------------------------------------------------------------------

def add_cluster_options(parser, shared: str) -> None:
    """--workers, --scheduler, --threads-per-worker; ``shared``: what every worker must reach at the same path."""
    group = parser.add_argument_group("running on a Dask cluster (needs dask and distributed)")
    group.add_argument("--workers", type=int, default=0, metavar="N",
                       help="start a local cluster of N worker processes (one per GPU on a machine with several); "
                            "each loads the model once")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="use an existing Dask cluster: its scheduler's address (tcp://host:8786) or scheduler "
                            f"file; {shared} must be reachable from every worker at the same path")
    group.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                       help="compute threads of each local worker (default: the cores shared among the workers)")


def _cluster_spec(args):
    from .cluster import ClusterSpec

    spec = ClusterSpec(args.workers, args.scheduler, args.threads_per_worker)
    spec.check()
    return spec


def _segment_dataset(args) -> int:
    from .dataset import segment_dataset

    options = options_from_args(args)
    cluster = _cluster_spec(args)
    progress = BarProgress(quiet=args.quiet)
    try:
        summary = segment_dataset(args.images, args.annotations, args.out_dir, options, dataset=args.dataset,
                                  progress=progress, annotation_format=args.annotation_format, recursive=args.recursive,
                                  cluster=cluster)
    finally:
        progress.close()
    print(summary.describe())
    if summary.done:
        _print_note(summary.backend)
    if summary.failed:
        print(f"samrs: {summary.failed} image(s) failed (listed above and in {summary.manifest}); the others are "
              "done. Fix them and run the same command again to do only those.", file=sys.stderr)
        return EXIT_IMAGES_FAILED
    return 0


# -- import-annotations ---------------------------------------------------------------------------

def _import_annotations(args) -> int:
    from .annotations import NothingImported, import_annotations

    def print_problems(problems) -> None:
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            print(f"problem: {problem}", file=sys.stderr)
        if len(problems) > MAX_PROBLEMS_SHOWN:
            print(f"… and {len(problems) - MAX_PROBLEMS_SHOWN} more problem(s)", file=sys.stderr)

    try:
        summary = import_annotations(args.annotations, args.out, image_path=args.image, fmt=args.annotation_format,
                                     dataset=args.dataset, layer=args.layer_name)
    except NothingImported as exc:  # every file's problems, then the error line (exit 2)
        print_problems(exc.problems)
        raise
    print(summary.describe(max_problems=0).splitlines()[0])
    for class_id, name, count in summary.classes:
        print(f"  class {class_id} {name}: {count}")
    print_problems(summary.problems)
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


def _report(args) -> int:
    from .report import check_report_outputs, collect_subsets, describe_subsets, report_class_names, write_report

    class_names = report_class_names(args.dataset, args.classes)
    inputs = [_named(text, "a subset") for text in args.subsets]
    check_report_outputs(inputs, args.html, args.csv_dir)
    progress = BarProgress(quiet=args.quiet)
    try:
        subsets = collect_subsets(inputs, class_names, progress)
        files = write_report(subsets, args.html, args.csv_dir, title=args.title)
    finally:
        progress.close()
    for line in describe_subsets(subsets):
        print(line)
    print(f"report: {files.html}")
    for path in files.csv.values():
        print(f"csv: {path}")
    return 0


# -- evaluate / compare ---------------------------------------------------------------------------

def _evaluate(args) -> int:
    from dataclasses import asdict

    from .evaluation import check_table_outputs, evaluate_dataset, write_instances_csv, write_metrics_csv
    from .evaluation.pairing import evaluation_pairs

    pairing = evaluation_pairs(args.produced, args.reference, args.grid, args.pair or ())
    check_table_outputs(pairing.pairs, {"metrics table": args.metrics, "per-instance table": args.instances_csv})
    for stem in pairing.unpaired:
        print(f"warning: '{stem}' is in only one of the produced and reference folders; left out", file=sys.stderr)
    progress = BarProgress(quiet=args.quiet)
    try:
        result = evaluate_dataset(pairing.pairs, **asdict(_matching(args)), progress=progress)
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
    from dataclasses import asdict

    from .evaluation import check_table_outputs, evaluate, write_comparison_csv

    named = []
    for text in args.produced:
        name, path = _named(text, "produced masks")
        if name is None:
            raise InputError(f"'{text}' has no name. Give each produced mask set as NAME=PATH, e.g. box=box_masks.gpkg.")
        if name in dict(named):
            raise InputError(f"The name '{name}' is given twice. Give each produced mask set its own name.")
        named.append((name, path))
    check_table_outputs([(path, args.reference, args.grid) for _, path in named], {"comparison table": args.out})
    results = {}
    progress = BarProgress(quiet=args.quiet)
    try:
        for n, (name, path) in enumerate(named):
            results[name] = evaluate(path, args.reference, args.grid, **asdict(_matching(args)), name=name,
                                     progress=ProgressSlice(progress, n / len(named), (n + 1) / len(named)))
    finally:
        progress.close()
    for name, result in results.items():
        print(f"{name}: {result.describe()}")
    _print_comparison(results)
    print(f"comparison: {write_comparison_csv(results, args.out)}")
    return 0


# -- ablation -------------------------------------------------------------------------------------

def _print_ablation(ablation, backend: str) -> int:
    for mode, run in ablation.runs.items():
        print(f"{mode}: {run}")
    _print_comparison(ablation.results)
    print(f"comparison: {ablation.comparison}")
    _print_note(backend)
    return 0


def _ablation(args) -> int:
    from .ablation import raster_ablation

    options = options_from_args(args)
    progress = BarProgress(quiet=args.quiet)
    try:
        ablation = raster_ablation(args.raster, args.boxes, args.layer, args.reference, args.out_dir, options,
                                   _matching(args), args.prompts, progress, polygons=args.polygon_options)
    finally:
        progress.close()
    return _print_ablation(ablation, options.backend)


def _ablation_dataset(args) -> int:
    from .ablation import dataset_ablation

    options = options_from_args(args)
    progress = BarProgress(quiet=args.quiet)
    try:
        ablation = dataset_ablation(args.images, args.annotations, args.reference, args.out_dir, options,
                                    _matching(args), args.prompts, dataset=args.dataset,
                                    annotation_format=args.annotation_format, progress=progress,
                                    polygons=args.polygon_options)
    finally:
        progress.close()
    return _print_ablation(ablation, options.backend)


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
    from .checkpoints import checkpoint_table, download_checkpoint, find_checkpoint

    if args.list:
        print(checkpoint_table())
        return 0
    from .environment.locations import models_folder

    specs = [find_checkpoint(name) for name in args.models]  # every name checked before anything is fetched
    for spec in specs:
        path = download_checkpoint(spec.name, args.dir or str(models_folder()), base_url=args.mirror)
        print(f"{spec.name}: {path} ({spec.describe_verification()})")
    return 0


def _export_onnx(args) -> int:
    from .onnx_export import export_onnx

    class Steps(Progress):  # exporting has steps, not a fraction: each said on stderr
        def info(self, message: str) -> None:
            print(message, file=sys.stderr)

    pair = export_onnx(args.checkpoint, args.out, quantize=args.quantize, progress=Steps())
    print(f"encoder: {pair.encoder}")
    print(f"decoder: {pair.decoder}")
    return 0


def _setup_env(args) -> int:
    from pathlib import Path

    from .environment import installer, locations, status
    from .environment.interpreter import qgis_python

    environment = Path(args.env) if args.env else locations.managed_environment()
    if args.status:
        python = qgis_python()
        record = status.read_record(environment)
        print(f"QGIS's Python: {python}")
        print(f"managed environment: {environment} ("
              + (f"{record['profile']} profile installed {record['installed']}" if record else "no finished install")
              + ")")
        print(f"models folder: {locations.models_folder()}")
        for line in status.probe(python, [locations.site_packages(environment)]).lines():
            print(f"  {line}")
        return 0

    class Lines(Progress):  # pip's lines and the steps, on stderr
        def info(self, message: str) -> None:
            print(message, file=sys.stderr, flush=True)

    result = installer.install(installer.InstallRequest(
        args.profile, environment, index_url=args.index_url, torch_index_url=args.torch_index_url,
        pip_options=tuple(args.pip_option), dry_run=args.dry_run), Lines())
    for report in result.reports:
        print(f"pip report: {report}")
    if not args.dry_run:
        print(f"{args.profile} profile installed in {result.environment} (log: {result.log_path})")
    return 0


COMMANDS = {"segment": _segment, "segment-dataset": _segment_dataset, "import-annotations": _import_annotations,
            "report": _report, "evaluate": _evaluate, "compare": _compare, "ablation": _ablation,
            "ablation-dataset": _ablation_dataset, "export-reviewed": _export_reviewed, "download-checkpoints": _download,
            "export-onnx": _export_onnx, "setup-env": _setup_env}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that a run cleans up the same way."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be handled
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except Cancelled as exc:
        print(f"samrs: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except Terminated:
        print("samrs: terminated; no output was written.", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("samrs: interrupted; no output was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except SamrsError as exc:
        print(f"samrs: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)

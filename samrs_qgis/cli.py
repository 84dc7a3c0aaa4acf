"""Command line: ``python -m samrs_qgis segment …`` and ``python -m samrs_qgis download-checkpoints``.

Errors in the inputs print one clear line and exit with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .errors import Cancelled, SamrsError
from .progress import Progress

EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130


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


def default_output_paths(raster: str, out_dir: str):
    """``<out_dir>/<raster name>_instances.tif``, ``…_semantic.tif``, ``…_masks.gpkg``."""
    from .pipeline import OutputPaths

    stem = os.path.splitext(os.path.basename(raster))[0]
    return OutputPaths(instances=os.path.join(out_dir, f"{stem}_instances.tif"),
                       semantic=os.path.join(out_dir, f"{stem}_semantic.tif"),
                       polygons=os.path.join(out_dir, f"{stem}_masks.gpkg"))


def build_parser() -> argparse.ArgumentParser:
    from .backends.sam import PRECISIONS
    from .backends.sam_checkpoint import MODEL_TYPES
    from .checkpoints import OFFICIAL_CHECKPOINTS
    from .pipeline import BACKENDS, SegmentOptions
    from .stretch import STRETCH_MODES

    defaults = SegmentOptions()
    parser = argparse.ArgumentParser(prog="python -m samrs_qgis",
                                     description="Turn detection boxes into SAM segmentation masks.")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment the boxes of a layer over a raster",
                              description="Segment every box of BOXES over RASTER; writes an instance raster, "
                                          "a semantic raster and a polygon layer with one feature per box.")
    seg.add_argument("raster", help="georeferenced raster (any GDAL format)")
    seg.add_argument("boxes", help="box layer (any OGR format: GPKG, Shapefile, GeoJSON, …), any CRS")
    seg.add_argument("--layer", help="layer name inside BOXES when it holds several")
    out = seg.add_argument_group("outputs (at least one; --out-dir names all three after the raster)")
    out.add_argument("--out-dir", help="folder for <raster>_instances.tif, <raster>_semantic.tif, <raster>_masks.gpkg")
    out.add_argument("--instances", help="instance raster (.tif; uint32, 0 = none, value = instance id)")
    out.add_argument("--semantic", help="semantic raster (.tif; class index, background --background)")
    out.add_argument("--polygons", help="polygon layer (.gpkg, .shp, .geojson, .fgb, …)")
    model = seg.add_argument_group("model")
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
    model.add_argument("--no-cache", action="store_true", help="do not cache window embeddings on disk")
    model.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/samrs/embeddings)")
    model.add_argument("--cache-limit-mb", type=float, default=defaults.cache_limit_mb,
                       help="embedding cache size limit (oldest use deleted first)")
    model.add_argument("--window-size", type=int, default=defaults.window_size,
                       help="window side in raster pixels (native resolution)")
    model.add_argument("--multimask", action="store_true", help="best of three masks by predicted IoU")
    model.add_argument("--clip-to-box", action="store_true", help="clip each mask to its (rotated) box")
    data = seg.add_argument_group("data")
    data.add_argument("--class-field", help="field holding each box's class (text or integer)")
    data.add_argument("--id-field", help="field of unique integer ids used as instance ids")
    data.add_argument("--classes", help="comma-separated class list giving ids by position (stable across runs)")
    data.add_argument("--bands", type=_bands, help="three bands (or one) fed to SAM, e.g. 4,3,2; "
                                                   "default RGB or the first three")
    data.add_argument("--stretch", choices=STRETCH_MODES, default=defaults.stretch,
                      help="auto: 8-bit as is, other types by 2–98 %% percentiles")
    data.add_argument("--background", type=int, default=defaults.background,
                      help="semantic raster value for no object (SAMRS: 255)")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")

    dl = commands.add_parser("download-checkpoints", help="download official SAM checkpoints and verify their MD5")
    dl.add_argument("models", nargs="*", default=["vit_b"], metavar="MODEL",
                    help=f"model types among {', '.join(OFFICIAL_CHECKPOINTS)} (default vit_b)")
    dl.add_argument("--dir", default="checkpoints", help="target folder (default ./checkpoints)")
    return parser


def _segment(args) -> int:
    from .boxes import read_box_file
    from .classes import parse_class_list
    from .pipeline import OutputPaths, SegmentOptions, segment_boxes

    outputs = default_output_paths(args.raster, args.out_dir) if args.out_dir else OutputPaths()
    outputs.instances = args.instances or outputs.instances
    outputs.semantic = args.semantic or outputs.semantic
    outputs.polygons = args.polygons or outputs.polygons
    backend = args.backend or ("sam" if args.checkpoint else "grabcut")
    options = SegmentOptions(
        backend=backend, checkpoint=args.checkpoint, model_type=args.model_type, device=args.device,
        multimask=args.multimask, clip_to_box=args.clip_to_box, batch_size=args.batch_size,
        precision=args.precision, compile_decoder=args.compile_decoder, embedding_cache=not args.no_cache, cache_dir=args.cache_dir,
        cache_limit_mb=args.cache_limit_mb,
        window_size=args.window_size, bands=args.bands, stretch=args.stretch, class_field=args.class_field,
        id_field=args.id_field, class_names=parse_class_list(args.classes),
        background=args.background)
    progress = BarProgress(quiet=args.quiet)
    try:
        summary = segment_boxes(args.raster, read_box_file(args.boxes, args.layer), outputs, options, progress)
    finally:
        progress.close()
    print(summary.describe())
    if backend == "grabcut":
        print("Note: masks made by GrabCut, not SAM. Give --checkpoint for SAM "
              "(python -m samrs_qgis download-checkpoints fetches the official ones).")
    return 0


def _download(args) -> int:
    from .checkpoints import download_checkpoint

    for model_type in args.models:
        path = download_checkpoint(model_type, args.dir)
        print(f"{model_type}: {path} (MD5 verified)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            return _segment(args)
        return _download(args)
    except Cancelled as exc:
        print(f"samrs: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("samrs: interrupted; no output was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except SamrsError as exc:
        print(f"samrs: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR

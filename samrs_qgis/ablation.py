"""SAMRS's prompt ablation: the same boxes segmented once per prompt mode, each result evaluated against
reference masks, one comparison table. The same over polygon options instead (raw polygons against regularised,
smoothed, simplified ones): what each option costs or gains in IoU.

The embedding cache is on for every variant, so the image encoder runs once per window (or image) for all of
them; the backend is loaded once. Writes ``<out_dir>/<variant>/…`` (its masks and ``metrics.csv``) and
``<out_dir>/comparison.csv``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InputError
from .path_safety import check_output_paths
from .progress import Progress, ProgressSlice

SEGMENT_SHARE = 0.8  # of each mode's progress; the rest is its evaluation
# polygon variants by name: the options each sets (all others as the run's own options, shaping off)
POLYGON_VARIANTS = {"raw": {}, "regularise": {"regularise": True}}
POLYGON_VARIANT_FORMS = ("raw", "regularise", "smooth=<pixels>", "simplify=<pixels>")


@dataclass
class AblationResult:
    results: Dict[str, object]  # prompt mode -> EvaluationResult, in the order run
    comparison: str  # path of comparison.csv
    runs: Dict[str, str]  # prompt mode -> one line on its segmentation (boxes, windows from the cache)


def polygon_variants(names: Sequence[str]) -> Dict[str, Dict[str, object]]:
    """Polygon variants by name (``raw``, ``regularise``, ``smooth=2``, ``simplify=1.5``) -> the options each
    sets; an InputError naming a name that is none of those."""
    variants = {}
    for name in names:
        option, _, value = name.partition("=")
        if name in POLYGON_VARIANTS:
            variants[name] = dict(POLYGON_VARIANTS[name])
            continue
        try:
            pixels = float(value)
        except ValueError:
            pixels = -1.0
        if option not in ("smooth", "simplify") or pixels <= 0:
            raise InputError(f"'{name}' is not a polygon variant: give a comma-separated list of "
                             f"{', '.join(POLYGON_VARIANT_FORMS)} (pixels above 0).")
        variants[name] = {f"{option}_px": pixels}
    return variants


def ablation_modes(requested: Optional[Sequence[str]], backend, reference: str) -> List[str]:
    """The prompt modes to compare (default: every mode the backend takes), checked against the backend,
    and the reference checked to exist."""
    modes = list(requested or backend.prompt_modes)
    refused = [m for m in modes if m not in backend.prompt_modes]
    if refused:
        raise InputError(f"The {backend.name} backend takes the prompt modes {', '.join(backend.prompt_modes)}, "
                         f"not {', '.join(refused)}. Give prompt modes among those, or a SAM checkpoint.")
    check_reference(reference)
    return modes


def check_reference(reference: str) -> None:
    """An InputError when the reference masks do not exist."""
    if not os.path.exists(reference):
        raise InputError(f"The reference masks '{reference}' do not exist. Give the true masks (a polygon "
                         "layer or instance raster; a folder of them for a dataset).")


def _compare_modes(modes: Sequence[str], out_dir: str, progress: Progress,
                   run_mode: Callable[[str, str, Progress, Progress], Tuple[object, str]]) -> AblationResult:
    """``run_mode(mode, folder, segment_progress, evaluate_progress)`` segments and evaluates one mode in
    ``folder`` and returns its evaluation and a line on its run; the evaluations are written as
    ``<folder>/metrics.csv`` and one ``comparison.csv``."""
    from .evaluation import write_comparison_csv, write_metrics_csv

    results, runs = {}, {}
    for n, mode in enumerate(modes):
        progress.info(f"variant {mode}")
        start, end = n / len(modes), (n + 1) / len(modes)
        middle = start + SEGMENT_SHARE * (end - start)
        folder = os.path.join(out_dir, mode)
        result, runs[mode] = run_mode(mode, folder, ProgressSlice(progress, start, middle),
                                      ProgressSlice(progress, middle, end))
        write_metrics_csv(result, os.path.join(folder, "metrics.csv"))
        results[mode] = result
    return AblationResult(results, write_comparison_csv(results, os.path.join(out_dir, "comparison.csv")), runs)


def _tables(out_dir: str, modes: Sequence[str]) -> Dict[str, str]:
    """The tables an ablation writes, by role."""
    tables = {f"{mode} metrics table": os.path.join(out_dir, mode, "metrics.csv") for mode in modes}
    tables["comparison table"] = os.path.join(out_dir, "comparison.csv")
    return tables


def _cached(options, mode: str, variants: Optional[Dict[str, Dict[str, object]]] = None):
    """The options of one variant: ``mode`` a prompt mode, or with ``variants`` the name of a polygon variant (the
    shaping it sets, all other shaping off); the embedding cache on."""
    if variants is None:
        return dataclasses.replace(options, embedding_cache=True, prompt=mode)
    shaping = dict({"regularise": False, "smooth_px": 0.0, "simplify_px": 0.0}, **variants[mode])
    return dataclasses.replace(options, embedding_cache=True, **shaping)


def _variants(modes, polygons, backend, reference) -> Tuple[List[str], Optional[Dict[str, Dict[str, object]]]]:
    """(the variants' names, the polygon variants or None for prompt modes) of an ablation."""
    if polygons is not None and modes is not None:
        raise InputError("Compare either prompt modes (--prompts) or polygon options (--polygon-options), not both.")
    if polygons is not None:
        variants = polygon_variants(polygons)
        check_reference(reference)
        return list(variants), variants
    return ablation_modes(modes, backend, reference), None


def raster_ablation(raster: str, boxes_path: str, layer: Optional[str], reference: str, out_dir: str, options,
                    matching, modes: Optional[Sequence[str]] = None, progress: Optional[Progress] = None,
                    polygons: Optional[Sequence[str]] = None) -> AblationResult:
    """The ablation over one raster: ``<out_dir>/<mode>/<raster>_masks.gpkg`` per prompt mode (or per polygon
    variant of ``polygons``, see :func:`polygon_variants`), evaluated on the raster's grid against ``reference``
    with ``matching`` (:class:`samrs_qgis.settings.MatchingOptions`)."""
    from .backends import make_backend
    from .boxes import read_box_file
    from .evaluation import evaluate
    from .pipeline import OutputPaths, SegmentJob

    progress = progress or Progress()
    backend = make_backend(_cached(options, options.prompt), progress)
    modes, variants = _variants(modes, polygons, backend, reference)
    stem = os.path.splitext(os.path.basename(raster))[0]
    outputs = dict(_tables(out_dir, modes), **{f"{mode} mask polygons": os.path.join(out_dir, mode, f"{stem}_masks.gpkg")
                                               for mode in modes})
    check_output_paths(outputs, {"raster": raster, "box layer": boxes_path, "reference masks": reference})

    def run_mode(mode, folder, segmenting, evaluating):
        polygons = os.path.join(folder, f"{stem}_masks.gpkg")
        job = SegmentJob(raster, read_box_file(boxes_path, layer), OutputPaths(polygons=polygons),
                         _cached(options, mode, variants), segmenting, backend=backend)
        job.prepare()
        summary = job.run()
        cached = int(summary.timings.get("cached_windows", 0))
        run = (f"{summary.boxes} boxes, {summary.status_counts.get('ok', 0)} ok; {cached} of {summary.windows} "
               "window(s) from the embedding cache")
        return evaluate(polygons, reference, raster, **dataclasses.asdict(matching), name=mode,
                        progress=evaluating), run

    try:
        return _compare_modes(modes, out_dir, progress, run_mode)
    finally:
        backend.close()


def dataset_ablation(images: str, annotations: str, reference: str, out_dir: str, options, matching,
                     modes: Optional[Sequence[str]] = None, dataset: Optional[str] = None,
                     annotation_format: str = "auto", progress: Optional[Progress] = None,
                     polygons: Optional[Sequence[str]] = None) -> AblationResult:
    """The ablation over a dataset (as SAMRS did on HRSC2016): ``segment_dataset`` per prompt mode (or polygon
    variant) into ``<out_dir>/<mode>/``, evaluated against the folder ``reference`` of masks named after the
    images."""
    from .backends import make_backend
    from .dataset import segment_dataset
    from .evaluation import evaluate_dataset
    from .evaluation.pairing import folder_pairs

    progress = progress or Progress()
    backend = make_backend(_cached(options, options.prompt), progress)
    modes, variants = _variants(modes, polygons, backend, reference)
    if not os.path.isdir(reference):
        raise InputError(f"The reference '{reference}' must be a folder of reference masks named after the images.")

    def run_mode(mode, folder, segmenting, evaluating):
        summary = segment_dataset(images, annotations, folder, _cached(options, mode, variants), dataset=dataset,
                                  progress=segmenting, annotation_format=annotation_format, backend=backend)
        pairing = folder_pairs(os.path.join(folder, "geo"), reference, images)
        for stem in pairing.unpaired:
            progress.warning(f"'{stem}' is in only one of the produced and reference folders; left out")
        return (evaluate_dataset(pairing.pairs, **dataclasses.asdict(matching), progress=evaluating),
                summary.describe().splitlines()[0])

    try:
        return _compare_modes(modes, out_dir, progress, run_mode)
    finally:
        backend.close()

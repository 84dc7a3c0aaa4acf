"""Dataset statistics report: per subset (train, val, …), what the SAMRS paper tabulated for its subsets —
instances per class, pixels per class, the distribution of mask sizes — plus SAM's scores and the boxes'
statuses, as one self-contained HTML file and CSV files.

Inputs. A *result set* is one subset: a list of ``(polygon layer, class raster or None)`` pairs, the
outputs of ``segment`` / ``segmentdataset``, and optionally the class names (id -> name).
:func:`result_set_from_folder` finds the pairs in a dataset output folder (``manifest.json``,
``geo/<stem>.gpkg``, ``class_index/<stem>.png``). Polygon layers are streamed feature by feature (fiona,
attributes only); class rasters (our semantic GeoTIFFs, SAMRS class-index PNGs) are read block by block,
so neither is ever held whole in memory.

Definitions (all areas and counts in **pixels** of the segmented raster's grid):

* **boxes by status**: every feature of every layer, counted by its ``status`` field
  (``ok``, ``empty``, ``outside``, ``invalid``; other values are counted under their own name).
* **instance**: a feature with ``status`` = ``ok`` and ``area_px`` > 0. Instances per class, mask sizes and
  scores count instances only.
* **pixels per class**: for a layer paired with a class raster, the raster's pixels of each class id (the
  background value and the raster's nodata value are left out and counted as background); for a layer
  without one, the sum of its instances' ``area_px``. Overlapping masks share their pixels in a raster (the
  smaller mask owns them) but each counts its own in ``area_px``, so the two measures differ where masks
  overlap. :attr:`Statistics.pixel_source` says which measure a subset's numbers are.
* **mask size bins**: powers of two; bin *k* holds the masks with ``2**k <= area_px < 2**(k+1)`` pixels
  (bin 0 = 1 px, bin 1 = 2–3 px, bin 2 = 4–7 px, …). Exact for integer areas, no rounding.
* **score bins**: 20 bins of width 0.05 over [0, 1]; bin *i* holds ``i/20 <= score < (i+1)/20``, the last bin
  also holds 1.0. Scores below 0 or above 1 (SAM's predicted IoU is not bounded) are counted in the first
  or last bin and in :attr:`Statistics.scores_out_of_range`. Instances with a null score (GrabCut) are
  counted in :attr:`Statistics.no_score`.

Class ids: the given class names (a dataset's class list) fix the ids. Without them the layers'
``class_id``/``class_name`` fields (and a semantic GeoTIFF's ``SAMRS_CLASSES`` tag) give them; classes are
matched by name, and when the layers disagree on ids (separate runs over text class fields number their
classes on their own) the classes are renumbered by sorted name, with a note in :attr:`Statistics.notes`.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import os
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .errors import InputError, SamrsError
from .progress import Progress

__all__ = ["Statistics", "ResultSet", "ReportFiles", "collect_statistics", "result_set_from_folder",
           "statistics_from_folder", "write_report", "size_bin_edges", "score_bin_edges", "SCORE_BINS",
           "STATUSES", "CSV_FILES"]

STATUSES = ("ok", "empty", "outside", "invalid")
SCORE_BINS = 20
DEFAULT_BACKGROUND = 255
MASK_LAYER = "masks"
UNLABELLED = "unlabelled"
# Rows of a strip-organised raster (PNG: one row per block) are read this many pixels at a time.
CHUNK_PIXELS = 1 << 22
CSV_FILES = ("instances_per_class.csv", "pixels_per_class.csv", "mask_sizes.csv", "scores.csv", "status.csv",
             "summary.csv")
PIXEL_SOURCE_RASTER = "class rasters"
PIXEL_SOURCE_AREA = "area_px"
PIXEL_SOURCE_MIXED = "mixed"

PairLike = Union[str, os.PathLike, Tuple[Union[str, os.PathLike], Optional[Union[str, os.PathLike]]]]


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class Statistics:
    """The numbers of one subset. Counts are plain ints; areas in pixels.

    ``class_names``: class id -> name, every class that has instances or pixels or was listed.
    ``instances_per_class``: class id -> instances (features with status ``ok`` and ``area_px`` > 0).
    ``pixels_per_class``: class id -> pixels, measured as :attr:`pixel_source` says.
    ``pixel_source``: ``"class rasters"`` (every layer had a class raster), ``"area_px"`` (none had: sums of
    the instances' ``area_px``), ``"mixed"`` (rasters where given, ``area_px`` for the other layers).
    ``area_px_per_class``: class id -> sum of the instances' ``area_px`` (always, for comparison).
    ``background_pixels``: background (and nodata) pixels of the class rasters.
    ``size_histogram``: bin k -> instances with ``2**k <= area_px < 2**(k+1)``.
    ``size_histogram_per_class``: class id -> {bin k -> instances}.
    ``score_histogram``: 20 counts, bin i = instances with ``i/20 <= score < (i+1)/20`` (1.0 in the last).
    ``no_score``: instances with a null score. ``scores_out_of_range``: scores outside [0, 1] (clamped).
    ``status_counts``: status -> boxes (all features), always with ok/empty/outside/invalid.
    ``images``: images of the subset (from a manifest, else = ``layers``); ``layers``/``rasters``: polygon
    layers and class rasters read. ``image_status``: manifest image status -> images (empty without one).
    ``background``: the background value used (None when every raster's own tag/nodata was used).
    ``source``: where the subset came from (a folder, or "N polygon layers"). ``notes``: remarks for the reader.
    """

    class_names: Dict[int, str] = field(default_factory=dict)
    instances_per_class: Dict[int, int] = field(default_factory=dict)
    pixels_per_class: Dict[int, int] = field(default_factory=dict)
    pixel_source: str = PIXEL_SOURCE_AREA
    area_px_per_class: Dict[int, int] = field(default_factory=dict)
    background_pixels: int = 0
    size_histogram: Dict[int, int] = field(default_factory=dict)
    size_histogram_per_class: Dict[int, Dict[int, int]] = field(default_factory=dict)
    score_histogram: List[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    no_score: int = 0
    scores_out_of_range: int = 0
    status_counts: Dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    images: int = 0
    layers: int = 0
    rasters: int = 0
    image_status: Dict[str, int] = field(default_factory=dict)
    background: Optional[int] = None
    source: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        """All features read (every status)."""
        return sum(self.status_counts.values())

    @property
    def instances(self) -> int:
        return sum(self.instances_per_class.values())

    @property
    def class_pixels(self) -> int:
        return sum(self.pixels_per_class.values())


@dataclass
class ResultSet:
    """One subset's inputs: ``pairs`` of (polygon layer path, class raster path or None), class names
    (id -> name, None to take them from the layers), the background value (None: each raster's own), the
    manifest's image statuses and the folder it was found in."""

    pairs: List[Tuple[str, Optional[str]]]
    class_names: Optional[Dict[int, str]] = None
    background: Optional[int] = None
    image_status: Dict[str, int] = field(default_factory=dict)
    folder: Optional[str] = None

    def __iter__(self):  # ``pairs, class_names = result_set_from_folder(folder)``
        return iter((self.pairs, self.class_names))


@dataclass
class ReportFiles:
    """Paths written by :func:`write_report`: the HTML file and CSV name -> path (empty without a folder)."""

    html: str
    csv: Dict[str, str] = field(default_factory=dict)


def size_bin_edges(k: int) -> Tuple[int, int]:
    """Mask size bin ``k`` as ``(low, high)`` pixels: it holds ``low <= area_px < high``."""
    return 1 << k, 1 << (k + 1)


def score_bin_edges(i: int) -> Tuple[float, float]:
    """Score bin ``i`` as ``(low, high)``: it holds ``low <= score < high`` (the last bin also 1.0)."""
    return i / SCORE_BINS, (i + 1) / SCORE_BINS


def size_bin(area_px: int) -> int:
    """The mask size bin of an area of ``area_px`` ≥ 1 pixels: ``floor(log2(area_px))``, exactly."""
    return int(area_px).bit_length() - 1


# -- finding inputs -----------------------------------------------------------------------------------
def result_set_from_folder(folder) -> ResultSet:
    """The result set of a dataset output folder written by ``segmentdataset``.

    With ``manifest.json``: its ``classes`` (index = class id) and ``background``; every image whose status
    is ``done`` must have ``geo/<stem>.gpkg`` (else :class:`InputError`); images of other statuses are used
    when their layer exists. ``class_index/<stem>.png`` is paired when it exists. Without a manifest: every
    ``geo/*.gpkg`` (or ``*.gpkg`` in the folder itself), class names from the layers. Unpacks as
    ``pairs, class_names``.
    """
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise InputError(f"The dataset folder '{folder}' does not exist or is not a folder. "
                         "Give the output folder of 'segmentdataset'.")
    geo = os.path.join(folder, "geo")
    class_index = os.path.join(folder, "class_index")

    def png_of(stem: str) -> Optional[str]:
        path = os.path.join(class_index, f"{stem}.png")
        return path if os.path.isfile(path) else None

    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as fh:
                manifest = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"The manifest '{manifest_path}' cannot be read ({exc}). Re-run 'segmentdataset' "
                             "into this folder, or delete the manifest to read the layers without it.") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("images", {}), dict):
            raise InputError(f"The manifest '{manifest_path}' is not a segmentdataset manifest (an object with "
                             "'classes' and 'images'). Re-run 'segmentdataset', or delete the manifest.")
        classes = manifest.get("classes")
        class_names = {i: str(n) for i, n in enumerate(classes)} if isinstance(classes, list) and classes else None
        background = manifest.get("background", DEFAULT_BACKGROUND)
        if not isinstance(background, int) or isinstance(background, bool) or background < 0:
            raise InputError(f"The manifest '{manifest_path}' has the background value {background!r}; it must be "
                             "an integer ≥ 0. Fix the manifest or re-run 'segmentdataset'.")
        pairs, statuses = [], Counter()
        for stem, entry in sorted(manifest.get("images", {}).items()):
            status = str(entry.get("status", "unknown")) if isinstance(entry, dict) else "unknown"
            statuses[status] += 1
            layer = os.path.join(geo, f"{stem}.gpkg")
            if os.path.isfile(layer):
                pairs.append((layer, png_of(stem)))
            elif status == "done":
                raise InputError(f"The manifest '{manifest_path}' lists image '{stem}' as done but its polygon "
                                 f"layer '{layer}' is missing. Re-run 'segmentdataset' for that image, or copy "
                                 "the whole output folder again.")
        return ResultSet(pairs, class_names, background, dict(statuses), folder)
    layer_dir = geo if os.path.isdir(geo) else folder
    stems = sorted(os.path.splitext(n)[0] for n in os.listdir(layer_dir) if n.lower().endswith(".gpkg"))
    if not stems:
        raise InputError(f"The folder '{folder}' has no manifest.json and no polygon layers (geo/*.gpkg or *.gpkg). "
                         "Give the output folder of 'segmentdataset'.")
    pairs = [(os.path.join(layer_dir, f"{s}.gpkg"), png_of(s)) for s in stems]
    return ResultSet(pairs, None, None, {}, folder)


# -- reading ------------------------------------------------------------------------------------------
def _pick_layer(path: str) -> str:
    import fiona

    if not os.path.exists(path):
        raise InputError(f"The polygon layer '{path}' does not exist. Check the path, or segment that image first.")
    try:
        layers = fiona.listlayers(path)
    except Exception as exc:  # fiona/GDAL raise several types for unreadable files
        raise InputError(f"The polygon layer '{path}' cannot be opened ({exc}). Give a vector file written by "
                         "SAMRS segmentation (.gpkg, .shp, .geojson, …).") from exc
    if MASK_LAYER in layers:
        return MASK_LAYER
    if len(layers) == 1:
        return layers[0]
    raise InputError(f"The file '{path}' holds several layers ({', '.join(layers)}) and none is called "
                     f"'{MASK_LAYER}'. Give a file with the polygon layer of a SAMRS run alone.")


def _plain_name(value) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value) -> Optional[int]:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(number)) if math.isfinite(number) else None


class _Builder:
    """Counts keyed by class *name* while reading; ids are settled at the end (see :meth:`finish`)."""

    def __init__(self, explicit: Optional[Dict[int, str]]):
        self.explicit = dict(explicit or {})
        self.ids_of: Dict[str, Set[int]] = {}
        self.instances: Counter = Counter()
        self.area_sum: Counter = Counter()
        self.pixels: Counter = Counter()
        self.sizes: Dict[str, Counter] = {}
        self.scores = [0] * SCORE_BINS
        self.no_score = 0
        self.out_of_range = 0
        self.status: Counter = Counter({s: 0 for s in STATUSES})
        self.background_pixels = 0
        self.layers = 0
        self.rasters = 0
        self.layers_with_raster = 0
        self.ok_without_area = 0

    def see(self, name: str, class_id: Optional[int]) -> None:
        ids = self.ids_of.setdefault(name, set())
        if class_id is not None:
            ids.add(class_id)

    def name_of(self, class_id: Optional[int], class_name: Optional[str]) -> str:
        if class_id is not None and class_id in self.explicit:
            return self.explicit[class_id]
        if class_name:
            return class_name
        if class_id is not None:
            return f"class {class_id}"
        return UNLABELLED

    def read_layer(self, path: str, progress: Progress) -> Tuple[Dict[int, str], Counter]:
        """Stream one layer; returns its own class id -> name and its instances' area_px sums by name."""
        import fiona

        layer = _pick_layer(path)
        local_names: Dict[int, str] = {}
        area_sum: Counter = Counter()
        try:
            with fiona.open(path, layer=layer, ignore_geometry=True) as src:
                fields = list(src.schema["properties"])
                missing = [f for f in ("area_px", "status") if f not in fields]
                if "class_name" not in fields and "class_id" not in fields:
                    missing.insert(0, "class_name/class_id")
                if missing:
                    raise InputError(f"The polygon layer '{path}' (layer '{layer}') has no field "
                                     f"{', '.join(missing)}: it is not a polygon layer written by SAMRS segmentation. "
                                     "Give the polygon output of 'segment' or 'segmentdataset'.")
                wanted = {"class_name", "class_id", "score", "area_px", "status"}
                for n, feature in enumerate(src):
                    if n % 4096 == 0:
                        progress.check_cancelled()
                    props = getattr(feature, "properties", None)
                    if props is None:
                        props = feature["properties"]
                    self._feature({k: props.get(k) for k in wanted if k in fields}, local_names, area_sum)
        except SamrsError:  # InputError, Cancelled: as they are
            raise
        except Exception as exc:
            raise InputError(f"The polygon layer '{path}' (layer '{layer}') cannot be read ({exc}). Give an intact "
                             "polygon output of SAMRS segmentation.") from exc
        self.layers += 1
        return local_names, area_sum

    def _feature(self, props: Dict, local_names: Dict[int, str], area_sum: Counter) -> None:
        status = _plain_name(props.get("status"))
        status = status.lower() if status else "(no status)"
        self.status[status] += 1
        class_id = _int_or_none(props.get("class_id"))
        name = self.name_of(class_id, _plain_name(props.get("class_name")))
        if class_id is not None:
            local_names.setdefault(class_id, name)
        if status != "ok":
            return
        area = _int_or_none(props.get("area_px"))
        if area is None or area <= 0:
            self.ok_without_area += 1
            return
        self.see(name, class_id)
        self.instances[name] += 1
        area_sum[name] += area
        self.area_sum[name] += area
        self.sizes.setdefault(name, Counter())[size_bin(area)] += 1
        score = props.get("score")
        try:
            score = float(score) if score is not None else None
        except (TypeError, ValueError):
            score = None
        if score is None or not math.isfinite(score):
            self.no_score += 1
            return
        if score < 0 or score > 1:
            self.out_of_range += 1
        self.scores[min(max(int(math.floor(score * SCORE_BINS)), 0), SCORE_BINS - 1)] += 1

    def read_raster(self, path: str, layer_names: Dict[int, str], background: Optional[int],
                    progress: Progress) -> None:
        """Count one class raster's pixels per class id, block by block."""
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.windows import Window

        if not os.path.isfile(path):
            raise InputError(f"The class raster '{path}' does not exist. Check the path, or leave the raster out "
                             "to count pixels from the layer's area_px.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # class-index PNGs have no georeference
                ds = rasterio.open(path)
            with ds:
                dtype = np.dtype(ds.dtypes[0])
                if ds.count != 1 or dtype.kind not in "ui":
                    raise InputError(f"The class raster '{path}' has {ds.count} band(s) of type {dtype.name}; a class "
                                     "raster has one integer band of class ids. Give the semantic GeoTIFF or "
                                     "class-index PNG of a SAMRS run.")
                tags = ds.tags()
                bg = background
                if bg is None:
                    bg = _int_or_none(tags.get("SAMRS_BACKGROUND"))
                if bg is None:
                    bg = _int_or_none(ds.nodata)
                if bg is None:
                    bg = DEFAULT_BACKGROUND
                nodata = _int_or_none(ds.nodata)
                tag_names = {}
                if tags.get("SAMRS_CLASSES"):
                    try:
                        tag_names = {int(k): str(v) for k, v in json.loads(tags["SAMRS_CLASSES"]).items()}
                    except (ValueError, TypeError, AttributeError):
                        tag_names = {}
                counts: Counter = Counter()
                block_h, block_w = ds.block_shapes[0]
                if block_w >= ds.width:  # strips (PNG: one row per block): read several at a time
                    rows = max(block_h, (CHUNK_PIXELS // max(ds.width, 1)) // block_h * block_h)
                    windows = (Window(0, r, ds.width, min(rows, ds.height - r)) for r in range(0, ds.height, rows))
                else:
                    windows = (w for _, w in ds.block_windows(1))
                for window in windows:
                    progress.check_cancelled()
                    block = ds.read(1, window=window)
                    if dtype.itemsize <= 2 and dtype.kind == "u":
                        hist = np.bincount(block.ravel())
                        values = np.nonzero(hist)[0]
                        for v in values:
                            counts[int(v)] += int(hist[v])
                    else:
                        values, hist = np.unique(block, return_counts=True)
                        for v, c in zip(values, hist):
                            counts[int(v)] += int(c)
        except SamrsError:  # InputError, Cancelled: as they are
            raise
        except Exception as exc:
            raise InputError(f"The class raster '{path}' cannot be read ({exc}). Give the semantic GeoTIFF or "
                             "class-index PNG of a SAMRS run, or leave it out to count pixels from area_px.") from exc
        for value, count in counts.items():
            if value == bg or (nodata is not None and value == nodata):
                self.background_pixels += count
                continue
            if value in self.explicit:
                name = self.explicit[value]
            elif value in tag_names:
                name = tag_names[value]
            else:
                name = layer_names.get(value) or f"class {value}"
            self.see(name, value)
            self.pixels[name] += count
        self.rasters += 1

    def finish(self) -> Tuple[Dict[str, int], List[str]]:
        """Class name -> id: the given names' ids, else the ids the inputs agree on, else by sorted name."""
        notes = []
        ids: Dict[str, int] = {}
        for class_id, name in sorted(self.explicit.items()):
            ids.setdefault(name, class_id)
            self.ids_of.setdefault(name, set())
        rest = sorted(n for n in self.ids_of if n not in ids)
        taken = set(ids.values())
        with_ids = [n for n in rest if self.ids_of[n]]
        proposed = {n: next(iter(self.ids_of[n])) for n in with_ids if len(self.ids_of[n]) == 1}
        agree = (len(proposed) == len(with_ids) and len(set(proposed.values())) == len(proposed)
                 and not taken & set(proposed.values()))
        if agree:
            ids.update(proposed)
        elif with_ids:
            clash = [n for n in with_ids if len(self.ids_of[n]) > 1] or with_ids
            notes.append("The inputs give different class ids to the same classes (e.g. "
                         + ", ".join(f"{n}: {sorted(self.ids_of[n])}" for n in clash[:3])
                         + "); classes were matched by name and renumbered by sorted name.")
        free = (i for i in range(10 ** 9) if i not in set(ids.values()))
        for name in rest:
            if name not in ids:
                ids[name] = next(free)
        return ids, notes


def _normalise_pairs(pairs: Iterable[PairLike]) -> List[Tuple[str, Optional[str]]]:
    out = []
    for pair in pairs:
        if isinstance(pair, (str, os.PathLike)):
            out.append((os.fspath(pair), None))
            continue
        layer, raster = pair
        out.append((os.fspath(layer), os.fspath(raster) if raster else None))
    return out


def collect_statistics(pairs: Union[ResultSet, Iterable[PairLike]], class_names: Optional[Mapping[int, str]] = None,
                       progress: Optional[Progress] = None, background: Optional[int] = None,
                       image_status: Optional[Mapping[str, int]] = None, source: Optional[str] = None) -> Statistics:
    """The statistics of one subset.

    ``pairs``: ``(polygon layer, class raster or None)`` pairs (a bare path = no raster), or a
    :class:`ResultSet` (its class names, background and image statuses are then used unless given here).
    ``class_names``: class id -> name fixing ids and names (e.g. a dataset's class list); without it they
    come from the inputs. ``background``: the class rasters' background value; None = each raster's
    ``SAMRS_BACKGROUND`` tag, else its nodata value, else 255. ``progress``: fraction per input, cancellation.
    Raises :class:`InputError` naming the input for a missing or foreign layer or an unreadable raster.
    """
    progress = progress or Progress()
    if isinstance(pairs, ResultSet):
        result_set = pairs
        class_names = class_names if class_names is not None else result_set.class_names
        background = background if background is not None else result_set.background
        image_status = image_status if image_status is not None else result_set.image_status
        source = source or result_set.folder
        pairs = result_set.pairs
    pairs = _normalise_pairs(pairs)
    if not pairs:
        raise InputError("The result set has no polygon layers. Give at least one polygon layer of a SAMRS run.")
    builder = _Builder({int(k): str(v) for k, v in (class_names or {}).items()})
    pixel_by_area: Counter = Counter()
    for n, (layer, raster) in enumerate(pairs):
        progress.check_cancelled()
        local_names, area_sum = builder.read_layer(layer, progress)
        if raster:
            builder.read_raster(raster, local_names, background, progress)
            builder.layers_with_raster += 1
        else:
            pixel_by_area.update(area_sum)
        progress.set_fraction((n + 1) / len(pairs))
    builder.pixels.update(pixel_by_area)
    for name in pixel_by_area:
        builder.see(name, None)
    ids, notes = builder.finish()
    if builder.layers_with_raster == len(pairs):
        pixel_source = PIXEL_SOURCE_RASTER
    elif builder.layers_with_raster == 0:
        pixel_source = PIXEL_SOURCE_AREA
    else:
        pixel_source = PIXEL_SOURCE_MIXED
        notes.append(f"{builder.layers_with_raster} of {len(pairs)} layers had a class raster; pixels per class "
                     "add the rasters' pixels and, for the other layers, the masks' area_px.")
    if builder.ok_without_area:
        notes.append(f"{builder.ok_without_area} box(es) with status ok had no area_px > 0 and are not counted "
                     "as instances.")
    unusual = sorted(s for s in builder.status if s not in STATUSES)
    if unusual:
        notes.append(f"Statuses other than {', '.join(STATUSES)} were found: {', '.join(unusual)}.")
    if builder.out_of_range:
        notes.append(f"{builder.out_of_range} score(s) lay outside [0, 1] and were counted in the end bins.")
    names = {class_id: name for name, class_id in ids.items()}
    order = sorted(names)
    stats = Statistics(
        class_names={i: names[i] for i in order},
        instances_per_class={i: builder.instances[names[i]] for i in order},
        pixels_per_class={i: builder.pixels[names[i]] for i in order},
        pixel_source=pixel_source,
        area_px_per_class={i: builder.area_sum[names[i]] for i in order},
        background_pixels=builder.background_pixels,
        size_histogram=dict(sorted(sum(builder.sizes.values(), Counter()).items())),
        size_histogram_per_class={i: dict(sorted(builder.sizes[names[i]].items()))
                                  for i in order if names[i] in builder.sizes},
        score_histogram=list(builder.scores),
        no_score=builder.no_score,
        scores_out_of_range=builder.out_of_range,
        status_counts=dict(builder.status),
        images=sum(image_status.values()) if image_status else builder.layers,
        layers=builder.layers,
        rasters=builder.rasters,
        image_status=dict(image_status or {}),
        background=background,
        source=source or f"{len(pairs)} polygon layer(s)",
        notes=notes,
    )
    for note in notes:
        progress.warning(note)
    return stats


def statistics_from_folder(folder, progress: Optional[Progress] = None) -> Statistics:
    """:func:`collect_statistics` of :func:`result_set_from_folder` (``folder``)."""
    return collect_statistics(result_set_from_folder(folder), progress=progress)


# -- tables (shared by the CSV files and the HTML) ----------------------------------------------------
def _class_rows(subsets: Mapping[str, Statistics]) -> List[Tuple[int, str]]:
    """(class id, name) over all subsets, by id then name (subsets numbered apart stay apart)."""
    rows = {(i, n) for s in subsets.values() for i, n in s.class_names.items()}
    return sorted(rows)


def _size_bins(subsets: Mapping[str, Statistics]) -> List[int]:
    top = max((k for s in subsets.values() for k in s.size_histogram), default=-1)
    return list(range(top + 1))


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}" if whole else ""


def _csv_tables(subsets: Mapping[str, Statistics]) -> Dict[str, Tuple[List[str], List[List]]]:
    tables: Dict[str, Tuple[List[str], List[List]]] = {}
    rows = []
    for name, s in subsets.items():
        for i, cname in s.class_names.items():
            rows.append([name, i, cname, s.instances_per_class.get(i, 0), _pct(s.instances_per_class.get(i, 0),
                                                                                s.instances)])
    tables["instances_per_class.csv"] = (["subset", "class_id", "class_name", "instances", "percent"], rows)
    rows = []
    for name, s in subsets.items():
        for i, cname in s.class_names.items():
            rows.append([name, i, cname, s.pixels_per_class.get(i, 0), _pct(s.pixels_per_class.get(i, 0),
                                                                             s.class_pixels),
                         s.pixel_source, s.area_px_per_class.get(i, 0)])
    tables["pixels_per_class.csv"] = (["subset", "class_id", "class_name", "pixels", "percent", "pixel_source",
                                       "area_px_sum"], rows)
    rows = []
    bins = _size_bins(subsets)
    for name, s in subsets.items():
        groups = [("", "all", s.size_histogram)] + [(i, s.class_names[i], s.size_histogram_per_class.get(i, {}))
                                                    for i in s.class_names]
        for class_id, cname, hist in groups:
            if class_id != "" and not hist:
                continue
            for k in bins:
                low, high = size_bin_edges(k)
                rows.append([name, class_id, cname, k, low, high, hist.get(k, 0)])
    tables["mask_sizes.csv"] = (["subset", "class_id", "class_name", "bin", "area_px_min", "area_px_below", "instances"],
                                rows)
    rows = []
    for name, s in subsets.items():
        for i, count in enumerate(s.score_histogram):
            low, high = score_bin_edges(i)
            rows.append([name, i, f"{low:.2f}", f"{high:.2f}", count])
        rows.append([name, "no_score", "", "", s.no_score])
    tables["scores.csv"] = (["subset", "bin", "score_min", "score_below", "instances"], rows)
    rows = []
    for name, s in subsets.items():
        for status, count in s.status_counts.items():
            rows.append([name, status, count])
    tables["status.csv"] = (["subset", "status", "boxes"], rows)
    rows = []
    for name, s in subsets.items():
        rows.append([name, s.images, s.layers, s.rasters, s.boxes, s.instances, s.class_pixels, s.background_pixels,
                     s.pixel_source, s.no_score, s.scores_out_of_range, s.source])
    tables["summary.csv"] = (["subset", "images", "layers", "rasters", "boxes", "instances", "class_pixels",
                              "background_pixels", "pixel_source", "no_score", "scores_out_of_range", "source"], rows)
    return tables


# -- plots --------------------------------------------------------------------------------------------
def _label(text: str) -> str:
    """Text for matplotlib, where '$' would start mathematics."""
    return str(text).replace("$", r"\$")


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float = 4.0):
    # Figure + FigureCanvasAgg: the Agg renderer without pyplot, so no global backend is switched (safe
    # inside QGIS, whose own matplotlib users keep theirs).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(max(width, 6.0), 30.0), height))
    return fig, fig.add_subplot(1, 1, 1)


def _grouped_bars(subsets: Mapping[str, Statistics], classes: List[Tuple[int, str]], values, ylabel: str,
                  title: str, log: bool) -> str:
    fig, ax = _figure(1.5 + 0.25 * len(classes) * max(1, len(subsets)))
    width = 0.8 / max(len(subsets), 1)
    x = np.arange(len(classes))
    any_positive = False
    for n, (name, s) in enumerate(subsets.items()):
        heights = [values(s).get(i, 0) if s.class_names.get(i) == cname else 0 for i, cname in classes]
        any_positive |= any(h > 0 for h in heights)
        ax.bar(x - 0.4 + width * (n + 0.5), heights, width, label=_label(name))
    ax.set_xticks(x)
    ax.set_xticklabels([_label(c) for _, c in classes], rotation=60, ha="right")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    if log and any_positive:
        ax.set_yscale("log", nonpositive="clip")
    ax.set_ylabel(ylabel)
    ax.set_title(_label(title))
    if len(subsets) > 1:
        ax.legend()
    return _png(fig)


def _size_label(k: int) -> str:
    value = 1 << k
    for unit, size in (("M", 1 << 20), ("k", 1 << 10)):
        if value >= size:
            return f"{value // size}{unit}"
    return str(value)


def _size_plot(series: Dict[str, Dict[int, int]], bins: List[int], title: str) -> str:
    fig, ax = _figure(1.5 + 0.45 * max(len(bins), 8))
    for label, hist in series.items():
        total = sum(hist.values())
        if not total:
            continue
        ax.plot(bins, [100.0 * hist.get(k, 0) / total for k in bins], marker="o", label=_label(label))
    ax.set_xticks(bins)
    ax.set_xticklabels([_size_label(k) for k in bins], rotation=45)
    ax.set_xlabel("mask area, pixels (bin from this value to twice it)")
    ax.set_ylabel("% of instances")
    ax.set_title(_label(title))
    if series:
        ax.legend(fontsize="small")
    return _png(fig)


def _score_plot(subsets: Mapping[str, Statistics]) -> str:
    fig, ax = _figure(9)
    width = (1.0 / SCORE_BINS) * 0.9 / max(len(subsets), 1)
    for n, (name, s) in enumerate(subsets.items()):
        total = sum(s.score_histogram)
        if not total:
            continue
        margin = 0.05 / SCORE_BINS
        lefts = np.arange(SCORE_BINS) / SCORE_BINS + margin + width * n
        ax.bar(lefts, [100.0 * c / total for c in s.score_histogram], width, align="edge", label=_label(name))
    ax.set_xlim(0, 1)
    ax.set_xticks(np.linspace(0, 1, 11))
    ax.set_xlabel("score (SAM's predicted IoU), bins of 0.05")
    ax.set_ylabel("% of instances with a score")
    ax.set_title("Score distribution")
    ax.legend()
    return _png(fig)


# -- HTML ---------------------------------------------------------------------------------------------
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eee; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
.note { color: #555; font-size: 0.92em; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence, rows: Iterable[Sequence]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
            cells.append(f'<td class="n">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(data: str, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _html(subsets: Mapping[str, Statistics], title: str) -> str:
    names = list(subsets)
    classes = _class_rows(subsets)
    bins = _size_bins(subsets)
    generated = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    from . import __version__

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{_esc(title)}</title>",
             f"<style>{STYLE}</style>\n</head>\n<body>", f"<h1>{_esc(title)}</h1>"]

    parts.append("<h2>Generation</h2>")
    params = [["generated", generated], ["by", f"samrs_qgis.report {__version__}"], ["subsets", ", ".join(names)]]
    for name, s in subsets.items():
        background = s.background if s.background is not None else "each raster's SAMRS_BACKGROUND tag or nodata (else 255)"
        params.append([f"{name}: source", s.source])
        params.append([f"{name}: pixels per class from", s.pixel_source])
        params.append([f"{name}: background value", background])
    params += [["instance", "feature with status ok and area_px > 0"],
               ["mask size bins", "powers of two: bin k holds 2^k ≤ area_px < 2^(k+1) pixels"],
               ["score bins", f"{SCORE_BINS} bins of width {1 / SCORE_BINS:g} over [0, 1]; 1.0 in the last; "
                              "null scores (GrabCut) counted as no score"]]
    parts.append(_table(["parameter", "value"], params))

    parts.append("<h2>Summary</h2>")
    parts.append(_table(["subset", "images", "polygon layers", "class rasters", "boxes", "instances",
                         "classes with instances", "class pixels", "background pixels", "pixels from"],
                        [[n, s.images, s.layers, s.rasters, s.boxes, s.instances,
                          sum(1 for v in s.instances_per_class.values() if v), s.class_pixels, s.background_pixels,
                          s.pixel_source] for n, s in subsets.items()]))
    image_statuses = sorted({k for s in subsets.values() for k in s.image_status})
    if image_statuses:
        parts.append("<p>Images by manifest status:</p>")
        parts.append(_table(["subset"] + image_statuses,
                            [[n] + [s.image_status.get(k, 0) for k in image_statuses] for n, s in subsets.items()]))

    parts.append("<h2>Boxes by status</h2>")
    statuses = list(STATUSES) + sorted({k for s in subsets.values() for k in s.status_counts} - set(STATUSES))
    parts.append(_table(["subset"] + statuses + ["all"],
                        [[n] + [s.status_counts.get(k, 0) for k in statuses] + [s.boxes] for n, s in subsets.items()]))
    parts.append('<p class="note">ok: a mask was found; empty: no object pixel; outside: the box does not overlap '
                 "the raster; invalid: no usable box geometry.</p>")

    def per_class(values, total) -> List[List]:
        rows = []
        for i, cname in classes:
            row = [i, cname]
            for s in subsets.values():
                v = values(s).get(i, 0) if s.class_names.get(i) == cname else 0
                row += [v, _pct(v, total(s))]
            rows.append(row)
        return rows

    pair_header = [h for n in names for h in (n, f"{n} %")]
    parts.append("<h2>Instances per class</h2>")
    if classes:
        parts.append(_img(_grouped_bars(subsets, classes, lambda s: s.instances_per_class, "instances",
                                        "Instances per class", log=False), "instances per class"))
    parts.append(_table(["class id", "class"] + pair_header,
                        per_class(lambda s: s.instances_per_class, lambda s: s.instances)))

    parts.append("<h2>Pixels per class</h2>")
    sources = "; ".join(f"{_esc(n)}: {_esc(s.pixel_source)}" for n, s in subsets.items())
    parts.append(f'<p class="note">Pixels from: {sources}. "class rasters": pixels of each class id in the class '
                 "rasters (overlaps counted once); \"area_px\": sum of the masks' area_px (overlaps counted in each "
                 "mask); \"mixed\": rasters where given, area_px for the other layers.</p>")
    if classes:
        parts.append(_img(_grouped_bars(subsets, classes, lambda s: s.pixels_per_class, "pixels (log scale)",
                                        "Pixels per class", log=True), "pixels per class"))
    parts.append(_table(["class id", "class"] + pair_header,
                        per_class(lambda s: s.pixels_per_class, lambda s: s.class_pixels)))

    parts.append("<h2>Mask sizes</h2>")
    parts.append('<p class="note">Instances by mask area in pixels, binned by powers of two: the bin of value v '
                 "holds areas from v to 2v − 1 pixels.</p>")
    if bins:
        parts.append(_img(_size_plot({n: s.size_histogram for n, s in subsets.items()}, bins,
                                     "Mask size distribution"), "mask size distribution"))
        parts.append(_table(["area_px from", "below"] + names,
                            [[size_bin_edges(k)[0], size_bin_edges(k)[1]] + [s.size_histogram.get(k, 0)
                                                                             for s in subsets.values()]
                             for k in bins]))
        top = 10
        for n, s in subsets.items():
            ranked = sorted(s.size_histogram_per_class, key=lambda i: -s.instances_per_class.get(i, 0))
            if not ranked:
                continue
            shown = ranked[:top]
            caption = f"Mask sizes per class, {n}" + (f" ({top} classes with most instances)" if len(ranked) > top else "")
            parts.append(f"<h3>{_esc(caption)}</h3>")
            parts.append(_img(_size_plot({s.class_names[i]: s.size_histogram_per_class[i] for i in shown}, bins,
                                         caption), caption))
            parts.append(f"<details><summary>Table: instances per class and size bin, {_esc(n)}</summary>")
            parts.append(_table(["class id", "class"] + [f"{_size_label(k)}" for k in bins],
                                [[i, s.class_names[i]] + [s.size_histogram_per_class[i].get(k, 0) for k in bins]
                                 for i in sorted(s.size_histogram_per_class)]))
            parts.append("</details>")
    else:
        parts.append("<p>No instances.</p>")

    parts.append("<h2>Scores</h2>")
    if any(sum(s.score_histogram) for s in subsets.values()):
        parts.append(_img(_score_plot(subsets), "score histogram"))
    rows = []
    for i in range(SCORE_BINS):
        low, high = score_bin_edges(i)
        rows.append([f"{low:.2f}", f"{high:.2f}" + (" (incl.)" if i == SCORE_BINS - 1 else "")]
                    + [s.score_histogram[i] for s in subsets.values()])
    rows.append(["no score", ""] + [s.no_score for s in subsets.values()])
    parts.append(_table(["score from", "below"] + names, rows))

    notes = [(n, note) for n, s in subsets.items() for note in s.notes]
    if notes:
        parts.append("<h2>Notes</h2>\n<ul>")
        parts += [f"<li>{_esc(n)}: {_esc(note)}</li>" for n, note in notes]
        parts.append("</ul>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


# -- writing ------------------------------------------------------------------------------------------
def _write_temp_beside(path: str, text: str) -> str:
    """Write ``text`` to a new temporary file in ``path``'s folder (created with the umask's mode, unlike
    ``mkstemp``'s 0600); returns its path."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(temp, "x", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        if os.path.exists(temp):
            os.remove(temp)
        raise InputError(f"The report output '{path}' cannot be written ({exc.strerror}). Choose a writable "
                         "folder.") from exc
    return temp


def write_report(subsets: Mapping[str, Statistics], html_path, csv_folder=None,
                 title: str = "SAMRS dataset statistics") -> ReportFiles:
    """Write the report of ``subsets`` (subset name -> :class:`Statistics`, shown in this order).

    ``html_path``: one self-contained HTML file (plots as embedded PNGs; text escaped): generation
    parameters, a summary, boxes by status, instances per class, pixels per class (log scale), mask size
    distribution (overall and per class), score histogram, each plot with its table of numbers.

    ``csv_folder`` (optional): CSV files (UTF-8, header row, one row per subset and item):

    * ``instances_per_class.csv``: subset, class_id, class_name, instances, percent (of the subset's instances)
    * ``pixels_per_class.csv``: subset, class_id, class_name, pixels, percent (of the subset's class pixels),
      pixel_source (``class rasters``/``area_px``/``mixed``), area_px_sum (sum of the instances' area_px)
    * ``mask_sizes.csv``: subset, class_id (empty for all classes), class_name (``all`` for all classes), bin k,
      area_px_min = 2^k, area_px_below = 2^(k+1), instances with area_px_min ≤ area_px < area_px_below;
      every bin up to the largest of all subsets, for all classes and for each class with instances
    * ``scores.csv``: subset, bin (0–19, or ``no_score``), score_min, score_below (last bin includes 1.0),
      instances
    * ``status.csv``: subset, status, boxes
    * ``summary.csv``: subset, images, layers, rasters, boxes, instances, class_pixels, background_pixels,
      pixel_source, no_score, scores_out_of_range, source

    Every file is written under a temporary name in its folder and moved into place (``os.replace``)
    only once all files are written.
    """
    if not subsets:
        raise InputError("The report has no subsets. Give at least one subset's statistics.")
    html_path = os.path.abspath(os.fspath(html_path))
    if os.path.isdir(html_path):
        raise InputError(f"The report output '{html_path}' is a folder; give an HTML file name.")
    contents: List[Tuple[str, str]] = [(html_path, _html(subsets, title))]
    csv_paths: Dict[str, str] = {}
    if csv_folder is not None:
        csv_folder = os.path.abspath(os.fspath(csv_folder))
        if os.path.exists(csv_folder) and not os.path.isdir(csv_folder):
            raise InputError(f"The CSV folder '{csv_folder}' is a file. Give a folder.")
        for name, (header, rows) in _csv_tables(subsets).items():
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            path = os.path.join(csv_folder, name)
            csv_paths[name] = path
            contents.append((path, buffer.getvalue()))
    staged: List[Tuple[str, str]] = []
    try:
        for path, text in contents:
            staged.append((_write_temp_beside(path, text), path))
        for temp, path in staged:
            os.replace(temp, path)
    except BaseException:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.remove(temp)
        raise
    return ReportFiles(html=html_path, csv=csv_paths)

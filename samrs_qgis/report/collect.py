"""Collecting a subset's :class:`Statistics`: its polygon layers streamed feature by feature (fiona,
attributes only) and its class rasters read block by block, so neither is ever held whole in memory."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

import numpy as np

from ..errors import InputError, SamrsError
from ..progress import Progress
from ..samrs_format import MASK_LAYER
from .result_set import DEFAULT_BACKGROUND, PairLike, ResultSet, result_set_from_folder
from .statistics import (PIXEL_SOURCE_AREA, PIXEL_SOURCE_MIXED, PIXEL_SOURCE_RASTER, SCORE_BINS, STATUSES, Statistics,
                         size_bin)

UNLABELLED = "unlabelled"
# Rows of a strip-organised raster (PNG: one row per block) are read this many pixels at a time.
CHUNK_PIXELS = 1 << 22


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
        from rasterio.windows import Window

        from ..georef import open_raster

        if not os.path.isfile(path):
            raise InputError(f"The class raster '{path}' does not exist. Check the path, or leave the raster out "
                             "to count pixels from the layer's area_px.")
        try:
            ds = open_raster(path)  # class-index PNGs have no georeference
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

"""The subsets a report compares: named from dataset folders and polygon layers, and their statistics.

A subset comes from an output folder of ``segment-dataset`` (``manifest.json``, ``geo/`` or ``*.gpkg``), from each
subfolder of a folder that holds several (``train/``, ``val/``, …, named after them), or from one polygon layer
written by ``segment`` (named after the file). Names are made unique by ``#2``, ``#3``, ….
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..annotations import DATASET_CLASSES
from ..classes import parse_class_list
from ..errors import InputError
from ..path_safety import check_output_paths
from ..progress import Progress, ProgressSlice
from .collect import collect_statistics
from .result_set import result_set_from_folder
from .statistics import Statistics


def _is_dataset_folder(folder: str) -> bool:
    if os.path.isfile(os.path.join(folder, "manifest.json")) or os.path.isdir(os.path.join(folder, "geo")):
        return True
    return any(n.lower().endswith(".gpkg") for n in os.listdir(folder))


def dataset_subsets(folder: str) -> List[Tuple[str, str]]:
    """The subsets of a folder as ``(name, folder)``: the folder itself when it is a dataset output folder,
    else each of its subfolders that is one, by name. An InputError when there is neither."""
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


def report_class_names(dataset: Optional[str] = None, classes: Optional[str] = None) -> Optional[Dict[int, str]]:
    """Class id -> name fixed by a dataset's class list or a comma-separated list; None: from the layers."""
    if dataset and classes and classes.strip():
        raise InputError("Give a dataset class list or a comma-separated class list, not both.")
    if dataset:
        return dict(enumerate(DATASET_CLASSES[dataset]))
    names = parse_class_list(classes)
    return dict(enumerate(names)) if names else None


def _unique(name: str, taken: Mapping) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}#{n}", n + 1
    return candidate


def collect_subsets(inputs: Sequence[Tuple[Optional[str], str]], class_names: Optional[Mapping[int, str]] = None,
                    progress: Optional[Progress] = None) -> Dict[str, Statistics]:
    """Statistics per subset, in the order given. ``inputs``: ``(name or None, path)``, a path being a dataset
    folder, a folder of subset folders, or a polygon layer; without a name, a subset is named after its
    folder or file. A named folder must hold one subset."""
    progress = progress or Progress()
    subsets: Dict[str, Statistics] = {}
    for n, (name, path) in enumerate(inputs):
        part = ProgressSlice(progress, n / len(inputs), (n + 1) / len(inputs))
        if os.path.isdir(path):
            found = dataset_subsets(path)
            if name and len(found) > 1:
                raise InputError(f"'{name}={path}' names a folder of {len(found)} subsets "
                                 f"({', '.join(n for n, _ in found)}); give each subset folder on its own to name it.")
            for default, folder in found:
                progress.info(f"Subset {name or default}: {folder}")
                stats = collect_statistics(result_set_from_folder(folder), class_names=class_names, progress=part)
                subsets[_unique(name or default, subsets)] = stats
        elif os.path.isfile(path):
            progress.info(f"Subset {name or os.path.basename(path)}: {path}")
            stats = collect_statistics([path], class_names=class_names, progress=part, source=path)
            subsets[_unique(name or os.path.splitext(os.path.basename(path))[0], subsets)] = stats
        else:
            raise InputError(f"Subset '{path}' does not exist. Give a dataset output folder or a polygon "
                             "layer written by segment.")
        progress.check_cancelled()
    return subsets


def check_report_outputs(inputs: Sequence[Tuple[Optional[str], str]], html: str, csv_folder: Optional[str]) -> None:
    """Refuse report outputs that would replace one of the report's inputs (a layer or class raster of a
    subset folder, or a given layer) or each other; ``inputs`` as for :func:`collect_subsets`."""
    from .tables import CSV_FILES

    files = []
    for _, path in inputs:
        if os.path.isdir(path):
            for _, folder in dataset_subsets(path):
                files += [f for pair in result_set_from_folder(folder).pairs for f in pair if f]
        else:
            files.append(path)
    outputs = {"report": html}
    if csv_folder:
        outputs.update({f"CSV table {name}": os.path.join(csv_folder, name) for name in CSV_FILES})
    check_output_paths(outputs, {f"subset input {i + 1}": f for i, f in enumerate(files)})


def describe_subsets(subsets: Mapping[str, Statistics]) -> List[str]:
    """One line per subset: boxes, instances, classes, images."""
    return [f"{name}: {stats.boxes} boxes, {stats.instances} instances in {len(stats.class_names)} class(es), "
            f"{stats.images} image(s)" for name, stats in subsets.items()]

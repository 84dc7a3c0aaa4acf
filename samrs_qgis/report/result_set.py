"""A subset's inputs (:class:`ResultSet`): its (polygon layer, class raster) pairs, found in a dataset
output folder of ``segmentdataset`` or given one by one."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from ..errors import InputError

DEFAULT_BACKGROUND = 255

# A pair as callers may give it: a bare polygon layer path, or (layer, class raster or None).
PairLike = Union[str, os.PathLike, Tuple[Union[str, os.PathLike], Optional[Union[str, os.PathLike]]]]


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

"""Published class lists of detection datasets: a class's id is its position in the list, so ids are
stable across images and runs.

Names are matched leniently (case, and ``-``/``_``/space, are ignored: FAIR1M's ``Passenger Ship``
matches SAMRS's ``Passenger-Ship``) and written as the list spells them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Optional, Tuple

from ..errors import InputError

# DOTA's own order (the dataset paper and website). v1.5 adds container-crane, v2.0 airport and helipad, at
# the end, so a class keeps its id across versions.
_DOTA2 = ("plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
          "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter",
          "roundabout", "soccer-ball-field", "swimming-pool", "container-crane", "airport", "helipad")

# DIOR's order (Li et al. 2020); the XML files spell the two Expressway classes with capitals.
_DIOR = ("airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
         "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
         "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill")

# FAIR1M's 37 classes as its XML spells them, grouped as in the FAIR1M paper (airplanes, ships, vehicles,
# courts, roads). The 37 names are confirmed by several independent sources (torchgeo's FAIR1M dataset,
# SAMRS's code); the order is the paper's grouping as other FAIR1M code reproduces it, not checked
# against the paper itself. FAIR1M 1.0 uses the same names.
_FAIR1M = ("Boeing737", "Boeing747", "Boeing777", "Boeing787", "C919", "A220", "A321", "A330", "A350", "ARJ21",
           "other-airplane",
           "Passenger Ship", "Motorboat", "Fishing Boat", "Tugboat", "Engineering Ship", "Liquid Cargo Ship",
           "Dry Cargo Ship", "Warship", "other-ship",
           "Small Car", "Bus", "Cargo Truck", "Dump Truck", "Van", "Trailer", "Tractor", "Excavator",
           "Truck Tractor", "other-vehicle",
           "Basketball Court", "Tennis Court", "Football Field", "Baseball Field",
           "Intersection", "Roundabout", "Bridge")

# The orders SAMRS itself used for its SOTA (DOTA-v2.0), SIOR (DIOR) and FAST (FAIR1M-2.0) label rasters
# (taken from BboxToolkit in SAMRS's published code), so ids can match SAMRS's masks.
_SAMRS_SOTA = ("large-vehicle", "swimming-pool", "helicopter", "bridge", "plane", "ship", "soccer-ball-field",
               "basketball-court", "ground-track-field", "small-vehicle", "baseball-diamond", "tennis-court",
               "roundabout", "storage-tank", "harbor", "container-crane", "airport", "helipad")
_SAMRS_SIOR = ("airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney",
               "expressway-service-area", "expressway-toll-station", "dam", "golffield", "groundtrackfield",
               "harbor", "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle",
               "windmill")
_SAMRS_FAST = ("A220", "A321", "A330", "A350", "ARJ21", "Baseball-Field", "Basketball-Court", "Boeing737",
               "Boeing747", "Boeing777", "Boeing787", "Bridge", "Bus", "C919", "Cargo-Truck", "Dry-Cargo-Ship",
               "Dump-Truck", "Engineering-Ship", "Excavator", "Fishing-Boat", "Football-Field", "Intersection",
               "Liquid-Cargo-Ship", "Motorboat", "other-airplane", "other-ship", "other-vehicle", "Passenger-Ship",
               "Roundabout", "Small-Car", "Tennis-Court", "Tractor", "Trailer", "Truck-Tractor", "Tugboat", "Van",
               "Warship")

DATASET_CLASSES: Dict[str, Tuple[str, ...]] = {
    "dota1.0": _DOTA2[:15],
    "dota1.5": _DOTA2[:16],
    "dota2.0": _DOTA2,
    "dior": _DIOR,
    "dior-r": _DIOR,
    "fair1m": _FAIR1M,
    "fair1m2.0": _FAIR1M,
    "hrsc2016": ("ship",),  # level 1 of HRSC2016's class tree
    "samrs-sota": _SAMRS_SOTA,
    "samrs-sior": _SAMRS_SIOR,
    "samrs-fast": _SAMRS_FAST,
}

# Names that stand for a class of the list although they are not spelled like it.
_ALIASES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "hrsc2016": ((r"1000000\d\d", "ship"),),  # every HRSC2016 Class_ID is a kind of ship
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _dataset_key(name: str) -> str:
    """``DOTA-v2.0`` -> ``dota2.0``, ``DIOR_R`` -> ``diorr``: spellings of one dataset meet."""
    return re.sub(r"v(?=\d)", "", _key(name))


@dataclass(frozen=True)
class ClassList:
    """A dataset's classes; ``resolve`` gives the list's spelling of a name, ``index`` its id."""

    key: str
    names: Tuple[str, ...]

    @cached_property
    def _by_key(self) -> Dict[str, str]:
        return {_key(n): n for n in self.names}

    def resolve(self, name: str) -> Optional[str]:
        """The list's name for ``name`` (as written in an annotation file), None when it is not in the list."""
        if _key(name) in self._by_key:
            return self._by_key[_key(name)]
        for pattern, target in _ALIASES.get(self.key, ()):
            if re.fullmatch(pattern, name.strip()):
                return target
        return None

    def index(self, name: str) -> int:
        return self.names.index(name)


def dataset_classes(name: str) -> ClassList:
    """The class list of a dataset by name (``dota1.0``, ``DOTA-v2.0``, ``dior``, ``fair1m2.0``, …)."""
    keys = {_dataset_key(k): k for k in DATASET_CLASSES}
    key = keys.get(_dataset_key(name or ""))
    if key is None:
        raise InputError(f"Unknown dataset class list '{name}'. Choose one of: {', '.join(DATASET_CLASSES)}, "
                         "or give none to number the classes by sorted name.")
    return ClassList(key, DATASET_CLASSES[key])


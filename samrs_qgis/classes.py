"""Class names and ids: the value each box's class gets in the semantic raster.

* an explicit class list (e.g. a dataset's published classes) gives ids by position, stable across images;
* an integer class field is used as the id itself, its text as the name;
* a text class field without a list gets ids by sorted name, so the same set of names always gives
  the same ids whatever the feature order;
* without a class field every box is of class ``object`` (id 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError

DEFAULT_CLASS = "object"
UNLABELLED = "unlabelled"  # the class of a box whose class field is empty


def parse_class_list(text: Optional[str]) -> Optional[List[str]]:
    """``"plane, ship,,harbor"`` -> ``["plane", "ship", "harbor"]``; None for no list."""
    names = [c.strip() for c in (text or "").split(",") if c.strip()]
    return names or None


def _name(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNLABELLED
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


@dataclass
class ClassCatalog:
    """The classes of one run: id -> name, in id order."""

    names: Dict[int, str] = field(default_factory=dict)
    _ids: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, values: Iterable[Any], field_type: Optional[str], explicit: Optional[Sequence[str]] = None,
              field_name: str = "class") -> "ClassCatalog":
        """The catalog for the class values of all boxes (None when the layer has no class field)."""
        catalog = cls()
        values = list(values)
        if explicit:
            for i, name in enumerate(explicit):
                catalog._add(i, str(name))
            unknown = sorted({_name(v) for v in values} - set(catalog._ids))
            if unknown:
                raise InputError(f"Class field '{field_name}' has values missing from the class list: "
                                 f"{', '.join(unknown[:10])}. Add them to the list or leave the list out.")
            return catalog
        if field_type is None:
            catalog._add(0, DEFAULT_CLASS)
            return catalog
        if field_type == "int":
            for v in sorted({int(v) for v in values if v is not None}):
                if v < 0:
                    raise InputError(f"Class field '{field_name}' holds the negative id {v}; class ids must be ≥ 0.")
                catalog._add(v, str(v))
            if any(v is None for v in values):
                catalog._add(max(catalog.names, default=-1) + 1, UNLABELLED)
            return catalog
        for i, name in enumerate(sorted({_name(v) for v in values})):
            catalog._add(i, name)
        return catalog

    def _add(self, class_id: int, name: str) -> None:
        self.names[class_id] = name
        self._ids.setdefault(name, class_id)

    def lookup(self, value: Any) -> Tuple[str, int]:
        """(class_name, class_id) of a box's class value (the value is None without a class field)."""
        if len(self.names) == 1 and DEFAULT_CLASS in self._ids and value is None:
            return DEFAULT_CLASS, 0
        name = _name(value)
        return name, self._ids[name]

    @property
    def max_id(self) -> int:
        return max(self.names)

    def as_list(self) -> List[Tuple[int, str]]:
        return sorted(self.names.items())


def class_colours(class_ids: Sequence[int]) -> Dict[int, Tuple[int, int, int, int]]:
    """A distinct, saturated RGBA colour per class id, the same for the same id in every run.

    Hues step by the golden angle so neighbouring ids get far-apart colours.
    """
    import colorsys

    colours = {}
    for class_id in class_ids:
        hue = (class_id * 0.618033988749895) % 1.0
        value = 0.95 if class_id % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colours[class_id] = (round(r * 255), round(g * 255), round(b * 255), 255)
    return colours

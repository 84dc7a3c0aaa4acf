"""The review of a result layer, mask by mask: order, filter, decisions and progress (no widgets).

Decisions go into the layer's review fields (:mod:`samrs_qgis.review_fields`: ``review`` = ``accepted``,
``rejected``, ``relabelled``), and a relabel also into ``class_name`` / ``class_id``; the previous class is
kept in ``class_orig``. Each decision is written to the data source at once (or into the edit buffer when
the layer is being edited), so closing QGIS loses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from qgis.core import QgsField, QgsFeatureRequest, QgsVectorLayer
from qgis.PyQt.QtCore import QVariant

from ..samrs_qgis.review_fields import ACCEPTED, ORIGINAL_CLASS_FIELD, RELABELLED, REJECTED, REVIEW_FIELD

ORDERS = ("score", "class", "id")  # score: worst (lowest) first
FILTERS = ("all", "unreviewed", "rejected")


@dataclass
class ReviewProgress:
    total: int
    reviewed: int
    accepted: int
    rejected: int
    relabelled: int

    def describe(self) -> str:
        return (f"{self.reviewed} / {self.total} reviewed: {self.accepted} accepted, {self.rejected} rejected, "
                f"{self.relabelled} relabelled")


def _value(feature, name):
    value = feature[name] if name in feature.fields().names() else None
    return None if value is None or (hasattr(value, "isNull") and value.isNull()) or str(value) == "NULL" else value


class ReviewSession:
    """Walks the masks (features with a geometry) of ``layer`` in ``order``, showing those ``filter`` keeps."""

    def __init__(self, layer: QgsVectorLayer, order: str = "score", filter: str = "all"):
        if order not in ORDERS or filter not in FILTERS:
            raise ValueError(f"order must be one of {ORDERS}, filter one of {FILTERS}")
        for name in ("class_name",):
            if layer.fields().indexOf(name) < 0:
                raise ValueError(f"Layer '{layer.name()}' has no '{name}' field: it is not a SAMRS result layer.")
        self.layer = layer
        self.order, self.filter = order, filter
        self._add_missing_fields()
        self.id_field = "instance_id" if layer.fields().indexOf("instance_id") >= 0 else "inst_id"
        self.class_ids = self._class_ids()
        self.queue: List[int] = []
        self.position = 0
        self.refresh()

    # -- fields and classes -----------------------------------------------------------------------
    def _add_missing_fields(self) -> None:
        missing = [QgsField(name, QVariant.String) for name in (REVIEW_FIELD, ORIGINAL_CLASS_FIELD)
                   if self.layer.fields().indexOf(name) < 0]
        if not missing:
            return
        if self.layer.isEditable():
            for field in missing:
                self.layer.addAttribute(field)
        elif not self.layer.dataProvider().addAttributes(missing):
            raise ValueError(f"Cannot add the review fields to '{self.layer.source()}' (read-only?).")
        self.layer.updateFields()

    def _class_ids(self) -> Dict[str, int]:
        ids = {}
        has_id = self.layer.fields().indexOf("class_id") >= 0
        for feature in self.layer.getFeatures():
            name = _value(feature, "class_name")
            if name is not None and has_id and _value(feature, "class_id") is not None:
                ids.setdefault(str(name), int(feature["class_id"]))
        return ids

    @property
    def classes(self) -> List[str]:
        """Class names in class-id order (the choices for a relabel)."""
        return [name for name, _ in sorted(self.class_ids.items(), key=lambda item: item[1])]

    # -- queue ----------------------------------------------------------------------------------------
    def refresh(self, keep_current: bool = True) -> None:
        """Rebuild the queue (after changing order or filter, or when the layer changed)."""
        current = self.current_id if keep_current and self.queue else None
        rows = []
        for feature in self.layer.getFeatures(QgsFeatureRequest()):
            if not feature.hasGeometry() or feature.geometry().isEmpty():
                continue
            review = _value(feature, REVIEW_FIELD)
            if self.filter == "unreviewed" and review:
                continue
            if self.filter == "rejected" and review != REJECTED:
                continue
            score = _value(feature, "score")
            key_id = int(_value(feature, self.id_field) or feature.id())
            score_key = (score is None, float(score) if score is not None else 0.0)
            if self.order == "score":
                key = (score_key, key_id)
            elif self.order == "class":
                key = (str(_value(feature, "class_name")), score_key, key_id)
            else:
                key = (key_id,)
            rows.append((key, feature.id()))
        self.queue = [fid for _, fid in sorted(rows)]
        self.position = self.queue.index(current) if current in self.queue else 0

    @property
    def current_id(self) -> Optional[int]:
        return self.queue[self.position] if 0 <= self.position < len(self.queue) else None

    def current(self):
        fid = self.current_id
        return None if fid is None else self.layer.getFeature(fid)

    def step(self, delta: int) -> None:
        """Move ``delta`` masks along the queue (a step back is ``-1``), staying inside it."""
        if self.queue:
            self.position = min(max(self.position + delta, 0), len(self.queue) - 1)

    # -- decisions ------------------------------------------------------------------------------------
    def _write(self, values: Dict[str, object]) -> None:
        fid = self.current_id
        if fid is None:
            return
        fields = self.layer.fields()
        changes = {fields.indexOf(name): value for name, value in values.items() if fields.indexOf(name) >= 0}
        if self.layer.isEditable():
            for index, value in changes.items():
                self.layer.changeAttributeValue(fid, index, value)
        elif not self.layer.dataProvider().changeAttributeValues({fid: changes}):
            raise ValueError(f"Cannot write the review into '{self.layer.source()}' (read-only?).")
        self.layer.triggerRepaint()

    def accept(self) -> None:
        self._write({REVIEW_FIELD: ACCEPTED})
        self.step(1)

    def reject(self) -> None:
        self._write({REVIEW_FIELD: REJECTED})
        self.step(1)

    def relabel(self, class_name: str) -> None:
        """Give the current mask another class (a new name gets the next free class id)."""
        feature = self.current()
        if feature is None:
            return
        if class_name not in self.class_ids:
            self.class_ids[class_name] = max(self.class_ids.values(), default=-1) + 1
        original = _value(feature, ORIGINAL_CLASS_FIELD) or _value(feature, "class_name")
        self._write({REVIEW_FIELD: RELABELLED, "class_name": class_name, "class_id": self.class_ids[class_name],
                     ORIGINAL_CLASS_FIELD: original})
        self.step(1)

    def progress(self) -> ReviewProgress:
        counts = {ACCEPTED: 0, REJECTED: 0, RELABELLED: 0}
        total = 0
        for feature in self.layer.getFeatures():
            if not feature.hasGeometry() or feature.geometry().isEmpty():
                continue
            total += 1
            review = _value(feature, REVIEW_FIELD)
            if review in counts:
                counts[review] += 1
        return ReviewProgress(total, sum(counts.values()), counts[ACCEPTED], counts[REJECTED], counts[RELABELLED])

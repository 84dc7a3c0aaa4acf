"""The results of an evaluation: per-class and overall measures and the per-instance scores behind them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .sources import Key

OVERALL = "(all)"  # class column of the overall row; parentheses keep it apart from real class names


@dataclass
class MetricsRow:
    """Measures over a set of reference instances (one class, or all: ``class_name == OVERALL``).

    IoUs are fractions 0 … 1; ``None`` where undefined (no instance; AP for a class without reference
    instance). ``intersection_px`` / ``union_px`` are the sums behind ``weighted_iou``, in grid pixels.
    """

    class_name: str
    instances: int
    mean_iou: Optional[float]
    weighted_iou: Optional[float]
    ap: Optional[float]
    ap50: Optional[float]
    ap75: Optional[float]
    unmatched_produced: int
    intersection_px: int
    union_px: int


@dataclass
class InstanceScore:
    """One scored reference instance. Pixel counts on its image's grid; ``score`` None without a produced feature."""

    image: str
    key: Key
    class_name: str
    intersection_px: int
    union_px: int
    produced_px: int
    reference_px: int
    score: Optional[float]
    has_produced: bool  # a produced feature with this key exists (its mask may be empty)

    @property
    def iou(self) -> float:
        return self.intersection_px / self.union_px if self.union_px else 0.0


@dataclass
class EvaluationResult:
    """Per-class rows (sorted by class name), the overall row, and the per-instance scores behind them.

    ``unmatched_produced`` / ``skipped_reference`` list ``(image, key)`` of produced features without a
    reference and of reference instances without a pixel on the grid.
    """

    overall: MetricsRow
    classes: List[MetricsRow]
    instances: List[InstanceScore]
    unmatched_produced: List[Tuple[str, Key]] = field(default_factory=list)
    skipped_reference: List[Tuple[str, Key]] = field(default_factory=list)
    images: List[str] = field(default_factory=list)

    def rows(self) -> List[MetricsRow]:
        """Per-class rows, then the overall row (the order of the CSV table)."""
        return list(self.classes) + [self.overall]

    def row(self, class_name: str) -> MetricsRow:
        for r in self.rows():
            if r.class_name == class_name:
                return r
        raise KeyError(class_name)

    def describe(self) -> str:
        o = self.overall

        def pct(v):
            return "n/a" if v is None else f"{v:.3f}"

        text = (f"{o.instances} instances in {len(self.images)} image(s): mean IoU {pct(o.mean_iou)}, "
                f"area-weighted IoU {pct(o.weighted_iou)}, AP {pct(o.ap)}, AP50 {pct(o.ap50)}, AP75 {pct(o.ap75)}")
        if o.unmatched_produced:
            text += f"; {o.unmatched_produced} produced mask(s) without reference"
        if self.skipped_reference:
            text += f"; {len(self.skipped_reference)} reference instance(s) without a pixel on the grid skipped"
        return text

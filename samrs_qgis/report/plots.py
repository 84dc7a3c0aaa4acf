"""The report's plots, drawn with matplotlib's Agg renderer and returned as base64 PNG text for embedding."""
from __future__ import annotations

import base64
import io
from typing import Dict, List, Mapping, Tuple

import numpy as np

from .statistics import SCORE_BINS, Statistics


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


def grouped_bars(subsets: Mapping[str, Statistics], classes: List[Tuple[int, str]], values, ylabel: str,
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


def size_label(k: int) -> str:
    value = 1 << k
    for unit, size in (("M", 1 << 20), ("k", 1 << 10)):
        if value >= size:
            return f"{value // size}{unit}"
    return str(value)


def size_plot(series: Dict[str, Dict[int, int]], bins: List[int], title: str) -> str:
    fig, ax = _figure(1.5 + 0.45 * max(len(bins), 8))
    for label, hist in series.items():
        total = sum(hist.values())
        if not total:
            continue
        ax.plot(bins, [100.0 * hist.get(k, 0) / total for k in bins], marker="o", label=_label(label))
    ax.set_xticks(bins)
    ax.set_xticklabels([size_label(k) for k in bins], rotation=45)
    ax.set_xlabel("mask area, pixels (bin from this value to twice it)")
    ax.set_ylabel("% of instances")
    ax.set_title(_label(title))
    if series:
        ax.legend(fontsize="small")
    return _png(fig)


def score_plot(subsets: Mapping[str, Statistics]) -> str:
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

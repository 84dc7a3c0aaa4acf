"""The report as one self-contained HTML page: tables and embedded plots, every text escaped."""
from __future__ import annotations

import datetime
import html
from typing import Iterable, List, Mapping, Sequence

from .plots import grouped_bars, score_plot, size_label, size_plot
from .statistics import SCORE_BINS, STATUSES, Statistics, score_bin_edges, size_bin_edges
from .tables import class_rows, percent, size_bins


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


def render_html(subsets: Mapping[str, Statistics], title: str) -> str:
    names = list(subsets)
    classes = class_rows(subsets)
    bins = size_bins(subsets)
    generated = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    from .. import __version__

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
                row += [v, percent(v, total(s))]
            rows.append(row)
        return rows

    pair_header = [h for n in names for h in (n, f"{n} %")]
    sources = "; ".join(f"{_esc(n)}: {_esc(s.pixel_source)}" for n, s in subsets.items())
    pixel_note = (f'<p class="note">Pixels from: {sources}. "class rasters": pixels of each class id in the class '
                  "rasters (overlaps counted once); \"area_px\": sum of the masks' area_px (overlaps counted in each "
                  "mask); \"mixed\": rasters where given, area_px for the other layers.</p>")
    # (title, per-class values, subset total for the percentages, y axis label, log scale, note)
    per_class_sections = [
        ("Instances per class", lambda s: s.instances_per_class, lambda s: s.instances, "instances", False, None),
        ("Pixels per class", lambda s: s.pixels_per_class, lambda s: s.class_pixels, "pixels (log scale)", True,
         pixel_note),
    ]
    for section, values, total, ylabel, log, note in per_class_sections:
        parts.append(f"<h2>{section}</h2>")
        if note:
            parts.append(note)
        if classes:
            parts.append(_img(grouped_bars(subsets, classes, values, ylabel, section, log=log), section.lower()))
        parts.append(_table(["class id", "class"] + pair_header, per_class(values, total)))

    parts.append("<h2>Mask sizes</h2>")
    parts.append('<p class="note">Instances by mask area in pixels, binned by powers of two: the bin of value v '
                 "holds areas from v to 2v − 1 pixels.</p>")
    if bins:
        parts.append(_img(size_plot({n: s.size_histogram for n, s in subsets.items()}, bins,
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
            parts.append(_img(size_plot({s.class_names[i]: s.size_histogram_per_class[i] for i in shown}, bins,
                                        caption), caption))
            parts.append(f"<details><summary>Table: instances per class and size bin, {_esc(n)}</summary>")
            parts.append(_table(["class id", "class"] + [f"{size_label(k)}" for k in bins],
                                [[i, s.class_names[i]] + [s.size_histogram_per_class[i].get(k, 0) for k in bins]
                                 for i in sorted(s.size_histogram_per_class)]))
            parts.append("</details>")
    else:
        parts.append("<p>No instances.</p>")

    parts.append("<h2>Scores</h2>")
    if any(sum(s.score_histogram) for s in subsets.values()):
        parts.append(_img(score_plot(subsets), "score histogram"))
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

"""Overview and contact-sheet previews of one result (a raster and its mask polygon layer).

* overview: the whole raster with every mask, styled by class (the style the polygon layer opens
  with, see ``samrs_qgis.styles``), longest side ``size`` pixels;
* contact sheet: the ``count`` lowest-scoring masks, each zoomed to its neighbourhood in a square tile
  with the mask outlined in its class colour, labelled with instance id, class and score. Masks
  without a score (GrabCut) come after scored ones, by instance id.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

TILE_MARGIN = 0.6  # context around a mask in its tile, as a fraction of the mask's larger side
LABEL_HEIGHT = 22  # pixels under each tile for its label
FOCUS_OUTLINE_MM = 0.6  # the tile's own mask is outlined in white over the class-coloured masks
MIN_TILE_EXTENT = 8.0  # raster pixels: a tile never shows fewer than this many across
PREVIEW_SIZE = 1200  # the overview's longest side at most; a smaller raster is drawn one pixel per pixel
PREVIEW_MASKS = 16  # masks in the contact sheet
MASKS_LAYER_FORMATS = (".gpkg", ".sqlite")  # polygon outputs whose masks are the layer 'masks' of their file


class PreviewError(Exception):
    """An input of the preview cannot be opened or its output cannot be written."""


@dataclass
class PreviewFiles:
    overview: str
    contact_sheet: Optional[str]  # None when the layer has no mask
    masks_shown: int

    def lines(self) -> List[str]:
        """What a front end tells the user about the previews drawn."""
        if not self.contact_sheet:
            return [f"Preview: {self.overview}", "No mask to show in a contact sheet (no box has status ok)."]
        return [f"Preview: {self.overview}", f"Lowest-scoring masks ({self.masks_shown}): {self.contact_sheet}"]


def preview_paths(polygons_path: str) -> Tuple[str, str]:
    """``<polygons stem>_preview.png`` and ``<polygons stem>_worst.png`` beside the polygon layer."""
    stem = os.path.splitext(polygons_path)[0]
    return stem + "_preview.png", stem + "_worst.png"


def draw_result_previews(raster_path: str, polygons_path: str) -> PreviewFiles:
    """The previews of one segmentation result, beside its polygon layer (see :func:`preview_paths`): the
    overview at most ``PREVIEW_SIZE`` pixels across and the ``PREVIEW_MASKS`` lowest-scoring masks."""
    overview, sheet = preview_paths(polygons_path)
    layer = "masks" if os.path.splitext(polygons_path)[1].lower() in MASKS_LAYER_FORMATS else None
    return render_previews(raster_path, polygons_path, overview, sheet, layer_name=layer, count=PREVIEW_MASKS)


def ensure_qgis_application():
    """The running QgsApplication, or a new offscreen one (for the CLI); returns it."""
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QgsApplication([], False)
        app.initQgis()
        ensure_qgis_application.keep = app  # a QgsApplication must outlive its layers
    return app


def _layers(raster_path: str, polygons_path: str, layer_name: Optional[str]):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    raster = QgsRasterLayer(raster_path, "raster")
    source = f"{polygons_path}|layername={layer_name}" if layer_name else polygons_path
    masks = QgsVectorLayer(source, "masks", "ogr")
    if not raster.isValid():
        raise PreviewError(f"Raster '{raster_path}' cannot be opened for the preview.")
    if not masks.isValid():
        raise PreviewError(f"Polygon layer '{source}' cannot be opened for the preview.")
    return raster, masks


def _render(layers, crs, extent, width: int, height: int):
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setOutputSize(QSize(width, height))
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor(0, 0, 0))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def _outline_layer(geometry, crs):
    """A memory layer drawing ``geometry`` as a thick white outline: the mask a contact-sheet tile is about."""
    from qgis.core import QgsFeature, QgsFillSymbol, QgsSingleSymbolRenderer, QgsVectorLayer

    layer = QgsVectorLayer(f"MultiPolygon?crs={crs.authid() or 'wkt:' + crs.toWkt()}", "focus", "memory")
    feature = QgsFeature()
    feature.setGeometry(geometry)
    layer.dataProvider().addFeatures([feature])
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": "255,255,255,255",
                                         "outline_width": str(FOCUS_OUTLINE_MM), "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    return layer


def _save(image, path: str) -> str:
    """Save a QImage as PNG atomically (a temporary name beside it, then a rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.partial-{uuid.uuid4().hex[:8]}.png")
    if not image.save(temp, "PNG"):
        raise PreviewError(f"Cannot write the preview '{path}'.")
    os.replace(temp, path)
    return path


def _worst_masks(masks, count: int) -> List[Tuple]:
    """(score or None, instance id, class name, geometry) of the ``count`` lowest-scoring masks."""
    names = masks.fields().names()
    id_field = "instance_id" if "instance_id" in names else "inst_id"
    rows = []
    for feature in masks.getFeatures():
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty() or feature["status"] != "ok":
            continue
        score = feature["score"]
        score = None if score is None or str(score) == "NULL" else float(score)
        rows.append((score, int(feature[id_field]), str(feature["class_name"]), geometry))
    rows.sort(key=lambda r: (r[0] is None, r[0] if r[0] is not None else 0.0, r[1]))
    return rows[:count]


def render_previews(raster_path: str, polygons_path: str, overview_path: str,
                    contact_sheet_path: Optional[str] = None, layer_name: Optional[str] = "masks",
                    size: Optional[int] = None, count: int = PREVIEW_MASKS, tile: int = 256) -> PreviewFiles:
    """Render the overview (and the contact sheet when a path is given) as PNG files.

    ``size``: the overview's longest side in pixels (default: the raster's, at most ``PREVIEW_SIZE``); ``count`` masks in the contact sheet, ``tile``
    pixels square each, in rows of up to four.
    """
    from qgis.PyQt.QtCore import QRectF, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    ensure_qgis_application()
    raster, masks = _layers(raster_path, polygons_path, layer_name)
    extent = raster.extent()
    size = size or min(PREVIEW_SIZE, max(raster.width(), raster.height()))
    scale = size / max(extent.width(), extent.height())
    width, height = max(1, round(extent.width() * scale)), max(1, round(extent.height() * scale))
    _save(_render([masks, raster], raster.crs(), extent, width, height), overview_path)
    if not contact_sheet_path:
        return PreviewFiles(overview_path, None, 0)
    worst = _worst_masks(masks, count)
    if not worst:
        return PreviewFiles(overview_path, None, 0)
    columns = min(4, len(worst))
    rows = (len(worst) + columns - 1) // columns
    sheet = QImage(columns * tile, rows * (tile + LABEL_HEIGHT), QImage.Format_ARGB32)
    sheet.fill(QColor(32, 32, 32))
    painter = QPainter(sheet)
    painter.setPen(QColor(240, 240, 240))
    painter.setFont(QFont("Sans", 9))
    pixel = raster.rasterUnitsPerPixelX()
    for i, (score, instance_id, class_name, geometry) in enumerate(worst):
        box = geometry.boundingBox()
        side = max(box.width(), box.height(), MIN_TILE_EXTENT * pixel) * (1 + 2 * TILE_MARGIN)
        centre = box.center()
        box.setXMinimum(centre.x() - side / 2)
        box.setXMaximum(centre.x() + side / 2)
        box.setYMinimum(centre.y() - side / 2)
        box.setYMaximum(centre.y() + side / 2)
        x, y = (i % columns) * tile, (i // columns) * (tile + LABEL_HEIGHT)
        focus = _outline_layer(geometry, raster.crs())
        painter.drawImage(x, y, _render([focus, masks, raster], raster.crs(), box, tile, tile))
        label = f"#{instance_id} {class_name} " + (f"{score:.2f}" if score is not None else "no score")
        painter.drawText(QRectF(x + 4, y + tile, tile - 8, LABEL_HEIGHT), int(Qt.AlignVCenter | Qt.AlignLeft),
                         label)
    painter.end()
    _save(sheet, contact_sheet_path)
    return PreviewFiles(overview_path, contact_sheet_path, len(worst))


def render_side_by_side(raster_path: str, panels: Sequence[Tuple[str, str]], extent: Tuple[float, float, float, float],
                        path: str, tile: int = 360, layer_name: Optional[str] = "masks", outlines: bool = False) -> str:
    """``panels`` ((polygon layer path, title) each, e.g. a result before and after an option) drawn over the
    raster next to each other, each over the map ``extent`` (x0, y0, x1, y1), ``tile`` pixels wide (and as high
    as the extent's shape makes it), titled under it; saved as PNG at ``path``, which is returned. ``outlines``:
    the masks drawn as white outlines (their shapes seen over any colour) instead of in their style."""
    from qgis.core import QgsRectangle
    from qgis.PyQt.QtCore import QRectF, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    ensure_qgis_application()
    high = max(1, round(tile * (extent[3] - extent[1]) / (extent[2] - extent[0])))
    image = QImage(len(panels) * tile, high + LABEL_HEIGHT, QImage.Format_ARGB32)
    image.fill(QColor(32, 32, 32))
    painter = QPainter(image)
    painter.setPen(QColor(240, 240, 240))
    painter.setFont(QFont("Sans", 10))
    for i, (polygons_path, title) in enumerate(panels):
        raster, masks = _layers(raster_path, polygons_path, layer_name)
        if outlines:
            from qgis.core import QgsFillSymbol, QgsSingleSymbolRenderer

            masks.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple({
                "style": "no", "outline_color": "255,255,255,255", "outline_width": str(FOCUS_OUTLINE_MM / 2),
                "outline_width_unit": "MM"})))
        painter.drawImage(i * tile, 0, _render([masks, raster], raster.crs(), QgsRectangle(*extent), tile, high))
        painter.drawText(QRectF(i * tile + 6, high, tile - 12, LABEL_HEIGHT), int(Qt.AlignVCenter | Qt.AlignLeft),
                         title)
    painter.end()
    return _save(image, path)

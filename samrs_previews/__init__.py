"""PNG previews of results drawn by QGIS's own map renderer: the raster with the masks' outlines and class
colours over it. Needs PyQGIS (not Processing); works in the QGIS GUI, under ``qgis_process`` and without
a display (the CLI starts an offscreen QGIS application when none is running).
"""
from .render import PreviewError, PreviewFiles, draw_result_previews, preview_paths, render_previews

__all__ = ["PreviewError", "PreviewFiles", "draw_result_previews", "preview_paths", "render_previews"]

"""QGIS styles for the outputs, written without QGIS so that results of the CLI and ``qgis_process`` open
styled too.

QGIS loads ``<name>.qml`` beside a raster or vector file as the layer's default style, and a
GeoPackage layer's default style from the file's ``layer_styles`` table (which is what it writes
itself with "Save as default"). Styles:

* polygons: categorized by ``class_name``, one colour per class (the class colours of the
  semantic raster), semi-transparent fill with a solid outline of the same colour;
* semantic raster: paletted, class names as legend labels; background is nodata, so transparent;
* instance raster: paletted with a distinct colour per instance id; 0 (no object) is nodata.
"""
from __future__ import annotations

import datetime
import os
from typing import Dict, Iterable, Mapping, Optional, Tuple
from xml.sax.saxutils import quoteattr

from .classes import class_colours

FILL_ALPHA = 96  # of 255: the imagery stays visible under the masks
OUTLINE_WIDTH_MM = 0.4
STYLE_NAME = "samrs"
LAYER_STYLES = "layer_styles"  # the table QGIS keeps GeoPackage layer styles in

_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _rgba(colour: Tuple[int, int, int, int], alpha: int) -> str:
    return f"{colour[0]},{colour[1]},{colour[2]},{alpha}"


def _fill_symbol(index: int, colour: Tuple[int, int, int, int]) -> str:
    props = {"color": _rgba(colour, FILL_ALPHA), "outline_color": _rgba(colour, 255), "outline_style": "solid",
             "outline_width": str(OUTLINE_WIDTH_MM), "outline_width_unit": "MM", "style": "solid",
             "joinstyle": "bevel"}
    body = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    return (f'<symbol name="{index}" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleFill" enabled="1" locked="0" pass="0">{body}</layer></symbol>')


def polygon_qml(classes: Mapping[int, str], field: str = "class_name") -> str:
    """A categorized renderer on ``field`` for class names ``classes`` (id -> name)."""
    colours = class_colours(sorted(classes))
    ordered = sorted(classes.items())
    categories = "".join(f'<category value={quoteattr(name)} label={quoteattr(name)} symbol="{i}" render="true"/>'
                         for i, (_, name) in enumerate(ordered))
    symbols = "".join(_fill_symbol(i, colours[class_id]) for i, (class_id, _) in enumerate(ordered))
    return (f'{_HEADER}<qgis version="3.22" styleCategories="Symbology">'
            f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" forceraster="0" '
            f'enableorderby="0"><categories>{categories}</categories><symbols>{symbols}</symbols></renderer-v2>'
            f'<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode><layerOpacity>1</layerOpacity></qgis>\n')


def _paletted_qml(entries: Iterable[Tuple[int, Tuple[int, int, int, int], str]], opacity: float) -> str:
    palette = "".join(f'<paletteEntry value="{value}" color="#{c[0]:02x}{c[1]:02x}{c[2]:02x}" alpha="{c[3]}" '
                      f'label={quoteattr(label)}/>' for value, c, label in entries)
    return (f'{_HEADER}<qgis version="3.22" styleCategories="Symbology"><pipe>'
            f'<rasterrenderer type="paletted" band="1" opacity="{opacity}" alphaBand="-1" nodataColor="">'
            f'<colorPalette>{palette}</colorPalette></rasterrenderer>'
            f'<brightnesscontrast brightness="0" contrast="0" gamma="1"/></pipe><blendMode>0</blendMode></qgis>\n')


def semantic_qml(classes: Mapping[int, str]) -> str:
    """Paletted renderer: class id -> its class colour, labelled with the class name."""
    colours = class_colours(sorted(classes))
    return _paletted_qml(((i, colours[i], name) for i, name in sorted(classes.items())), opacity=0.7)


def instance_qml(instance_ids: Iterable[int]) -> str:
    """Paletted renderer: a distinct colour per instance id (labelled with the id)."""
    ids = sorted(set(int(i) for i in instance_ids) - {0})
    colours = class_colours(ids)
    return _paletted_qml(((i, colours[i], str(i)) for i in ids), opacity=0.7)


def style_path(output_path: str) -> str:
    """Where QGIS looks for a file's default style: ``<stem>.qml`` beside it."""
    return os.path.splitext(output_path)[0] + ".qml"


def write_qml(output_path: str, qml: str) -> str:
    """Write ``qml`` as the default style of the file at ``output_path``; returns the style's path."""
    path = style_path(output_path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(qml)
    return path


def store_default_style(gpkg_path: str, layer: str, qml: str, geometry_column: str = "geom") -> None:
    """Save ``qml`` as the default style of ``layer`` inside the GeoPackage (QGIS's ``layer_styles`` table),
    replacing that layer's earlier styles and keeping the other layers'."""
    import fiona

    schema = {"geometry": "None", "properties": {
        "f_table_catalog": "str:256", "f_table_schema": "str:256", "f_table_name": "str:256",
        "f_geometry_column": "str:256", "styleName": "str:30", "styleQML": "str", "styleSLD": "str",
        "useAsDefault": "bool", "description": "str", "owner": "str:30", "ui": "str:30", "update_time": "str"}}
    row = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": layer, "f_geometry_column": geometry_column,
           "styleName": STYLE_NAME, "styleQML": qml, "styleSLD": "", "useAsDefault": True,
           "description": "SAMRS result style", "owner": "", "ui": None,
           "update_time": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    kept = []  # the other layers' styles (QGIS keeps every layer's styles in one table)
    if LAYER_STYLES in fiona.listlayers(gpkg_path):
        with fiona.open(gpkg_path, layer=LAYER_STYLES) as table:
            names = schema["properties"]
            kept = [{k: f["properties"].get(k) for k in names} for f in table
                    if f["properties"].get("f_table_name") != layer]
    with fiona.open(gpkg_path, "w", driver="GPKG", layer=LAYER_STYLES, schema=schema) as table:
        for properties in kept + [row]:
            table.write({"geometry": None, "properties": properties})


def write_output_styles(instances: Optional[str], semantic: Optional[str], polygons: Optional[str],
                        classes: Dict[int, str], instance_ids: Iterable[int], polygon_layer: str = "masks",
                        qml_beside_polygons: bool = True) -> None:
    """Styles for whichever outputs are given (paths may be None): QML beside each, and for a GeoPackage
    polygon layer also its default style inside the file. ``qml_beside_polygons=False`` when the polygon
    layer shares its file stem with a raster output (one ``<stem>.qml`` cannot serve both)."""
    if instances:
        write_qml(instances, instance_qml(instance_ids))
    if semantic:
        write_qml(semantic, semantic_qml(classes))
    if polygons:
        qml = polygon_qml(classes)
        geopackage = polygons.lower().endswith(".gpkg")
        if qml_beside_polygons and not (geopackage and _holds_other_layers(polygons, polygon_layer)):
            write_qml(polygons, qml)  # (QGIS would give a file's QML to every layer of it)
        if geopackage:
            store_default_style(polygons, polygon_layer, qml)


def _holds_other_layers(gpkg_path: str, layer: str) -> bool:
    import fiona

    return bool(set(fiona.listlayers(gpkg_path)) - {layer, LAYER_STYLES})

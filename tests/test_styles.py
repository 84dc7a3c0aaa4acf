"""Outputs open styled in QGIS: written styles load back with the expected renderers and categories."""
import os

import numpy as np
from affine import Affine

import support
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.classes import class_colours
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions
from samrs.samrs_qgis.styles import LAYER_STYLES


def run_scene(tmp_path, polygons_name="masks.gpkg"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    raster, boxes, objects = support.synthetic_files(tmp_path, 256, 5, Affine(0.5, 0, 600000, 0, -0.5, 3300000))
    out = OutputPaths(str(tmp_path / "out" / "instances.tif"), str(tmp_path / "out" / "semantic.tif"),
                      str(tmp_path / "out" / polygons_name))
    summary = segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="cls"))
    return out, summary, objects


def test_polygons_open_categorized_by_class_with_the_semantic_raster_colours(tmp_path, qgis_app):
    from qgis.core import QgsVectorLayer

    out, summary, objects = run_scene(tmp_path)
    colours = class_colours(sorted(summary.classes))
    for keep_qml in (True, False):  # the QML beside the file, then the style stored inside the GeoPackage
        if not keep_qml:
            os.remove(os.path.splitext(out.polygons)[0] + ".qml")
        layer = QgsVectorLayer(f"{out.polygons}|layername=masks", "masks", "ogr")
        assert layer.isValid()
        renderer = layer.renderer()
        assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "class_name"
        categories = {c.value(): c for c in renderer.categories()}
        assert set(categories) == set(summary.classes.values()) == {o[0] for o in objects}
        for class_id, name in summary.classes.items():
            symbol = categories[name].symbol()
            fill = symbol.symbolLayer(0)
            r, g, b, _ = colours[class_id]
            assert (fill.color().red(), fill.color().green(), fill.color().blue()) == (r, g, b)
            assert 0 < fill.color().alpha() < 255 and fill.strokeColor().alpha() == 255  # see-through fill, solid outline
            assert categories[name].label() == name


def test_rasters_open_paletted_with_class_names_and_instance_colours(tmp_path, qgis_app):
    from qgis.core import QgsRasterLayer

    out, summary, objects = run_scene(tmp_path)
    semantic = QgsRasterLayer(out.semantic, "semantic")
    renderer = semantic.renderer()
    assert renderer.type() == "paletted"
    assert {c.value: c.label for c in renderer.classes()} == summary.classes
    instances = QgsRasterLayer(out.instances, "instances")
    renderer = instances.renderer()
    assert renderer.type() == "paletted"
    values = [c.value for c in renderer.classes()]
    assert sorted(values) == list(range(1, len(objects) + 1))
    colours = {(c.color.red(), c.color.green(), c.color.blue()) for c in renderer.classes()}
    assert len(colours) == len(values)  # a colour of its own for every instance


def test_shapefile_gets_its_style_beside_it_and_the_style_table_is_an_attribute_table(tmp_path, qgis_app):
    from qgis.core import QgsVectorLayer
    import fiona

    out, summary, _ = run_scene(tmp_path, "masks.shp")
    assert os.path.isfile(os.path.splitext(out.polygons)[0] + ".qml")
    layer = QgsVectorLayer(out.polygons, "masks", "ogr")
    assert layer.renderer().type() == "categorizedSymbol"
    gpkg_out, _, _ = run_scene(tmp_path / "second")
    assert set(fiona.listlayers(gpkg_out.polygons)) == {"masks", LAYER_STYLES}
    with fiona.open(gpkg_out.polygons, layer=LAYER_STYLES) as table:
        (row,) = list(table)
        assert row["properties"]["f_table_name"] == "masks" and row["properties"]["useAsDefault"]
    assert np.all([os.path.exists(p) for p in (gpkg_out.instances, gpkg_out.semantic)])

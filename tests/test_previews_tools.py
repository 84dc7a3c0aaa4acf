"""Previews and loading of ``samrs:segmentboxes``' results: the PREVIEW option under ``qgis_process`` without a
display (not blank, class colours where the masks are), ``segment --preview`` on the command line, and the
layer-tree group the outputs are loaded into by ``processing.runAndLoadResults``."""
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from scipy import ndimage

import tools_data as td
from samrs.samrs_qgis.classes import class_colours
from test_previews import read_png
from test_tools_cli import REPO, bad, ok, run_cli
from test_tools_processing import json_results

SEGMENT = "samrs:segmentboxes"
GRABCUT = 1


@pytest.fixture
def scene(tmp_path):
    return {"raster": td.scene_raster(tmp_path / "scene.tif"), "boxes": td.scene_boxes(tmp_path / "boxes.gpkg")}


def check_overview(png_path, semantic_path):
    """Not blank; along each class's mask edges the class colour (the outline), far from masks none of it."""
    png = read_png(png_path)
    with rasterio.open(semantic_path) as ds:
        semantic = ds.read(1)
        names = dict(enumerate(ds.descriptions))
    assert png.shape == (td.SIZE, td.SIZE, 3) and png.std() > 20  # one PNG pixel per raster pixel; not blank
    classes = sorted(int(v) for v in np.unique(semantic) if v != 255)
    assert len(classes) == 2
    colours = class_colours(classes)
    far = ndimage.binary_dilation(semantic != 255, iterations=6) == 0
    for class_id in classes:
        inside = semantic == class_id
        edge = inside & ~ndimage.binary_erosion(inside, iterations=2)
        colour = np.array(colours[class_id][:3])
        assert (np.abs(png[edge] - colour).sum(axis=1) < 60).mean() > 0.3, (class_id, names)
        assert (np.abs(png[far] - colour).sum(axis=1) < 60).mean() < 0.05


def check_contact_sheet(path, masks):
    sheet = read_png(path)
    columns = min(4, masks)
    assert sheet.shape[1] == columns * 256 and sheet.shape[0] == ((masks + columns - 1) // columns) * (256 + 22)
    first = sheet[:256, :256]
    assert first.std() > 10 and (np.abs(first - 255).sum(axis=2) < 30).any()  # imagery and the white outline


def test_preview_under_qgis_process_without_a_display(qgis_process, scene, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    polygons, semantic = tmp_path / "out" / "masks.gpkg", tmp_path / "out" / "semantic.tif"
    (tmp_path / "out").mkdir()
    results = json_results(qgis_process(
        "--json", "run", SEGMENT, "--", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}", "CLASS_FIELD=label",
        "BACKEND=1", "EMBEDDING_CACHE=false", "PREVIEW=true", f"OUTPUT_POLYGONS={polygons}",
        f"OUTPUT_SEMANTIC={semantic}", f"OUTPUT_INSTANCES={tmp_path / 'out' / 'instances.tif'}"))
    assert results["OUTPUT_PREVIEW"] == str(tmp_path / "out" / "masks_preview.png")
    assert results["OUTPUT_CONTACT_SHEET"] == str(tmp_path / "out" / "masks_worst.png")
    check_overview(results["OUTPUT_PREVIEW"], semantic)
    check_contact_sheet(results["OUTPUT_CONTACT_SHEET"], int(results["OK_COUNT"]))


def test_preview_needs_the_polygon_output(qgis_app, scene, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="no mask polygon output"):
        processing.run(SEGMENT, {"INPUT": scene["raster"], "BOXES": scene["boxes"], "BACKEND": GRABCUT,
                                 "PREVIEW": True, "OUTPUT_SEMANTIC": str(tmp_path / "s.tif"),
                                 "OUTPUT_INSTANCES": None, "OUTPUT_POLYGONS": None})
    assert not (tmp_path / "s.tif").exists()
    results = processing.run(SEGMENT, {"INPUT": scene["raster"], "BOXES": scene["boxes"], "BACKEND": GRABCUT,
                                       "OUTPUT_POLYGONS": str(tmp_path / "m.gpkg")})
    assert results["OUTPUT_PREVIEW"] is None and not list(tmp_path.glob("*.png"))  # off by default


def test_cli_segment_preview(scene, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "samrs_qgis", "segment", scene["raster"], scene["boxes"],
                             "--out-dir", out, "--class-field", "label", "--no-cache", "--quiet", "--preview"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    ok(result)
    overview, sheet = out / "scene_masks_preview.png", out / "scene_masks_worst.png"
    assert f"Preview: {overview}" in result.stdout and str(sheet) in result.stdout
    check_overview(overview, out / "scene_semantic.tif")
    check_contact_sheet(sheet, 3)
    bad(run_cli("segment", scene["raster"], scene["boxes"], "--semantic", tmp_path / "s.tif", "--preview"),
        "--preview", "--polygons")
    assert not (tmp_path / "s.tif").exists()


def test_cli_preview_without_pyqgis_exits_2_before_the_run(scene, tmp_path):
    code = ("import sys; sys.modules['qgis'] = None; from samrs_qgis.cli import main; "
            f"sys.exit(main(['segment', {scene['raster']!r}, {scene['boxes']!r}, '--out-dir', "
            f"{str(tmp_path / 'out')!r}, '--quiet', '--preview']))")
    result = bad(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120),
                 "--preview needs QGIS")
    assert "PyQGIS" in result.stderr and not (tmp_path / "out").exists()


# -- the layer group of a loaded run --------------------------------------------------------------

def run_and_load(scene, tmp_path, raster_param):
    import processing

    out = tmp_path / "loaded"
    out.mkdir(parents=True, exist_ok=True)
    return processing.runAndLoadResults(SEGMENT, {
        "INPUT": raster_param, "BOXES": scene["boxes"], "CLASS_FIELD": "label", "BACKEND": GRABCUT,
        "EMBEDDING_CACHE": False, "OUTPUT_POLYGONS": str(out / "masks.gpkg"),
        "OUTPUT_SEMANTIC": str(out / "semantic.tif"), "OUTPUT_INSTANCES": str(out / "instances.tif")})


def test_loaded_outputs_are_grouped_above_the_raster_and_styled(qgis_app, scene, tmp_path):
    from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsVectorLayer

    project = QgsProject.instance()
    project.clear()
    root = project.layerTreeRoot()
    raster = QgsRasterLayer(scene["raster"], "scene")
    boxes = QgsVectorLayer(scene["boxes"], "boxes", "ogr")
    project.addMapLayer(raster, False)
    project.addMapLayer(boxes, False)
    folder = root.addGroup("imagery")
    root.insertLayer(0, boxes)  # boxes on top, then the folder holding the raster
    folder.addLayer(QgsRasterLayer(scene["raster"], "other"))  # not the source: the group goes above 'scene'
    project.addMapLayer(folder.children()[0].layer(), False)
    folder.addLayer(raster)
    try:
        run_and_load(scene, tmp_path, raster.id())
        groups = [g for g in root.findGroups(True) if g.name() == "SAMRS scene"]
        assert len(groups) == 1
        group = groups[0]
        assert group.parent() is folder
        names = [child.name() for child in folder.children()]
        assert names == ["other", "SAMRS scene", "scene"]
        assert [child.layer().name() for child in group.children()] == ["masks", "classes", "instances"]
        assert [node.name() for node in root.children()] == ["boxes", "imagery"]  # nothing loaded outside the group
        masks, classes, instances = (child.layer() for child in group.children())
        assert masks.renderer().type() == "categorizedSymbol"
        assert {c.value() for c in masks.renderer().categories()} == {"tank", "pond"}
        assert classes.renderer().type() == "paletted" and instances.renderer().type() == "paletted"
        assert {c.label for c in classes.renderer().classes()} == {"tank", "pond"}

        run_and_load(scene, tmp_path / "second", scene["raster"])  # the raster by path: found by its file
        names = [child.name() for child in folder.children()]
        assert names == ["other", "SAMRS scene", "SAMRS scene", "scene"]
        assert all(isinstance(n, QgsLayerTreeGroup) and len(n.children()) == 3 for n in folder.children()[1:3])
    finally:
        project.clear()


def test_loaded_outputs_of_a_raster_not_in_the_project_are_grouped_at_the_top(qgis_app, scene, tmp_path):
    from qgis.core import QgsProject, QgsVectorLayer

    project = QgsProject.instance()
    project.clear()
    project.addMapLayer(QgsVectorLayer(scene["boxes"], "boxes", "ogr"))
    try:
        run_and_load(scene, tmp_path, scene["raster"])
        root = project.layerTreeRoot()
        assert [node.name() for node in root.children()] == ["SAMRS scene", "boxes"]
        assert [c.name() for c in root.children()[0].children()] == ["masks", "classes", "instances"]
    finally:
        project.clear()

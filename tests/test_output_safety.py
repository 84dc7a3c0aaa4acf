"""Outputs never replace inputs: every case here destroyed an input or an output without a word in 0.2.0
(exit 0); now each is refused before any work with a message naming both files, and every input is
byte for byte what it was. GeoPackage outputs add or replace their own layer and keep the others."""
import hashlib
import os
import random
import shutil

import fiona
import pytest

import tools_data as td
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.path_safety import check_output_paths, same_file
from samrs.samrs_qgis.styles import LAYER_STYLES
from test_tools_cli import bad, ok, run_cli


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def digests(folder):
    return {p: digest(os.path.join(folder, p)) for p in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, p))}


@pytest.fixture
def scene(tmp_path):
    raster = td.scene_raster(tmp_path / "in.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    return tmp_path, raster, boxes


@pytest.mark.parametrize("option,target", [
    ("--instances", "in.tif"), ("--semantic", "in.tif"), ("--instances", "sub/../in.tif"),
    ("--polygons", "boxes.gpkg"), ("--polygons", "./boxes.gpkg"), ("--instances", "link.tif"),
    ("--instances", "hard.tif")])
def test_segment_refuses_an_output_that_is_an_input(scene, option, target):
    tmp_path, raster, boxes = scene
    (tmp_path / "sub").mkdir()
    os.symlink(raster, tmp_path / "link.tif")
    os.link(raster, tmp_path / "hard.tif")
    before = digests(tmp_path)
    result = bad(run_cli("segment", raster, boxes, option, tmp_path / target, "--no-cache", "--quiet"),
                 "would destroy an input")
    assert str(tmp_path / target) in result.stderr
    assert digests(tmp_path) == before  # nothing written, nothing replaced


def test_a_box_layer_named_like_the_output_in_the_out_dir_is_kept(tmp_path):
    raster = td.scene_raster(tmp_path / "scene.tif")
    out = tmp_path / "out"
    out.mkdir()
    boxes = td.scene_boxes(out / "scene_masks.gpkg")  # exactly what --out-dir would name the polygon output
    before = digest(boxes)
    bad(run_cli("segment", raster, boxes, "--out-dir", out, "--no-cache", "--quiet"), "box layer", "scene_masks.gpkg")
    assert digest(boxes) == before and sorted(os.listdir(out)) == ["scene_masks.gpkg"]


def test_two_outputs_of_one_name_are_refused(scene):
    tmp_path, raster, boxes = scene
    bad(run_cli("segment", raster, boxes, "--instances", tmp_path / "o.tif", "--semantic", tmp_path / "o.tif",
                "--quiet"), "instance raster output and the semantic raster output are the same file")
    assert not (tmp_path / "o.tif").exists()


def test_a_style_beside_an_input_is_not_replaced(scene):
    tmp_path, raster, boxes = scene
    (tmp_path / "in.qml").write_text("<qgis>the user's own style</qgis>")
    bad(run_cli("segment", raster, boxes, "--polygons", tmp_path / "in.gpkg", "--quiet"), "in.qml")
    assert (tmp_path / "in.qml").read_text() == "<qgis>the user's own style</qgis>"


def test_report_refuses_to_write_over_a_subset_layer(tmp_path):
    folder = td.write_dataset_folder(tmp_path / "ds")
    layer = os.path.join(folder, "geo", "img0.gpkg")
    before = digest(layer)
    bad(run_cli("report", folder, "--html", layer, "--quiet"), "would destroy an input", layer)
    bad(run_cli("report", f"one={layer}", "--html", layer, "--quiet"), "would destroy an input")
    assert digest(layer) == before
    ok(run_cli("report", folder, "--html", tmp_path / "r.html", "--quiet"))


def test_rerun_into_the_same_outputs_is_allowed(scene):
    tmp_path, raster, boxes = scene
    for _ in range(2):  # an earlier run's outputs are outputs, not inputs
        ok(run_cli("segment", raster, boxes, "--out-dir", tmp_path / "out", "--no-cache", "--quiet"))


def _write_layer(path, layer, count):
    schema = {"geometry": "Polygon", "properties": {"n": "int"}}
    square = {"type": "Polygon", "coordinates": [[(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]]}
    with fiona.open(path, "w", driver="GPKG", layer=layer, schema=schema, crs="EPSG:32617") as dst:
        for n in range(count):
            dst.write({"geometry": square, "properties": {"n": n}})


def _style_rows(path):
    with fiona.open(path, layer=LAYER_STYLES) as table:
        return sorted((f["properties"]["f_table_name"], f["properties"]["styleName"]) for f in table)


def test_polygon_output_into_a_geopackage_keeps_its_other_layers_and_their_styles(scene):
    tmp_path, raster, boxes = scene
    project = tmp_path / "project.gpkg"
    _write_layer(project, "roads", 3)
    _write_layer(project, "fields", 2)
    from samrs.samrs_qgis.styles import store_default_style

    store_default_style(str(project), "roads", "<qgis>roads</qgis>")
    (tmp_path / "project.qml").write_text("<qgis>the project file's own style</qgis>")
    for _ in range(2):  # the second run replaces its own layer and style, nothing else
        ok(run_cli("segment", raster, boxes, "--polygons", project, "--no-cache", "--quiet"))
        assert sorted(fiona.listlayers(project)) == sorted(["roads", "fields", "masks", LAYER_STYLES])
        assert [len(fiona.open(project, layer=name)) for name in ("roads", "fields", "masks")] == [3, 2, len(td.DISCS)]
        rows = _style_rows(project)
        assert [r for r in rows if r[0] == "roads"] and len([r for r in rows if r[0] == "masks"]) == 1
    assert (tmp_path / "project.qml").read_text() == "<qgis>the project file's own style</qgis>"


def test_imported_boxes_are_added_to_a_geopackage_as_a_layer(tmp_path, dota):
    target = tmp_path / "multi.gpkg"
    _write_layer(target, "roads", 3)
    ok(run_cli("import-annotations", dota / "b.txt", "--out", target, "--layer-name", "newboxes"))
    assert sorted(fiona.listlayers(target)) == ["newboxes", "roads"]
    assert len(fiona.open(target, layer="roads")) == 3 and len(fiona.open(target, layer="newboxes")) > 0


def test_processing_refuses_an_output_that_is_its_input_raster(qgis_app, scene):
    import processing
    from qgis.core import QgsProcessingException

    tmp_path, raster, boxes = scene
    before = digest(raster)
    with pytest.raises(QgsProcessingException, match="would destroy an input"):
        processing.run("samrs:segmentboxes", {"INPUT": raster, "BOXES": boxes, "BACKEND": 1,
                                              "OUTPUT_INSTANCES": raster, "OUTPUT_SEMANTIC": None,
                                              "OUTPUT_POLYGONS": None})
    assert digest(raster) == before


def test_no_input_is_ever_an_allowed_output_over_random_spellings(tmp_path):
    """Random combinations of inputs and outputs spelt as aliases, symbolic and hard links and repeats:
    the check refuses exactly the combinations where an output is an input or another output."""
    (tmp_path / "d" / "e").mkdir(parents=True)
    inputs = [tmp_path / "a.tif", tmp_path / "d" / "b.gpkg"]
    for path in inputs:
        path.write_bytes(os.urandom(64))
    os.symlink(inputs[0], tmp_path / "d" / "a-link.tif")
    os.link(inputs[1], tmp_path / "d" / "e" / "b-hard.gpkg")
    spellings = {
        str(inputs[0]): [str(inputs[0]), str(tmp_path / "d" / ".." / "a.tif"), str(tmp_path / "d" / "a-link.tif"),
                         str(tmp_path / "d" / "e" / ".." / ".." / "a.tif")],
        str(inputs[1]): [str(inputs[1]), str(tmp_path / "d" / "e" / "b-hard.gpkg"), str(tmp_path / "d" / "." / "b.gpkg")],
    }
    fresh = [str(tmp_path / "out1.tif"), str(tmp_path / "d" / "out2.gpkg"), str(tmp_path / "d" / "e" / "out3.tif")]
    rng = random.Random(7)
    refused = allowed = 0
    for _ in range(300):
        outputs = []
        for _ in range(rng.randint(1, 3)):
            pool = rng.choice([fresh, rng.choice(list(spellings.values()))])
            outputs.append(rng.choice(pool))
        clash = any(same_file(o, i) for o in outputs for i in map(str, inputs)) or \
            any(os.path.realpath(a) == os.path.realpath(b) for k, a in enumerate(outputs) for b in outputs[k + 1:])
        try:
            check_output_paths({f"output {k}": o for k, o in enumerate(outputs)},
                               {"raster": str(inputs[0]), "box layer": str(inputs[1])})
            assert not clash, outputs
            allowed += 1
        except InputError:
            assert clash, outputs
            refused += 1
    assert refused > 50 and allowed > 50
    shutil.rmtree(tmp_path / "d")


def test_ablation_refuses_to_write_over_its_reference(scene):
    tmp_path, raster, boxes = scene
    reference = tmp_path / "abl" / "box" / "in_masks.gpkg"  # an earlier ablation's masks used as the reference
    reference.parent.mkdir(parents=True)
    shutil.copy(td.reference_discs(tmp_path / "ref.gpkg"), reference)
    before = digest(reference)
    bad(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", tmp_path / "abl", "--prompts", "box",
                "--quiet"), "box mask polygons output", "reference masks")
    assert digest(reference) == before


def test_evaluation_tables_never_replace_the_masks_they_score(tmp_path):
    produced, reference = td.write_squares(tmp_path)
    grid = td.scene_raster(tmp_path / "grid.tif")
    before = {p: digest(p) for p in (produced, reference)}
    bad(run_cli("evaluate", produced, reference, "--grid", grid, "--metrics", reference, "--quiet"),
        "metrics table output", "reference masks")
    bad(run_cli("evaluate", produced, reference, "--grid", grid, "--metrics", tmp_path / "a.csv",
                "--instances-csv", tmp_path / "a.csv", "--quiet"), "are the same file")
    bad(run_cli("compare", f"one={produced}", "--reference", reference, "--grid", grid, "--out", produced, "--quiet"),
        "comparison table output", "produced masks")
    assert {p: digest(p) for p in (produced, reference)} == before and not (tmp_path / "a.csv").exists()


def test_evaluate_algorithm_refuses_to_write_over_its_reference(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    produced, reference = td.write_squares(tmp_path)
    grid = td.scene_raster(tmp_path / "grid.tif")
    before = digest(reference)
    with pytest.raises(QgsProcessingException, match="would destroy an input"):
        processing.run("samrs:evaluate", {"PRODUCED": produced, "REFERENCE": reference, "GRID": grid,
                                          "OUTPUT_METRICS": reference})
    assert digest(reference) == before

"""Bad input gives a clear one-line error naming the input and the fix, or a reported problem, never a
traceback and never a silent nothing. Each test states what happened before, and checks the command line
(``python -m samrs_qgis``, as a user runs it) and, where the tool exists, QGIS Processing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tools_data as td
from support import pixel_box, read_features, write_boxes, write_raster
from test_tools_processing import RecordingFeedback, run

REPO = Path(__file__).resolve().parent.parent
IMPORT, EVALUATE, SEGMENT = "samrs:importannotations", "samrs:evaluate", "samrs:segmentboxes"
SAM = 0
GOOD_DOTA = "10 10 50 10 50 50 10 50 plane 0\n100 100 150 100 150 150 100 150 ship 0\n"
BINARY = b"II*\x00\x08\x00\x00\x00\x12\x00\x00\x01\x03\x00\x01\x00\x00\x00\x90\x01" * 50  # a TIFF's first bytes


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "samrs_qgis", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def bad(result, *phrases, code=2):
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    return result


def error_line(result):
    """The one line the command line prints for an error."""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("samrs: error:")]
    return line


def failure(alg, params, feedback=None):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        run(alg, params, feedback)
    return str(info.value)


def write(folder, name, content):
    path = Path(folder) / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- annotation import: empty, binary and wholly malformed files --------------------------------------

def test_an_empty_annotation_file_is_reported_and_nothing_is_written(qgis_app, tmp_path):
    # Before: "Imported 0 box(es) from 1 file(s) …; 0 problem(s)", exit 0 and an empty box layer.
    empty = write(tmp_path, "P0001.txt", "")
    out = tmp_path / "boxes.gpkg"
    result = bad(run_cli("import-annotations", empty, "--out", out), f"problem: {empty}: has no objects",
                 f"Nothing to import: the annotation file(s) '{empty}' have no objects")
    assert not out.exists()
    feedback = RecordingFeedback()
    message = failure(IMPORT, {"ANNOTATIONS": [str(empty)], "OUTPUT": str(out)}, feedback)
    assert "have no objects" in message and str(empty) in message and "Traceback" not in message
    assert any("has no objects" in w for w in feedback.warnings) and not out.exists()
    # an empty CSV too (before: "cannot be read: no column for …; the header is None")
    empty_csv = write(tmp_path, "boxes.csv", "")
    assert "have no objects" in error_line(bad(run_cli("import-annotations", empty_csv, "--out", out)))
    assert result.stdout == ""


def test_an_empty_file_beside_good_ones_is_a_problem_and_the_rest_is_imported(qgis_app, tmp_path):
    # Before: the empty file was not mentioned at all.
    folder = tmp_path / "labelTxt"
    folder.mkdir()
    write(folder, "P0001.txt", GOOD_DOTA)
    empty = write(folder, "P0002.txt", "imagesource:GoogleEarth\ngsd:0.5\n")  # only a header: no objects
    out = tmp_path / "boxes.gpkg"
    result = ok(run_cli("import-annotations", folder, "--out", out))
    assert "Imported 2 box(es) from 2 file(s)" in result.stdout and "1 problem(s)" in result.stdout
    assert f"problem: {empty}: has no objects" in result.stderr
    assert len(read_features(out, layer="boxes")) == 2
    feedback = RecordingFeedback()
    results = run(IMPORT, {"FOLDER": str(folder), "OUTPUT": str(tmp_path / "p.gpkg")}, feedback)
    assert (results["ANNOTATION_COUNT"], results["PROBLEM_COUNT"]) == (2, 1)
    assert feedback.warnings == [f"{empty}: has no objects (an empty annotation file, or only a header); nothing "
                                 "was imported from it"]


@pytest.mark.parametrize("fmt", ["auto", "dota"])
def test_a_binary_file_is_not_a_text_annotation_file(qgis_app, tmp_path, fmt):
    # Before: exit 0 and an empty layer, with the problem "cannot be read: the format cannot be recognised …"
    # (auto) or "cannot be read: 'utf-8' codec can't decode byte 0x90 in position 18" (dota).
    image = write(tmp_path, "P0001.txt", BINARY)
    out = tmp_path / "boxes.gpkg"
    result = bad(run_cli("import-annotations", image, "--format", fmt, "--out", out),
                 f"problem: {image}: is not a text annotation file")
    line = error_line(result)
    assert f"No object could be imported from '{image}': is not a text annotation file" in line
    assert "codec" not in result.stderr and not out.exists()
    message = failure(IMPORT, {"ANNOTATIONS": [str(image)], "FORMAT": ["auto", "dota"].index(fmt),
                               "OUTPUT": str(out)})
    assert "is not a text annotation file" in message and not out.exists()


def test_a_wholly_malformed_file_reports_every_line(qgis_app, tmp_path):
    # Before, in auto format: one problem "cannot be read: the format cannot be recognised …" without any line,
    # exit 0 and an empty layer; with --format dota every line was reported but still exit 0 and an empty layer.
    junk = write(tmp_path, "P0001.txt", "hello world\nfoo bar baz\n10,10,50,10,50,50,10,50,plane,0\n")
    out = tmp_path / "boxes.gpkg"
    for fmt in ("auto", "dota"):
        result = bad(run_cli("import-annotations", junk, "--format", fmt, "--out", out),
                     f"problem: {junk}:1: object 1: 2 values", f"problem: {junk}:2: object 2: 3 values",
                     f"problem: {junk}:3: object 3: 1 values")
        assert f"No object could be imported from '{junk}'" in error_line(result) and not out.exists()
        recognised = "the format cannot be recognised: 0 of 3 object line(s) are DOTA lines" in result.stderr
        assert recognised == (fmt == "auto")  # given the format, only the lines are reported
    feedback = RecordingFeedback()
    message = failure(IMPORT, {"ANNOTATIONS": [str(junk)], "OUTPUT": str(out)}, feedback)
    assert f"No object could be imported from '{junk}'" in message
    assert [w.split(": object")[0] for w in feedback.warnings[1:]] == [f"{junk}:{n}" for n in (1, 2, 3)]
    assert not out.exists()


def test_a_yolo_file_is_named_as_such(tmp_path):
    # Before: "cannot be read: the format cannot be recognised (…)", exit 0 and an empty layer.
    yolo = write(tmp_path, "P0001.txt", "0 0.5 0.5 0.2 0.1\n1 0.25 0.25 0.1 0.1\n")
    bad(run_cli("import-annotations", yolo, "--out", tmp_path / "b.gpkg"),
        f"problem: {yolo}:1: object 1: 5 values", "looks like a YOLO line", f"problem: {yolo}:2: object 2: 5 values")


def test_an_empty_annotation_file_is_still_an_image_without_boxes_in_a_dataset(tmp_path):
    # segment-dataset keeps treating an empty annotation file as "no_boxes". A binary one failed its image before
    # too, but as "cannot be read: the format cannot be recognised (not DOTA lines, …)"; now it says what it is.
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    small = np.random.default_rng(5).integers(60, 140, (3, 32, 32), dtype=np.uint8)
    for stem in ("empty", "binary"):
        write_raster(images / f"{stem}.tif", small, td.TRANSFORM)
    write(labels, "empty.txt", "")
    write(labels, "binary.txt", BINARY)
    result = run_cli("segment-dataset", images, labels, "--out-dir", tmp_path / "out", "--backend", "grabcut",
                     "--quiet")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stdout + result.stderr
    with open(tmp_path / "out" / "manifest.json", encoding="utf-8") as f:
        entries = json.load(f)["images"]
    assert entries["empty"]["status"] == "no_boxes"
    assert entries["binary"]["status"] == "failed"
    assert "is not a text annotation file" in entries["binary"]["error"]


# -- DOTA lines: class names with spaces, tolerant detection -----------------------------------------

def test_dota_class_names_with_spaces_and_an_odd_first_line(qgis_app, tmp_path):
    # Before, in auto format: the whole file was refused ("cannot be read: the format cannot be recognised …",
    # no line number) because its first object line had a class name with a space, or was odd; exit 0, empty
    # layer. Now the file is DOTA (most lines are), "small vehicle" is a class, and the odd line is reported.
    path = write(tmp_path, "P0001.txt", "imagesource:GoogleEarth\ngsd:0.5\n"
                                        "60 60 90 60 90 90 60 90 small vehicle 1\n"
                                        "913.0 1020.0 930.0 1020.0 930.0\n" + GOOD_DOTA +
                                        "200 200 240 200 240 240 200 240 large  vehicle\n")
    out = tmp_path / "boxes.gpkg"
    result = ok(run_cli("import-annotations", path, "--out", out))
    assert "Imported 4 box(es) from 1 file(s)" in result.stdout and "1 problem(s)" in result.stdout
    assert f"problem: {path}:4: object 2: 5 values" in result.stderr
    rows = read_features(out, layer="boxes")
    assert [(r["class_name"], r["difficult"]) for r in rows] == [("small vehicle", 1), ("plane", 0), ("ship", 0),
                                                                  ("large vehicle", None)]
    feedback = RecordingFeedback()
    results = run(IMPORT, {"ANNOTATIONS": [str(path)], "OUTPUT": str(tmp_path / "p.gpkg")}, feedback)
    assert (results["ANNOTATION_COUNT"], results["PROBLEM_COUNT"], results["CLASS_COUNT"]) == (4, 1, 4)
    assert feedback.warnings[0].startswith(f"{path}:4: object 2: 5 values")


# -- evaluate: no produced partner, empty produced masks ---------------------------------------------

def _square(c0, r0, c1, r1):
    return pixel_box(td.TRANSFORM, c0, r0, c1, r1)


@pytest.fixture
def squares(tmp_path):
    grid = td.scene_raster(tmp_path / "scene.tif")
    produced, reference = td.write_squares(tmp_path)
    return grid, produced, reference


def _evaluate_both(tmp_path, grid, produced, reference, *cli_args, **params):
    """(CLI result, Processing results, Processing warnings) of one evaluation."""
    result = run_cli("evaluate", produced, reference, "--grid", grid, "--metrics", tmp_path / "m.csv", "--quiet",
                     *cli_args)
    feedback = RecordingFeedback()
    results = run(EVALUATE, {"PRODUCED": str(produced), "REFERENCE": str(reference), "GRID": grid,
                             "OUTPUT_METRICS": str(tmp_path / "p.csv"), **params}, feedback)
    return ok(result), results, feedback.warnings


def test_evaluate_warns_when_no_produced_id_matches(qgis_app, tmp_path, squares):
    # Before: "2 instances in 1 image(s): mean IoU 0.000 …", exit 0 and no word about the keys.
    grid, _, reference = squares
    other = write_boxes(tmp_path / "other.gpkg", [_square(10, 10, 30, 30), _square(60, 60, 90, 80)],
                        properties=[{"instance_id": 100 + i, "obj": 6 + i, "class_name": "object", "score": 1.0,
                                     "status": "ok"} for i in (1, 2)])
    result, results, warnings = _evaluate_both(tmp_path, grid, other, reference)
    expected = "no produced mask matches a reference instance by key field 'instance_id'"
    assert f"warning: {expected}" in result.stderr
    assert "reference keys 1, 2; produced keys 101, 102" in result.stderr
    assert "check --key-field / --produced-key-field" in result.stderr
    assert results["MEAN_IOU"] == 0 and any(w.startswith(expected) for w in warnings)
    # with different key fields the warning names both
    result = ok(run_cli("evaluate", other, reference, "--grid", grid, "--produced-key-field", "obj", "--quiet"))
    assert "by key ('instance_id' in the reference, 'obj' in the produced masks)" in result.stderr
    assert "produced keys 7, 8" in result.stderr


def test_evaluate_warns_about_an_empty_produced_layer_and_scores_it_zero(qgis_app, tmp_path, squares):
    # Before: exit 0 with zero metrics and no warning. Decision: not an error (a method that found nothing is
    # truly scored 0, and compare/ablation keep its row), but a warning naming what to check.
    grid, _, reference = squares
    empty = write_boxes(tmp_path / "empty.gpkg", [], properties=[],
                        schema={"instance_id": "int", "class_name": "str", "score": "float", "status": "str"})
    result, results, warnings = _evaluate_both(tmp_path, grid, empty, reference)
    assert "warning: the produced masks hold no instance at all, so every reference instance there counts as " \
           "missed" in result.stderr
    assert "2 instances in 1 image(s): mean IoU 0.000" in result.stdout
    assert results["MEAN_IOU"] == 0 and results["INSTANCE_COUNT"] == 2
    assert any("hold no instance at all" in w for w in warnings)


def test_evaluate_warns_when_every_matched_mask_is_empty(qgis_app, tmp_path, squares):
    # Before: exit 0 with zero metrics and no warning (e.g. every box 'outside' the raster).
    grid, _, reference = squares
    nothing = write_boxes(tmp_path / "nothing.gpkg", [None, None],
                          properties=[{"instance_id": i, "class_name": "object", "score": 0.0, "status": "outside"}
                                      for i in (1, 2)])
    result, _, warnings = _evaluate_both(tmp_path, grid, nothing, reference)
    assert "warning: every produced mask that matches a reference instance is empty" in result.stderr
    assert any("status other than 'ok'" in w for w in warnings)


def test_evaluate_without_a_warning_when_ids_match(squares, tmp_path):
    grid, produced, reference = squares
    assert "warning" not in ok(run_cli("evaluate", produced, reference, "--grid", grid, "--quiet")).stderr


def test_a_grid_without_crs_is_named_once(qgis_app, tmp_path, squares):
    # Before: "The grid raster 'g.tif' has no CRS, so its polygons cannot be placed on the grid of 'g.tif'."
    _, produced, reference = squares
    grid = write_raster(tmp_path / "nocrs.tif", np.zeros((1, td.SIZE, td.SIZE), np.uint8), td.TRANSFORM, crs=None)
    line = error_line(bad(run_cli("evaluate", produced, reference, "--grid", grid)))
    assert line.count(grid) == 1 and "has no CRS but the reference layer" in line and "gdal_edit.py -a_srs" in line
    message = failure(EVALUATE, {"PRODUCED": produced, "REFERENCE": reference, "GRID": grid,
                                 "OUTPUT_METRICS": str(tmp_path / "x.csv")})
    assert message.count(grid) == 1 and "has no CRS" in message
    # a layer without CRS over a georeferenced grid names the layer, and the grid once
    no_crs = write_boxes(tmp_path / "nocrs.gpkg", [_square(10, 10, 30, 30)], crs=None,
                         properties=[{"instance_id": 1}])
    line = error_line(bad(run_cli("evaluate", produced, no_crs, "--grid", squares[0])))
    assert f"The reference layer '{no_crs}' has no CRS" in line and line.count(squares[0]) == 1


# -- other inputs named with their fix -----------------------------------------------------------------

def test_a_checkpoint_folder_says_to_give_the_pth_inside(qgis_app, tmp_path):
    # Before: "SAM checkpoint '<folder>' does not exist." for a folder that plainly exists.
    raster, boxes = td.scene_raster(tmp_path / "scene.tif"), td.scene_boxes(tmp_path / "boxes.gpkg")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    result = bad(run_cli("segment", raster, boxes, "--checkpoint", folder, "--out-dir", tmp_path / "out"))
    assert f"SAM checkpoint '{folder}' is a folder without a model file" in error_line(result)
    (folder / "sam_vit_b_01ec64.pth").write_bytes(b"")
    result = bad(run_cli("segment", raster, boxes, "--checkpoint", folder, "--out-dir", tmp_path / "out"))
    assert error_line(result).endswith(f"SAM checkpoint '{folder}' is a folder; give the model file inside it "
                                       "(sam_vit_b_01ec64.pth).")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    message = failure(SEGMENT, {"INPUT": raster, "BOXES": boxes, "BACKEND": SAM, "CHECKPOINT": str(folder),
                                "OUTPUT_POLYGONS": str(tmp_path / "m.gpkg")})
    assert "is a folder" in message and "sam_vit_b_01ec64.pth" in message


def test_a_missing_layer_lists_the_layers_of_the_file(tmp_path):
    # Before: "Box layer 'boxes.gpkg' cannot be opened by OGR (Null layer: 'nope'). Give a vector file …"
    raster, boxes = td.scene_raster(tmp_path / "scene.tif"), td.scene_boxes(tmp_path / "boxes.gpkg")
    result = bad(run_cli("segment", raster, boxes, "--layer", "nope", "--backend", "grabcut",
                         "--out-dir", tmp_path / "out"))
    line = error_line(result)
    assert f"Box layer '{boxes}' has no layer 'nope'; its layers are: boxes." in line and "Null layer" not in line


def test_the_evaluation_names_the_layers_of_a_source_without_the_layer(tmp_path, squares):
    # Before: "… cannot be opened by OGR (Null layer: 'nope') …"
    from samrs.samrs_qgis.errors import InputError
    from samrs.samrs_qgis.evaluation import PolygonMasks, evaluate

    grid, produced, reference = squares
    with pytest.raises(InputError, match=r"has no layer 'nope'; its layers are: reference\."):
        evaluate(produced, PolygonMasks(reference, "nope"), grid)


def test_bad_output_extensions_are_named_with_the_fix(tmp_path):
    raster, boxes = td.scene_raster(tmp_path / "scene.tif"), td.scene_boxes(tmp_path / "boxes.gpkg")
    out = tmp_path / "out.png"
    line = error_line(bad(run_cli("segment", raster, boxes, "--backend", "grabcut", "--instances", out)))
    assert f"'{out}' must be a GeoTIFF (.tif)" in line
    line = error_line(bad(run_cli("import-annotations", write(tmp_path, "a.txt", GOOD_DOTA),
                                  "--out", tmp_path / "boxes.txt")))
    assert "must be a GeoPackage; give a name ending in .gpkg" in line


def test_a_bad_polygon_extension_reads_clearly(tmp_path):
    raster, boxes = td.scene_raster(tmp_path / "scene.tif"), td.scene_boxes(tmp_path / "boxes.gpkg")
    line = error_line(bad(run_cli("segment", raster, boxes, "--backend", "grabcut", "--polygons", tmp_path / "m.xyz")))
    assert "m.xyz" in line and "'.xyz'" in line and ".gpkg" in line and "not chosen by here" not in line

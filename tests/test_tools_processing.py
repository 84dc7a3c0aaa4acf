"""The tools next to segmentation, run by real QGIS Processing (``processing.run`` and ``qgis_process
--json``): ``samrs:importannotations``, ``samrs:datasetreport``, ``samrs:evaluate``, and the prompt and
post-processing parameters of ``samrs:segmentboxes``. Inputs are small files with known answers."""
import csv
import json

import pytest

import tools_data as td
from support import pixel_box, read_features

SEGMENT, IMPORT, REPORT, EVALUATE = "samrs:segmentboxes", "samrs:importannotations", "samrs:datasetreport", \
    "samrs:evaluate"
SAM, GRABCUT = 0, 1
POINT_PROMPT = 2


class RecordingFeedback:
    """A QgsProcessingFeedback that keeps the warnings it is given."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class _Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.warnings = []

            def pushWarning(self, text):  # noqa: N802
                self.warnings.append(text)
                super().pushWarning(text)

        return _Feedback()


def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(alg, params, feedback=feedback or QgsProcessingFeedback())


def failure(alg, params):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        run(alg, params)
    return str(info.value)


def json_results(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.find("{"):])["results"]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- registration ---------------------------------------------------------------------------------

def test_the_tools_are_registered_with_help_and_icon(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingOutputHtml

    registry = QgsApplication.processingRegistry()
    for alg_id, name in ((IMPORT, "Import detection annotations"), (REPORT, "Dataset statistics report"),
                         (EVALUATE, "Evaluate masks against reference")):
        alg = registry.algorithmById(alg_id)
        assert alg is not None and alg.provider().id() == "samrs", alg_id
        assert alg.displayName() == name and not alg.icon().isNull() and len(alg.shortHelpString()) > 200
    report = registry.algorithmById(REPORT)
    assert isinstance(report.outputDefinition("OUTPUT_HTML"), QgsProcessingOutputHtml)  # shown in the results viewer
    evaluate = registry.algorithmById(EVALUATE)
    assert {"MEAN_IOU", "WEIGHTED_IOU", "AP", "AP50"} <= {o.name() for o in evaluate.outputDefinitions()}
    segment = registry.algorithmById(SEGMENT)
    names = [p.name() for p in segment.parameterDefinitions()]
    assert names.index("CLIP_TO_BOX") < names.index("FILL_HOLES") < names.index("MIN_ISLAND_PX") \
        < names.index("KEEP_LARGEST")
    for name in ("PROMPT", "FILL_HOLES", "MIN_ISLAND_PX", "KEEP_LARGEST"):  # main group, not advanced
        assert not segment.parameterDefinition(name).flags() & segment.parameterDefinition(name).FlagAdvanced
    assert "rbox-mask" in segment.shortHelpString() and "fill holes" in segment.shortHelpString()


# -- importannotations ----------------------------------------------------------------------------

def test_import_dota_folder_over_a_georeferenced_image(qgis_app, tmp_path, dota):
    raster = td.scene_raster(tmp_path / "scene.tif")
    out = str(tmp_path / "boxes.gpkg")
    feedback = RecordingFeedback()
    results = run(IMPORT, {"FOLDER": str(dota), "IMAGE": raster, "OUTPUT": out}, feedback)
    assert (results["ANNOTATION_COUNT"], results["PROBLEM_COUNT"], results["FILE_COUNT"]) == (4, 1, 2)
    assert results["OUTPUT"] == out and results["CLASS_COUNT"] == 3
    assert len(feedback.warnings) == 1 and f"{dota / 'a.txt'}:5:" in feedback.warnings[0]
    rows = read_features(out, layer="boxes")
    assert [r["class_name"] for r in rows] == ["storage-tank", "swimming-pool", "storage-tank", "plane"]
    assert [r["line"] for r in rows] == [3, 4, 6, 1]
    # pixel corners placed by the image's geotransform
    assert rows[0]["geometry"].equals_exact(pixel_box(td.TRANSFORM, 15, 15, 53, 53).buffer(0), 1e-6) or \
        rows[0]["geometry"].symmetric_difference(pixel_box(td.TRANSFORM, 15, 15, 53, 53)).area < 1e-6
    # the imported boxes segment as they are
    seg = run(SEGMENT, {"INPUT": raster, "BOXES": out, "CLASS_FIELD": "class_name", "BACKEND": GRABCUT,
                        "OUTPUT_POLYGONS": str(tmp_path / "masks.gpkg")})
    assert seg["BOX_COUNT"] == 4


def test_import_caps_the_problem_warnings(qgis_app, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(f"1 2 3 oops{i}\n" for i in range(60)) + td.DOTA_B)
    feedback = RecordingFeedback()
    results = run(IMPORT, {"ANNOTATIONS": [str(bad)], "FORMAT": 1, "OUTPUT": str(tmp_path / "b.gpkg")}, feedback)
    assert (results["ANNOTATION_COUNT"], results["PROBLEM_COUNT"], results["FILE_COUNT"]) == (1, 60, 1)
    assert len(feedback.warnings) == 51
    assert feedback.warnings[0].startswith(f"{bad}:1:") and feedback.warnings[49].startswith(f"{bad}:50:")
    assert "10 more problem(s)" in feedback.warnings[50]


def test_import_bad_inputs_are_clear(qgis_app, tmp_path, dota):
    message = failure(IMPORT, {"OUTPUT": str(tmp_path / "x.gpkg")})
    assert "annotation files or an annotation folder" in message
    message = failure(IMPORT, {"FOLDER": str(dota), "OUTPUT": str(tmp_path / "x.shp")})
    assert "must be a GeoPackage" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = failure(IMPORT, {"FOLDER": str(empty), "OUTPUT": str(tmp_path / "x.gpkg")})
    assert "No annotation files" in message and "Traceback" not in message


def test_import_through_qgis_process_with_repeated_files_and_a_dataset_list(qgis_process, tmp_path, dota):
    out = tmp_path / "boxes.gpkg"
    proc = qgis_process("--json", "run", IMPORT, "--", f"ANNOTATIONS={dota / 'a.txt'}",
                        f"ANNOTATIONS={dota / 'b.txt'}", "FORMAT=1", "DATASET=3", f"OUTPUT={out}")
    results = json_results(proc)
    assert (int(results["ANNOTATION_COUNT"]), int(results["PROBLEM_COUNT"]), int(results["FILE_COUNT"])) == (4, 1, 2)
    rows = read_features(out, layer="boxes")
    ids = {r["class_name"]: r["class_id"] for r in rows}
    assert ids == {"plane": 0, "storage-tank": 2, "swimming-pool": 14}  # DOTA-v2.0's published ids


# -- datasetreport --------------------------------------------------------------------------------

def test_report_of_folder_subsets_and_layers(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    root = tmp_path / "dataset"
    td.write_dataset_folder(root / "train", layers=2)
    td.write_dataset_folder(root / "val", layers=1)
    layer = QgsVectorLayer(td.write_mask_layer(tmp_path / "extra.gpkg"), "extra", "ogr")
    assert layer.isValid()
    html, csv_dir = tmp_path / "out" / "report.html", tmp_path / "out" / "tables"
    results = run(REPORT, {"FOLDER": str(root), "LAYERS": [layer], "OUTPUT_HTML": str(html),
                           "OUTPUT_CSV": str(csv_dir)})
    assert results["SUBSET_COUNT"] == 3
    assert results["BOX_COUNT"] == 3 * 4 and results["INSTANCE_COUNT"] == 2 * 4 and results["CLASS_COUNT"] == 2
    assert results["OUTPUT_HTML"] == str(html) and html.is_file()
    text = html.read_text(encoding="utf-8")
    assert "<html" in text.lower() and "train" in text and "val" in text and "extra" in text
    rows = read_csv(csv_dir / "instances_per_class.csv")
    counts = {(r["subset"], r["class_name"]): int(r["instances"]) for r in rows}
    assert counts[("train", "tank")] == 2 and counts[("val", "pond")] == 1 and counts[("extra", "tank")] == 1


def test_report_bad_inputs_are_clear(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    message = failure(REPORT, {"OUTPUT_HTML": str(tmp_path / "r.html")})
    assert "dataset folder or mask polygon layers" in message
    (tmp_path / "nothing").mkdir()
    message = failure(REPORT, {"FOLDER": str(tmp_path / "nothing"), "OUTPUT_HTML": str(tmp_path / "r.html")})
    assert "no dataset output folder" in message
    memory = QgsVectorLayer("Polygon?crs=EPSG:32617&field=status:string", "scratch", "memory")
    message = failure(REPORT, {"LAYERS": [memory], "OUTPUT_HTML": str(tmp_path / "r.html")})
    assert "'memory' provider" in message and "Save it as a GeoPackage" in message
    assert not (tmp_path / "r.html").exists()


def test_report_through_qgis_process(qgis_process, tmp_path):
    root = tmp_path / "dataset"
    td.write_dataset_folder(root / "train", layers=2)
    td.write_dataset_folder(root / "val", layers=1)
    html = tmp_path / "report.html"
    results = json_results(qgis_process("--json", "run", REPORT, "--", f"FOLDER={root}", f"OUTPUT_HTML={html}"))
    assert int(results["SUBSET_COUNT"]) == 2 and int(results["INSTANCE_COUNT"]) == 6 and int(results["BOX_COUNT"]) == 9
    assert html.is_file()


# -- evaluate -------------------------------------------------------------------------------------

def test_evaluate_known_squares(qgis_app, tmp_path):
    grid = td.scene_raster(tmp_path / "scene.tif")
    produced, reference = td.write_squares(tmp_path)
    metrics, per_instance = tmp_path / "metrics.csv", tmp_path / "instances.csv"
    results = run(EVALUATE, {"PRODUCED": produced, "REFERENCE": reference, "GRID": grid, "REFERENCE_CLASS_FIELD": "kind",
                             "OUTPUT_METRICS": str(metrics), "OUTPUT_INSTANCES": str(per_instance)})
    assert results["MEAN_IOU"] == pytest.approx(td.MEAN_IOU)
    assert results["WEIGHTED_IOU"] == pytest.approx(td.WEIGHTED_IOU)
    assert results["AP"] == pytest.approx(td.AP) and results["AP50"] == pytest.approx(td.AP50)
    assert results["AP75"] == pytest.approx(td.AP75) and results["INSTANCE_COUNT"] == 2
    rows = {r["class"]: r for r in read_csv(metrics)}
    assert set(rows) == {"a", "b", "(all)"}
    assert float(rows["a"]["mean_iou"]) == pytest.approx(2 / 3, abs=1e-6)
    assert float(rows["(all)"]["ap50"]) == pytest.approx(1.0)
    assert [int(r["intersection_px"]) for r in read_csv(per_instance)] == [400, 600]


def test_evaluate_instance_raster_without_grid_and_bad_inputs(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    produced, reference = td.write_squares(tmp_path)
    raster = td.write_instance_raster(tmp_path / "instances.tif")
    results = run(EVALUATE, {"PRODUCED_RASTER": raster, "REFERENCE": reference, "REFERENCE_CLASS_FIELD": "kind",
                             "OUTPUT_METRICS": str(tmp_path / "m.csv")})
    assert results["MEAN_IOU"] == pytest.approx(td.MEAN_IOU) and results["AP"] == pytest.approx(td.AP)
    assert results["OUTPUT_INSTANCES"] is None
    # two polygon layers need a grid; produced masks given twice; a memory layer has no file
    message = failure(EVALUATE, {"PRODUCED": produced, "REFERENCE": reference, "OUTPUT_METRICS": str(tmp_path / "x.csv")})
    assert "grid raster" in message
    message = failure(EVALUATE, {"PRODUCED": produced, "PRODUCED_RASTER": raster, "REFERENCE": reference,
                                 "OUTPUT_METRICS": str(tmp_path / "x.csv")})
    assert "produced masks" in message and "not both" in message
    memory = QgsVectorLayer("Polygon?crs=EPSG:32617&field=instance_id:integer", "scratch", "memory")
    message = failure(EVALUATE, {"PRODUCED": memory, "REFERENCE": reference, "GRID": raster,
                                 "OUTPUT_METRICS": str(tmp_path / "x.csv")})
    assert "'memory' provider" in message
    # a key field the reference does not have: the engine's message
    message = failure(EVALUATE, {"PRODUCED": produced, "REFERENCE": reference, "GRID": raster, "KEY_FIELD": "kind2",
                                 "OUTPUT_METRICS": str(tmp_path / "x.csv")})
    assert "kind2" in message and "Traceback" not in message
    assert not (tmp_path / "x.csv").exists()


def test_evaluate_through_qgis_process(qgis_process, tmp_path):
    grid = td.scene_raster(tmp_path / "scene.tif")
    produced, reference = td.write_squares(tmp_path)
    metrics = tmp_path / "metrics.csv"
    results = json_results(qgis_process("--json", "run", EVALUATE, "--", f"PRODUCED={produced}",
                                        f"REFERENCE={reference}", f"GRID={grid}", "REFERENCE_CLASS_FIELD=kind",
                                        f"OUTPUT_METRICS={metrics}"))
    for key, expected in (("MEAN_IOU", td.MEAN_IOU), ("WEIGHTED_IOU", td.WEIGHTED_IOU), ("AP", td.AP),
                          ("AP50", td.AP50)):
        assert float(results[key]) == pytest.approx(expected), key
    assert results["OUTPUT_METRICS"] == str(metrics) and metrics.is_file()


# -- segmentboxes: prompt and post-processing -----------------------------------------------------

@pytest.fixture
def scene(tmp_path):
    return {"INPUT": td.scene_raster(tmp_path / "scene.tif"), "BOXES": td.scene_boxes(tmp_path / "boxes.gpkg"),
            "CLASS_FIELD": "label"}


def test_point_prompt_with_tiny_sam(qgis_app, scene, tiny_sam_checkpoint, tmp_path):
    out = str(tmp_path / "point.gpkg")
    results = run(SEGMENT, {**scene, "BACKEND": SAM, "CHECKPOINT": tiny_sam_checkpoint, "DEVICE": 1,
                            "PROMPT": POINT_PROMPT, "OUTPUT_POLYGONS": out})
    assert results["BOX_COUNT"] == len(td.DISCS)
    assert results["OK_COUNT"] + results["EMPTY_COUNT"] == len(td.DISCS)
    assert len(read_features(out, layer="masks")) == len(td.DISCS)


def test_grabcut_refuses_a_point_prompt(qgis_app, scene, tmp_path):
    message = failure(SEGMENT, {**scene, "BACKEND": GRABCUT, "PROMPT": POINT_PROMPT,
                                "OUTPUT_POLYGONS": str(tmp_path / "m.gpkg")})
    assert "grabcut backend takes the prompt modes box" in message and "'point'" in message
    assert not (tmp_path / "m.gpkg").exists()


def test_post_processing_options_are_applied(qgis_app, scene, tmp_path):
    plain = run(SEGMENT, {**scene, "BACKEND": GRABCUT, "OUTPUT_POLYGONS": str(tmp_path / "plain.gpkg")})
    cleaned = run(SEGMENT, {**scene, "BACKEND": GRABCUT, "FILL_HOLES": True, "MIN_ISLAND_PX": 30,
                            "KEEP_LARGEST": True, "CLIP_TO_BOX": True, "OUTPUT_POLYGONS": str(tmp_path / "clean.gpkg")})
    assert plain["BOX_COUNT"] == cleaned["BOX_COUNT"] == len(td.DISCS)
    for row in read_features(tmp_path / "clean.gpkg", layer="masks"):
        if row["status"] == "ok":
            parts = list(getattr(row["geometry"], "geoms", [row["geometry"]]))
            assert len(parts) == 1 and not list(parts[0].interiors)  # one part, no holes
            assert row["area_px"] >= 30
    message = failure(SEGMENT, {**scene, "BACKEND": GRABCUT, "MIN_ISLAND_PX": -1,
                                "OUTPUT_POLYGONS": str(tmp_path / "x.gpkg")})
    assert "MIN_ISLAND_PX" in message or "island" in message.lower() or "minimum" in message.lower()


def test_point_prompt_through_qgis_process(qgis_process, scene, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "m.gpkg"
    results = json_results(qgis_process("--json", "run", SEGMENT, "--", f"INPUT={scene['INPUT']}",
                                        f"BOXES={scene['BOXES']}", "BACKEND=0", f"CHECKPOINT={tiny_sam_checkpoint}",
                                        "DEVICE=1", f"PROMPT={POINT_PROMPT}", "FILL_HOLES=true", "KEEP_LARGEST=true",
                                        f"OUTPUT_POLYGONS={out}"))
    assert int(results["BOX_COUNT"]) == len(td.DISCS) and out.is_file()

"""The dataset tools run by real QGIS Processing and from the command line: ``samrs:segmentdataset``
(``processing.run`` and ``qgis_process --json``) and ``segment-dataset``, on a small dataset written here (DOTA
labelTxt, GrabCut masks); progress and cancellation of ``import_annotations`` and ``samrs:importannotations``."""
import json

import pytest

import tools_data as td
from samrs.samrs_qgis.annotations import import_annotations
from samrs.samrs_qgis.errors import Cancelled
from support import RecordingProgress, read_features, review_first_two_masks
from test_tools_cli import bad, ok, run_cli
from test_tools_processing import RecordingFeedback, json_results, run

DATASET, IMPORT = "samrs:segmentdataset", "samrs:importannotations"
GRABCUT = 1
DOTA2 = 3  # index of dota2.0 in the DATASET enum (none, dota1.0, dota1.5, dota2.0, …)


@pytest.fixture
def dataset(tmp_path):
    """images/: a (three good boxes and one bad line), b (an annotation file that is none), c (no annotation
    file); labels/: DOTA labelTxt."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for stem in "abc":
        td.scene_raster(images / f"{stem}.tif")
    (labels / "a.txt").write_text(td.DOTA_A)
    (labels / "b.txt").write_text("this is not an annotation file\n")
    return images, labels


def check_outputs(out, manifest_path, coco_path):
    assert manifest_path == str(out / "manifest.json") and coco_path == str(out / "coco_instances.json")
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["images"].items()} == {"a": "done", "b": "failed",
                                                                        "c": "no_annotations"}
    rows = read_features(out / "geo" / "a.gpkg", layer="masks")
    assert [r["class_name"] for r in rows if r["status"] == "ok"] == ["storage-tank", "swimming-pool", "storage-tank"]
    assert all(r["area_px"] > 100 for r in rows)
    coco = json.loads((out / "coco_instances.json").read_text())
    assert len(coco["annotations"]) == 3 and {i["file_name"] for i in coco["images"]} == {"a.tif", "c.tif"}
    for sub in ("class_index/a.png", "colour/a.png", "instances/a.json", "geo/a_semantic.tif", "boxes/a.gpkg"):
        assert (out / sub).is_file(), sub
    return manifest


def test_segmentdataset_is_registered_in_datasets_with_the_segment_parameters(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    alg = registry.algorithmById(DATASET)
    boxes = registry.algorithmById("samrs:segmentboxes")
    assert alg.displayName() == "Segment a detection dataset" and alg.group() == "Datasets"
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"IMAGES", "ANNOTATIONS", "FORMAT", "DATASET", "RECURSIVE", "OUTPUT"} <= names
    shared = {p.name() for p in boxes.parameterDefinitions()} - {
        "INPUT", "BOXES", "CLASS_FIELD", "ID_FIELD", "BANDS", "CLASSES", "PREVIEW", "OUTPUT_INSTANCES",
        "OUTPUT_SEMANTIC", "OUTPUT_POLYGONS"}
    assert "CHECKPOINT" in shared and "EMBEDDING_CACHE" in shared and shared <= names
    for name in shared:  # the same definitions: same description, type and default
        a, b = alg.parameterDefinition(name), boxes.parameterDefinition(name)
        assert (a.type(), a.description(), a.defaultValue()) == (b.type(), b.description(), b.defaultValue()), name
    outputs = {o.name() for o in alg.outputDefinitions()}
    assert {"OUTPUT", "MANIFEST", "COCO", "IMAGE_COUNT", "DONE_COUNT", "SKIPPED_COUNT", "FAILED_COUNT",
            "NO_BOXES_COUNT", "BOX_COUNT"} <= outputs


def test_segmentdataset_processing_run_then_resume(qgis_app, tmp_path, dataset):
    from qgis.core import QgsProcessingFeedback

    images, labels = dataset
    out = tmp_path / "out"
    feedback = RecordingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    params = {"IMAGES": str(images), "ANNOTATIONS": str(labels), "FORMAT": 0, "DATASET": DOTA2, "RECURSIVE": False,
              "BACKEND": GRABCUT, "EMBEDDING_CACHE": False, "OUTPUT": str(out)}
    results = run(DATASET, params, feedback)
    assert (results["IMAGE_COUNT"], results["DONE_COUNT"], results["SKIPPED_COUNT"], results["FAILED_COUNT"],
            results["NO_BOXES_COUNT"], results["BOX_COUNT"]) == (3, 1, 0, 1, 1, 3)
    assert results["OUTPUT"] == str(out)
    manifest = check_outputs(out, results["MANIFEST"], results["COCO"])
    assert manifest["dataset"] == "dota2.0" and manifest["settings"]["backend"] == "grabcut"
    assert any("b: failed" in w for w in feedback.warnings), feedback.warnings  # per-image failure as a warning
    assert progress and progress == sorted(progress) and progress[-1] == 100
    again = run(DATASET, params, QgsProcessingFeedback())
    assert (again["DONE_COUNT"], again["SKIPPED_COUNT"], again["FAILED_COUNT"]) == (0, 1, 1)


def test_segmentdataset_cancelled_and_bad_inputs(qgis_app, tmp_path, dataset):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    images, labels = dataset
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    params = {"IMAGES": str(images), "ANNOTATIONS": str(labels), "BACKEND": GRABCUT, "OUTPUT": str(tmp_path / "o")}
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run(DATASET, params, feedback)
    assert not (tmp_path / "o" / "geo").exists()
    with pytest.raises(QgsProcessingException, match="annotation folder"):
        run(DATASET, dict(params, ANNOTATIONS=str(tmp_path / "missing")))
    with pytest.raises(QgsProcessingException, match="needs a model file"):
        run(DATASET, dict(params, BACKEND=0))


def test_segmentdataset_through_qgis_process(qgis_process, tmp_path, dataset):
    images, labels = dataset
    out = tmp_path / "out"
    results = json_results(qgis_process("--json", "run", DATASET, "--", f"IMAGES={images}", f"ANNOTATIONS={labels}",
                                        "FORMAT=1", "BACKEND=1", "EMBEDDING_CACHE=false", f"OUTPUT={out}"))
    assert (int(results["IMAGE_COUNT"]), int(results["DONE_COUNT"]), int(results["FAILED_COUNT"]),
            int(results["NO_BOXES_COUNT"]), int(results["BOX_COUNT"])) == (3, 1, 1, 1, 3)
    manifest = check_outputs(out, results["MANIFEST"], results["COCO"])
    assert manifest["classes"] == ["storage-tank", "swimming-pool"]  # sorted names: no dataset list


def test_segment_dataset_cli(tmp_path, dataset):
    images, labels = dataset
    (images / "sub").mkdir()
    td.scene_raster(images / "sub" / "d.tif")
    (labels / "sub").mkdir()
    (labels / "sub" / "d.txt").write_text(td.DOTA_B)
    out = tmp_path / "out"
    result = run_cli("segment-dataset", images, labels, "--out-dir", out, "--dataset", "dota2.0",
                     "--format", "dota", "--no-cache", "--quiet", "--fill-holes")
    assert result.returncode == 3, result.stdout + result.stderr  # finished, but an image failed
    assert "1 segmented" in result.stdout and "1 failed" in result.stdout and "GrabCut" in result.stdout
    assert "b: failed" in result.stderr and "1 image(s) failed" in result.stderr and "Traceback" not in result.stderr
    check_outputs(out, str(out / "manifest.json"), str(out / "coco_instances.json"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["fill_holes"] is True and "sub/d" not in manifest["images"]
    result = run_cli("segment-dataset", images, labels, "--out-dir", out, "--dataset", "dota2.0", "--recursive",
                     "--no-cache", "--quiet", "--fill-holes")
    assert result.returncode == 3  # b still fails
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"]["sub/d"]["status"] == "done" and manifest["images"]["a"]["status"] == "done"
    assert "1 already done" in result.stdout
    bad(run_cli("segment-dataset", images, tmp_path / "nothing", "--out-dir", out), "annotation folder")
    bad(run_cli("segment-dataset", images, labels, "--out-dir", out, "--backend", "sam"), "checkpoint")
    help_text = ok(run_cli("segment-dataset", "--help")).stdout
    assert "--checkpoint" in help_text and "--clip-to-box" in help_text and "--class-field" not in help_text
    assert "3 when some images failed" in " ".join(help_text.split())


# -- import progress and cancellation -------------------------------------------------------------

def test_import_reports_progress_per_file_and_a_cancelled_import_writes_nothing(tmp_path, dota):
    progress = RecordingProgress()
    summary = import_annotations(dota, str(tmp_path / "boxes.gpkg"), progress=progress)
    assert summary.annotations == 4
    assert progress.fractions == pytest.approx([0.45, 0.9, 1.0])
    for cancel_after in (0, 1, 2):  # before the first file, after the first, before writing
        out = tmp_path / f"cancelled{cancel_after}.gpkg"
        with pytest.raises(Cancelled):
            import_annotations(dota, str(out), progress=RecordingProgress(cancel_after=cancel_after))
        assert not out.exists() and not list(tmp_path.glob(f"*cancelled{cancel_after}*"))


def test_importannotations_algorithm_reports_progress_and_can_be_cancelled(qgis_app, tmp_path, dota):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    out = tmp_path / "boxes.gpkg"
    results = run(IMPORT, {"FOLDER": str(dota), "OUTPUT": str(out)}, feedback)
    assert results["ANNOTATION_COUNT"] == 4 and progress == pytest.approx([45.0, 90.0, 100.0])

    cancelling = QgsProcessingFeedback()
    cancelling.progressChanged.connect(lambda value: cancelling.cancel())  # cancel after the first file
    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run(IMPORT, {"FOLDER": str(dota), "OUTPUT": str(out)}, cancelling)
    assert not out.exists()


def test_exportreviewed_through_qgis_process(qgis_process, tmp_path, dataset):
    """The review recorded in a mask layer (as the review dock writes it) is honoured by the export."""
    images, labels = dataset
    out = tmp_path / "out"
    assert run_cli("segment-dataset", images, labels, "--out-dir", out, "--quiet").returncode == 3  # b fails
    masks, new_class = review_first_two_masks(out / "geo" / "a.gpkg")
    relabelled = masks[1]
    results = json_results(qgis_process("--json", "run", "samrs:exportreviewed", "--", f"DATASET={out}",
                                        f"OUTPUT={tmp_path / 'reviewed'}"))
    assert (int(results["DROPPED_COUNT"]), int(results["RELABELLED_COUNT"]), int(results["IMAGE_COUNT"])) == (1, 1, 1)
    coco = json.loads((tmp_path / "reviewed" / "coco_instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    categories = {a["instance_id"]: names[a["category_id"]] for a in coco["annotations"]}
    assert sorted(categories) == masks[1:] and categories[relabelled] == new_class

"""The QGIS side of the plugin: ``samrs:segmentboxes`` run by real QGIS Processing, in process
(``processing.run``) and headless (``qgis_process``), with real GDAL files and the tiny but real SAM.

Covers outputs and results, in-memory box layers, cancellation without leftovers, clear messages for
bad inputs, the plugin's loading path, and a QGIS Python without torch.
"""
import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Point

from support import UTM, pixel_box, read_features, write_boxes, write_raster

REPO = Path(__file__).resolve().parent.parent
ALG = "samrs:segmentboxes"
SAM, GRABCUT = 0, 1
TRANSFORM = Affine(0.5, 0.0, 404000.0, 0.0, -0.5, 3285200.0)
SIZE = 256
RESULT_FIELDS = ("instance_id", "class_name", "class_id", "score", "area_px", "area_m2", "status", "detail")
DEMO_RASTER = REPO / "demo" / "OSBS_029.tif"
DEMO_BOXES = REPO / "demo" / "OSBS_029_boxes.gpkg"

# Pixel boxes (c0, r0, c1, r1) around the discs of ``scene_raster``, with their classes.
DISCS = [((60, 60), 22, "tank"), ((180, 70), 26, "pond"), ((70, 180), 18, "tank"), ((185, 185), 30, "pond")]


def disc_boxes():
    return [((cx - r - 3, cy - r - 3, cx + r + 3, cy + r + 3), cls) for (cx, cy), r, cls in DISCS]


def scene_raster(path, crs=UTM):
    """A 256 px RGB GeoTIFF: noisy ground with bright and dark discs."""
    rng = np.random.default_rng(7)
    image = 100 + rng.normal(0, 8, (3, SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for (cx, cy), r, cls in DISCS:
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
        colour = (230, 225, 220) if cls == "tank" else (30, 60, 110)
        for band in range(3):
            image[band][disc] = colour[band] + rng.normal(0, 5, disc.sum())
    return write_raster(path, np.clip(image, 0, 255).astype(np.uint8), TRANSFORM, crs=crs)


def scene_boxes(path, extra_outside=False, crs=UTM):
    """The disc boxes as a GPKG with a ``label`` field (optionally one box far off the raster)."""
    polygons = [pixel_box(TRANSFORM, *b) for b, _ in disc_boxes()]
    labels = [cls for _, cls in disc_boxes()]
    if extra_outside:
        polygons.append(pixel_box(TRANSFORM, 2000, 2000, 2040, 2040))
        labels.append("tank")
    return write_boxes(path, polygons, crs=crs, properties=[{"label": c} for c in labels])


def outputs_in(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return {"OUTPUT_INSTANCES": str(folder / "instances.tif"), "OUTPUT_SEMANTIC": str(folder / "semantic.tif"),
            "OUTPUT_POLYGONS": str(folder / "masks.gpkg")}


def run_alg(params, feedback=None):
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(ALG, params, feedback=feedback or QgsProcessingFeedback())


def failure_message(params):
    """The message of the QgsProcessingException an in-process run raises."""
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        run_alg(params)
    return str(info.value)


def parse_json(stdout):
    start = stdout.find("{")
    assert start >= 0, f"no JSON in qgis_process output:\n{stdout}"
    return json.loads(stdout[start:])


def assert_same_grid(path, reference):
    with rasterio.open(reference) as ref, rasterio.open(path) as out:
        assert out.crs == ref.crs
        assert out.transform == ref.transform
        assert (out.width, out.height) == (ref.width, ref.height)
        return out.read(1), out.dtypes[0]


# -- 1. in-process run with the tiny SAM ----------------------------------------------------------

def test_processing_run_with_tiny_sam_writes_rasters_and_polygons(qgis_app, tiny_sam_checkpoint, tmp_path):
    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg", extra_outside=True)
    out = outputs_in(tmp_path / "out")
    results = run_alg({"INPUT": raster, "BOXES": boxes, "CLASS_FIELD": "label", "BACKEND": SAM,
                       "CHECKPOINT": tiny_sam_checkpoint, "DEVICE": 1, **out})

    n = len(DISCS) + 1
    assert results["BOX_COUNT"] == n
    assert results["OUTSIDE_COUNT"] == 1 and results["INVALID_COUNT"] == 0
    assert results["OK_COUNT"] + results["EMPTY_COUNT"] == len(DISCS)
    assert results["WINDOW_COUNT"] >= 1
    assert "custom" in results["BACKEND_USED"] and "SAM" in results["BACKEND_USED"]
    for key in out:
        assert os.path.isfile(out[key]), key

    instances, itype = assert_same_grid(out["OUTPUT_INSTANCES"], raster)
    semantic, _ = assert_same_grid(out["OUTPUT_SEMANTIC"], raster)
    assert itype == "uint32"
    assert set(np.unique(instances)) <= set(range(0, len(DISCS) + 1))
    assert ((instances == 0) == (semantic == 255)).all()  # background where no instance

    features = read_features(out["OUTPUT_POLYGONS"], layer="masks")
    assert len(features) == n
    for field in RESULT_FIELDS + ("label",):
        assert all(field in f for f in features), field
    assert [f["instance_id"] for f in features] == list(range(1, n + 1))
    assert [f["label"] for f in features] == [c for _, c in disc_boxes()] + ["tank"]
    assert all(f["class_name"] == f["label"] for f in features)
    assert {f["class_id"] for f in features if f["class_name"] == "tank"} != \
        {f["class_id"] for f in features if f["class_name"] == "pond"}
    statuses = [f["status"] for f in features]
    assert statuses[-1] == "outside" and features[-1]["geometry"] is None
    assert statuses.count("ok") == results["OK_COUNT"]
    for f in features:
        if f["status"] == "ok":
            assert f["score"] is not None and f["geometry"] is not None and f["area_px"] > 0
            assert f["area_m2"] == pytest.approx(f["geometry"].area) == pytest.approx(f["area_px"] * 0.25)
            # The rasters agree with the polygons: at most area_px pixels carry the id (overlaps go to the
            # smaller mask), and those pixels carry the box's class in the semantic raster.
            owned = instances == f["instance_id"]
            assert owned.sum() <= f["area_px"]
            assert (semantic[owned] == f["class_id"]).all()
        else:
            assert not (instances == f["instance_id"]).any()
    with rasterio.open(out["OUTPUT_SEMANTIC"]) as ds:
        assert ds.crs.to_epsg() == 32617


def test_temporary_outputs_and_no_outputs(qgis_app, tmp_path):
    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg")
    # All three outputs are optional: asking for none is an error that says what to give.
    message = failure_message({"INPUT": raster, "BOXES": boxes, "BACKEND": GRABCUT})
    assert "No output was asked for" in message and "polygon layer" in message
    # TEMPORARY_OUTPUT gives files in QGIS's temporary folder, in the right formats.
    results = run_alg({"INPUT": raster, "BOXES": boxes, "BACKEND": GRABCUT, "OUTPUT_INSTANCES": "TEMPORARY_OUTPUT",
                       "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
    assert results["BOX_COUNT"] == len(DISCS) and results["BACKEND_USED"] == "grabcut"
    assert not results["OUTPUT_SEMANTIC"]
    paths = [results["OUTPUT_INSTANCES"], results["OUTPUT_POLYGONS"]]
    assert [os.path.splitext(p)[1] for p in paths] == [".tif", ".gpkg"]
    assert all(os.path.isfile(p) for p in paths)
    assert_same_grid(paths[0], raster)
    rows = read_features(paths[1], layer="masks")
    assert len(rows) == len(DISCS) and len({(r["class_name"], r["class_id"]) for r in rows}) == 1  # one class


# -- 2. the same through qgis_process ------------------------------------------------------------

@pytest.mark.parametrize("backend", [GRABCUT, SAM],
    ids=["grabcut", "tiny-sam"])
def test_qgis_process_json_run(qgis_process, tiny_sam_checkpoint, tmp_path, backend):
    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg")
    out = outputs_in(tmp_path / "out")
    args = [f"INPUT={raster}", f"BOXES={boxes}", "CLASS_FIELD=label", f"BACKEND={backend}", "DEVICE=1"]
    if backend == SAM:
        args.append(f"CHECKPOINT={tiny_sam_checkpoint}")
    args += [f"{k}={v}" for k, v in out.items()]
    proc = qgis_process("--json", "run", ALG, "--", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = parse_json(proc.stdout)["results"]
    assert int(results["BOX_COUNT"]) == len(DISCS)
    expected = "grabcut" if backend == GRABCUT else "custom"
    assert expected in results["BACKEND_USED"].lower()
    for key, path in out.items():
        assert results[key] == path and os.path.isfile(path)
        if key != "OUTPUT_POLYGONS":
            assert_same_grid(path, raster)
    features = read_features(out["OUTPUT_POLYGONS"], layer="masks")
    assert len(features) == len(DISCS)
    assert [f["class_name"] for f in features] == [c for _, c in disc_boxes()]
    if backend == GRABCUT:  # GrabCut finds these high-contrast discs
        assert int(results["OK_COUNT"]) == len(DISCS)
        for f, ((cx, cy), r, _) in zip(features, DISCS):
            x, y = TRANSFORM * (cx + 0.5, cy + 0.5)
            assert f["geometry"].contains(Point(x, y))
            assert f["area_px"] == pytest.approx(np.pi * r * r, rel=0.25)


# -- 3. an in-memory box layer -------------------------------------------------------------------

def test_memory_layer_of_demo_boxes_is_accepted(qgis_app, tiny_sam_checkpoint, tmp_path):
    from qgis.core import QgsFeature, QgsVectorLayer

    demo = QgsVectorLayer(f"{DEMO_BOXES}|layername=boxes", "demo", "ogr")
    assert demo.isValid() and demo.featureCount() == 61
    layer = QgsVectorLayer("Polygon?crs=EPSG:32617&field=cls:string", "boxes", "memory")
    features = []
    for source in list(demo.getFeatures())[:8]:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(source.geometry())
        feature.setAttribute("cls", f"{source['label']}-{source.id() % 2}")
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0] and layer.featureCount() == 8

    out = outputs_in(tmp_path / "out")
    results = run_alg({"INPUT": str(DEMO_RASTER), "BOXES": layer, "CLASS_FIELD": "cls", "BACKEND": SAM,
                       "CHECKPOINT": tiny_sam_checkpoint, "DEVICE": 1, **out})
    assert results["BOX_COUNT"] == 8 and results["OUTSIDE_COUNT"] == 0 and results["INVALID_COUNT"] == 0
    rows = read_features(out["OUTPUT_POLYGONS"], layer="masks")
    assert [r["cls"] for r in rows] == [f["cls"] for f in features]
    assert [r["class_name"] for r in rows] == [f["cls"] for f in features]
    assert_same_grid(out["OUTPUT_INSTANCES"], DEMO_RASTER)


# -- 4. cancellation -----------------------------------------------------------------------------

def test_cancel_after_first_progress_leaves_no_files(qgis_app, tiny_sam_checkpoint, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg")
    out_dir = tmp_path / "out"
    out = outputs_in(out_dir)
    feedback = QgsProcessingFeedback()
    reported = []

    def on_progress(value):
        reported.append(value)
        feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    with pytest.raises(QgsProcessingException, match="cancelled; no output was written"):
        run_alg({"INPUT": raster, "BOXES": boxes, "CLASS_FIELD": "label", "BACKEND": SAM,
                 "CHECKPOINT": tiny_sam_checkpoint, "DEVICE": 1, "BATCH_SIZE": 1, **out}, feedback)
    assert reported and 0 < reported[0] < 100  # cancelled mid-run, after the first box
    assert feedback.isCanceled()
    assert sorted(os.listdir(out_dir)) == []  # no outputs, no '.partial' files, no sidecars


# -- 5. bad inputs: clear messages ---------------------------------------------------------------

@pytest.fixture
def scene(tmp_path):
    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg")
    out = outputs_in(tmp_path / "out")
    return {"raster": raster, "boxes": boxes, "out": out, "dir": tmp_path, "out_dir": tmp_path / "out"}


def base_params(scene, **extra):
    params = {"INPUT": scene["raster"], "BOXES": scene["boxes"], "CLASS_FIELD": "label", "BACKEND": GRABCUT,
              **scene["out"]}
    params.update(extra)
    return params


def test_missing_checkpoint_is_named(qgis_app, scene):
    missing = str(scene["dir"] / "nowhere" / "sam_vit_b_01ec64.pth")
    message = failure_message(base_params(scene, BACKEND=SAM, CHECKPOINT=missing))
    assert missing in message and "does not exist" in message
    assert os.listdir(scene["out_dir"]) == []


def test_corrupt_checkpoint_is_reported(qgis_app, scene):
    corrupt = scene["dir"] / "x.pth"
    corrupt.write_bytes(np.random.default_rng(3).bytes(8192))
    message = failure_message(base_params(scene, BACKEND=SAM, CHECKPOINT=str(corrupt)))
    assert str(corrupt) in message and "cannot be read" in message and "corrupt" in message
    assert os.listdir(scene["out_dir"]) == []


def test_model_type_mismatch_is_reported(qgis_app, scene, tiny_sam_checkpoint):
    message = failure_message(base_params(scene, BACKEND=SAM, CHECKPOINT=tiny_sam_checkpoint, MODEL_TYPE=1))
    assert "Model type mismatch" in message and "not vit_h" in message and "custom" in message
    assert "'auto'" in message


def test_point_layer_is_rejected(qgis_app, scene):
    points = write_boxes(scene["dir"] / "points.gpkg", [Point(TRANSFORM * (60, 60)), Point(TRANSFORM * (180, 70))],
                         properties=[{"label": "tank"}, {"label": "pond"}], geometry_type="Point")
    message = failure_message(base_params(scene, BOXES=points))
    assert "Point" in message and "must be polygons" in message and "'points'" in message


def test_empty_box_layer_is_rejected(qgis_app, scene):
    empty = write_boxes(scene["dir"] / "empty.gpkg", [], properties=[], schema={"label": "str"})
    message = failure_message(base_params(scene, BOXES=empty))
    assert "has no features" in message and "nothing to segment" in message


def test_boxes_off_the_raster_are_rejected(qgis_app, scene):
    far = write_boxes(scene["dir"] / "far.gpkg", [pixel_box(TRANSFORM, 1000, 1000, 1030, 1030),
                                                   pixel_box(TRANSFORM, -500, 40, -450, 90)],
                      properties=[{"label": "tank"}, {"label": "pond"}])
    message = failure_message(base_params(scene, BOXES=far))
    assert "None of the 2 boxes" in message and "overlaps raster" in message and "2 outside" in message
    assert "CRS" in message


def test_raster_without_crs_is_rejected(qgis_app, scene):
    raster = scene_raster(scene["dir"] / "nocrs.tif", crs=None)
    message = failure_message(base_params(scene, INPUT=raster))
    assert "raster has no CRS" in message and "unknown CRS" in message


def test_missing_class_field_is_named(qgis_app, scene):
    message = failure_message(base_params(scene, CLASS_FIELD="species"))
    assert "species" in message
    assert "label" in message  # the engine lists the layer's fields


def test_unwritable_output_is_reported(qgis_app, scene):
    blocker = scene["dir"] / "not-a-folder"
    blocker.write_text("a regular file")
    target = str(blocker / "masks.gpkg")
    message = failure_message(base_params(scene, OUTPUT_POLYGONS=target))
    assert target in message and "cannot be written" in message and "writable folder" in message
    assert os.listdir(scene["out_dir"]) == []  # the other outputs were not written either


def test_qgis_process_reports_missing_checkpoint(qgis_process, scene):
    missing = str(scene["dir"] / "sam_vit_h_4b8939.pth")
    proc = qgis_process("run", ALG, "--", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}", "BACKEND=0",
                        f"CHECKPOINT={missing}", *[f"{k}={v}" for k, v in scene["out"].items()])
    assert proc.returncode != 0
    assert f"SAM checkpoint '{missing}' does not exist" in proc.stdout + proc.stderr


def test_qgis_process_reports_point_layer_and_unknown_crs(qgis_process, scene):
    points = write_boxes(scene["dir"] / "points.gpkg", [Point(TRANSFORM * (60, 60))], properties=[{"label": "x"}],
                         geometry_type="Point")
    proc = qgis_process("run", ALG, "--", f"INPUT={scene['raster']}", f"BOXES={points}", "BACKEND=1",
                        *[f"{k}={v}" for k, v in scene["out"].items()])
    assert proc.returncode != 0
    assert "boxes must be polygons" in proc.stdout + proc.stderr
    nocrs = scene_raster(scene["dir"] / "nocrs.tif", crs=None)
    proc = qgis_process("run", ALG, "--", f"INPUT={nocrs}", f"BOXES={scene['boxes']}", "BACKEND=1",
                        *[f"{k}={v}" for k, v in scene["out"].items()])
    assert proc.returncode != 0
    assert "raster has no CRS" in proc.stdout + proc.stderr
    assert os.listdir(scene["out_dir"]) == []


# -- 6. the plugin's loading path ----------------------------------------------------------------

def test_provider_and_algorithm_are_registered(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("samrs")
    assert provider is not None and provider.name() == "SAMRS"
    assert os.path.isfile(provider.svgIconPath()) and not provider.icon().isNull()
    alg = registry.algorithmById(ALG)
    assert alg is not None and alg.provider().id() == "samrs"
    assert alg.displayName() == "Segment detection boxes with SAM"
    assert not alg.icon().isNull()
    assert "Segment Anything" in alg.shortHelpString() and "GrabCut" in alg.shortHelpString()
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"INPUT", "BOXES", "CLASS_FIELD", "BACKEND", "CHECKPOINT", "MODEL_TYPE", "OUTPUT_INSTANCES",
            "OUTPUT_SEMANTIC", "OUTPUT_POLYGONS"} <= names
    assert {"BACKEND_USED", "BOX_COUNT", "OK_COUNT"} <= {o.name() for o in alg.outputDefinitions()}


def _plugin_copy(root):
    """A plugin folder ``root/samrs`` linking the checkout's parts, with its own copy of ``__init__.py``
    (the original resolves its real path and would find the checkout's ``.venv``)."""
    plugin = root / "samrs"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text((REPO / "__init__.py").read_text())
    for name in ("metadata.txt", "processing", "samrs_qgis", "icons"):
        (plugin / name).symlink_to(REPO / name)
    return plugin


def test_class_factory_and_init_processing_register_the_provider_fresh(tmp_path):
    """In a fresh QGIS: nothing is registered before ``initProcessing``; after it the algorithm is; unload removes it."""
    _plugin_copy(tmp_path)
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        sys.path.append("/usr/share/qgis/python/plugins")
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        from processing.core.Processing import Processing
        Processing.initialize()
        registry = QgsApplication.processingRegistry()
        import samrs
        before = registry.algorithmById("{ALG}") is not None
        plugin = samrs.classFactory(None)
        constructed = plugin.provider is not None
        plugin.initProcessing()
        alg = registry.algorithmById("{ALG}")
        out = dict(before=before, constructed=constructed, provider=registry.providerById("samrs").id(),
                   algs=sorted(a.id() for a in registry.providerById("samrs").algorithms()),
                   icon=not alg.icon().isNull(), help=len(alg.shortHelpString()), torch="torch" in sys.modules)
        plugin.unload()
        out["after_unload"] = registry.algorithmById("{ALG}") is not None
        print(json.dumps(out))
    """)
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"before": False, "constructed": False, "provider": "samrs",
                   "algs": ["samrs:datasetreport", "samrs:downloadmodel", "samrs:evaluate", "samrs:exportreviewed",
                            "samrs:importannotations", "samrs:installdependencies", ALG, "samrs:segmentdataset"],
                   "icon": True,
                   "help": out["help"], "torch": False, "after_unload": False}
    assert out["help"] > 200


def test_qgis_process_lists_the_plugin_as_enabled(qgis_process):
    proc = qgis_process("plugins")
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "* samrs" in lines, proc.stdout
    proc = qgis_process("list")
    assert ALG in proc.stdout


# -- 7. a QGIS Python without torch --------------------------------------------------------------

def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("SAMRS_VENV", "VIRTUAL_ENV", "PYTHONPATH",
                                                             "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def test_missing_torch_gives_an_install_hint(tmp_path, tiny_sam_checkpoint):
    env = clean_env()
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], env=env, capture_output=True,
                           cwd=tempfile.gettempdir())
    if probe.returncode == 0:
        pytest.skip("torch is importable by the system Python; cannot test its absence")
    _plugin_copy(tmp_path / "plugins")
    raster = scene_raster(tmp_path / "scene.tif")
    boxes = scene_boxes(tmp_path / "boxes.gpkg")
    out_dir = tmp_path / "out"
    script = textwrap.dedent(f"""
        import importlib.util, json, os, sys
        sys.path.insert(0, {str(tmp_path / 'plugins')!r})
        sys.path.append("/usr/share/qgis/python/plugins")
        from qgis.core import QgsApplication, QgsProcessingException
        app = QgsApplication([], False)
        app.initQgis()
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing, samrs
        plugin = samrs.classFactory(None)
        plugin.initProcessing()
        report = dict(registered=QgsApplication.processingRegistry().algorithmById("{ALG}") is not None,
                      venv_on_path=any(".venv" in p for p in sys.path),
                      torch_loaded="torch" in sys.modules,
                      cv2=importlib.util.find_spec("cv2") is not None)
        params = dict(INPUT={raster!r}, BOXES={boxes!r}, CLASS_FIELD="label",
                      OUTPUT_POLYGONS={str(out_dir / 'sam.gpkg')!r}, OUTPUT_INSTANCES={str(out_dir / 'sam.tif')!r},
                      OUTPUT_SEMANTIC={str(out_dir / 'sam_sem.tif')!r})
        try:
            processing.run("{ALG}", dict(params, BACKEND=0, CHECKPOINT={tiny_sam_checkpoint!r}))
            report["sam"] = "no error"
        except QgsProcessingException as exc:
            report["sam"] = str(exc)
        params.update(OUTPUT_POLYGONS={str(out_dir / 'gc.gpkg')!r}, OUTPUT_INSTANCES={str(out_dir / 'gc.tif')!r},
                      OUTPUT_SEMANTIC={str(out_dir / 'gc_sem.tif')!r})
        try:
            report["grabcut"] = processing.run("{ALG}", dict(params, BACKEND=1))["BOX_COUNT"]
        except QgsProcessingException as exc:
            report["grabcut"] = str(exc)
        print(json.dumps(report))
    """)
    proc = subprocess.run(["/usr/bin/python3", "-c", script], env=env, capture_output=True, text=True, timeout=180,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["registered"] and not report["venv_on_path"] and not report["torch_loaded"]
    message = report["sam"]
    assert "needs torch" in message
    # headless (no iface): the algorithm that installs what is missing, with its parameter
    assert "Install the full profile: `qgis_process run samrs:installdependencies -- PROFILE=1`" in message
    assert "GrabCut" in message and "ONNX model pairs" in message  # the ways out without torch
    assert not (out_dir / "sam.gpkg").exists() and not (out_dir / "sam.tif").exists()
    if report["cv2"]:  # GrabCut needs no torch: it runs
        assert report["grabcut"] == len(DISCS)
        assert (out_dir / "gc.gpkg").is_file()
    else:  # OpenCV is a venv package too: its absence is reported the same clear way
        assert "OpenCV" in report["grabcut"] and "samrs:installdependencies -- PROFILE=0" in report["grabcut"]
        assert not (out_dir / "gc.gpkg").exists()

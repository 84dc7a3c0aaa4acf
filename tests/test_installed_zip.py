"""The plugin as a user meets it: the ZIP built by `make package` from a clean clone of HEAD (so only
committed files count), unzipped into a fresh QGIS profile's python/plugins folder and enabled there. Every
algorithm of the provider runs under ``qgis_process.bin`` from that installed copy, and the review dock opens
in the QGIS desktop (under Xvfb) from it.

The runs prove which copy they used: a PYQGIS_STARTUP script adds a Python audit hook that records every
Python file the process opens. Each run must open its algorithm's module inside the unzipped folder and no
file of the checkout, directly or through a link; only the checkout's ``.venv`` (named by SAMRS_VENV, for
torch and the other engine dependencies) is shared. The desktop reports its modules' ``__file__``."""
import csv
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tools_data as td
from conftest import REPO
from support import read_features, review_first_two_masks

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
VENV = REPO / ".venv"
ALGORITHMS = {"samrs:segmentboxes", "samrs:importannotations", "samrs:segmentdataset", "samrs:datasetreport",
              "samrs:evaluate", "samrs:exportreviewed", "samrs:installdependencies",
              "samrs:downloadmodel"}  # each is run below
GRABCUT, SAM = 1, 0

# Run by QGIS's Python before anything else (PYQGIS_STARTUP): records the Python files the process opens.
STARTUP = r'''
import os, sys

if os.environ.get("SAMRS_OPENED_REPORT"):
    _report = open(os.environ["SAMRS_OPENED_REPORT"], "a", encoding="utf-8", buffering=1)  # a line at a time

    def _record_opened_python_files(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].endswith((".py", ".pyc")):
            _report.write(os.path.abspath(args[0]) + "\n")

    sys.addaudithook(_record_opened_python_files)
'''


def qgis_env(config: Path, **extra) -> dict:
    """The environment of a user's QGIS with this profile: no QGIS_PLUGINPATH (the test session's points at
    the checkout), no PYTHONPATH; SAMRS_VENV names the checkout's venv, as a user would name theirs."""
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_PLUGINPATH", "PYTHONPATH", "PYQGIS_STARTUP")}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(config), SAMRS_VENV=str(VENV), QT_QPA_PLATFORM="offscreen",
               PYTHONDONTWRITEBYTECODE="1", **extra)  # no bytecode: the installed copy stays as unzipped
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A clean clone of HEAD, its `make package` ZIP unzipped into a fresh profile and enabled there."""
    tmp = tmp_path_factory.mktemp("installed")
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True)
    made = subprocess.run(["make", "-s", "package"], cwd=clone, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    (zip_path,) = (clone / "dist").glob("samrs-*.zip")
    config = tmp / "config"
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    root = plugins / "samrs"
    startup = tmp / "startup.py"
    startup.write_text(STARTUP)
    env = qgis_env(config, PYQGIS_STARTUP=str(startup))
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "samrs"], env=env, cwd=tmp, capture_output=True,
                             text=True, timeout=120)
    assert enabled.returncode == 0 and "Enabled samrs" in enabled.stdout, enabled.stdout + enabled.stderr
    listed = subprocess.run([QGIS_PROCESS, "--json", "list"], env=env, cwd=tmp, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    algorithms = set(json_of(listed.stdout)["providers"]["samrs"]["algorithms"])
    helps = {a: subprocess.Popen([QGIS_PROCESS, "--json", "help", a], env=env, cwd=tmp, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True) for a in sorted(algorithms)}
    parameters = {}
    for algorithm, proc in helps.items():
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, f"help {algorithm}: {out[-2000:]}"
        parameters[algorithm] = set(json_of(out)["parameters"])
    return SimpleNamespace(tmp=tmp, config=config, plugins=plugins, root=root, env=env, zip=zip_path,
                           algorithms=algorithms, parameters=parameters)


def json_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.find("{"):])


def opened_files(report: Path) -> list:
    return report.read_text(encoding="utf-8").splitlines() if report.exists() else []


def assert_installed_copy_used(installed, opened, *modules):
    """``modules`` (plugin-relative paths) and the engine were read from the unzipped folder; no Python file
    of the checkout but its .venv (directly or through a link to it) was read at all."""
    for module in modules:
        assert str(installed.root / module) in opened, f"{module} was not read from {installed.root}"
    assert any(p.startswith(f"{installed.root}/samrs_qgis/") for p in opened), "the engine was not read"
    real = [os.path.realpath(p) for p in opened]  # links (the test session's plugin folder) resolved
    checkout = [p for p in real if p.startswith(f"{REPO}/") and not p.startswith(f"{VENV}/")]
    assert not checkout, checkout[:5]


def run_installed(installed, name, algorithm, *params, modules=(), env=None, succeed=True):
    """``qgis_process.bin --json run`` of the installed plugin (``env``: instead of the installed profile's
    environment); asserts it exits 0 (``succeed``, else not 0: the output is returned) and read its algorithm from
    the installed copy, and returns the results and the Python files the run opened."""
    unknown = {p.split("=", 1)[0] for p in map(str, params)} - installed.parameters[algorithm]
    assert not unknown, f"{algorithm} has no parameter {unknown}"  # qgis_process would ignore it silently
    report = installed.tmp / f"opened-{name}.txt"
    report.unlink(missing_ok=True)
    proc = subprocess.run([QGIS_PROCESS, "--json", "run", algorithm, "--", *map(str, params)], cwd=installed.tmp,
                          env=dict(env or installed.env, SAMRS_OPENED_REPORT=str(report)), capture_output=True,
                          text=True, timeout=600)
    if not succeed:
        assert proc.returncode != 0, proc.stdout[-3000:]
        return proc.stdout + proc.stderr, opened_files(report)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json_of(proc.stdout)["results"]
    opened = opened_files(report)
    assert_installed_copy_used(installed, opened, *modules)
    return results, opened


@pytest.fixture(scope="module")
def scene(installed):
    folder = installed.tmp / "scene"
    folder.mkdir()
    return {"raster": td.scene_raster(folder / "scene.tif"), "boxes": td.scene_boxes(folder / "boxes.gpkg")}


@pytest.fixture(scope="module")
def grabcut_run(installed, scene):
    out = installed.tmp / "grabcut"
    out.mkdir()
    results, opened = run_installed(
        installed, "grabcut", "samrs:segmentboxes", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}",
        "CLASS_FIELD=label", f"BACKEND={GRABCUT}", "EMBEDDING_CACHE=false", "PREVIEW=true", "COG=true",
        "SMOOTH_PX=1.5", f"OUTPUT_POLYGONS={out / 'masks.gpkg'}", f"OUTPUT_SEMANTIC={out / 'semantic.tif'}",
        f"OUTPUT_INSTANCES={out / 'instances.tif'}",
        modules=["__init__.py", "processing/plugin.py", "processing/segment_boxes.py", "samrs_previews/__init__.py"])
    return SimpleNamespace(out=out, results=results, opened=opened)


@pytest.fixture(scope="module")
def dataset_run(installed):
    """samrs:segmentdataset on images a (three good boxes, one bad line), b (no annotation file: an
    unreadable one), c (no annotations), as test_dataset_tools writes them."""
    images, labels = installed.tmp / "dataset" / "images", installed.tmp / "dataset" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for stem in "abc":
        td.scene_raster(images / f"{stem}.tif")
    (labels / "a.txt").write_text(td.DOTA_A)
    (labels / "b.txt").write_text("this is not an annotation file\n")
    out = installed.tmp / "dataset" / "out"
    results, _ = run_installed(installed, "segmentdataset", "samrs:segmentdataset", f"IMAGES={images}",
                               f"ANNOTATIONS={labels}", "FORMAT=1", f"BACKEND={GRABCUT}", "EMBEDDING_CACHE=false",
                               f"OUTPUT={out}", modules=["processing/segment_dataset.py"])
    return SimpleNamespace(out=out, results=results)


# -- the installed copy ---------------------------------------------------------------------------

def test_the_installed_copy_is_the_zip_and_lists_the_algorithms_run_here(installed):
    with zipfile.ZipFile(installed.zip) as zf:
        files = {n for n in zf.namelist() if not n.endswith("/")}
    unzipped = {p.relative_to(installed.plugins).as_posix() for p in installed.root.rglob("*") if p.is_file()}
    assert unzipped == files  # a plain folder from the ZIP: no link to the checkout, no venv, nothing added
    assert not installed.root.is_symlink() and not (installed.root / ".venv").exists()
    assert installed.algorithms == ALGORITHMS, "an algorithm the provider has is not run by this file"


# -- every algorithm under qgis_process -----------------------------------------------------------

def test_segmentboxes_grabcut_with_previews(grabcut_run):
    from test_previews_tools import check_contact_sheet, check_overview

    results, out = grabcut_run.results, grabcut_run.out
    assert results["BACKEND_USED"] == "grabcut"
    assert (int(results["BOX_COUNT"]), int(results["OK_COUNT"])) == (len(td.DISCS), len(td.DISCS))
    for key, name in (("OUTPUT_POLYGONS", "masks.gpkg"), ("OUTPUT_SEMANTIC", "semantic.tif"),
                      ("OUTPUT_INSTANCES", "instances.tif"), ("OUTPUT_PREVIEW", "masks_preview.png"),
                      ("OUTPUT_CONTACT_SHEET", "masks_worst.png")):
        assert results[key] == str(out / name) and (out / name).is_file(), key
    check_overview(out / "masks_preview.png", out / "semantic.tif")
    check_contact_sheet(out / "masks_worst.png", int(results["OK_COUNT"]))


def test_segmentboxes_writes_cog_rasters_and_smoothed_polygons(grabcut_run):
    """The same run asked for Cloud Optimized GeoTIFF rasters and polygons smoothed by 1.5 pixels."""
    import rasterio
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    out = grabcut_run.out
    for name in ("semantic.tif", "instances.tif"):
        errors, warnings, _ = validate(str(out / name), full_check=True)
        assert errors == [] and warnings == [], (name, errors, warnings)
        with rasterio.open(out / name) as ds:
            settings = json.loads(ds.tags()["SAMRS_SETTINGS"])
            assert settings["cog"] is True and settings["smooth_px"] == 1.5
    for row in read_features(out / "masks.gpkg", layer="masks"):
        ring = row["geometry"].geoms[0].exterior
        edges = np.diff(np.asarray(ring.coords), axis=0)
        diagonal = (np.abs(edges) > 1e-9).all(axis=1)  # neither along the rows nor the columns: no pixel stair
        assert row["geometry"].is_valid and diagonal.mean() > 0.5, row["instance_id"]


def test_segmentboxes_sam_with_the_tiny_checkpoint(installed, scene, tiny_sam_checkpoint):
    out = installed.tmp / "sam"
    out.mkdir()
    results, opened = run_installed(
        installed, "sam", "samrs:segmentboxes", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}",
        "CLASS_FIELD=label", f"BACKEND={SAM}", f"CHECKPOINT={tiny_sam_checkpoint}", "DEVICE=1", "PREVIEW=true",
        f"OUTPUT_POLYGONS={out / 'masks.gpkg'}", f"OUTPUT_SEMANTIC={out / 'semantic.tif'}",
        modules=["processing/segment_boxes.py", "samrs_qgis/backends/sam.py", "samrs_previews/__init__.py"])
    assert "sam" in results["BACKEND_USED"].lower()
    assert int(results["BOX_COUNT"]) == len(td.DISCS)
    assert int(results["OK_COUNT"]) + int(results["EMPTY_COUNT"]) == len(td.DISCS)
    assert len(read_features(out / "masks.gpkg", layer="masks")) == len(td.DISCS)
    assert (out / "semantic.tif").is_file()
    assert Path(results["OUTPUT_PREVIEW"]).is_file() and Path(results["OUTPUT_CONTACT_SHEET"]).is_file()
    torch_files = [p for p in opened if "/site-packages/torch/" in p]
    assert torch_files and all(p.startswith(f"{VENV}/") for p in torch_files)  # torch through SAMRS_VENV


@pytest.fixture(scope="module")
def sam2_models(installed, tiny_sam2_checkpoint):
    """The tiny SAM 2.1 as its .pt file and as an ONNX pair exported from it (the encoder file: the toolbox's
    model-file parameter takes files, the decoder is found beside it)."""
    from samrs.samrs_qgis.onnx_export import export_onnx

    pair = export_onnx(tiny_sam2_checkpoint, str(installed.tmp / "sam2_pair"))
    return {"pt": tiny_sam2_checkpoint, "onnx": pair.encoder}


@pytest.mark.parametrize("kind, module", [("pt", "samrs_qgis/backends/sam2_backend.py"),
                                          ("onnx", "samrs_qgis/backends/onnx_sam2.py")])
def test_segmentboxes_sam2_file_and_onnx_pair(installed, scene, sam2_models, kind, module):
    out = installed.tmp / f"sam2_{kind}"
    out.mkdir()
    results, _ = run_installed(
        installed, f"sam2_{kind}", "samrs:segmentboxes", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}",
        "CLASS_FIELD=label", f"BACKEND={SAM}", f"CHECKPOINT={sam2_models[kind]}", "DEVICE=1",
        f"OUTPUT_POLYGONS={out / 'masks.gpkg'}", modules=["processing/segment_boxes.py", module])
    assert results["BACKEND_USED"].startswith("SAM 2.1 hiera_t")
    assert int(results["OK_COUNT"]) + int(results["EMPTY_COUNT"]) == int(results["BOX_COUNT"]) == len(td.DISCS)
    assert len(read_features(out / "masks.gpkg", layer="masks")) == len(td.DISCS)


# -- set-up: the managed environment and models -------------------------------------------------------

@pytest.fixture(scope="module")
def light_home(installed):
    """A user's data folder (SAMRS_HOME) whose managed environment ``samrs:installdependencies`` of the installed
    plugin filled with the light profile, by real pip; the runs below see no other environment (no SAMRS_VENV)."""
    home = installed.tmp / "light-home"
    env = light_env(installed, home)
    results, opened = run_installed(installed, "installdependencies", "samrs:installdependencies", "PROFILE=0",
                                    env=env, modules=["processing/install_dependencies.py",
                                                      "samrs_qgis/environment/installer.py"])
    return SimpleNamespace(home=home, env=env, results=results, opened=opened)


def light_env(installed, home):
    env = {k: v for k, v in installed.env.items() if k not in ("SAMRS_VENV", "VIRTUAL_ENV")}
    env["SAMRS_HOME"] = str(home)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def test_installdependencies_installs_the_light_profile(light_home):
    from samrs.samrs_qgis.environment import locations

    results = light_home.results
    environment = light_home.home / "envs" / locations.python_tag()
    assert results["ENVIRONMENT"] == str(environment)
    assert "ONNX Runtime 1.32.0" in results["STATUS"] and "ran a tiny graph" in results["STATUS"]
    assert "OpenCV" in results["STATUS"] and "torch: not installed" in results["STATUS"]
    assert "Dask distributed: 2026.8.0" in results["STATUS"] or "Dask distributed 2026.8.0" in results["STATUS"]
    assert json.loads((environment / "samrs-environment.json").read_text())["profile"] == "light"
    assert "Successfully installed" in Path(results["LOG"]).read_text()


def test_segmentboxes_runs_an_onnx_pair_with_only_the_managed_environment(installed, light_home,
                                                                          tiny_sam_checkpoint):
    """The light profile is enough: the demo segmented by SAM from an ONNX pair (exported from the tiny SAM),
    ONNX Runtime from the managed environment the plugin put on its path, torch nowhere."""
    from samrs.samrs_qgis.onnx_export import export_onnx

    pair = export_onnx(tiny_sam_checkpoint, str(installed.tmp / "sam_pair"))
    out = installed.tmp / "light_sam"
    out.mkdir()
    demo_boxes = REPO / "demo" / "OSBS_029_boxes.gpkg"
    results, opened = run_installed(
        installed, "light_sam", "samrs:segmentboxes", f"INPUT={REPO / 'demo' / 'OSBS_029.tif'}",
        f"BOXES={demo_boxes}", f"BACKEND={SAM}", f"CHECKPOINT={pair.encoder}", "DEVICE=1",
        f"OUTPUT_POLYGONS={out / 'masks.gpkg'}", env=light_home.env,
        modules=["processing/segment_boxes.py", "samrs_qgis/backends/onnx_sam.py"])
    assert "ONNX Runtime" in results["BACKEND_USED"]
    boxes = len(read_features(demo_boxes))
    assert int(results["OK_COUNT"]) + int(results["EMPTY_COUNT"]) == int(results["BOX_COUNT"]) == boxes
    assert len(read_features(out / "masks.gpkg", layer="masks")) == boxes
    runtime = [p for p in opened if "/onnxruntime/" in p]
    assert runtime and all(p.startswith(f"{light_home.home}/") for p in runtime)
    assert not [p for p in opened if "/torch/" in p]
    # the same on two local Dask workers: distributed from the managed environment, the workers started with
    # the interpreter QGIS runs and the plugin's paths
    two = installed.tmp / "light_sam_two"
    two.mkdir()
    results, opened = run_installed(
        installed, "light_sam_two", "samrs:segmentboxes", f"INPUT={REPO / 'demo' / 'OSBS_029.tif'}",
        f"BOXES={demo_boxes}", f"BACKEND={SAM}", f"CHECKPOINT={pair.encoder}", "DEVICE=1", "WORKERS=2",
        f"OUTPUT_POLYGONS={two / 'masks.gpkg'}", env=light_home.env, modules=["samrs_qgis/cluster_windows.py"])
    assert "ONNX Runtime" in results["BACKEND_USED"]
    assert [p for p in opened if "/distributed/" in p][0].startswith(f"{light_home.home}/")
    assert read_features(two / "masks.gpkg", layer="masks") == read_features(out / "masks.gpkg", layer="masks")


def test_downloadmodel_keeps_a_verified_file_and_refuses_a_wrong_one(installed, tmp_path):
    """samrs:downloadmodel against a local mirror: MobileSAM (verified by what it holds) lands in the per-user
    models folder, where segmentboxes' model list finds it; a vit_b whose checksum does not match is refused and
    nothing is left."""
    import functools
    import http.server
    import threading

    import torch
    from test_checkpoints import _mobile_sam_state, _QuietHandler

    from samrs.samrs_qgis.checkpoints import OFFICIAL_CHECKPOINTS

    served = tmp_path / "mirror"
    served.mkdir()
    torch.save(_mobile_sam_state(), served / "mobile_sam.pt")
    (served / "sam_vit_b_01ec64.pth").write_bytes(b"not the checkpoint")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    env = dict(installed.env, SAMRS_HOME=str(home))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    mirror = f"MIRROR=http://127.0.0.1:{server.server_address[1]}/"
    try:
        results, _ = run_installed(installed, "downloadmodel", "samrs:downloadmodel",
                                   f"MODEL={list(OFFICIAL_CHECKPOINTS).index('mobile_sam')}", mirror, env=env,
                                   modules=["processing/download_model.py"])
        assert results["OUTPUT"] == str(home / "models" / "mobile_sam.pt")
        assert (home / "models" / "mobile_sam.pt").read_bytes() == (served / "mobile_sam.pt").read_bytes()
        # the segmentation algorithms' model list finds it (choice 0 is "none: the model file below")
        scene = {"raster": td.scene_raster(tmp_path / "scene.tif"), "boxes": td.scene_boxes(tmp_path / "boxes.gpkg")}
        segmented, _ = run_installed(
            installed, "official-model", "samrs:segmentboxes", f"INPUT={scene['raster']}", f"BOXES={scene['boxes']}",
            "CLASS_FIELD=label", f"OFFICIAL_MODEL={list(OFFICIAL_CHECKPOINTS).index('mobile_sam') + 1}", "DEVICE=1",
            f"OUTPUT_POLYGONS={tmp_path / 'masks.gpkg'}", env=env, modules=["processing/segment_boxes.py"])
        assert segmented["BACKEND_USED"].startswith("MobileSAM")
        assert int(segmented["OK_COUNT"]) + int(segmented["EMPTY_COUNT"]) == len(td.DISCS)
        output, _ = run_installed(installed, "downloadmodel-bad", "samrs:downloadmodel",
                                  f"MODEL={list(OFFICIAL_CHECKPOINTS).index('vit_b')}", mirror, env=env,
                                  succeed=False)
        assert "corrupt or not the official file (18 bytes" in output and "Traceback" not in output
        assert sorted(p.name for p in (home / "models").iterdir()) == ["mobile_sam.pt"]
    finally:
        server.shutdown()
        server.server_close()


def test_importannotations(installed, scene, dota):
    out = installed.tmp / "imported.gpkg"
    results, _ = run_installed(installed, "import", "samrs:importannotations", f"FOLDER={dota}",
                               f"IMAGE={scene['raster']}", f"OUTPUT={out}",
                               modules=["processing/import_annotations.py"])
    assert (int(results["ANNOTATION_COUNT"]), int(results["PROBLEM_COUNT"]), int(results["FILE_COUNT"])) == (4, 1, 2)
    assert results["OUTPUT"] == str(out)
    rows = read_features(out, layer="boxes")
    assert [r["class_name"] for r in rows] == ["storage-tank", "swimming-pool", "storage-tank", "plane"]


def test_segmentdataset(dataset_run):
    from test_dataset_tools import check_outputs

    results = dataset_run.results
    assert (int(results["IMAGE_COUNT"]), int(results["DONE_COUNT"]), int(results["FAILED_COUNT"]),
            int(results["NO_BOXES_COUNT"]), int(results["BOX_COUNT"])) == (3, 1, 1, 1, 3)
    check_outputs(dataset_run.out, results["MANIFEST"], results["COCO"])


def test_datasetreport(installed, dataset_run):
    html, tables = installed.tmp / "report" / "report.html", installed.tmp / "report" / "tables"
    results, _ = run_installed(installed, "report", "samrs:datasetreport", f"FOLDER={dataset_run.out}",
                               f"OUTPUT_HTML={html}", f"OUTPUT_CSV={tables}",
                               modules=["processing/dataset_report.py"])
    assert int(results["SUBSET_COUNT"]) == 1 and int(results["INSTANCE_COUNT"]) == 3
    assert results["OUTPUT_HTML"] == str(html) and "<html" in html.read_text(encoding="utf-8").lower()
    assert (tables / "instances_per_class.csv").is_file()


def test_evaluate(installed):
    folder = installed.tmp / "evaluate"
    folder.mkdir()
    grid = td.scene_raster(folder / "scene.tif")
    produced, reference = td.write_squares(folder)
    metrics = folder / "metrics.csv"
    results, _ = run_installed(installed, "evaluate", "samrs:evaluate", f"PRODUCED={produced}",
                               f"REFERENCE={reference}", f"GRID={grid}", "REFERENCE_CLASS_FIELD=kind",
                               f"OUTPUT_METRICS={metrics}",
                               modules=["processing/evaluate.py"])
    for key, expected in (("MEAN_IOU", td.MEAN_IOU), ("WEIGHTED_IOU", td.WEIGHTED_IOU), ("AP", td.AP),
                          ("AP50", td.AP50), ("AP75", td.AP75)):
        assert float(results[key]) == pytest.approx(expected), key
    assert results["OUTPUT_METRICS"] == str(metrics)
    with open(metrics, newline="", encoding="utf-8") as f:
        assert {row["class"] for row in csv.DictReader(f)} == {"a", "b", "(all)"}


def test_exportreviewed(installed, dataset_run):
    """The review recorded in a mask layer (as the review dock writes it) is honoured by the export."""
    dataset = installed.tmp / "reviewed-dataset"
    shutil.copytree(dataset_run.out, dataset)
    masks, new_class = review_first_two_masks(dataset / "geo" / "a.gpkg")
    relabelled = masks[1]
    out = installed.tmp / "reviewed"
    results, _ = run_installed(installed, "export", "samrs:exportreviewed", f"DATASET={dataset}", f"OUTPUT={out}",
                               modules=["processing/export_reviewed.py"])
    assert (int(results["DROPPED_COUNT"]), int(results["RELABELLED_COUNT"]), int(results["IMAGE_COUNT"])) == (1, 1, 1)
    coco = json.loads((out / "coco_instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    categories = {a["instance_id"]: names[a["category_id"]] for a in coco["annotations"]}
    assert sorted(categories) == masks[1:] and categories[relabelled] == new_class


# -- the review dock in the QGIS desktop ----------------------------------------------------------

DESKTOP_SCRIPT = r'''
import json, os, sys, traceback
import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget

out = os.environ["SAMRS_GUI_RESULT"]
result = {}


def finish():
    with open(out, "w") as f:
        f.write(json.dumps(result))
    QgsApplication.exit(0)


def run():
    try:
        window = qgis.utils.iface.mainWindow()
        result["loaded"] = qgis.utils.isPluginLoaded("samrs")
        result["plugin_paths"] = list(qgis.utils.plugin_paths)
        actions = {a.objectName(): a for a in window.findChildren(QAction)}
        result["action"] = "samrsReviewMasks" in actions
        layer = QgsVectorLayer(os.environ["SAMRS_MASKS"] + "|layername=masks", "masks", "ogr")
        QgsProject.instance().addMapLayer(layer)
        actions["samrsReviewMasks"].trigger()
        QApplication.processEvents()
        dock = window.findChild(QDockWidget, "samrsReviewDock")
        result["dock_visible"] = dock is not None and dock.isVisible()
        dock.layer_box.setLayer(layer)
        QApplication.processEvents()
        result["progress"] = dock.progress_label.text()
        result["current"] = None if dock.session is None or dock.session.current() is None \
            else dock.session.current()["instance_id"]
        result["files"] = {
            "samrs": sys.modules["samrs"].__file__,
            "plugin": sys.modules[type(qgis.utils.plugins["samrs"]).__module__].__file__,
            "dock": sys.modules[type(dock).__module__].__file__,
        }
        result["checkout_modules"] = sorted(
            name for name, module in list(sys.modules.items())
            if os.path.realpath(getattr(module, "__file__", None) or "/").startswith(os.environ["SAMRS_CHECKOUT"] + "/")
            and "/.venv/" not in (module.__file__ or ""))
        window.grab().save(out + ".png")
    except Exception:
        result["error"] = traceback.format_exc()
    QTimer.singleShot(200, finish)


QTimer.singleShot(3000, run)
'''


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs the QGIS desktop application and xvfb-run (make setup installs both)")
def test_review_dock_opens_in_the_desktop_from_the_installed_copy(installed, grabcut_run):
    script, result_file = installed.tmp / "desktop.py", installed.tmp / "desktop.json"
    script.write_text(DESKTOP_SCRIPT)
    env = qgis_env(installed.config, SAMRS_GUI_RESULT=str(result_file), SAMRS_CHECKOUT=str(REPO),
                   SAMRS_MASKS=str(grabcut_run.out / "masks.gpkg"))
    env.pop("QT_QPA_PLATFORM")  # a real X display (Xvfb), not the offscreen platform
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo", "--noversioncheck",
                           "--code", str(script)], env=env, cwd=installed.tmp, capture_output=True, text=True,
                          timeout=300)
    assert result_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    assert result["loaded"] and result["action"] and result["dock_visible"], result
    assert str(installed.plugins) in result["plugin_paths"]
    for name, path in result["files"].items():  # the plugin, its menu object and the dock: all unzipped ones
        assert Path(path).is_relative_to(installed.root), (name, path)
    assert result["files"]["dock"] == str(installed.root / "gui" / "review_dock.py")
    assert result["checkout_modules"] == []
    assert result["current"] is not None and f"/ {len(td.DISCS)}" in result["progress"], result
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(f"{result_file}.png", artifacts / "installed-review-dock.png")

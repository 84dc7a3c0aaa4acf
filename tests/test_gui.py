"""The plugin in the real QGIS desktop application (under Xvfb): it loads, adds its menu/toolbar action,
and the action opens the algorithm's dialog. A screenshot is kept in test-artifacts/."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import PLUGINS_DIR, REPO

GUI_SCRIPT = r'''
import json, os
import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication

result = {}
out = os.environ["SAMRS_GUI_RESULT"]

def finish():
    open(out, "w").write(json.dumps(result))
    QgsApplication.exit(0)

def close_dialog():
    titles = [w.windowTitle() for w in QApplication.topLevelWidgets() if w.isVisible()]
    result["dialogs"] = titles
    for w in QApplication.topLevelWidgets():
        if w.isVisible() and "Segment detection boxes" in w.windowTitle():
            w.grab().save(out + ".dialog.png")
            w.close()
    QTimer.singleShot(500, finish)

def check():
    window = qgis.utils.iface.mainWindow()
    result["loaded"] = qgis.utils.isPluginLoaded("samrs")
    actions = {a.objectName(): a for a in window.findChildren(QAction)}
    result["action"] = "samrsSegmentBoxes" in actions
    result["menu"] = any(a.text() == "&SAMRS" for a in qgis.utils.iface.pluginMenu().actions())
    result["algorithm"] = QgsApplication.processingRegistry().algorithmById("samrs:segmentboxes") is not None
    window.grab().save(out + ".png")
    if result["action"]:
        QTimer.singleShot(3000, close_dialog)
        actions["samrsSegmentBoxes"].trigger()  # modal: returns when close_dialog closes it
    else:
        finish()

QTimer.singleShot(3000, check)
'''


def run_in_qgis_desktop(tmp_path, script_text, **env_extra):
    """Start the real QGIS desktop under Xvfb with the plugin enabled, run ``script_text`` in it (it writes
    JSON to $SAMRS_GUI_RESULT and quits), copy its screenshots to test-artifacts/ and return the JSON."""
    config = tmp_path / "config"
    (config / "profiles" / "default" / "QGIS").mkdir(parents=True)
    (config / "profiles" / "default" / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nsamrs=true\n")
    script = tmp_path / "script.py"
    script.write_text(script_text)
    result_file = tmp_path / "result.json"
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QGIS_PLUGINPATH=str(PLUGINS_DIR),
               SAMRS_GUI_RESULT=str(result_file), **env_extra)
    env.pop("QT_QPA_PLATFORM", None)  # a real X display (Xvfb), not the offscreen platform
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo",
                           "--noversioncheck", "--code", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert result_file.exists(), proc.stdout + proc.stderr
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    for png in tmp_path.glob("result.json*.png"):
        shutil.copy(png, artifacts / png.name.replace("result.json", "qgis-window"))
    return json.loads(result_file.read_text())


NEEDS_DESKTOP = pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                                   reason="needs the QGIS desktop application and xvfb-run (make setup installs both)")


@NEEDS_DESKTOP
def test_plugin_loads_in_the_qgis_desktop_and_opens_its_dialog(tmp_path):
    result = run_in_qgis_desktop(tmp_path, GUI_SCRIPT)
    assert result["loaded"] and result["action"] and result["menu"] and result["algorithm"], result
    assert any("Segment detection boxes with SAM" in t for t in result["dialogs"]), result


REVIEW_SCRIPT = r'''
import json, os
import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget

result = {"steps": []}
out = os.environ["SAMRS_GUI_RESULT"]
masks_path = os.environ["SAMRS_MASKS"]

def finish():
    open(out, "w").write(json.dumps(result))
    QgsApplication.exit(0)

def snapshot(dock, layer):
    feature = dock.session.current()
    result["steps"].append({"current": None if feature is None else feature["instance_id"],
                            "label": dock.mask_label.text(), "progress": dock.progress_label.text()})

def run():
    try:
        window = qgis.utils.iface.mainWindow()
        QgsProject.instance().addMapLayer(QgsRasterLayer(os.environ["SAMRS_RASTER"], "scene"))
        layer = QgsVectorLayer(masks_path + "|layername=masks", "masks", "ogr")
        QgsProject.instance().addMapLayer(layer)
        actions = {a.objectName(): a for a in window.findChildren(QAction)}
        result["action"] = "samrsReviewMasks" in actions
        actions["samrsReviewMasks"].trigger()
        dock = window.findChild(QDockWidget, "samrsReviewDock")
        result["dock_visible"] = dock is not None and dock.isVisible()
        dock.layer_box.setLayer(layer)
        window.activateWindow()
        QApplication.setActiveWindow(window)
        dock.widget().setFocus()
        QApplication.processEvents()
        snapshot(dock, layer)
        for key in (Qt.Key_A, Qt.Key_R, Qt.Key_2, Qt.Key_B, Qt.Key_N):
            QTest.keyClick(QApplication.focusWidget() or dock.widget(), key)
            QApplication.processEvents()
            snapshot(dock, layer)
        canvas = qgis.utils.iface.mapCanvas()
        result["extent"] = canvas.extent().toString()
        canvas.refreshAllLayers()
        canvas.waitWhileRendering()
        QApplication.processEvents()
        window.grab().save(out + ".review.png")
    except Exception as exc:
        import traceback
        result["error"] = traceback.format_exc()
    QTimer.singleShot(500, finish)

QTimer.singleShot(3000, run)
'''


@NEEDS_DESKTOP
def test_review_dock_keys_decide_and_the_layer_keeps_the_decisions(tmp_path):
    import fiona
    from affine import Affine

    import support
    from samrs.samrs_qgis.boxes import read_box_file
    from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs.samrs_qgis.settings import SegmentOptions

    transform = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
    raster, boxes, _ = support.synthetic_files(tmp_path, 256, 4, transform)
    masks = str(tmp_path / "masks.gpkg")
    segment_boxes(raster, read_box_file(boxes), OutputPaths(polygons=masks),
                  SegmentOptions(backend="grabcut", class_field="cls"))
    with fiona.open(masks, layer="masks") as src:
        classes = sorted({f["properties"]["class_name"] for f in src}, key=lambda n: n)

    result = run_in_qgis_desktop(tmp_path, REVIEW_SCRIPT, SAMRS_MASKS=masks, SAMRS_RASTER=raster)
    assert "error" not in result, result.get("error")
    assert result["action"] and result["dock_visible"]
    order = [s["current"] for s in result["steps"]]
    # A accepts the first mask and moves on, R rejects the second, 2 relabels the third to the second
    # class and moves on, B steps back to the third, N skips forward to the fourth again.
    first, second, third, fourth = order[0], order[1], order[2], order[3]
    assert len({first, second, third, fourth}) == 4, result["steps"]
    assert order[4] == third and order[5] == fourth, result["steps"]
    assert "3 / " in result["steps"][3]["progress"], result["steps"]
    assert "1 accepted, 1 rejected, 1 relabelled" in result["steps"][3]["progress"]

    rows = {f["properties"]["instance_id"]: f["properties"] for f in fiona.open(masks, layer="masks")}  # reread
    assert rows[first]["review"] == "accepted" and rows[second]["review"] == "rejected"
    assert rows[third]["review"] == "relabelled" and rows[third]["class_name"] == classes[1]


SETUP_SCRIPT = r'''
import json, os, time, traceback
import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QDialog, QPushButton, QRadioButton

result = {}
out = os.environ["SAMRS_GUI_RESULT"]
state = {"started": time.time()}

def finish():
    open(out, "w").write(json.dumps(result))
    QgsApplication.exit(0)

def table_rows(dialog):
    table = dialog.table
    return [[table.item(r, c).text() for c in range(2)] for r in range(table.rowCount())]

def when_idle(dialog, then, limit=600):
    """Call then(dialog) once the dialog's worker (check or install) has finished."""
    def poll():
        if dialog.worker is None:
            then(dialog)
        elif time.time() - state["started"] > limit:
            result["error"] = "timed out"
            finish()
        else:
            QTimer.singleShot(300, poll)
    poll()

def start():
    try:
        window = qgis.utils.iface.mainWindow()
        actions = {a.objectName(): a for a in window.findChildren(QAction)}
        result["menu_entry"] = actions["samrsSetup"].text()
        actions["samrsSetup"].trigger()
        dialog = window.findChild(QDialog, "samrsSetupDialog")
        result["visible"] = dialog is not None and dialog.isVisible()
        when_idle(dialog, checked)
    except Exception:
        result["error"] = traceback.format_exc()
        finish()

def checked(dialog):
    result["before"] = table_rows(dialog)
    dialog.findChild(QRadioButton, "samrsProfileLight").setChecked(True)
    dialog.log_button.setChecked(True)
    dialog.findChild(QPushButton, "samrsInstall").click()
    result["cancel_enabled_while_installing"] = dialog.cancel_button.isEnabled()
    when_idle(dialog, installed)

def installed(dialog):
    try:
        result["after"] = table_rows(dialog)
        result["message"] = dialog.message.text()
        result["where"] = dialog.where.text()
        result["log_lines"] = dialog.log.blockCount()
        result["progress"] = dialog.progress.value()
        import sys
        result["sys_path"] = list(sys.path)
        QApplication.processEvents()
        dialog.grab().save(out + ".setup.png")
        from samrs.processing.qgis_adapters import engine_errors
        from samrs.samrs_qgis.errors import BackendUnavailableError
        try:
            with engine_errors():
                raise BackendUnavailableError("The SAM backend needs torch.", "full")
        except Exception as exc:
            result["desktop_hint"] = str(exc)
    except Exception:
        result["error"] = traceback.format_exc()
    QTimer.singleShot(300, finish)

QTimer.singleShot(3000, start)
'''


@NEEDS_DESKTOP
def test_the_setup_dialog_installs_the_light_profile_from_the_menu(tmp_path):
    """Plugins › SAMRS › Set up models and dependencies…: the dialog shows what is missing, installs the light
    profile by real pip into the managed environment (a temporary SAMRS_HOME), and shows it working."""
    home = tmp_path / "home"
    result = run_in_qgis_desktop(tmp_path, SETUP_SCRIPT, SAMRS_HOME=str(home))
    assert "error" not in result, result.get("error")
    assert result["menu_entry"] == "Set up models and dependencies…" and result["visible"]
    before = dict(result["before"])
    assert before["ONNX Runtime"] == "✘ not installed"
    assert result["cancel_enabled_while_installing"]
    after = dict(result["after"])
    assert after["ONNX Runtime"].startswith("✔ 1.32.0 (providers:") and "ran a tiny graph" in after["ONNX Runtime"]
    assert after["OpenCV"].startswith("✔ 4.10") and "GrabCut" in after["OpenCV"]
    assert "Done: the light profile is installed and works" in result["message"]
    assert "the light profile, installed" in result["where"] and str(home) in result["where"]
    assert result["log_lines"] > 5 and result["progress"] == 1000
    site = f"{home}/envs/py{sys.version_info[0]}.{sys.version_info[1]}/lib/python{sys.version_info[0]}." \
           f"{sys.version_info[1]}/site-packages"
    assert site in result["sys_path"]  # the new environment is usable at once, without restarting QGIS
    assert "Open Plugins › SAMRS › Set up models and dependencies… and install the full profile" in \
        result["desktop_hint"]
    assert (REPO / "test-artifacts" / "qgis-window.setup.png").is_file()

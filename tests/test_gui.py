"""The plugin in the real QGIS desktop application (under Xvfb): it loads, adds its menu/toolbar action,
and the action opens the algorithm's dialog. A screenshot is kept in test-artifacts/."""
import json
import os
import shutil
import subprocess

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


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs the QGIS desktop application and xvfb-run (make setup installs both)")
def test_plugin_loads_in_the_qgis_desktop_and_opens_its_dialog(tmp_path):
    config = tmp_path / "config"
    (config / "profiles" / "default" / "QGIS").mkdir(parents=True)
    (config / "profiles" / "default" / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nsamrs=true\n")
    script = tmp_path / "check.py"
    script.write_text(GUI_SCRIPT)
    result_file = tmp_path / "result.json"
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QGIS_PLUGINPATH=str(PLUGINS_DIR),
               SAMRS_GUI_RESULT=str(result_file))
    env.pop("QT_QPA_PLATFORM", None)  # a real X display (Xvfb), not the offscreen platform
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo",
                           "--noversioncheck", "--code", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert result_file.exists(), proc.stdout + proc.stderr
    result = json.loads(result_file.read_text())
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    for png in tmp_path.glob("result.json*.png"):
        shutil.copy(png, artifacts / png.name.replace("result.json", "qgis-window"))
    assert result["loaded"] and result["action"] and result["menu"] and result["algorithm"], result
    assert any("Segment detection boxes with SAM" in t for t in result["dialogs"]), result

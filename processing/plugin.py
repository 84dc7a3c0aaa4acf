"""The plugin object QGIS creates: registers the Processing provider and, in the GUI, a menu and toolbar
entry that opens the main algorithm. ``iface`` is not touched while loading, so ``qgis_process`` can
load the plugin headless."""
from __future__ import annotations

from qgis.core import QgsApplication

from .provider import SamrsProvider, icon_path

MAIN_ALGORITHM = "samrs:segmentboxes"


class SamrsPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        if self.provider is None:
            self.provider = SamrsProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        self.action = QAction(QIcon(icon_path()), "Segment detection boxes with SAM…", self.iface.mainWindow())
        self.action.setObjectName("samrsSegmentBoxes")
        self.action.triggered.connect(self.open_algorithm)
        self.iface.addPluginToMenu("&SAMRS", self.action)
        self.iface.addToolBarIcon(self.action)

    def open_algorithm(self):
        import processing  # QGIS's Processing framework, imported only when the GUI asks

        processing.execAlgorithmDialog(MAIN_ALGORITHM, {})

    def unload(self):
        if self.action is not None:
            self.iface.removePluginMenu("&SAMRS", self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

"""The plugin object QGIS creates: registers the Processing provider and, in the GUI, menu and toolbar
entries that open the main algorithm and the mask review dock, and a menu entry for the set-up dialog.
``iface`` is not touched while loading, so ``qgis_process`` can load the plugin headless."""
from __future__ import annotations

from qgis.core import QgsApplication

from .base import icon_path
from .provider import SamrsProvider

MAIN_ALGORITHM = "samrs:segmentboxes"


class SamrsPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None
        self.review_action = None
        self.review_dock = None
        self.setup_action = None
        self.setup_dialog = None

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
        self.review_action = QAction(QIcon(icon_path()), "Review masks…", self.iface.mainWindow())
        self.review_action.setObjectName("samrsReviewMasks")
        self.review_action.setCheckable(True)
        self.review_action.toggled.connect(self.show_review)
        self.iface.addPluginToMenu("&SAMRS", self.review_action)
        self.iface.addToolBarIcon(self.review_action)
        self.setup_action = QAction(QIcon(icon_path()), "Set up models and dependencies…", self.iface.mainWindow())
        self.setup_action.setObjectName("samrsSetup")
        self.setup_action.triggered.connect(self.open_setup)
        self.iface.addPluginToMenu("&SAMRS", self.setup_action)

    def open_algorithm(self):
        import processing  # QGIS's Processing framework, imported only when the GUI asks

        processing.execAlgorithmDialog(MAIN_ALGORITHM, {})

    def open_setup(self):
        """The set-up dialog (made on first use, kept: an install goes on while it is shown)."""
        if self.setup_dialog is None:
            from ..gui.setup_dialog import SetupDialog

            self.setup_dialog = SetupDialog(self.iface.mainWindow())
        self.setup_dialog.show()
        self.setup_dialog.raise_()
        self.setup_dialog.activateWindow()

    def show_review(self, visible: bool):
        """Show or hide the review dock (made on first use)."""
        if self.review_dock is None:
            from qgis.PyQt.QtCore import Qt

            from ..gui.review_dock import ReviewDock

            self.review_dock = ReviewDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.review_dock)
            self.review_dock.visibilityChanged.connect(self.review_action.setChecked)
        self.review_dock.setVisible(visible)

    def unload(self):
        if self.review_dock is not None:
            self.iface.removeDockWidget(self.review_dock)
            self.review_dock.deleteLater()
            self.review_dock = None
        if self.setup_dialog is not None:
            self.setup_dialog.close()  # stops an install still running
            self.setup_dialog.deleteLater()
            self.setup_dialog = None
        for action in (self.action, self.review_action, self.setup_action):
            if action is not None:
                self.iface.removePluginMenu("&SAMRS", action)
                self.iface.removeToolBarIcon(action)
        self.action = self.review_action = self.setup_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

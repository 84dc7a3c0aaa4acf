"""The review dock: walks the masks of a result layer on the map, one key per decision.

Keys (while the dock is shown and it or the map has focus): A accept, R reject, C relabel to the class
chosen in the dock (1-9 pick and apply a class directly), B one mask back, N skip; in the dock also
Backspace (back) and Space (skip).
"""
from __future__ import annotations

from typing import Optional

from qgis.core import QgsCoordinateTransform, QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (QComboBox, QDockWidget, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                                 QShortcut, QVBoxLayout, QWidget)

from ..samrs_qgis.review_fields import REVIEW_FIELD
from .review import FILTERS, ORDERS, ReviewSession

ZOOM_MARGIN = 1.0  # map extent around a mask, as a multiple of its larger side


class ReviewDock(QDockWidget):
    def __init__(self, iface, parent=None):
        super().__init__("SAMRS mask review", parent)
        self.setObjectName("samrsReviewDock")
        self.iface = iface
        self.session: Optional[ReviewSession] = None
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.order_box, self.filter_box, self.class_box = QComboBox(), QComboBox(), QComboBox()
        self.order_box.addItems(ORDERS)
        self.filter_box.addItems(FILTERS)
        form.addRow("Result layer", self.layer_box)
        form.addRow("Order", self.order_box)
        form.addRow("Show", self.filter_box)
        form.addRow("Relabel to", self.class_box)
        layout.addLayout(form)
        self.mask_label, self.progress_label = QLabel(), QLabel()
        self.mask_label.setObjectName("samrsReviewMask")
        self.progress_label.setObjectName("samrsReviewProgress")
        layout.addWidget(self.mask_label)
        layout.addWidget(self.progress_label)
        buttons = QHBoxLayout()
        for text, slot in (("Back (B)", self.back), ("Accept (A)", self.accept), ("Reject (R)", self.reject),
                           ("Relabel (C)", self.relabel), ("Skip (N)", self.skip)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Keys: A accept · R reject · C relabel · 1–9 class · B/Backspace back · N/Space skip"))
        layout.addStretch(1)
        self.setWidget(body)
        self._shortcuts = []
        keys = {"A": self.accept, "R": self.reject, "C": self.relabel, "B": self.back, "N": self.skip}
        keys.update({str(i): (lambda i=i: self.relabel_to_index(i - 1)) for i in range(1, 10)})
        # On the map the keys work too (the user looks at the mask there), but Space and Backspace keep
        # their map meanings (pan, delete); all of them only while the dock is shown.
        for target, extra in ((self, {"Backspace": self.back, "Space": self.skip}), (iface.mapCanvas(), {})):
            for key, slot in dict(keys, **extra).items():
                shortcut = QShortcut(QKeySequence(key), target)
                shortcut.setContext(Qt.WidgetWithChildrenShortcut)
                shortcut.activated.connect(slot)
                self._shortcuts.append(shortcut)
        self.visibilityChanged.connect(self._enable_keys)
        self.layer_box.layerChanged.connect(self.start)
        self.order_box.currentTextChanged.connect(self.start)
        self.filter_box.currentTextChanged.connect(self.start)
        self.start()

    def _enable_keys(self, visible: bool):
        for shortcut in self._shortcuts:
            shortcut.setEnabled(visible)

    # -- session --------------------------------------------------------------------------------------
    def start(self, *_):
        layer = self.layer_box.currentLayer()
        self.session = None
        if layer is not None:
            try:
                self.session = ReviewSession(layer, self.order_box.currentText(), self.filter_box.currentText())
            except ValueError as exc:
                self.mask_label.setText(str(exc))
                self.progress_label.setText("")
                return
            self.class_box.clear()
            self.class_box.addItems(self.session.classes)
        self.show_current()

    def show_current(self):
        if self.session is None:
            self.mask_label.setText("Choose a result layer (the polygon layer of a SAMRS run).")
            self.progress_label.setText("")
            return
        self.progress_label.setText(self.session.progress().describe())
        feature = self.session.current()
        if feature is None:
            self.mask_label.setText("No mask to review with this filter.")
            return
        score = feature["score"] if "score" in feature.fields().names() else None
        score_text = "no score" if score is None or str(score) == "NULL" else f"score {float(score):.3f}"
        review = feature[REVIEW_FIELD]
        review_text = "unreviewed" if review is None or str(review) == "NULL" else str(review)
        self.mask_label.setText(f"Mask {self.session.position + 1} of {len(self.session.queue)}: "
                                f"#{feature[self.session.id_field]} {feature['class_name']}, {score_text}, {review_text}")
        self._zoom_to(feature)

    def _zoom_to(self, feature):
        canvas = self.iface.mapCanvas()
        layer = self.session.layer
        box = feature.geometry().boundingBox()
        transform = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
        if layer.crs().isValid() and canvas.mapSettings().destinationCrs().isValid():
            box = transform.transformBoundingBox(box)
        box.grow(max(box.width(), box.height()) * ZOOM_MARGIN)
        canvas.setExtent(box)
        layer.selectByIds([feature.id()])
        canvas.refresh()

    # -- actions --------------------------------------------------------------------------------------
    def _act(self, action):
        if self.session is not None and self.session.current_id is not None:
            action()
            self.show_current()

    def accept(self):
        self._act(self.session.accept if self.session else None)

    def reject(self):
        self._act(self.session.reject if self.session else None)

    def relabel(self):
        if self.class_box.currentText():
            self._act(lambda: self.session.relabel(self.class_box.currentText()))

    def relabel_to_index(self, index: int):
        if self.session is not None and 0 <= index < len(self.session.classes):
            self.class_box.setCurrentIndex(index)
            self.relabel()

    def back(self):
        self._act(lambda: self.session.step(-1))

    def skip(self):
        self._act(lambda: self.session.step(1))


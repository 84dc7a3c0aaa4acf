"""*Plugins › SAMRS › Set up models and dependencies…*: what is installed and working, and one click to install
a profile into the managed environment, with progress, pip's log, cancellation and the check at the end.

The work is the engine's (:mod:`samrs_qgis.environment`); it runs in a worker thread that reports through Qt
signals, so the dialog stays responsive and Cancel stops pip.
"""
from __future__ import annotations

import shlex
from typing import Optional

from qgis.PyQt.QtCore import Qt, QThread, pyqtSignal
from qgis.PyQt.QtWidgets import (QButtonGroup, QDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                                 QPlainTextEdit, QProgressBar, QPushButton, QRadioButton, QTableWidget,
                                 QTableWidgetItem, QVBoxLayout)

from ..samrs_qgis.environment import locations, nvidia, status
from ..samrs_qgis.environment.profiles import PROFILES
from ..samrs_qgis.progress import Progress

TITLE = "SAMRS: set up models and dependencies"


class _Worker(QThread):
    """Runs ``job(progress)`` off the GUI thread; ``line``/``fraction`` report, ``done`` carries the answer or
    the error's message."""

    line = pyqtSignal(str)
    fraction = pyqtSignal(float)
    done = pyqtSignal(object, str)  # (answer or None, error message or "")

    def __init__(self, job, parent=None):
        super().__init__(parent)
        self.job = job
        self.cancel_requested = False

    def run(self):
        worker = self

        class Signals(Progress):
            def info(self, message: str) -> None:
                worker.line.emit(message)

            def set_fraction(self, fraction: float) -> None:
                worker.fraction.emit(fraction)

            def is_cancelled(self) -> bool:
                return worker.cancel_requested

        try:
            answer = self.job(Signals())
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into Qt's event loop
            self.done.emit(None, str(exc) or type(exc).__name__)
            return
        self.done.emit(answer, "")


class SetupDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("samrsSetupDialog")
        self.setWindowTitle(TITLE)
        self.resize(760, 620)
        self.worker: Optional[_Worker] = None
        layout = QVBoxLayout(self)
        self.where = QLabel()
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.where)

        self.table = QTableWidget(0, 2)
        self.table.setObjectName("samrsStatusTable")
        self.table.setHorizontalHeaderLabels(["Component", "Installed and working"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMinimumHeight(7 * self.table.verticalHeader().defaultSectionSize() + 8)  # every component
        layout.addWidget(self.table)

        box = QGroupBox("Install a profile")
        form = QVBoxLayout(box)
        self.profiles = QButtonGroup(self)
        for i, profile in enumerate(PROFILES.values()):
            button = QRadioButton(f"{profile.title}: {profile.summary}")
            button.setObjectName(f"samrsProfile{profile.name.capitalize()}")
            button.setChecked(i == 0)
            self.profiles.addButton(button, i)
            form.addWidget(button)
        options = QFormLayout()
        self.index_url = QLineEdit()
        self.index_url.setPlaceholderText("pip's own index")
        self.pip_options = QLineEdit()
        self.pip_options.setPlaceholderText("e.g. --proxy http://host:3128")
        options.addRow("Package index URL", self.index_url)
        options.addRow("Extra pip options", self.pip_options)
        form.addLayout(options)
        layout.addWidget(box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        layout.addWidget(self.progress)
        self.message = QLabel()
        self.message.setObjectName("samrsSetupMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.message)
        self.log = QPlainTextEdit()
        self.log.setObjectName("samrsInstallLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(20000)
        self.log.setVisible(False)
        layout.addWidget(self.log)

        buttons = QHBoxLayout()
        self.install_button = QPushButton("Install")
        self.install_button.setObjectName("samrsInstall")
        self.cancel_button = QPushButton("Cancel install")
        self.cancel_button.setObjectName("samrsCancelInstall")
        self.cancel_button.setEnabled(False)
        self.log_button = QPushButton("Show pip's log")
        self.log_button.setCheckable(True)
        self.refresh_button = QPushButton("Check again")
        close = QPushButton("Close")
        for button in (self.install_button, self.cancel_button, self.log_button, self.refresh_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.install_button.clicked.connect(self.install)
        self.cancel_button.clicked.connect(self.cancel)
        self.log_button.toggled.connect(self.log.setVisible)
        self.refresh_button.clicked.connect(self.refresh)
        close.clicked.connect(self.close)
        self.refresh()

    # -- what is there ------------------------------------------------------------------------------
    def environment(self):
        return locations.managed_environment()

    def refresh(self) -> None:
        """Check what is installed (in a worker: it starts a Python that imports torch)."""
        from ..samrs_qgis.environment.interpreter import qgis_python

        environment = self.environment()
        record = status.read_record(environment)
        installed = (f"the {record['profile']} profile, installed {record['installed']}" if record
                     else "no finished install")
        driver = nvidia.detect()
        gpu = driver.describe() if driver else "no NVIDIA driver found: the CPU builds are installed"
        self.where.setText(f"Managed environment: {environment} ({installed}). Models folder: "
                           f"{locations.models_folder()}. GPU: {gpu}.")
        self.message.setText("Checking what is installed …")

        def job(progress):
            return status.probe(qgis_python(), [locations.site_packages(environment)])

        self._start(job, self._checked)

    def _checked(self, answer, error: str) -> None:
        if error:
            self.message.setText(f"The check failed: {error}")
            return
        self.show_status(answer)
        self.message.setText("Pick a profile and press Install." if answer.missing_for("light") and
                             answer.missing_for("full") else "Ready.")

    def show_status(self, answer: status.EnvironmentStatus) -> None:
        rows = answer.rows()
        self.table.setRowCount(len(rows))
        for row, (label, working, text) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(label))
            item = QTableWidgetItem(("✔ " if working else "✘ ") + text)
            item.setToolTip(text)
            self.table.setItem(row, 1, item)
        self.table.resizeColumnToContents(0)

    # -- installing -----------------------------------------------------------------------------------
    def selected_profile(self) -> str:
        return list(PROFILES)[self.profiles.checkedId()]

    def install(self) -> None:
        from ..samrs_qgis.environment.installer import InstallRequest, install

        request = InstallRequest(self.selected_profile(), index_url=self.index_url.text().strip() or None,
                                 pip_options=tuple(shlex.split(self.pip_options.text())))
        self.log.clear()
        self.progress.setValue(0)
        self.message.setText(f"Installing the {request.profile} profile …")
        self._start(lambda progress: install(request, progress), self._installed, installing=True)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel_requested = True
            self.message.setText("Cancelling: stopping pip …")

    def _installed(self, answer, error: str) -> None:
        if error:
            self.message.setText(f"The install did not finish: {error}")
            self.log_button.setChecked(True)
            self.refresh_button.click()
            return
        self.show_status(answer.status)
        self.progress.setValue(1000)
        self.message.setText(f"Done: the {answer.record['profile']} profile is installed and works. "
                             "Restart QGIS if it had loaded another torch before.")
        record = status.read_record(answer.environment)
        self.where.setText(f"Managed environment: {answer.environment} (the {record['profile']} profile, "
                           f"installed {record['installed']}). Models folder: {locations.models_folder()}.")

    def _start(self, job, finished, installing: bool = False) -> None:
        self.worker = _Worker(job, self)
        self.worker.line.connect(self.log.appendPlainText)
        self.worker.fraction.connect(lambda f: self.progress.setValue(int(1000 * f)))
        self.worker.done.connect(lambda answer, error: self._done(finished, answer, error))
        self.install_button.setEnabled(False)
        self.refresh_button.setEnabled(False)
        self.cancel_button.setEnabled(installing)
        self.worker.start()

    def _done(self, finished, answer, error: str) -> None:
        self.worker.wait()
        self.worker = None
        self.install_button.setEnabled(True)
        self.refresh_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        finished(answer, error)

    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        if self.worker is not None:  # an install goes on only while the dialog is open
            self.worker.cancel_requested = True
            self.worker.wait()
        super().closeEvent(event)

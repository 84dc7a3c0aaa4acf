"""What every SAMRS algorithm shares: the icon, help text without line breaks, the engine's errors shown as
``QgsProcessingException`` (a message, no traceback)."""
from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm, QgsProcessingParameterDefinition
from qgis.PyQt.QtGui import QIcon


class SamrsAlgorithm(QgsProcessingAlgorithm):
    HELP = ""
    GROUP = ("Segmentation", "segmentation")

    def group(self):
        return self.GROUP[0]

    def groupId(self):  # noqa: N802
        return self.GROUP[1]

    def shortHelpString(self):  # noqa: N802
        return self.HELP.replace("\n", " ")  # the dialog turns line breaks into <br>

    def icon(self):
        from .provider import icon_path

        return QIcon(icon_path())

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_advanced(self, parameter) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

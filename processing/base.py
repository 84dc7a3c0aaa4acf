"""What every SAMRS algorithm shares: the icon, help text without line breaks, and one way of turning the
engine's errors into Processing's (a message, never a traceback): before the run, :meth:`SamrsAlgorithm.check`
may raise the engine's ``InputError`` (shown as the reason the parameters are refused); during it,
:meth:`SamrsAlgorithm.process` may raise any ``SamrsError`` (shown as ``QgsProcessingException``).

:class:`SegmentSettings` adds the segmentation settings of :data:`samrs_qgis.settings.SEGMENT_SETTINGS` to the
algorithms that segment and maps them back onto ``SegmentOptions``."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingParameterDefinition, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)
from qgis.PyQt.QtGui import QIcon

from ..samrs_qgis.cluster import ClusterSpec
from ..samrs_qgis.errors import InputError
from ..samrs_qgis.settings import SEGMENT_SETTINGS, make_options, settings_for
from .qgis_adapters import engine_errors
from .settings_parameters import setting_parameters, setting_values


def icon_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "samrs.svg")


class SamrsAlgorithm(QgsProcessingAlgorithm):
    NAME = ""  # the id after "samrs:"
    DISPLAY_NAME = ""
    HELP = ""
    GROUP = ("Segmentation", "segmentation")

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802
        return self.DISPLAY_NAME

    def group(self):
        return self.GROUP[0]

    def groupId(self):  # noqa: N802
        return self.GROUP[1]

    def shortHelpString(self):  # noqa: N802
        return self.HELP.replace("\n", " ")  # the dialog turns line breaks into <br>

    def icon(self):
        return QIcon(icon_path())

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_advanced(self, parameter) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def add_table(self, table, exclude: Sequence[str] = (), raster_parameter: Optional[str] = None,
                  layers: Optional[dict] = None) -> None:
        """Add the parameters of a settings table's rows (all but ``exclude``: names or groups)."""
        for parameter in setting_parameters(settings_for(exclude, table), raster_parameter, layers):
            self.addParameter(parameter)

    def table_values(self, parameters, context, table, exclude: Sequence[str] = ()) -> dict:
        """The engine's values (setting name -> value) of a settings table's parameters."""
        return setting_values(self, parameters, context, settings_for(exclude, table))

    # -- the engine's errors as Processing's ------------------------------------------------------
    def check(self, parameters, context) -> Optional[str]:
        """Cheap checks before the run: the first problem's message, or None (an ``InputError`` counts too)."""
        return None

    def checkParameterValues(self, parameters, context):  # noqa: N802
        try:
            problem = self.check(parameters, context)
        except InputError as exc:
            problem = str(exc)
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def process(self, parameters, context, feedback) -> dict:
        raise NotImplementedError

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        with engine_errors():
            return self.process(parameters, context, feedback)


class SegmentSettings:
    """Mixin for algorithms that segment: the rows of the settings table they offer, as parameters, their
    checks and their ``SegmentOptions``. ``SETTINGS_EXCLUDE``: rows (names or groups) the algorithm sets
    itself; ``RASTER_PARAMETER`` / ``BOXES_PARAMETER``: its raster and box layer parameters, if any."""

    SETTINGS_EXCLUDE: Sequence[str] = ()
    RASTER_PARAMETER: Optional[str] = None
    BOXES_PARAMETER: Optional[str] = None

    def add_settings(self) -> None:
        layers = {"boxes": self.BOXES_PARAMETER} if self.BOXES_PARAMETER else {}
        self.add_table(SEGMENT_SETTINGS, self.SETTINGS_EXCLUDE, self.RASTER_PARAMETER, layers)

    def segment_options(self, parameters, context):
        """``SegmentOptions`` of the settings' parameters, backend resolved and checked (an ``InputError``)."""
        return make_options(self.table_values(parameters, context, SEGMENT_SETTINGS, self.SETTINGS_EXCLUDE))

    def check(self, parameters, context) -> Optional[str]:
        self.segment_options(parameters, context)
        return None


class ClusterParameters:
    """Mixin for algorithms that can run on a Dask cluster: the advanced parameters WORKERS and SCHEDULER and
    the :class:`ClusterSpec` they give."""

    WORKERS = "WORKERS"
    SCHEDULER = "SCHEDULER"

    def add_cluster_parameters(self) -> None:
        self.add_advanced(QgsProcessingParameterNumber(
            self.WORKERS, "Dask: local worker processes (0: none; needs dask and distributed)", minValue=0,
            defaultValue=0))
        self.add_advanced(QgsProcessingParameterString(
            self.SCHEDULER, "Dask: an existing cluster's scheduler (tcp://host:8786 or a scheduler file)",
            optional=True))

    def cluster_spec(self, parameters, context) -> ClusterSpec:
        """The cluster the parameters name (none by default); an InputError for a contradictory choice."""
        spec = ClusterSpec(self.parameterAsInt(parameters, self.WORKERS, context),
                           self.parameterAsString(parameters, self.SCHEDULER, context).strip() or None)
        spec.check()
        return spec

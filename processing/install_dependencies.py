"""``samrs:installdependencies`` — install a dependency profile into the plugin's managed environment: maps
parameters onto :mod:`samrs_qgis.environment.installer`."""
from __future__ import annotations

import shlex

from qgis.core import (QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterEnum,
                       QgsProcessingParameterString)

from ..samrs_qgis.environment.profiles import PROFILES
from .base import SamrsAlgorithm
from .qgis_adapters import FeedbackProgress

HELP = """<p>Installs what segmenting needs into an environment the plugin manages for this QGIS's Python,
outside the plugin folder (plugin updates keep it; one per Python version), and checks it by importing
everything in a new QGIS Python and running tiny models. QGIS's own numpy, GDAL, PROJ and PyQt are never
replaced.</p>
<p><b>light</b>: ONNX Runtime (its GPU build where an NVIDIA driver is found) and OpenCV, a few hundred MB:
SAM, MobileSAM and SAM 2 as ONNX pairs (no torch), and GrabCut.<br>
<b>full</b>: torch and torchvision (the CUDA build matched to the NVIDIA driver <code>nvidia-smi</code> reports,
else the CPU build), segment-anything, SAM-HQ, SAM 2 and OpenCV, several GB: every model file.</p>
<p>Packages come from pip's configured index unless an index URL is given; extra pip options (e.g.
<code>--proxy http://host:3128</code>, <code>--cert file.pem</code>) are passed to every pip run. Restart QGIS
after installing torch into a QGIS that had already loaded another.</p>"""


class InstallDependenciesAlgorithm(SamrsAlgorithm):
    NAME = "installdependencies"
    DISPLAY_NAME = "Install dependencies (managed environment)"
    HELP = HELP
    GROUP = ("Set-up", "setup")
    PROFILE = "PROFILE"
    INDEX_URL = "INDEX_URL"
    TORCH_INDEX_URL = "TORCH_INDEX_URL"
    PIP_OPTIONS = "PIP_OPTIONS"
    DRY_RUN = "DRY_RUN"

    def flags(self):
        return super().flags() | self.FlagNoThreading  # pip's subprocesses and the log, one run at a time

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(self.PROFILE, "Profile",
                                                     options=[p.title for p in PROFILES.values()], defaultValue=0))
        self.add_advanced(QgsProcessingParameterString(self.INDEX_URL, "Package index URL (empty: pip's own)",
                                                       optional=True))
        self.add_advanced(QgsProcessingParameterString(
            self.TORCH_INDEX_URL, "Index URL for torch (empty: PyTorch's index of the chosen build)", optional=True))
        self.add_advanced(QgsProcessingParameterString(self.PIP_OPTIONS, "Extra pip options", optional=True))
        self.add_advanced(QgsProcessingParameterBoolean(self.DRY_RUN, "Only resolve (pip --dry-run), install "
                                                                      "nothing", defaultValue=False))
        for name, text in (("ENVIRONMENT", "Environment folder"), ("LOG", "Install log"),
                           ("STATUS", "What is installed and working")):
            self.addOutput(QgsProcessingOutputString(name, text))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.environment.installer import InstallRequest, install

        profile = list(PROFILES)[self.parameterAsEnum(parameters, self.PROFILE, context)]
        torch_index = self.parameterAsString(parameters, self.TORCH_INDEX_URL, context).strip() or None
        request = InstallRequest(profile, index_url=self.parameterAsString(parameters, self.INDEX_URL,
                                                                           context).strip() or None,
                                 torch_index_url=torch_index,
                                 pip_options=tuple(shlex.split(self.parameterAsString(parameters, self.PIP_OPTIONS,
                                                                                      context))),
                                 dry_run=self.parameterAsBoolean(parameters, self.DRY_RUN, context))
        result = install(request, FeedbackProgress(feedback))
        lines = result.status.lines() if result.status else [f"pip report: {r}" for r in result.reports]
        return {"ENVIRONMENT": str(result.environment), "LOG": str(result.log_path), "STATUS": "\n".join(lines)}

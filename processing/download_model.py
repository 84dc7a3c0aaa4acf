"""``samrs:downloadmodel`` — download an official model file, verified, into the per-user models folder: maps
parameters onto :func:`samrs_qgis.checkpoints.download_checkpoint`."""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputFile, QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterString)

from ..samrs_qgis.checkpoints import OFFICIAL_CHECKPOINTS, describe_official
from ..samrs_qgis.environment.locations import models_folder
from .base import SamrsAlgorithm

HELP = """<p>Downloads one of the official model files (SAM, SAM-HQ, MobileSAM, SAM 2.1) into a models folder
(by default the plugin's per-user one, where the segmentation algorithms' model list finds it), and keeps it
only once verified: by its published checksum, or by what it holds where none is published. An interrupted
download resumes where it stopped when run again; a verified file already there is not fetched again.</p>
<p>A mirror URL (or the <code>SAMRS_CHECKPOINT_MIRROR</code> environment variable) fetches
<code>&lt;mirror&gt;/&lt;file name&gt;</code> instead of the official server.</p>"""


class DownloadModelAlgorithm(SamrsAlgorithm):
    NAME = "downloadmodel"
    DISPLAY_NAME = "Download a model"
    HELP = HELP
    GROUP = ("Set-up", "setup")
    MODEL = "MODEL"
    FOLDER = "FOLDER"
    MIRROR = "MIRROR"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=[describe_official(spec) for spec in OFFICIAL_CHECKPOINTS.values()],
            defaultValue=0))
        self.add_advanced(QgsProcessingParameterFile(self.FOLDER, "Models folder (empty: the plugin's own)",
                                                     behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.add_advanced(QgsProcessingParameterString(self.MIRROR, "Mirror URL", optional=True))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT, "Model file"))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.checkpoints import download_checkpoint

        spec = list(OFFICIAL_CHECKPOINTS.values())[self.parameterAsEnum(parameters, self.MODEL, context)]
        folder = self.parameterAsFile(parameters, self.FOLDER, context) or str(models_folder())
        feedback.pushInfo(f"Downloading {spec.file_name} ({spec.size_mb} MB) into {folder} ...")

        def report(done: int, total: int) -> None:
            if total:
                feedback.setProgress(100.0 * done / total)

        path = download_checkpoint(spec.name, folder, report=report,
                                   base_url=self.parameterAsString(parameters, self.MIRROR, context).strip() or None,
                                   cancelled=feedback.isCanceled)
        feedback.pushInfo(f"{path} ({spec.describe_verification()})")
        return {self.OUTPUT: path}

"""The Processing provider ``samrs``: registers the algorithms, nothing else."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import icon_path
from .dataset_report import DatasetReportAlgorithm
from .download_model import DownloadModelAlgorithm
from .evaluate import EvaluateAlgorithm
from .export_reviewed import ExportReviewedAlgorithm
from .import_annotations import ImportAnnotationsAlgorithm
from .install_dependencies import InstallDependenciesAlgorithm
from .segment_boxes import SegmentBoxesAlgorithm
from .segment_dataset import SegmentDatasetAlgorithm


class SamrsProvider(QgsProcessingProvider):
    def id(self):
        return "samrs"

    def name(self):
        return "SAMRS"

    def longName(self):  # noqa: N802
        return "SAMRS: segmentation masks from detection boxes with Segment Anything"

    def icon(self):
        return QIcon(icon_path())

    def svgIconPath(self):  # noqa: N802
        return icon_path()

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (SegmentBoxesAlgorithm(), SegmentDatasetAlgorithm(), ImportAnnotationsAlgorithm(),
                          DatasetReportAlgorithm(), EvaluateAlgorithm(), ExportReviewedAlgorithm(),
                          InstallDependenciesAlgorithm(), DownloadModelAlgorithm()):
            self.addAlgorithm(algorithm)

"""``samrs:exportreviewed`` — Export a reviewed dataset: maps parameters onto :mod:`samrs_qgis.review_export`."""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputNumber, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination)

from .base import SamrsAlgorithm
from .qgis_adapters import FeedbackProgress

HELP = """<p>Writes an output folder of <i>Segment a detection dataset</i> again, honouring the review made with
<i>Plugins › SAMRS › Review masks</i> in each image's mask layer (<code>geo/&lt;image&gt;.gpkg</code>):
<b>rejected</b> masks leave every output (rasters, class-index and colour PNGs, instance files, COCO file),
<b>relabelled</b> masks move to their new class (a new class name is added to the class list), the others
are kept as they are. The source folder is not changed.</p>
<p>The output folder must be new (or an earlier export); the manifest records per image how many masks were
kept, dropped and relabelled.</p>"""


class ExportReviewedAlgorithm(SamrsAlgorithm):
    NAME = "exportreviewed"
    DISPLAY_NAME = "Export a reviewed dataset"
    HELP = HELP
    GROUP = ("Datasets", "datasets")
    DATASET = "DATASET"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.DATASET, "Segmented dataset folder (reviewed)",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Reviewed dataset folder"))
        for name, text in (("KEPT_COUNT", "Masks kept"), ("DROPPED_COUNT", "Masks dropped (rejected)"),
                           ("RELABELLED_COUNT", "Masks relabelled"), ("IMAGE_COUNT", "Images exported")):
            self.addOutput(QgsProcessingOutputNumber(name, text))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.review_export import export_reviewed

        source = self.parameterAsFile(parameters, self.DATASET, context)
        target = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        summary = export_reviewed(source, target, progress=FeedbackProgress(feedback))
        feedback.pushInfo(summary.describe())
        return {self.OUTPUT: target, "KEPT_COUNT": summary.kept, "DROPPED_COUNT": summary.dropped,
                "RELABELLED_COUNT": summary.relabelled, "IMAGE_COUNT": summary.exported}

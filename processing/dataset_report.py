"""``samrs:datasetreport`` — Dataset statistics report (HTML and CSV).

Maps Processing parameters onto :mod:`samrs_qgis.report`: one subset per dataset folder (or per subfolder
of a folder of subsets) and per polygon layer.
"""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterString)

from ..samrs_qgis.settings import ANNOTATION_SETTINGS
from ..samrs_qgis.progress import ProgressSlice
from .base import SamrsAlgorithm
from .qgis_adapters import FeedbackProgress, vector_layer_location

DEFAULT_TITLE = "SAMRS dataset statistics"

HELP = """<p>Statistics of segmentation results per subset, as SAMRS tabulated its subsets: instances per class,
pixels per class, the distribution of mask sizes, SAM's scores and the boxes' statuses, as one self-contained
HTML report (shown in the Results Viewer) and, optionally, CSV tables.</p>
<p><b>Dataset folder</b>: an output folder of the dataset segmentation (manifest.json, geo/*.gpkg,
class_index/*.png), or a folder whose subfolders are such folders (train/, val/, …), one subset each, named
after the folder. <b>Polygon layers</b>: mask polygon layers written by <i>Segment detection boxes with SAM</i>,
one subset each, named after the layer.</p>
<p>An <i>instance</i> is a feature with status ok and area_px &gt; 0. Areas are in pixels of the segmented
raster. Pixels per class come from class rasters where the folder has them, else from the masks' area_px.
The <b>class list</b> (a dataset's, or comma-separated names) fixes the class ids; without it they come from
the layers.</p>"""


class DatasetReportAlgorithm(SamrsAlgorithm):
    NAME = "datasetreport"
    DISPLAY_NAME = "Dataset statistics report"
    HELP = HELP
    GROUP = ("Datasets", "datasets")
    FOLDER = "FOLDER"
    LAYERS = "LAYERS"
    CLASSES = "CLASSES"
    TITLE = "TITLE"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_CSV = "OUTPUT_CSV"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.FOLDER, "Dataset folder (or a folder of subset folders)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.LAYERS, "Mask polygon layers (one subset each)", QgsProcessing.TypeVectorPolygon, optional=True))
        self.add_table(ANNOTATION_SETTINGS, exclude=("annotation_format",))
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, "Class list, comma-separated (ids by position; instead of a dataset list)", optional=True))
        self.add_advanced(QgsProcessingParameterString(self.TITLE, "Report title", defaultValue=DEFAULT_TITLE))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Report", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_CSV, "Folder for CSV tables", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("SUBSET_COUNT", "Subsets"))
        self.addOutput(QgsProcessingOutputNumber("BOX_COUNT", "Boxes (all statuses)"))
        self.addOutput(QgsProcessingOutputNumber("INSTANCE_COUNT", "Instances"))
        self.addOutput(QgsProcessingOutputNumber("CLASS_COUNT", "Classes"))

    def check(self, parameters, context):
        if not (self.parameterAsFile(parameters, self.FOLDER, context) or parameters.get(self.LAYERS)):
            return "Give a dataset folder or mask polygon layers."
        self._class_names(parameters, context)
        return None

    def _class_names(self, parameters, context):
        from ..samrs_qgis.report.subsets import report_class_names

        reading = self.table_values(parameters, context, ANNOTATION_SETTINGS, exclude=("annotation_format",))
        return report_class_names(reading["dataset"], self.parameterAsString(parameters, self.CLASSES, context))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.report import check_report_outputs, collect_subsets, describe_subsets, write_report

        class_names = self._class_names(parameters, context)
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        inputs = [(None, folder)] if folder else []
        for layer in self.parameterAsLayerList(parameters, self.LAYERS, context):
            path, layer_name = vector_layer_location(layer, "mask polygon layer")
            if layer_name and layer_name != "masks":
                self._check_single_layer(path, layer_name, layer.name())
            inputs.append((layer.name(), path))
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        csv_folder = self.parameterAsFileOutput(parameters, self.OUTPUT_CSV, context) or None
        check_report_outputs(inputs, html, csv_folder)
        progress = FeedbackProgress(feedback)
        subsets = collect_subsets(inputs, class_names, ProgressSlice(progress, 0.0, 0.95))
        files = write_report(subsets, html, csv_folder,
                             title=self.parameterAsString(parameters, self.TITLE, context) or DEFAULT_TITLE)
        feedback.setProgress(100)
        for line in describe_subsets(subsets):
            feedback.pushInfo(line)
        classes = set()
        for stats in subsets.values():
            classes |= {n for i, n in stats.class_names.items() if stats.instances_per_class.get(i)}
        return {self.OUTPUT_HTML: files.html, self.OUTPUT_CSV: csv_folder, "SUBSET_COUNT": len(subsets),
                "BOX_COUNT": sum(s.boxes for s in subsets.values()),
                "INSTANCE_COUNT": sum(s.instances for s in subsets.values()), "CLASS_COUNT": len(classes)}

    @staticmethod
    def _check_single_layer(path: str, layer_name: str, display: str) -> None:
        """The report reads a file's 'masks' layer, or its only layer: refuse another layer of a multi-layer file."""
        import fiona

        try:
            layers = fiona.listlayers(path)
        except Exception:  # noqa: BLE001 - the engine reports unreadable files itself
            return
        if len(layers) > 1:
            raise QgsProcessingException(
                f"Layer '{display}' is layer '{layer_name}' of '{path}', which holds several layers; the report "
                "reads a file's 'masks' layer or its only layer. Save the layer to a GeoPackage of its own.")

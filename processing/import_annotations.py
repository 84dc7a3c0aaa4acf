"""``samrs:importannotations`` — Import detection annotations as a box layer.

Maps Processing parameters onto :func:`samrs_qgis.annotations.import_annotations`.
"""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFile,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)

from ..samrs_qgis.settings import ANNOTATION_SETTINGS
from .base import SamrsAlgorithm
from .qgis_adapters import FeedbackProgress, raster_layer_path

MAX_PROBLEMS_SHOWN = 50

HELP = """<p>Reads detection annotations and writes them as one box layer (GeoPackage, one polygon per object)
that <i>Segment detection boxes with SAM</i> takes as its boxes.</p>
<p><b>Formats</b>: DOTA / DOTA-v2 .txt (<i>x1 y1 … x4 y4 class difficult</i>), PASCAL VOC / DIOR / DIOR-R .xml,
FAIR1M .xml, HRSC2016 .xml, and CSV with a header. <i>auto</i> detects the format of each file.</p>
<p><b>Annotation files</b> and/or an <b>annotation folder</b> (all annotation files in it, by extension).</p>
<p><b>Image</b> (optional): the image the annotations belong to. Its georeferencing places the boxes on the map;
without it, or for an image without georeferencing, the layer is in pixel space (x = column, y = −row, no CRS),
where QGIS shows an image without georeferencing. A CSV is restricted to the image's rows.</p>
<p><b>Dataset class list</b> (optional): gives every class its id in the dataset's published list (stable across
images); objects of other classes are reported as problems. Without it ids follow the sorted class names.</p>
<p>Fields: <i>class_name</i>, <i>class_id</i>, <i>difficult</i>, <i>source</i> (file), <i>line</i>,
<i>object_no</i>, and the format's own attributes. Objects that cannot be read are reported as warnings with
their file and line (the first 50, then a count); the rest is written. A file without objects, a binary file
and a file in no known format are reported too; when not a single object can be imported the algorithm fails
and writes no layer. Progress is reported per file; a cancelled import writes nothing.</p>"""


class ImportAnnotationsAlgorithm(SamrsAlgorithm):
    NAME = "importannotations"
    DISPLAY_NAME = "Import detection annotations"
    HELP = HELP
    GROUP = ("Datasets", "datasets")
    ANNOTATIONS = "ANNOTATIONS"
    FOLDER = "FOLDER"
    IMAGE = "IMAGE"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.ANNOTATIONS, "Annotation files", QgsProcessing.TypeFile, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.FOLDER, "Annotation folder (every annotation file in it)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.add_table(ANNOTATION_SETTINGS)
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.IMAGE, "Image the annotations belong to (georeferencing)", optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Box layer (GeoPackage)", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("ANNOTATION_COUNT", "Boxes imported"))
        self.addOutput(QgsProcessingOutputNumber("PROBLEM_COUNT", "Problems (objects or files not imported)"))
        self.addOutput(QgsProcessingOutputNumber("FILE_COUNT", "Annotation files read"))
        self.addOutput(QgsProcessingOutputNumber("CLASS_COUNT", "Classes"))

    def check(self, parameters, context):
        if not (any(self.parameterAsFileList(parameters, self.ANNOTATIONS, context))
                or self.parameterAsFile(parameters, self.FOLDER, context)):
            return "Give annotation files or an annotation folder."
        return None

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.annotations import NothingImported, import_annotations

        paths = [p for p in self.parameterAsFileList(parameters, self.ANNOTATIONS, context) if p]
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if folder:
            paths.append(folder)
        image = None
        if parameters.get(self.IMAGE):
            layer = self.parameterAsRasterLayer(parameters, self.IMAGE, context)
            if layer is None:
                raise QgsProcessingException(f"Image '{parameters.get(self.IMAGE)}' cannot be loaded.")
            image = raster_layer_path(layer, "image")
        reading = self.table_values(parameters, context, ANNOTATION_SETTINGS)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not output.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"The box layer '{output}' must be a GeoPackage; give a name ending "
                                         "in .gpkg.")
        feedback.pushInfo(f"Reading {len(paths)} annotation path(s)" + (f" for image {image}" if image else
                                                                       " (no image: pixel space)"))
        try:
            summary = import_annotations(paths, output, image_path=image, fmt=reading["annotation_format"],
                                         dataset=reading["dataset"], progress=FeedbackProgress(feedback))
        except NothingImported as exc:  # every file's problems, then the error: no empty layer is written
            _push_problems(feedback, exc.problems)
            raise
        feedback.pushInfo(summary.describe(max_problems=0).splitlines()[0])
        for class_id, class_name, count in summary.classes:
            feedback.pushInfo(f"  class {class_id} {class_name}: {count}")
        _push_problems(feedback, summary.problems)
        return {self.OUTPUT: output, "ANNOTATION_COUNT": summary.annotations,
                "PROBLEM_COUNT": len(summary.problems), "FILE_COUNT": summary.files,
                "CLASS_COUNT": len(summary.classes)}


def _push_problems(feedback, problems) -> None:
    """The problems as warnings: the first :data:`MAX_PROBLEMS_SHOWN`, then a count."""
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        feedback.pushWarning(str(problem))
    if len(problems) > MAX_PROBLEMS_SHOWN:
        feedback.pushWarning(f"… and {len(problems) - MAX_PROBLEMS_SHOWN} more problem(s) ({len(problems)} in all).")

"""``samrs:evaluate`` — Evaluate masks against reference masks (IoU, COCO mask AP).

Maps Processing parameters onto :func:`samrs_qgis.evaluation.evaluate`.
"""
from __future__ import annotations

from dataclasses import asdict

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorLayer)

from ..samrs_qgis.settings import MATCHING_SETTINGS, MatchingOptions
from .base import SamrsAlgorithm
from .qgis_adapters import FeedbackProgress, raster_layer_path, vector_layer_location
from .settings_parameters import setting_parameters, setting_values

HELP = """<p>Compares produced masks with reference masks <i>per box</i>: produced instance k against reference
instance k (the produced <i>instance_id</i> against the reference's key field, or the id values of instance
rasters), as SAMRS chose its prompt on HRSC2016.</p>
<p><b>Produced masks</b>: the mask polygons of <i>Segment detection boxes with SAM</i> <i>or</i> its instance
raster. <b>Reference masks</b>: a polygon layer whose key field holds the same ids (default
<i>instance_id</i>), <i>or</i> an instance raster with the same ids. <b>Grid raster</b>: the source image; the
masks are compared on its pixels (optional when one input is an instance raster). Polygons in another CRS
are reprojected; a pixel belongs to a polygon when its centre is inside.</p>
<p>Measures, overall and per class: <b>mean IoU</b> over the reference instances, <b>area-weighted IoU</b>
(ΣI/ΣU), and COCO mask <b>AP</b>, AP50, AP75 (pycocotools; a mask's score is its <i>score</i> field, 1 where
empty). A reference instance without a produced mask has IoU 0. The class of an instance is the reference's
class field when given, else the produced <i>class_name</i>.</p>
<p>Outputs: the metrics table (CSV: one row per class, then the overall row <i>(all)</i>), optionally one row
per instance, and the overall MEAN_IOU, WEIGHTED_IOU, AP, AP50, AP75 as numbers.</p>"""

MEASURES = ("MEAN_IOU", "WEIGHTED_IOU", "AP", "AP50", "AP75")


class EvaluateAlgorithm(SamrsAlgorithm):
    NAME = "evaluate"
    DISPLAY_NAME = "Evaluate masks against reference"
    HELP = HELP
    GROUP = ("Evaluation", "evaluation")
    PRODUCED = "PRODUCED"
    PRODUCED_RASTER = "PRODUCED_RASTER"
    REFERENCE = "REFERENCE"
    REFERENCE_RASTER = "REFERENCE_RASTER"
    GRID = "GRID"
    OUTPUT_METRICS = "OUTPUT_METRICS"
    OUTPUT_INSTANCES = "OUTPUT_INSTANCES"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.PRODUCED, "Produced masks (polygon layer)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.PRODUCED_RASTER, "Produced masks (instance raster, instead of polygons)", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.REFERENCE, "Reference masks (polygon layer)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE_RASTER, "Reference masks (instance raster, instead of polygons)", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.GRID, "Grid raster (the source image; optional with an instance raster)", optional=True))
        for parameter in setting_parameters(MATCHING_SETTINGS,
                                            layers={"reference": self.REFERENCE, "produced": self.PRODUCED}):
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_METRICS, "Metrics table", "CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_INSTANCES, "Per-instance table", "CSV files (*.csv)", optional=True, createByDefault=False))
        for name in MEASURES:
            self.addOutput(QgsProcessingOutputNumber(name, name.replace("_", " ").lower()))
        self.addOutput(QgsProcessingOutputNumber("INSTANCE_COUNT", "Reference instances scored"))
        self.addOutput(QgsProcessingOutputNumber("UNMATCHED_COUNT", "Produced masks without reference"))

    def check(self, parameters, context):
        for vector, raster, role in ((self.PRODUCED, self.PRODUCED_RASTER, "produced"),
                                     (self.REFERENCE, self.REFERENCE_RASTER, "reference")):
            given = [bool(parameters.get(vector)), bool(parameters.get(raster))]
            if given.count(True) != 1:
                return (f"Give the {role} masks as a polygon layer or as an instance raster "
                        f"({'not both' if all(given) else 'one of the two'}).")
        if not (parameters.get(self.GRID) or parameters.get(self.PRODUCED_RASTER)
                or parameters.get(self.REFERENCE_RASTER)):
            return ("Give the grid raster (the source image the masks were made from): two polygon "
                    "layers are compared on its pixels.")
        return None

    def _source(self, parameters, context, vector, raster, role):
        from ..samrs_qgis.evaluation import InstanceRaster, PolygonMasks

        if parameters.get(vector):
            layer = self.parameterAsVectorLayer(parameters, vector, context)
            if layer is None:
                raise QgsProcessingException(f"The {role} layer '{parameters.get(vector)}' cannot be loaded.")
            return PolygonMasks(*vector_layer_location(layer, f"{role} layer"))
        layer = self.parameterAsRasterLayer(parameters, raster, context)
        if layer is None:
            raise QgsProcessingException(f"The {role} raster '{parameters.get(raster)}' cannot be loaded.")
        return InstanceRaster(raster_layer_path(layer, f"{role} raster"))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.evaluation import check_table_outputs, evaluate, write_instances_csv, write_metrics_csv

        produced = self._source(parameters, context, self.PRODUCED, self.PRODUCED_RASTER, "produced")
        reference = self._source(parameters, context, self.REFERENCE, self.REFERENCE_RASTER, "reference")
        grid = None
        if parameters.get(self.GRID):
            layer = self.parameterAsRasterLayer(parameters, self.GRID, context)
            if layer is None:
                raise QgsProcessingException(f"The grid raster '{parameters.get(self.GRID)}' cannot be loaded.")
            grid = raster_layer_path(layer, "grid raster")
        metrics_path = self.parameterAsFileOutput(parameters, self.OUTPUT_METRICS, context)
        instances_path = self.parameterAsFileOutput(parameters, self.OUTPUT_INSTANCES, context) or None
        values = setting_values(self, parameters, context, MATCHING_SETTINGS)
        matching = MatchingOptions(**{k: v for k, v in values.items() if v is not None})  # blank: the default
        check_table_outputs([(produced, reference, grid)],
                            {"metrics table": metrics_path, "per-instance table": instances_path})
        result = evaluate(produced, reference, grid, **asdict(matching), progress=FeedbackProgress(feedback))
        write_metrics_csv(result, metrics_path)
        if instances_path:
            write_instances_csv(result, instances_path)
        feedback.pushInfo(result.describe())
        for row in result.rows():
            feedback.pushInfo(f"  {row.class_name}: {row.instances} instance(s), mean IoU {_text(row.mean_iou)}, "
                              f"AP {_text(row.ap)}, AP50 {_text(row.ap50)}")
        o = result.overall
        return {self.OUTPUT_METRICS: metrics_path, self.OUTPUT_INSTANCES: instances_path,
                "MEAN_IOU": o.mean_iou, "WEIGHTED_IOU": o.weighted_iou, "AP": o.ap, "AP50": o.ap50, "AP75": o.ap75,
                "INSTANCE_COUNT": o.instances, "UNMATCHED_COUNT": o.unmatched_produced}


def _text(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"

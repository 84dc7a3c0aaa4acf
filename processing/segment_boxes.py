"""``samrs:segmentboxes`` — Segment detection boxes with SAM.

Maps Processing parameters onto :class:`samrs_qgis.pipeline.SegmentJob`; all checks and work are the engine's.
"""
from __future__ import annotations

import os

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputFile, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBand, QgsProcessingParameterBoolean,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingParameterVectorDestination)

from ..samrs_qgis.classes import parse_class_list
from ..samrs_qgis.errors import Cancelled, SamrsError
from ..samrs_qgis.pipeline import OutputPaths, SegmentJob
from .base import SamrsAlgorithm, SegmentParameters
from .qgis_adapters import FeedbackProgress, box_source_from_qgis

STATUSES = ("ok", "empty", "outside", "invalid")

HELP = """<p>Runs Segment Anything (SAM) once per detection box and writes, on the raster's own grid:</p>
<ul>
<li><b>Instance raster</b> (uint32): 0 = no object, otherwise the box's instance id.</li>
<li><b>Semantic raster</b>: each pixel's class id (background value, 255 by default, where there is no object);
class names are stored with it.</li>
<li><b>Mask polygons</b>: exactly one feature per input box, with the box's attributes, <i>instance_id</i>,
<i>class_name</i>, <i>class_id</i>, <i>score</i> (SAM's predicted IoU), <i>area_px</i>, <i>area_m2</i> and
<i>status</i> (ok, empty, outside, invalid). Boxes that could not be segmented are kept with a null geometry.</li>
</ul>
<p>Boxes may be horizontal or rotated polygons in any CRS; each box is reprojected as a polygon.
<b>Prompt</b> (SAMRS's ablation): <i>box</i>, the box's enclosing horizontal box (SAMRS's choice);
<i>rbox-mask</i>, the (rotated) box polygon as SAM's dense mask prompt; <i>point</i>, one positive point at the
box's centre; <i>box+point</i>, both. GrabCut takes <i>box</i> only.</p>
<p><b>Post-processing</b> of each mask, in this order, all off by default as in SAMRS: clip to the (rotated) box
(pixel centres inside the box polygon), fill holes, remove parts smaller than a minimum area (raster pixels),
keep only the largest part. With the embedding cache on, a second run with other prompt or post-processing
settings skips SAM's image encoder.</p>
<p>The raster is read window by window (1024 px) at native
resolution; a box larger than a window gets its own window, shrunk. Where masks overlap in the rasters,
the smaller mask owns the pixel (equal areas: the later box). Nodata pixels never belong to a mask.</p>
<p><b>Checkpoints</b>: official SAM checkpoints (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth,
sam_vit_b_01ec64.pth) from https://github.com/facebookresearch/segment-anything; the model type is detected
from the file. The <b>GrabCut</b> backend needs no weights and no torch; its masks are not SAM's.</p>
<p><b>Preview</b> (off by default; needs the mask polygons): after the run, QGIS draws two PNG files beside the
polygon output, named after it: <i>&lt;polygons&gt;_preview.png</i>, the whole raster with every mask in its
class colour (longest side 1200 px, or the raster's own size when smaller), and <i>&lt;polygons&gt;_worst.png</i>,
a contact sheet of the 16 lowest-scoring masks (GrabCut masks, which have no score, by instance id). Their paths
are the outputs OUTPUT_PREVIEW and OUTPUT_CONTACT_SHEET.</p>
<p>Loaded into the project, the outputs form one group "SAMRS &lt;raster&gt;" directly above the raster:
masks, classes, instances.</p>"""



class SegmentBoxesAlgorithm(SegmentParameters, SamrsAlgorithm):
    HELP = HELP
    INPUT = "INPUT"
    BOXES = "BOXES"
    CLASS_FIELD = "CLASS_FIELD"
    ID_FIELD = "ID_FIELD"
    BANDS = "BANDS"
    CLASSES = "CLASSES"
    PREVIEW = "PREVIEW"
    OUTPUT_INSTANCES = "OUTPUT_INSTANCES"
    OUTPUT_SEMANTIC = "OUTPUT_SEMANTIC"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_PREVIEW = "OUTPUT_PREVIEW"
    OUTPUT_CONTACT_SHEET = "OUTPUT_CONTACT_SHEET"

    def name(self):
        return "segmentboxes"

    def displayName(self):  # noqa: N802
        return "Segment detection boxes with SAM"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.BOXES, "Detection boxes (polygons)", [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field", parentLayerParameterName=self.BOXES, optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.ID_FIELD, "Instance id field (unique integers)", parentLayerParameterName=self.BOXES,
            type=QgsProcessingParameterField.Numeric, optional=True))
        self.add_model_parameters()
        self.add_speed_parameters([
            QgsProcessingParameterBand(self.BANDS, "Bands fed to SAM (one or three; default RGB)", None,
                                       self.INPUT, optional=True, allowMultiple=True),
            QgsProcessingParameterString(self.CLASSES, "Class list, comma-separated (ids by position)",
                                         optional=True),
        ])
        self.addParameter(QgsProcessingParameterBoolean(
            self.PREVIEW, "Draw PNG previews beside the mask polygons (overview, lowest-scoring masks)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_INSTANCES, "Instance raster", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SEMANTIC, "Semantic raster", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Mask polygons", QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputString("BACKEND_USED", "Backend used"))
        self.addOutput(QgsProcessingOutputNumber("BOX_COUNT", "Boxes"))
        self.addOutput(QgsProcessingOutputNumber("WINDOW_COUNT", "Windows encoded"))
        for status in STATUSES:
            self.addOutput(QgsProcessingOutputNumber(f"{status.upper()}_COUNT", f"Boxes with status {status}"))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_PREVIEW, "Preview: overview (PNG)"))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_CONTACT_SHEET, "Preview: lowest-scoring masks (PNG)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Cheap checks shown before the run starts (the engine repeats and extends them)."""
        problem = self.check_model_parameters(parameters, context)
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster_layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster_layer is None:
            raise QgsProcessingException(f"Raster '{parameters.get(self.INPUT)}' cannot be loaded.")
        if raster_layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"Raster '{raster_layer.name()}' is served by the '{raster_layer.providerType()}' provider, which "
                "GDAL cannot read directly. Save it as a GeoTIFF first (Raster > Conversion > Translate).")
        source = self.parameterAsSource(parameters, self.BOXES, context)
        if source is None:
            raise QgsProcessingException(f"Box layer '{parameters.get(self.BOXES)}' cannot be loaded.")
        box_layer = self.parameterAsVectorLayer(parameters, self.BOXES, context)
        name = box_layer.name() if box_layer is not None else str(parameters.get(self.BOXES))
        classes = self.parameterAsString(parameters, self.CLASSES, context)
        options = self.segment_options(
            parameters, context,
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
            id_field=self.parameterAsString(parameters, self.ID_FIELD, context) or None,
            class_names=parse_class_list(classes))
        outputs = OutputPaths(
            instances=self.parameterAsOutputLayer(parameters, self.OUTPUT_INSTANCES, context) or None,
            semantic=self.parameterAsOutputLayer(parameters, self.OUTPUT_SEMANTIC, context) or None,
            polygons=self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None,
        )
        preview = self.parameterAsBoolean(parameters, self.PREVIEW, context)
        if preview and not outputs.polygons:
            raise QgsProcessingException(
                "The preview draws the mask polygons, but no mask polygon output was asked for. Give a Mask "
                "polygons output (OUTPUT_POLYGONS), or turn the preview off.")
        job = SegmentJob(raster_layer.source(), box_source_from_qgis(source, name), outputs, options,
                         FeedbackProgress(feedback))
        try:
            job.prepare()
            summary = job.run()
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from exc
        except SamrsError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(summary.describe())
        if options.backend == "grabcut":
            feedback.pushWarning("These masks were made by GrabCut, not SAM.")
        results = {self.OUTPUT_INSTANCES: outputs.instances, self.OUTPUT_SEMANTIC: outputs.semantic,
                   self.OUTPUT_POLYGONS: outputs.polygons, "BACKEND_USED": summary.backend,
                   "BOX_COUNT": summary.boxes, "WINDOW_COUNT": summary.windows,
                   self.OUTPUT_PREVIEW: None, self.OUTPUT_CONTACT_SHEET: None}
        for status in STATUSES:
            results[f"{status.upper()}_COUNT"] = summary.status_counts.get(status, 0)
        if preview:
            results[self.OUTPUT_PREVIEW], results[self.OUTPUT_CONTACT_SHEET] = self._previews(
                raster_layer, outputs.polygons, feedback)
        from .layer_group import group_outputs_on_load

        group_outputs_on_load(context, raster_layer, {outputs.polygons: ("masks", 0),
                                                      outputs.semantic: ("classes", 1),
                                                      outputs.instances: ("instances", 2)})
        return results

    @staticmethod
    def _previews(raster_layer, polygons: str, feedback):
        """Draw the overview and the contact sheet with QGIS's renderer (QGIS is running here)."""
        from ..samrs_previews import PreviewError, render_previews
        from ..samrs_qgis.cli import POLYGON_LAYER_FORMATS, PREVIEW_MASKS, PREVIEW_SIZE, preview_paths

        feedback.setProgressText("Drawing the previews")
        overview, sheet = preview_paths(polygons)
        layer_name = "masks" if os.path.splitext(polygons)[1].lower() in POLYGON_LAYER_FORMATS else None
        size = min(PREVIEW_SIZE, max(raster_layer.width(), raster_layer.height()))
        try:
            files = render_previews(raster_layer.source(), polygons, overview, sheet, layer_name=layer_name,
                                    size=size, count=PREVIEW_MASKS)
        except PreviewError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"Preview: {files.overview}")
        if files.contact_sheet:
            feedback.pushInfo(f"Lowest-scoring masks ({files.masks_shown}): {files.contact_sheet}")
        else:
            feedback.pushInfo("No mask to show in a contact sheet (no box has status ok).")
        return files.overview, files.contact_sheet

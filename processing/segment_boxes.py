"""``samrs:segmentboxes`` — Segment detection boxes with SAM.

Maps Processing parameters onto :func:`samrs_qgis.pipeline.segment_boxes`; all checks and work are the engine's.
"""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputFile, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)

from ..samrs_qgis.boxes import STATUSES
from ..samrs_qgis.errors import InputError
from ..samrs_qgis.pipeline import OutputPaths, segment_boxes
from ..samrs_qgis.settings import not_sam_note
from .base import ClusterParameters, SamrsAlgorithm, SegmentSettings
from .qgis_adapters import FeedbackProgress, box_source_from_qgis, layer_file, raster_layer_path


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
<p><b>Dask</b> (advanced, needs dask and distributed): <i>local worker processes</i> start a cluster on this
machine, an existing cluster's <i>scheduler</i> uses that; groups of neighbouring windows are segmented by the
workers (each loads the model once and reads the raster itself, so the raster must be at the same path for every
worker) and written here in order: the outputs are those of a run without a cluster.</p>
<p>Loaded into the project, the outputs form one group "SAMRS &lt;raster&gt;" directly above the raster:
masks, classes, instances.</p>"""



class SegmentBoxesAlgorithm(ClusterParameters, SegmentSettings, SamrsAlgorithm):
    NAME = "segmentboxes"
    DISPLAY_NAME = "Segment detection boxes with SAM"
    HELP = HELP
    INPUT = "INPUT"
    BOXES = "BOXES"
    PREVIEW = "PREVIEW"
    OUTPUT_INSTANCES = "OUTPUT_INSTANCES"
    OUTPUT_SEMANTIC = "OUTPUT_SEMANTIC"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_PREVIEW = "OUTPUT_PREVIEW"
    OUTPUT_CONTACT_SHEET = "OUTPUT_CONTACT_SHEET"
    RASTER_PARAMETER = INPUT
    BOXES_PARAMETER = BOXES

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.BOXES, "Detection boxes (polygons)", [QgsProcessing.TypeVectorAnyGeometry]))
        self.add_settings()
        self.addParameter(QgsProcessingParameterBoolean(
            self.PREVIEW, "Draw PNG previews beside the mask polygons (overview, lowest-scoring masks)",
            defaultValue=False))
        self.add_cluster_parameters()
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

    def process(self, parameters, context, feedback):
        raster_layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster_layer is None:
            raise InputError(f"Raster '{parameters.get(self.INPUT)}' cannot be loaded.")
        raster = raster_layer_path(raster_layer, "raster")
        source = self.parameterAsSource(parameters, self.BOXES, context)
        if source is None:
            raise InputError(f"Box layer '{parameters.get(self.BOXES)}' cannot be loaded.")
        box_layer = self.parameterAsVectorLayer(parameters, self.BOXES, context)
        name = box_layer.name() if box_layer is not None else str(parameters.get(self.BOXES))
        options = self.segment_options(parameters, context)
        outputs = OutputPaths(
            instances=self.parameterAsOutputLayer(parameters, self.OUTPUT_INSTANCES, context) or None,
            semantic=self.parameterAsOutputLayer(parameters, self.OUTPUT_SEMANTIC, context) or None,
            polygons=self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None,
        )
        preview = self.parameterAsBoolean(parameters, self.PREVIEW, context)
        if preview and not outputs.polygons:
            raise InputError(
                "The preview draws the mask polygons, but no mask polygon output was asked for. Give a Mask "
                "polygons output (OUTPUT_POLYGONS), or turn the preview off.")
        summary = segment_boxes(raster, box_source_from_qgis(source, name, layer_file(box_layer)), outputs, options,
                                FeedbackProgress(feedback), cluster=self.cluster_spec(parameters, context))
        feedback.pushInfo(summary.describe())
        note = not_sam_note(summary.backend)
        if note:
            feedback.pushWarning(note)
        results = {self.OUTPUT_INSTANCES: outputs.instances, self.OUTPUT_SEMANTIC: outputs.semantic,
                   self.OUTPUT_POLYGONS: outputs.polygons, "BACKEND_USED": summary.backend,
                   "BOX_COUNT": summary.boxes, "WINDOW_COUNT": summary.windows,
                   self.OUTPUT_PREVIEW: None, self.OUTPUT_CONTACT_SHEET: None}
        for status in STATUSES:
            results[f"{status.upper()}_COUNT"] = summary.status_counts.get(status, 0)
        if preview:
            results[self.OUTPUT_PREVIEW], results[self.OUTPUT_CONTACT_SHEET] = self._previews(
                raster, outputs.polygons, feedback)
        from .layer_group import group_outputs_on_load

        group_outputs_on_load(context, raster_layer, {outputs.polygons: ("masks", 0),
                                                      outputs.semantic: ("classes", 1),
                                                      outputs.instances: ("instances", 2)})
        return results

    @staticmethod
    def _previews(raster: str, polygons: str, feedback):
        """Draw the overview and the contact sheet with QGIS's renderer (QGIS is running here)."""
        from ..samrs_previews import PreviewError, draw_result_previews

        feedback.setProgressText("Drawing the previews")
        try:
            files = draw_result_previews(raster, polygons)
        except PreviewError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for line in files.lines():
            feedback.pushInfo(line)
        return files.overview, files.contact_sheet

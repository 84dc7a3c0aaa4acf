"""``samrs:segmentboxes`` — Segment detection boxes with SAM.

Maps Processing parameters onto :class:`samrs_qgis.pipeline.SegmentJob`; all checks and work are the engine's.
"""
from __future__ import annotations

import os

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingParameterBand,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterField, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingParameterVectorDestination)
from qgis.PyQt.QtGui import QIcon

from ..samrs_qgis.backends.sam_checkpoint import MODEL_TYPES
from ..samrs_qgis.backends.sam import PRECISIONS
from ..samrs_qgis.classes import parse_class_list
from ..samrs_qgis.errors import Cancelled, SamrsError
from ..samrs_qgis.pipeline import BACKENDS, OutputPaths, SegmentJob, SegmentOptions
from ..samrs_qgis.prompts import PROMPT_MODES
from ..samrs_qgis.stretch import STRETCH_MODES
from .qgis_adapters import FeedbackProgress, box_source_from_qgis

BACKEND_LABELS = ["SAM (needs a checkpoint)", "GrabCut (no weights; not SAM)"]
PROMPT_LABELS = ["box (enclosing horizontal box; SAMRS)", "rbox-mask (rotated box as a mask prompt)",
                 "point (box centre)", "box+point (box and centre)"]
DEVICES = ["auto", "cpu", "cuda"]
COMPILE_CHOICES = ("auto", "on", "off")
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
from the file. The <b>GrabCut</b> backend needs no weights and no torch; its masks are not SAM's.</p>"""


class SegmentBoxesAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    BOXES = "BOXES"
    CLASS_FIELD = "CLASS_FIELD"
    ID_FIELD = "ID_FIELD"
    BACKEND = "BACKEND"
    CHECKPOINT = "CHECKPOINT"
    MODEL_TYPE = "MODEL_TYPE"
    DEVICE = "DEVICE"
    MULTIMASK = "MULTIMASK"
    PROMPT = "PROMPT"
    CLIP_TO_BOX = "CLIP_TO_BOX"
    FILL_HOLES = "FILL_HOLES"
    MIN_ISLAND_PX = "MIN_ISLAND_PX"
    KEEP_LARGEST = "KEEP_LARGEST"
    BANDS = "BANDS"
    STRETCH = "STRETCH"
    CLASSES = "CLASSES"
    BACKGROUND = "BACKGROUND"
    BATCH_SIZE = "BATCH_SIZE"
    PRECISION = "PRECISION"
    EMBEDDING_CACHE = "EMBEDDING_CACHE"
    COMPILE_DECODER = "COMPILE_DECODER"
    WINDOW_SIZE = "WINDOW_SIZE"
    OUTPUT_INSTANCES = "OUTPUT_INSTANCES"
    OUTPUT_SEMANTIC = "OUTPUT_SEMANTIC"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"

    def name(self):
        return "segmentboxes"

    def displayName(self):  # noqa: N802
        return "Segment detection boxes with SAM"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def shortHelpString(self):  # noqa: N802
        return HELP.replace("\n", " ")  # the dialog turns line breaks into <br>

    def icon(self):
        from .provider import icon_path

        return QIcon(icon_path())

    def createInstance(self):  # noqa: N802
        return SegmentBoxesAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        defaults = SegmentOptions()
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.BOXES, "Detection boxes (polygons)", [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field", parentLayerParameterName=self.BOXES, optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.ID_FIELD, "Instance id field (unique integers)", parentLayerParameterName=self.BOXES,
            type=QgsProcessingParameterField.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.BACKEND, "Backend", BACKEND_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "SAM checkpoint (.pth)", extension="pth", optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL_TYPE, "Model type", list(MODEL_TYPES), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.PROMPT, "Prompt", PROMPT_LABELS, defaultValue=PROMPT_MODES.index(defaults.prompt)))
        self.addParameter(QgsProcessingParameterBoolean(
            self.MULTIMASK, "Best of three masks by predicted IoU (SAMRS: off)", defaultValue=defaults.multimask))
        self.addParameter(QgsProcessingParameterBoolean(
            self.CLIP_TO_BOX, "Clip masks to the (rotated) box", defaultValue=defaults.clip_to_box))
        self.addParameter(QgsProcessingParameterBoolean(
            self.FILL_HOLES, "Fill holes in masks", defaultValue=defaults.fill_holes))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_ISLAND_PX, "Remove mask parts smaller than (raster pixels; 0: keep all)", minValue=0,
            defaultValue=defaults.min_island_px))
        self.addParameter(QgsProcessingParameterBoolean(
            self.KEEP_LARGEST, "Keep only the largest part of each mask", defaultValue=defaults.keep_largest))
        advanced = [
            QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0),
            QgsProcessingParameterBand(self.BANDS, "Bands fed to SAM (one or three; default RGB)", None,
                                       self.INPUT, optional=True, allowMultiple=True),
            QgsProcessingParameterEnum(self.STRETCH, "Value stretch to 8 bit", list(STRETCH_MODES), defaultValue=0),
            QgsProcessingParameterString(self.CLASSES, "Class list, comma-separated (ids by position)",
                                         optional=True),
            QgsProcessingParameterNumber(self.BACKGROUND, "Semantic background value", minValue=0,
                                         maxValue=65535, defaultValue=defaults.background),
            QgsProcessingParameterEnum(self.PRECISION, "Precision (auto: fp16 on CUDA, bf16 on CPUs that have it)",
                                       list(PRECISIONS), defaultValue=0),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Boxes decoded per batch (0: suited to the device)",
                                         minValue=0, defaultValue=0),
            QgsProcessingParameterEnum(self.COMPILE_DECODER, "Compile the mask decoder (auto: CPU runs of "
                                       "2000+ boxes)", list(COMPILE_CHOICES), defaultValue=0),
            QgsProcessingParameterBoolean(self.EMBEDDING_CACHE, "Cache window embeddings on disk for later runs",
                                          defaultValue=defaults.embedding_cache),
            QgsProcessingParameterNumber(self.WINDOW_SIZE, "Window size (pixels)", minValue=64,
                                         defaultValue=defaults.window_size),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
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

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Cheap checks shown before the run starts (the engine repeats and extends them)."""
        backend = BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)]
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        if backend == "sam" and not checkpoint:
            return False, ("The SAM backend needs a checkpoint (.pth): download sam_vit_b_01ec64.pth, "
                           "sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth, or choose the GrabCut backend.")
        if backend == "sam" and not os.path.isfile(checkpoint):
            return False, f"SAM checkpoint '{checkpoint}' does not exist."
        prompt = PROMPT_MODES[self.parameterAsEnum(parameters, self.PROMPT, context)]
        if backend == "grabcut" and prompt != "box":
            return False, (f"The GrabCut backend takes the prompt mode box only, not '{prompt}'. Choose the box "
                           "prompt, or the SAM backend with a checkpoint.")
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
        options = SegmentOptions(
            backend=BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)],
            checkpoint=self.parameterAsFile(parameters, self.CHECKPOINT, context) or None,
            model_type=MODEL_TYPES[self.parameterAsEnum(parameters, self.MODEL_TYPE, context)],
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            multimask=self.parameterAsBoolean(parameters, self.MULTIMASK, context),
            prompt=PROMPT_MODES[self.parameterAsEnum(parameters, self.PROMPT, context)],
            clip_to_box=self.parameterAsBoolean(parameters, self.CLIP_TO_BOX, context),
            fill_holes=self.parameterAsBoolean(parameters, self.FILL_HOLES, context),
            min_island_px=self.parameterAsInt(parameters, self.MIN_ISLAND_PX, context),
            keep_largest=self.parameterAsBoolean(parameters, self.KEEP_LARGEST, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            embedding_cache=self.parameterAsBoolean(parameters, self.EMBEDDING_CACHE, context),
            compile_decoder=COMPILE_CHOICES[self.parameterAsEnum(parameters, self.COMPILE_DECODER, context)],
            window_size=self.parameterAsInt(parameters, self.WINDOW_SIZE, context),
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            stretch=STRETCH_MODES[self.parameterAsEnum(parameters, self.STRETCH, context)],
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
            id_field=self.parameterAsString(parameters, self.ID_FIELD, context) or None,
            class_names=parse_class_list(classes),
            background=self.parameterAsInt(parameters, self.BACKGROUND, context),
        )
        outputs = OutputPaths(
            instances=self.parameterAsOutputLayer(parameters, self.OUTPUT_INSTANCES, context) or None,
            semantic=self.parameterAsOutputLayer(parameters, self.OUTPUT_SEMANTIC, context) or None,
            polygons=self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None,
        )
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
                   "BOX_COUNT": summary.boxes, "WINDOW_COUNT": summary.windows}
        for status in STATUSES:
            results[f"{status.upper()}_COUNT"] = summary.status_counts.get(status, 0)
        return results

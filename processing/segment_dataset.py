"""``samrs:segmentdataset`` — Segment a detection dataset.

Maps Processing parameters onto :func:`samrs_qgis.dataset.segment_dataset`; the model, prompt, post-processing
and speed parameters are ``samrs:segmentboxes``' own (:class:`.base.SegmentSettings`), but for those of one
box layer.
"""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputFile, QgsProcessingOutputNumber, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination)

from ..samrs_qgis.errors import InputError
from ..samrs_qgis.settings import ANNOTATION_SETTINGS, BOX_LAYER, not_sam_note
from .base import ClusterParameters, SamrsAlgorithm, SegmentSettings
from .qgis_adapters import FeedbackProgress

MAX_FAILURES_SHOWN = 50

HELP = """<p>Segments every annotated box of every image in a folder, as SAMRS built its datasets, and writes the
SAMRS layout into the output folder: <i>boxes/</i> (each image's annotations as a box layer), <i>geo/</i> (instance
raster, semantic raster and mask polygons on the image's grid), <i>class_index/</i> and <i>colour/</i> PNGs,
<i>instances/</i> JSON, <i>coco_instances.json</i> (COCO instances of the whole dataset) and
<i>manifest.json</i> (classes, settings and each image's status).</p>
<p><b>Images</b>: GeoTIFF, PNG, JPEG, BMP (with <b>subfolders</b> optionally). <b>Annotations</b>: one file per
image, same name (DOTA .txt, VOC/DIOR/FAIR1M/HRSC2016 .xml, CSV), in the annotation folder or its subfolder
mirroring the image's. <b>Dataset class list</b>: fixes the class ids (objects of other classes are left out and
reported); without it ids follow the sorted class names of all files.</p>
<p>The run can be resumed: images done by an earlier run into the same folder with the same classes and settings
are kept (counted as skipped), unless their image or annotation file changed since (then they are segmented
again, counted as redone). An image that cannot be segmented is reported as a warning and the run goes on.
The model, prompt and post-processing parameters are those of <i>Segment detection boxes with SAM</i>.</p>
<p><b>Dask</b> (advanced, needs dask and distributed): <i>local worker processes</i> start a cluster on this
machine (each worker loads the model once; one per GPU where there are several); a <i>scheduler</i> uses an
existing cluster, whose workers must reach the output folder at the same path. The files are those of a run
without a cluster.</p>"""


class SegmentDatasetAlgorithm(ClusterParameters, SegmentSettings, SamrsAlgorithm):
    NAME = "segmentdataset"
    DISPLAY_NAME = "Segment a detection dataset"
    HELP = HELP
    GROUP = ("Datasets", "datasets")
    IMAGES = "IMAGES"
    ANNOTATIONS = "ANNOTATIONS"
    RECURSIVE = "RECURSIVE"
    OUTPUT = "OUTPUT"
    SETTINGS_EXCLUDE = (BOX_LAYER,)  # each image's annotations are its box layer

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.IMAGES, "Image folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFile(
            self.ANNOTATIONS, "Annotation folder", behavior=QgsProcessingParameterFile.Folder))
        self.add_table(ANNOTATION_SETTINGS)
        self.addParameter(QgsProcessingParameterBoolean(
            self.RECURSIVE, "Include images in subfolders", defaultValue=False))
        self.add_settings()
        self.add_cluster_parameters()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputFile("MANIFEST", "Manifest (manifest.json)"))
        self.addOutput(QgsProcessingOutputFile("COCO", "COCO instances (coco_instances.json)"))
        self.addOutput(QgsProcessingOutputString("BACKEND_USED", "Backend used"))
        for key, label in (("IMAGE", "Images"), ("DONE", "Images segmented"),
                           ("SKIPPED", "Images done by an earlier run (kept)"),
                           ("REDONE", "Images done by an earlier run, segmented again (their inputs changed)"),
                           ("FAILED", "Images failed"),
                           ("NO_BOXES", "Images without boxes (empty or no annotation file)"),
                           ("NO_ANNOTATIONS", "Images without annotation file"), ("BOX", "Boxes segmented")):
            self.addOutput(QgsProcessingOutputNumber(f"{key}_COUNT", label))

    def process(self, parameters, context, feedback):
        from ..samrs_qgis.dataset import segment_dataset

        images = self.parameterAsFile(parameters, self.IMAGES, context)
        annotations = self.parameterAsFile(parameters, self.ANNOTATIONS, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not output:
            raise InputError("Give an output folder.")
        reading = self.table_values(parameters, context, ANNOTATION_SETTINGS)
        options = self.segment_options(parameters, context)
        cluster = self.cluster_spec(parameters, context)
        summary = segment_dataset(images, annotations, output, options, dataset=reading["dataset"],
                                  progress=FeedbackProgress(feedback), annotation_format=reading["annotation_format"],
                                  recursive=self.parameterAsBoolean(parameters, self.RECURSIVE, context),
                                  cluster=cluster)
        feedback.setProgress(100)
        for line in summary.describe().splitlines():
            if not line.startswith("  failed "):  # each failure was a warning as it happened
                feedback.pushInfo(line)
        if summary.failed:
            feedback.pushWarning(f"{summary.failed} image(s) failed; see the warnings above and the manifest "
                                 f"({summary.manifest}).")
        note = not_sam_note(summary.backend)
        if note and summary.done:
            feedback.pushWarning(note)
        return {self.OUTPUT: summary.output_dir, "MANIFEST": summary.manifest, "COCO": summary.coco,
                "BACKEND_USED": summary.backend, "IMAGE_COUNT": summary.images, "DONE_COUNT": summary.done,
                "SKIPPED_COUNT": summary.skipped, "REDONE_COUNT": summary.redone, "FAILED_COUNT": summary.failed,
                "NO_BOXES_COUNT": summary.no_boxes + summary.no_annotations,
                "NO_ANNOTATIONS_COUNT": summary.no_annotations, "BOX_COUNT": summary.boxes}

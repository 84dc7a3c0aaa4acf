"""What every SAMRS algorithm shares: the icon, help text without line breaks, the engine's errors shown as
``QgsProcessingException`` (a message, no traceback); and, for the algorithms that segment
(``samrs:segmentboxes``, ``samrs:segmentdataset``), the model, prompt, post-processing and speed parameters
and their mapping onto :class:`samrs_qgis.pipeline.SegmentOptions`."""
from __future__ import annotations

import os
from typing import Iterable, List, Optional

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterNumber)
from qgis.PyQt.QtGui import QIcon

BACKEND_LABELS = ["SAM (needs a checkpoint)", "GrabCut (no weights; not SAM)"]
PROMPT_LABELS = ["box (enclosing horizontal box; SAMRS)", "rbox-mask (rotated box as a mask prompt)",
                 "point (box centre)", "box+point (box and centre)"]
DEVICES = ["auto", "cpu", "cuda"]
COMPILE_CHOICES = ("auto", "on", "off")


class SamrsAlgorithm(QgsProcessingAlgorithm):
    HELP = ""
    GROUP = ("Segmentation", "segmentation")

    def group(self):
        return self.GROUP[0]

    def groupId(self):  # noqa: N802
        return self.GROUP[1]

    def shortHelpString(self):  # noqa: N802
        return self.HELP.replace("\n", " ")  # the dialog turns line breaks into <br>

    def icon(self):
        from .provider import icon_path

        return QIcon(icon_path())

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_advanced(self, parameter) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)


class SegmentParameters:
    """Mixin for algorithms that segment: one definition of the backend, checkpoint, prompt, post-processing,
    device, precision, batch, cache and window parameters, their checks and their ``SegmentOptions``.

    ``add_model_parameters()`` adds the visible ones, ``add_speed_parameters(extra)`` the advanced ones
    (``extra``: the algorithm's own advanced parameters, placed after the device)."""

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
    STRETCH = "STRETCH"
    BACKGROUND = "BACKGROUND"
    BATCH_SIZE = "BATCH_SIZE"
    PRECISION = "PRECISION"
    EMBEDDING_CACHE = "EMBEDDING_CACHE"
    COMPILE_DECODER = "COMPILE_DECODER"
    WINDOW_SIZE = "WINDOW_SIZE"

    def add_model_parameters(self) -> None:
        from ..samrs_qgis.backends.sam_checkpoint import MODEL_TYPES
        from ..samrs_qgis.settings import SegmentOptions
        from ..samrs_qgis.prompts import PROMPT_MODES

        defaults = SegmentOptions()
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

    def speed_parameters(self, extra: Iterable = ()) -> List:
        """The advanced parameters: device, ``extra``, stretch, background, precision, batch, compile, cache,
        window (not added; see :meth:`add_speed_parameters`)."""
        from ..samrs_qgis.backends.sam import PRECISIONS
        from ..samrs_qgis.settings import SegmentOptions
        from ..samrs_qgis.stretch import STRETCH_MODES

        defaults = SegmentOptions()
        return [
            QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0),
            *extra,
            QgsProcessingParameterEnum(self.STRETCH, "Value stretch to 8 bit", list(STRETCH_MODES), defaultValue=0),
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

    def add_speed_parameters(self, extra: Iterable = ()) -> None:
        for parameter in self.speed_parameters(extra):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def check_model_parameters(self, parameters, context) -> Optional[str]:
        """Cheap checks shown before the run starts (the engine repeats and extends them): the message of the
        first problem, or None."""
        from ..samrs_qgis.settings import BACKENDS
        from ..samrs_qgis.prompts import PROMPT_MODES

        backend = BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)]
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        if backend == "sam" and not checkpoint:
            return ("The SAM backend needs a checkpoint (.pth): download sam_vit_b_01ec64.pth, "
                    "sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth, or choose the GrabCut backend.")
        if backend == "sam" and not os.path.isfile(checkpoint):
            return f"SAM checkpoint '{checkpoint}' does not exist."
        prompt = PROMPT_MODES[self.parameterAsEnum(parameters, self.PROMPT, context)]
        if backend == "grabcut" and prompt != "box":
            return (f"The GrabCut backend takes the prompt mode box only, not '{prompt}'. Choose the box "
                    "prompt, or the SAM backend with a checkpoint.")
        return None

    def segment_options(self, parameters, context, **extra):
        """``SegmentOptions`` of the shared parameters; ``extra``: the algorithm's own fields."""
        from ..samrs_qgis.backends.sam import PRECISIONS
        from ..samrs_qgis.backends.sam_checkpoint import MODEL_TYPES
        from ..samrs_qgis.settings import BACKENDS, SegmentOptions
        from ..samrs_qgis.prompts import PROMPT_MODES
        from ..samrs_qgis.stretch import STRETCH_MODES

        return SegmentOptions(
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
            stretch=STRETCH_MODES[self.parameterAsEnum(parameters, self.STRETCH, context)],
            background=self.parameterAsInt(parameters, self.BACKGROUND, context),
            **extra,
        )

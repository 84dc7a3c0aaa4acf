"""Importing detection annotations (DOTA, VOC/DIOR/DIOR-R, FAIR1M, HRSC2016, CSV) as a box layer.

Readers give :class:`Annotation` objects in the image's pixel space (x = column, y = row, pixel corners);
:func:`import_annotations` writes them as a GeoPackage of polygons placed by the image's geotransform,
or in QGIS's pixel space for images without one (:func:`pixel_to_map_transform`).
"""
from .dataset_classes import DATASET_CLASSES, ClassList, dataset_classes
from .formats import FORMATS, detect_format, find_annotation_file, read_annotation_file
from ..georef import PIXEL_SPACE, ImageFrame, image_frame, pixel_to_map_transform
from .importer import ImportSummary, NothingImported, annotation_files, import_annotations
from .layer import write_box_layer
from .model import Annotation, FileAnnotations, Problem

__all__ = ["Annotation", "ClassList", "DATASET_CLASSES", "FORMATS", "FileAnnotations", "ImageFrame",
           "ImportSummary", "NothingImported", "PIXEL_SPACE", "Problem", "annotation_files", "dataset_classes",
           "detect_format", "find_annotation_file", "image_frame", "import_annotations", "pixel_to_map_transform",
           "read_annotation_file", "write_box_layer"]

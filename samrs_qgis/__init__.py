"""SAMRS engine: detection boxes over a georeferenced raster in, SAM masks out, without QGIS.

Main entry points: :func:`samrs_qgis.pipeline.segment_boxes` (Python) and ``python -m samrs_qgis`` (CLI).
The Processing algorithms of the QGIS plugin are thin layers over the same functions.
"""

__version__ = "0.3.0"  # as metadata.txt

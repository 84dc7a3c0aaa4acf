"""The plugin's own widgets in the QGIS desktop (the review dock); Processing lives in ``processing/``."""

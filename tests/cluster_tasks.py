"""Tasks that end the Dask worker running them (as a crash or the out-of-memory killer would), for the cluster
tests. Kept apart from the test modules: a worker imports this module to run them, and must not import the
tests' set-up (conftest) with it."""
from __future__ import annotations

import os

from samrs.samrs_qgis import cluster_windows
from samrs.samrs_qgis.dataset_image import ImageWork

DEADLY_STEM = "c"  # the image that kills its worker
DEADLY_BOX = 1  # the run index of the box whose window group kills its worker


class KillsItsWorker(ImageWork):
    """Image :data:`DEADLY_STEM` ends the worker process that segments it."""

    def process(self, image, progress, backend):
        if image.stem == DEADLY_STEM:
            os._exit(1)
        return super().process(image, progress, backend)


def deadly_window_group(raster, options, group, run_boxes, polygons):
    """:func:`samrs_qgis.cluster_windows.segment_window_group`, but the group holding box :data:`DEADLY_BOX`
    ends its worker."""
    if any(DEADLY_BOX in indices for _, indices in group):
        os._exit(1)
    return cluster_windows.segment_window_group(raster, options, group, run_boxes, polygons)

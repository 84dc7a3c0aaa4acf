"""The weights-free backend gives meaningful masks: IoU with known shapes on a synthetic scene."""
import numpy as np
import rasterio
from affine import Affine
from rasterio import features

from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions
from support import iou, pixel_box, read_features, synthetic_scene, write_boxes, write_raster


def test_grabcut_polygons_match_known_shapes(tmp_path):
    image, objects = synthetic_scene(512, seed=0)
    transform = Affine(0.3, 0, 404000, 0, -0.3, 3285000)
    raster = write_raster(tmp_path / "scene.tif", image, transform)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(transform, *o[2]) for o in objects],
                        properties=[{"kind": o[0], "ref": i} for i, o in enumerate(objects)])
    out = OutputPaths(str(tmp_path / "i.tif"), str(tmp_path / "s.tif"), str(tmp_path / "m.gpkg"))
    segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="kind"))

    found = read_features(out.polygons)
    assert sorted(f["ref"] for f in found) == list(range(len(objects)))  # every box, once
    scores = []
    for f in found:
        kind, truth, _ = objects[f["ref"]]
        assert f["class_name"] == kind and f["status"] == "ok"
        drawn = features.rasterize([(f["geometry"], 1)], out_shape=truth.shape, transform=transform).astype(bool)
        scores.append(iou(drawn, truth))
        assert f["area_px"] == drawn.sum()
    assert np.mean(scores) >= 0.8, scores
    with rasterio.open(out.instances) as ds:
        instances = ds.read(1)
    raster_iou = [iou(instances == i + 1, objects[i][1]) for i in range(len(objects))]
    assert np.mean(raster_iou) >= 0.8, raster_iou

"""The review of a result layer: order, filters, decisions written to the file at once, progress."""
import shutil

import pytest
from affine import Affine

import support
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions

T = Affine(0.5, 0, 600000, 0, -0.5, 3300000)


@pytest.fixture(scope="module")
def result_layer_file(tmp_path_factory):
    """A SAMRS result layer (GrabCut) whose scores are then set by hand, so the order is known."""
    import fiona

    tmp = tmp_path_factory.mktemp("review")
    raster, boxes, objects = support.synthetic_files(tmp, 256, 4, T)
    out = OutputPaths(polygons=str(tmp / "masks.gpkg"))
    segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", class_field="cls"))
    with fiona.open(out.polygons, layer="masks") as src:
        schema, crs, features = src.schema, src.crs_wkt, list(src)
    with fiona.open(out.polygons, "w", driver="GPKG", layer="masks", schema=schema, crs_wkt=crs) as dst:
        for f in features:  # scores: instance 1 -> 0.9, 2 -> 0.8, ...: reversed id order when sorted by score
            properties = dict(f["properties"], score=1.0 - 0.1 * f["properties"]["instance_id"])
            dst.write({"geometry": f["geometry"], "properties": properties})
    return out.polygons, len(objects)


def open_layer(path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(f"{path}|layername=masks", "masks", "ogr")
    assert layer.isValid()
    return layer


def ids(session):
    return [session.layer.getFeature(fid)["instance_id"] for fid in session.queue]


def test_order_filter_decisions_and_persistence(result_layer_file, tmp_path, qgis_app):
    from samrs.gui.review import REJECTED, ReviewSession

    path = str(tmp_path / "masks.gpkg")
    shutil.copy(result_layer_file[0], path)
    n = result_layer_file[1]
    session = ReviewSession(open_layer(path), order="score")
    assert ids(session) == list(range(n, 0, -1))  # lowest score first
    assert ids(ReviewSession(open_layer(path), order="id")) == list(range(1, n + 1))
    worst = ids(session)[0]
    session.accept()
    session.reject()
    other = [c for c in session.classes if c != session.current()["class_name"]][0]
    relabelled = session.current()["instance_id"]
    original = session.current()["class_name"]
    session.relabel(other)
    session.step(-1)  # a step back shows the relabelled mask again
    assert session.current()["instance_id"] == relabelled
    progress = session.progress()
    assert (progress.total, progress.reviewed, progress.accepted, progress.rejected, progress.relabelled) == (n, 3, 1, 1, 1)

    reloaded = open_layer(path)  # a new layer on the same file: the decisions were saved as they were made
    rows = {f["instance_id"]: f for f in reloaded.getFeatures()}
    assert rows[worst]["review"] == "accepted"
    assert rows[ids(session)[1]]["review"] == REJECTED
    assert rows[relabelled]["class_name"] == other and rows[relabelled]["class_orig"] == original
    assert rows[relabelled]["class_id"] == session.class_ids[other]
    assert ids(ReviewSession(reloaded, filter="unreviewed")) == [i for i in ids(session) if i not in
                                                                 (worst, ids(session)[1], relabelled)]
    assert ids(ReviewSession(reloaded, filter="rejected")) == [ids(session)[1]]


def test_a_layer_that_is_not_a_result_is_refused(tmp_path, qgis_app):
    from qgis.core import QgsVectorLayer

    from samrs.gui.review import ReviewSession

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "plain", "memory")
    with pytest.raises(ValueError, match="no 'class_name' field"):
        ReviewSession(layer)

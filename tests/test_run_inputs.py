"""What a run prepares (run_inputs.prepare_run) and what a run over it leaves: the prepared value unchanged."""
import dataclasses

import numpy as np
import pytest
from affine import Affine

from samrs.samrs_qgis.backends.base import Backend, BoxLogits
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.pipeline import WindowRunner, run_prepared
from samrs.samrs_qgis.run_inputs import OutputPaths, PreparedRun, prepare_run
from samrs.samrs_qgis.settings import SegmentOptions
from support import RecordingProgress, pixel_box, read_features, synthetic_scene, write_boxes, write_raster

T = Affine(1.0, 0, 300000, 0, -1.0, 5000000)


class NothingFound(Backend):
    """Every box's logits say "background"."""

    name = "nothing"

    def encode(self, frame):
        self.shape = frame.shape[:2]

    def decode(self, boxes, regions=None, prompts=None):
        return [BoxLogits(grid=np.full((1, 1), -1.0, np.float32), origin_x=0.0, origin_y=0.0,
                          cell=float(max(self.shape)), score=None) for _ in boxes]


@pytest.fixture()
def scene(tmp_path):
    image, objects = synthetic_scene(128, seed=3)
    raster = write_raster(tmp_path / "scene.tif", image, T)
    rects = [o[2] for o in objects[:2]] + [(500, 500, 520, 520)]  # the last one is off the raster
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(T, *r) for r in rects],
                        properties=[{"n": i} for i in range(len(rects))])
    return raster, boxes


def test_a_prepared_run_is_a_value_the_run_does_not_change(scene, tmp_path):
    raster, boxes = scene
    outputs = OutputPaths(polygons=str(tmp_path / "m.gpkg"), instances=str(tmp_path / "i.tif"))
    prepared = prepare_run(raster, read_box_file(boxes), outputs, SegmentOptions(embedding_cache=False),
                           NothingFound())
    assert isinstance(prepared, PreparedRun) and prepared.usable_boxes == 2
    assert [b.status for b in prepared.boxes] == ["ok", "ok", "outside"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.options = SegmentOptions()
    runner = WindowRunner(prepared, RecordingProgress())
    made = set(vars(runner))
    summary = runner.run()
    prepared.raster.close()
    assert set(vars(runner)) == made  # nothing is added to the runner while it runs
    assert summary.status_counts == {"empty": 2, "outside": 1}
    assert [b.status for b in prepared.boxes] == ["ok", "ok", "outside"]
    assert [f["status"] for f in read_features(outputs.polygons)] == ["empty", "empty", "outside"]


def test_settings_out_of_range_are_refused_before_any_input_is_read(scene, tmp_path):
    raster, boxes = scene
    out = OutputPaths(polygons=str(tmp_path / "m.gpkg"))
    for bad, message in ((dict(batch_size=0), "batch size 0 must be 1 or more"),
                         (dict(window_size=32), "window size 32 must be 64 or more"),
                         (dict(background=70000), "background value 70000 must be between 0 and 65535"),
                         (dict(min_island_px=-1), "minimum island area -1"),
                         (dict(prompt="everything"), "Unknown prompt mode 'everything'")):
        with pytest.raises(InputError, match=message):  # the raster is never opened: it does not exist
            prepare_run(str(tmp_path / "no-such-raster.tif"), read_box_file(boxes), out,
                        SegmentOptions(backend="grabcut", **bad))
    with pytest.raises(InputError, match="No output was asked for"):
        prepare_run(raster, read_box_file(boxes), OutputPaths(), SegmentOptions(backend="grabcut"))
    prepared = prepare_run(raster, read_box_file(boxes), OutputPaths(polygons=str(tmp_path / "m.gpkg")),
                           SegmentOptions(backend="grabcut", embedding_cache=False))
    assert run_prepared(prepared).status_counts.get("outside") == 1

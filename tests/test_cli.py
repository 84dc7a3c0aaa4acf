"""The command line: a run with outputs named after the raster, and clear errors with exit status 2."""
import os
import subprocess
import sys
from pathlib import Path

from affine import Affine

from support import pixel_box, read_features, synthetic_scene, write_boxes, write_raster

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args):
    # From the checkout, as the README says: the engine package is importable from there.
    return subprocess.run([sys.executable, "-m", "samrs_qgis", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def scene(tmp_path, size=256):
    image, objects = synthetic_scene(size, seed=5)
    transform = Affine(1.0, 0, 500000, 0, -1.0, 4000000)
    raster = write_raster(tmp_path / "tile.tif", image, transform)
    boxes = write_boxes(tmp_path / "boxes.geojson", [pixel_box(transform, *o[2]) for o in objects],
                        properties=[{"label": o[0]} for o in objects])
    return raster, boxes, objects


def test_cli_segments_with_grabcut_and_names_outputs_after_the_raster(tmp_path):
    raster, boxes, objects = scene(tmp_path)
    result = run_cli("segment", raster, boxes, "--out-dir", tmp_path / "out", "--class-field", "label", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Backend: grabcut" in result.stdout and "not SAM" in result.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith((".aux.xml", ".qml"))) == [  # sidecars aside
        "tile_instances.tif", "tile_masks.gpkg", "tile_semantic.tif"]
    assert len(read_features(out / "tile_masks.gpkg")) == len(objects)


def test_cli_uses_sam_when_given_a_checkpoint(tmp_path, tiny_sam_checkpoint):
    raster, boxes, objects = scene(tmp_path, size=128)
    result = run_cli("segment", raster, boxes, "--polygons", tmp_path / "m.shp", "--checkpoint",
                     tiny_sam_checkpoint, "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Backend: SAM custom" in result.stdout
    assert len(read_features(tmp_path / "m.shp")) == len(objects)


def test_cli_reports_bad_input_in_one_line_without_traceback(tmp_path):
    raster, boxes, _ = scene(tmp_path, size=128)
    result = run_cli("segment", raster, boxes, "--out-dir", tmp_path / "out", "--class-field", "kind")
    assert result.returncode == 2
    assert "The class field 'kind' is not in box layer" in result.stderr and "label" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    result = run_cli("segment", raster, boxes, "--out-dir", tmp_path / "out", "--checkpoint", tmp_path / "no.pth")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr

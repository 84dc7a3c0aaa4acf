"""Resuming a dataset run never keeps results of inputs that changed, and never reads its own outputs as input.

A resumed ``segment_dataset`` skips the images done in the earlier run. Each case here first does what lost
a user's data before (an edited or removed annotation file, a replaced image, a manifest of an older
version, an output folder inside the image folder) and then checks the files: manifest, instance files,
COCO file and rasters all follow the inputs as they are now. Masks come from the GrabCut backend.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import rasterio

import support
import tools_data as td
from support import RecordingProgress
from samrs.samrs_qgis import dataset as dataset_module
from samrs.samrs_qgis import dataset_image as dataset_image_module
from samrs.samrs_qgis.backends.grabcut import GrabCutBackend
from samrs.samrs_qgis.dataset import segment_dataset
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.settings import SegmentOptions

CLASSES = {"tank": "storage-tank", "pond": "swimming-pool"}
STEMS = ("a", "b")


def dota_lines(bounds):
    """DOTA lines of axis-aligned boxes ``(c0, r0, c1, r1, class)``."""
    return "".join(f"{c0} {r0} {c1} {r0} {c1} {r1} {c0} {r1} {name} 0\n" for c0, r0, c1, r1, name in bounds)


BOXES = [(*bounds, CLASSES[cls]) for bounds, (*_, cls) in zip(td.disc_bounds(), td.DISCS)]  # 3 discs, no overlap


def build(root, stems=STEMS):
    """``root/images/<stem>.tif`` (the discs scene) and ``root/labels/<stem>.txt`` (a box per disc)."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for stem in stems:
        td.scene_raster(images / f"{stem}.tif")
        (labels / f"{stem}.txt").write_text(dota_lines(BOXES))
    return images, labels


def options(**kwargs):
    return SegmentOptions(backend="grabcut", embedding_cache=False, **kwargs)


def run(images, labels, out, **kwargs):
    progress = RecordingProgress()
    summary = segment_dataset(str(images), str(labels), str(out), options(), progress=progress,
                              backend=GrabCutBackend(), **kwargs)
    return summary, progress


def load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_array(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read()


def outputs(out, stem):
    return dataset_module.ImageOutputs.of(str(out), stem)


def coco_annotations(out, file_name):
    coco = load(out / "coco_instances.json")
    image_id = {img["file_name"]: img["id"] for img in coco["images"]}[file_name]
    return [a for a in coco["annotations"] if a["image_id"] == image_id]


def result_times(out, stems=STEMS):
    """mtime_ns of every result file of the images: unchanged when an image was kept."""
    return {p: os.stat(p).st_mtime_ns for stem in stems for p in outputs(out, stem).all()}


def bump_mtime(path, seconds=5):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10 ** 9))


def check_image_has_boxes(out, stem, boxes):
    """Every output of ``stem`` holds exactly ``boxes`` (in annotation order)."""
    entry = load(out / "manifest.json")["images"][stem]
    assert entry["status"] == "done" and entry["boxes"] == len(boxes)
    records = load(outputs(out, stem).instance_file)
    assert [r["rbox"] for r in records] == [[float(v) for v in (c0, r0, c1, r0, c1, r1, c0, r1)]
                                           for c0, r0, c1, r1, _ in boxes]
    assert [r["category"] for r in records] == [name for *_, name in boxes]
    assert len(coco_annotations(out, f"{stem}.tif")) == sum(r["area"] > 0 for r in records) == len(boxes)
    instances = read_array(outputs(out, stem).instances)[0]
    assert set(np.unique(instances)) - {0} == set(range(1, len(boxes) + 1))
    assert len(support.read_features(outputs(out, stem).polygons, "masks")) == len(boxes)
    assert len(support.read_features(outputs(out, stem).boxes, "boxes")) == len(boxes)
    assert np.array_equal(read_array(outputs(out, stem).class_index)[0], read_array(outputs(out, stem).semantic)[0])


# -- changed inputs are segmented again ------------------------------------------------------------

def test_edited_annotation_file_is_segmented_again(tmp_path):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    check_image_has_boxes(out, "a", BOXES)
    kept = result_times(out, ["b"])

    (labels / "a.txt").write_text(dota_lines(BOXES[:2]))  # the third disc's box removed
    summary, progress = run(images, labels, out)
    assert summary.done == 1 and summary.skipped == 1 and summary.redone == 1
    assert "image 1/2: a: annotation file changed since the earlier run; segmenting it again" in progress.messages
    assert "1 redone because their inputs changed" in summary.describe()
    check_image_has_boxes(out, "a", BOXES[:2])
    c0, r0, c1, r1, _ = BOXES[2]
    semantic = read_array(outputs(out, "a").class_index)[0]
    colour = read_array(outputs(out, "a").colour)
    assert (semantic[r0:r1, c0:c1] == 255).all() and (colour[:, r0:r1, c0:c1] == 0).all()  # no stale mask
    assert result_times(out, ["b"]) == kept  # b's inputs did not change: kept as it was

    # Same size, same modification time, other bytes: the content decides.
    path = labels / "a.txt"
    st = os.stat(path)
    moved = [(c0 + 1, r0, c1 + 1, r1, name) for c0, r0, c1, r1, name in BOXES[:2]]  # same number of digits
    path.write_text(dota_lines(moved))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    summary, progress = run(images, labels, out)
    assert summary.redone == 1 and summary.skipped == 1
    check_image_has_boxes(out, "a", moved)


def test_removed_annotation_file_drops_the_stale_results(tmp_path):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    os.remove(labels / "a.txt")
    summary, progress = run(images, labels, out)
    assert load(out / "manifest.json")["images"]["a"]["status"] == "no_annotations"
    assert summary.no_annotations == 1 and summary.redone == 1 and summary.skipped == 1
    assert not any(os.path.exists(p) for p in outputs(out, "a").all())
    assert coco_annotations(out, "a.tif") == []  # listed, without masks
    assert any(m.startswith("image 1/2: a: annotation file removed") for m in progress.messages)

    # The annotation file back: segmented again, like the first time.
    (labels / "a.txt").write_text(dota_lines(BOXES))
    summary, _ = run(images, labels, out)
    assert summary.done == 1 and summary.skipped == 1
    check_image_has_boxes(out, "a", BOXES)


def test_touched_or_replaced_image_is_segmented_again(tmp_path):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    bump_mtime(images / "a.tif")
    summary, progress = run(images, labels, out)
    assert summary.done == 1 and summary.redone == 1 and summary.skipped == 1
    assert "image 1/2: a: image changed since the earlier run; segmenting it again" in progress.messages

    # Replaced by a smaller image (the same scene cut to 100 x 100): the outputs are on its grid.
    with rasterio.open(images / "a.tif") as ds:
        part = ds.read(window=((0, 100), (0, 100)))
    os.remove(images / "a.tif")
    support.write_raster(images / "a.tif", part, td.TRANSFORM)
    (labels / "a.txt").write_text(dota_lines(BOXES[:2]))
    summary, _ = run(images, labels, out)
    assert summary.redone == 1
    entry = load(out / "manifest.json")["images"]["a"]
    assert (entry["width"], entry["height"]) == (100, 100)
    assert read_array(outputs(out, "a").class_index).shape == (1, 100, 100)
    check_image_has_boxes(out, "a", BOXES[:2])


def test_unchanged_inputs_are_kept_without_work(tmp_path, monkeypatch):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    before = result_times(out)
    manifest = load(out / "manifest.json")
    assert manifest["images"]["a"]["inputs"]["annotation"]["file"] == "a.txt"

    class NoWork:
        def __init__(self, *args, **kwargs):
            raise AssertionError("an unchanged image was segmented again")

    monkeypatch.setattr(dataset_image_module, "SegmentJob", NoWork)
    bump_mtime(labels / "b.txt")  # saved again with the same content: nothing to do
    summary, progress = run(images, labels, out)
    assert (summary.skipped, summary.done, summary.redone) == (2, 0, 0)
    assert "redone" not in summary.describe()
    assert "image 2/2: b: done in an earlier run, kept" in progress.messages
    assert result_times(out) == before
    assert load(out / "manifest.json")["images"] == manifest["images"]


def test_manifest_of_an_earlier_version_is_redone_once(tmp_path):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    manifest = load(out / "manifest.json")
    for entry in manifest["images"].values():  # as the versions before input keys wrote it
        del entry["inputs"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (labels / "a.txt").write_text(dota_lines(BOXES[:1]))  # what such a version would have kept

    summary, progress = run(images, labels, out)
    assert summary.done == 2 and summary.skipped == 0 and summary.redone == 2
    assert any(m.startswith("image 1/2: a: the earlier run did not record its inputs") for m in progress.messages)
    assert "2 redone because the earlier run did not record their inputs" in summary.describe()
    check_image_has_boxes(out, "a", BOXES[:1])
    assert all("inputs" in e for e in load(out / "manifest.json")["images"].values())

    before = result_times(out)
    summary, _ = run(images, labels, out)
    assert (summary.skipped, summary.redone) == (2, 0) and result_times(out) == before


# -- the output folder is never input ------------------------------------------------------------------

def stems_of(out):
    return sorted(load(out / "manifest.json")["images"])


def test_image_folder_as_output_folder_is_not_read_as_images(tmp_path):
    images, labels = build(tmp_path)
    (images / "sub").mkdir()
    shutil.copy(images / "b.tif", images / "sub" / "c.tif")
    summary, _ = run(images, labels, images, recursive=True)
    assert summary.done == 2 and stems_of(images) == ["a", "b", "sub/c"]
    summary, _ = run(images, labels, images, recursive=True)  # class_index/a.png, geo/a_semantic.tif, … left out
    assert stems_of(images) == ["a", "b", "sub/c"] and summary.images == 3 and summary.skipped == 2


@pytest.mark.parametrize("linked", ["images", "output"])
def test_output_folder_reached_by_another_path_is_not_read_as_images(tmp_path, linked):
    """The image folder through a link and the output folder inside it by its real path, or the other way."""
    images, labels = build(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(images, target_is_directory=True)
    given, out = (link, images / "out") if linked == "images" else (images, link / "out")
    run(given, labels, out, recursive=True)
    summary, _ = run(given, labels, out, recursive=True)
    assert stems_of(out) == ["a", "b"] and summary.images == 2 and summary.skipped == 2
    assert [rel for _, rel in dataset_module.list_images(str(given), True, exclude=str(out))] == ["a.tif", "b.tif"]


def test_input_folders_inside_the_output_folders_are_refused(tmp_path):
    images, labels = build(tmp_path)
    out = tmp_path / "out"
    run(images, labels, out)
    colour = out / "colour"
    kept = {name: (colour / name).read_bytes() for name in os.listdir(colour)}
    with pytest.raises(InputError, match="output folder"):  # its results would overwrite its own images
        segment_dataset(str(colour), str(labels), str(out), options(fill_holes=True), backend=GrabCutBackend())
    assert {name: (colour / name).read_bytes() for name in os.listdir(colour)} == kept
    with pytest.raises(InputError, match="output folder"):
        segment_dataset(str(images), str(out / "boxes"), str(out), options(), backend=GrabCutBackend())
    assert load(out / "manifest.json")["images"]["a"]["status"] == "done"

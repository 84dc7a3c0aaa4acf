"""Segmenting a whole dataset: SAMRS layout, COCO file, manifest, failures and resume.

A tiny dataset is built per test module: GeoTIFFs with synthetic objects (tests.support.synthetic_scene),
a non-georeferenced PNG, and images with an empty, a missing, a broken and an off-image annotation file.
Annotations are DOTA labelTxt written here; masks come from the GrabCut backend (one test uses a tiny SAM).
"""
from __future__ import annotations

import json
import os
import shutil
import warnings

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine

import support
from support import RecordingProgress
from samrs.samrs_qgis import dataset as dataset_module
from samrs.samrs_qgis import backends as backends_module
from samrs.samrs_qgis import dataset_image as dataset_image_module
from samrs.samrs_qgis import pipeline as pipeline_module
from samrs.samrs_qgis import run_inputs as run_inputs_module
from samrs.samrs_qgis.backends.grabcut import GrabCutBackend
from samrs.samrs_qgis.classes import class_colours
from samrs.samrs_qgis.dataset import DatasetJob, segment_dataset
from samrs.samrs_qgis.errors import Cancelled
from samrs.samrs_qgis.settings import SegmentOptions

CLASS_OF = {"tank": "storage-tank", "building": "tennis-court", "pond": "swimming-pool"}
SORTED_CLASSES = ["plane", "storage-tank", "swimming-pool", "tennis-court"]  # ids by sorted name
GEO_A = Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 3300000.0)
GEO_B = Affine(0.5, 0.0, 601000.0, 0.0, -0.5, 3301000.0)
DONE_STEMS = ("a", "b", "c")


def dota_line(corners, name, difficult=0) -> str:
    return " ".join(f"{v:g}" for xy in corners for v in xy) + f" {name} {difficult}"


def rectangle(c0, r0, c1, r1):
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]


def scene_annotations(seed: int, extra=()):
    """(image (3, 256, 256) uint8, DOTA lines, corners per object in file order)."""
    image, objects = support.synthetic_scene(256, seed)
    boxes = [(rectangle(*bounds), CLASS_OF[cls]) for cls, _, bounds in objects] + list(extra)
    return image, ["imagesource:test", "gsd:0.5"] + [dota_line(c, n) for c, n in boxes], [c for c, _ in boxes]


def build_dataset(root, stems=("a", "b", "c", "d", "e", "f", "g")):
    """Images in ``root/images``, annotations in ``root/labels``; returns ({stem: rbox corners}, folders)."""
    images, labels = root / "images", root / "labels"
    (images / "sub").mkdir(parents=True)
    labels.mkdir()
    corners = {}
    small = np.random.default_rng(5).integers(60, 140, (3, 64, 64), dtype=np.uint8)
    for stem in stems:
        if stem in ("a", "b", "c"):
            # a: one big box overlapping the first object (overlaps in the rasters); b: one rotated box
            extra = {"a": [(rectangle(20, 20, 70, 70), "plane")],
                     "b": [([(128, 100), (158, 128), (128, 156), (98, 128)], "plane")]}.get(stem, [])
            image, lines, corners[stem] = scene_annotations({"a": 0, "b": 1, "c": 2}[stem], extra)
            if stem == "c":  # no georeferencing: pixel space
                with rasterio.open(images / "c.png", "w", driver="PNG", width=256, height=256, count=3,
                                   dtype="uint8") as ds:
                    ds.write(image)
            else:
                support.write_raster(images / f"{stem}.tif", image, GEO_A if stem == "a" else GEO_B)
            (labels / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        else:
            name = "g.TIF" if stem == "g" else f"{stem}.tif"
            support.write_raster(images / name, small, GEO_A)
            text = {"d": "imagesource:test\ngsd:0.5\n",  # no objects
                    "f": "this is not an annotation file\n",
                    "g": dota_line(rectangle(500, 500, 600, 600), "plane") + "\n"}.get(stem)
            if text is not None:
                (labels / f"{stem}.txt").write_text(text)
    support.write_raster(images / "sub" / "h.tif", small, GEO_A)  # not listed: no recursion by default
    (images / "notes.txt").write_text("not an image")
    return corners, str(images), str(labels)


def grabcut(**kwargs):
    return SegmentOptions(backend="grabcut", embedding_cache=False, **kwargs)


def read_array(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read()


def load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    corners, images, labels = build_dataset(root)
    progress = RecordingProgress()
    summary = segment_dataset(images, labels, str(root / "out"), grabcut(), progress=progress)
    return dict(root=root, out=root / "out", corners=corners, summary=summary, progress=progress,
                images=images, labels=labels)


def outputs(out, stem):
    return dataset_module.ImageOutputs.of(str(out), stem)


def test_every_image_is_listed_with_its_status(run):
    manifest = load(run["out"] / "manifest.json")
    statuses = {stem: e["status"] for stem, e in manifest["images"].items()}
    assert list(statuses) == ["a", "b", "c", "d", "e", "f", "g"]  # sorted; sub/h.tif and notes.txt not listed
    assert statuses == {"a": "done", "b": "done", "c": "done", "d": "no_boxes", "e": "no_annotations",
                        "f": "failed", "g": "failed"}
    assert manifest["classes"] == SORTED_CLASSES and manifest["background"] == 255 and manifest["dataset"] is None
    assert manifest["settings"]["backend"] == "grabcut" and manifest["settings"]["class_field"] == "class_name"
    a = manifest["images"]["a"]
    assert a["boxes"] == 10 and sum(a["status_counts"].values()) == 10 and a["width"] == 256
    assert "cannot be read" in manifest["images"]["f"]["error"]
    assert "None of the 1 boxes" in manifest["images"]["g"]["error"]
    summary = run["summary"]
    assert (summary.images, summary.failed, summary.no_boxes, summary.no_annotations, summary.skipped) == (7, 2, 1, 1, 0)
    assert summary.done == 3 and "2 failed" in summary.describe()
    for stem in "defg":  # like SAMRS: no label files for images without masks
        assert not any(os.path.exists(p) for p in outputs(run["out"], stem).results())
    assert any("image 6/7: f: failed" in w for w in run["progress"].warnings)


def test_outputs_of_a_done_image(run):
    for stem in ("a", "b"):
        paths = outputs(run["out"], stem)
        assert all(os.path.isfile(p) for p in paths.all())
        assert fiona.listlayers(paths.boxes) == ["boxes"] and fiona.listlayers(paths.polygons)[0] == "masks"
        semantic = read_array(paths.semantic)[0]
        class_index = read_array(paths.class_index)
        assert class_index.shape == (1, 256, 256) and class_index.dtype == np.uint8
        assert np.array_equal(class_index[0], semantic)  # same pixels as the semantic raster
        colour = read_array(paths.colour)
        assert colour.shape == (3, 256, 256)
        present = [int(v) for v in np.unique(semantic) if v != 255]
        assert len(present) >= 3
        for class_id, rgba in class_colours(present).items():
            assert (colour[:, semantic == class_id] == np.array(rgba[:3])[:, None]).all()
        assert (colour[:, semantic == 255] == 0).all()  # background black
        assert not any(name.endswith(".aux.xml") for name in os.listdir(os.path.dirname(paths.class_index)))


def test_instance_files_and_coco_agree_with_the_rasters(run):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out = run["out"]
    coco = COCO(str(out / "coco_instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == SORTED_CLASSES
    by_name = {img["file_name"]: img for img in coco.dataset["images"]}
    assert {"a.tif", "b.tif", "d.tif", "e.tif"} <= set(by_name) and not {"f.tif", "g.TIF"} & set(by_name)
    assert by_name["a.tif"]["id"] == 1 and by_name["e.tif"]["id"] == 5  # position in the dataset
    assert [a["id"] for a in coco.dataset["annotations"]] == list(range(1, len(coco.dataset["annotations"]) + 1))
    for stem in ("a", "b"):
        paths = outputs(out, stem)
        records = load(paths.instance_file)
        assert [r["instance_id"] for r in records] == list(range(1, len(run["corners"][stem]) + 1))
        for r, corners in zip(records, run["corners"][stem]):  # rbox as the annotation gave it
            assert r["rbox"] == [float(v) for xy in corners for v in xy]
        layer = {f["instance_id"]: f for f in support.read_features(paths.polygons, "masks")}
        instances = read_array(paths.instances)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[f"{stem}.tif"]["id"]]))
        assert len(anns) == sum(r["area"] > 0 for r in records) >= 9
        overlapped = 0
        for ann in anns:
            k = ann["instance_id"]
            record = records[k - 1]
            decoded = mask_utils.decode(coco.annToRLE(ann)).astype(bool)
            assert decoded.shape == (256, 256)
            assert ann["area"] == record["area"] == decoded.sum() == layer[k]["area_px"]
            assert ann["category_id"] == layer[k]["class_id"] and record["category"] == SORTED_CLASSES[ann["category_id"]]
            assert ann["bbox"] == record["bbox"] == mask_utils.toBbox(coco.annToRLE(ann)).tolist()
            assert (decoded[instances == k]).all()  # the raster's pixels of k are k's mask …
            others = decoded & (instances != k)
            assert (instances[others] != 0).all()  # … and the rest of k's mask went to other instances
            overlapped += others.any()
        if stem == "a":
            assert overlapped >= 1  # the big box overlaps an object


def test_pixel_space_png_image(run):
    entry = load(run["out"] / "manifest.json")["images"]["c"]
    assert entry["status"] == "done"  # boxes and image meet in QGIS's pixel space, map = (column, -row)
    paths = outputs(run["out"], "c")
    assert np.array_equal(read_array(paths.class_index)[0], read_array(paths.semantic)[0])
    records = load(paths.instance_file)
    instances = read_array(paths.instances)[0]
    for r in records:
        assert r["area"] >= (instances == r["instance_id"]).sum() > 0


def test_progress_over_images_weighted_by_boxes(run):
    progress = run["progress"]
    fractions = progress.fractions
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    # weights: a 10, b 10, c 9, d..g at least 1 each (d 0 → 1, e 0 → 1, f 0 → 1, g 1): 33 in all
    assert pytest.approx(20 / 33) in fractions and pytest.approx(29 / 33) in fractions
    assert any(m.startswith("image 1/7: a: done, 10 boxes") for m in progress.messages)
    assert "image 4/7: d: no boxes" in progress.messages and "image 5/7: e: no annotation file" in progress.messages


def test_dataset_class_list_gives_stable_ids(tmp_path):
    corners, images, labels = build_dataset(tmp_path, stems=("a", "e"))
    with open(os.path.join(labels, "a.txt"), "a") as fh:
        fh.write(dota_line(rectangle(200, 200, 220, 220), "unicorn") + "\n")  # not a DOTA class
    summary = segment_dataset(images, labels, str(tmp_path / "out"), grabcut(), dataset="DOTA-v2.0")
    manifest = load(tmp_path / "out" / "manifest.json")
    assert manifest["classes"][:5] == ["plane", "ship", "storage-tank", "baseball-diamond", "tennis-court"]
    assert manifest["dataset"] == "dota2.0" and len(summary.classes) == 18
    a = manifest["images"]["a"]
    assert a["status"] == "done" and a["boxes"] == 10 and "unicorn" in a["problems"][0]
    ids = {r["category"]: r["category_id"] for r in load(tmp_path / "out" / "instances" / "a.json")}
    assert ids == {"plane": 0, "storage-tank": 2, "tennis-court": 4, "swimming-pool": 14}
    semantic = read_array(tmp_path / "out" / "geo" / "a_semantic.tif")[0]
    assert set(np.unique(semantic)) <= {0, 2, 4, 14, 255}


def same_outputs(out1, out2):
    """Every file of two output folders: same names; rasters and PNGs by pixels, layers by features, JSON by
    value (the manifest's timings left out)."""
    def files(root):
        return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names)

    assert files(out1) == files(out2)
    for rel in files(out1):
        a, b = os.path.join(out1, rel), os.path.join(out2, rel)
        if rel.endswith((".tif", ".png")):
            assert np.array_equal(read_array(a), read_array(b)), rel
        elif rel.endswith(".gpkg"):
            for layer in fiona.listlayers(a):
                def rows(path):  # a layer style's update time is the clock's, not the result's
                    return [{**{k: v for k, v in f.items() if k != "update_time"},
                             "geometry": f["geometry"] and f["geometry"].wkb} for f in support.read_features(path, layer)]
                assert rows(a) == rows(b), (rel, layer)
        elif rel.endswith(".json"):
            ja, jb = load(a), load(b)
            if rel == "manifest.json":
                for j in (ja, jb):
                    for entry in j["images"].values():
                        entry.pop("seconds", None)
            assert ja == jb, rel
        elif rel.endswith(".qml"):
            assert open(a).read() == open(b).read(), rel
        elif not rel.endswith(".aux.xml"):
            raise AssertionError(f"unexpected file {rel}")


def test_interrupted_runs_resume_to_the_same_outputs(run, tmp_path):
    images, labels = run["images"], run["labels"]
    reference, out = tmp_path / "reference", tmp_path / "out"
    segment_dataset(images, labels, str(reference), grabcut(), backend=GrabCutBackend())
    with pytest.raises(Cancelled):  # cancelled while segmenting the second image
        segment_dataset(images, labels, str(out), grabcut(), progress=RecordingProgress(cancel_at="image 2/7: b:"),
                        backend=GrabCutBackend())
    manifest = load(out / "manifest.json")
    assert manifest["images"]["a"]["status"] == "done"
    assert {e["status"] for s, e in manifest["images"].items() if s != "a"} == {"pending"}
    assert not os.path.exists(out / "geo" / "b.gpkg") and not os.path.exists(out / "coco_instances.json")

    progress = RecordingProgress()
    summary = segment_dataset(images, labels, str(out), grabcut(), progress=progress, backend=GrabCutBackend())
    assert summary.skipped == 1 and "image 1/7: a: done in an earlier run, kept" in progress.messages
    same_outputs(reference, out)

    # A lost file makes its image be done again; the others are kept.
    os.remove(out / "class_index" / "b.png")
    summary = segment_dataset(images, labels, str(out), grabcut(), backend=GrabCutBackend())
    assert summary.done == 1 and summary.skipped == 2  # b again; a and c kept
    same_outputs(reference, out)

    # Other result settings: everything is done again.
    summary = segment_dataset(images, labels, str(out), grabcut(fill_holes=True), backend=GrabCutBackend())
    assert summary.skipped == 0 and load(out / "manifest.json")["settings"]["fill_holes"] is True


def test_failure_in_one_image_does_not_stop_the_others(tmp_path):
    corners, images, labels = build_dataset(tmp_path, stems=("a", "b"))
    shutil.copy(os.path.join(images, "a.tif"), os.path.join(images, "a2.tif"))
    with open(os.path.join(images, "a2.tif"), "r+b") as fh:  # a truncated, unreadable image
        fh.truncate(200)
    shutil.copy(os.path.join(labels, "a.txt"), os.path.join(labels, "a2.txt"))
    summary = segment_dataset(images, labels, str(tmp_path / "out"), grabcut())
    statuses = {s: e["status"] for s, e in load(tmp_path / "out" / "manifest.json")["images"].items()}
    assert statuses == {"a": "done", "a2": "failed", "b": "done"} and summary.failures.keys() == {"a2"}


def test_sam_backend_is_loaded_once_for_the_dataset(tmp_path, tiny_sam_checkpoint, monkeypatch):
    corners, images, labels = build_dataset(tmp_path, stems=("a", "b", "d"))
    made, used = [], []

    def counting_make_backend(options, progress=None):
        made.append(real_make_backend(options, progress))
        return made[-1]

    class SpyJob(pipeline_module.SegmentJob):
        def run(self):
            used.append(self.backend)
            return super().run()

    real_make_backend = backends_module.make_backend
    monkeypatch.setattr(dataset_module, "make_backend", counting_make_backend)
    monkeypatch.setattr(run_inputs_module, "make_backend", counting_make_backend)
    monkeypatch.setattr(dataset_image_module, "SegmentJob", SpyJob)
    options = SegmentOptions(backend="sam", checkpoint=tiny_sam_checkpoint, device="cpu", embedding_cache=False)
    job = DatasetJob(images, labels, str(tmp_path / "out"), options)
    summary = job.run()
    assert len(made) == 1 and len(used) == 2 and all(b is made[0] for b in used) and job.backend is made[0]
    assert summary.done == 2 and summary.no_boxes == 1 and "SAM" in summary.backend.upper()
    for stem in ("a", "b"):
        paths = outputs(tmp_path / "out", stem)
        assert np.array_equal(read_array(paths.class_index)[0], read_array(paths.semantic)[0])
        assert len(load(paths.instance_file)) == 10


def test_listing_images(tmp_path):
    _, images, labels = build_dataset(tmp_path, stems=("e",))
    os.makedirs(os.path.join(images, "out"))
    support.write_raster(os.path.join(images, "out", "x.tif"), np.zeros((1, 8, 8), np.uint8), GEO_A)
    flat = dataset_module.list_images(images)
    assert [rel for _, rel in flat] == ["e.tif"]
    deep = dataset_module.list_images(images, recursive=True, exclude=os.path.join(images, "out"))
    assert [rel for _, rel in deep] == ["e.tif", "sub/h.tif"]  # the output folder is never read as input
    job = DatasetJob(images, labels, os.path.join(images, "out"), grabcut(), recursive=True)
    job.prepare()
    assert [i.stem for i in job.images] == ["e", "sub/h"]
    assert job.run().no_annotations == 2 and os.path.isfile(os.path.join(images, "out", "manifest.json"))

"""Exporting a reviewed dataset: rejected masks dropped everywhere, relabelled masks in their new class (an
existing one and a new one), the rest unchanged, the rasters rebuilt with the pipeline's overlap rule.

A dataset of two small georeferenced images (synthetic objects, DOTA labelTxt written here, GrabCut masks)
and one image without annotation file is segmented once per module; the review is then written into the
polygon layers as the review dock writes it (fields ``review``, ``class_orig``; ``class_name``/``class_id``).
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
from samrs.samrs_qgis.classes import class_colours
from samrs.samrs_qgis.dataset import ImageOutputs, segment_dataset
from samrs.samrs_qgis.errors import Cancelled, InputError
from samrs.samrs_qgis.settings import SegmentOptions
from samrs.samrs_qgis.review_export import export_reviewed

CLASS_OF = {"tank": "storage-tank", "building": "tennis-court", "pond": "swimming-pool"}
CLASSES = ["plane", "storage-tank", "swimming-pool", "tennis-court"]  # ids by sorted name
GEO = {"a": Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 3300000.0), "b": Affine(0.5, 0.0, 601000.0, 0.0, -0.5, 3301000.0)}
PLANE_A = 10  # a's extra box (20, 20)-(70, 70), overlapping its first object (a tank, instance 1)
NEW = "helipad"
# instance id -> (review, new class name or None, class id the layer gets)
REVIEW = {
    "a": {1: ("rejected", None, None),  # smaller than the plane under it: it owned the shared pixels
          2: ("accepted", None, None),
          3: ("relabelled", "storage-tank", 1),  # to an existing class
          5: ("relabelled", NEW, 4)},  # to a new class, numbered by the dock as the layer's next id
    "b": {2: ("relabelled", NEW, 7),  # the same new class, numbered otherwise by the dock in this layer
          6: ("rejected", "ghost", 8)},  # relabelled, then rejected: its class is not a class of the export
}


def rectangle(c0, r0, c1, r1):
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]


def dota_line(corners, name) -> str:
    return " ".join(f"{v:g}" for xy in corners for v in xy) + f" {name} 0"


def build_dataset(root):
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for seed, stem in enumerate(("a", "b")):
        image, objects = support.synthetic_scene(256, seed)
        boxes = [(rectangle(*bounds), CLASS_OF[cls]) for cls, _, bounds in objects]
        if stem == "a":
            boxes.append((rectangle(20, 20, 70, 70), "plane"))
        support.write_raster(images / f"{stem}.tif", image, GEO[stem])
        (labels / f"{stem}.txt").write_text("\n".join(["imagesource:test", "gsd:0.5"]
                                                      + [dota_line(c, n) for c, n in boxes]) + "\n")
    small = np.random.default_rng(5).integers(60, 140, (3, 32, 32), dtype=np.uint8)
    support.write_raster(images / "e.tif", small, GEO["a"])  # no annotation file
    return str(images), str(labels)


def write_review(polygons, decisions):
    """Add the review fields to the layer and record ``decisions``, as the review dock does (the layer is
    copied with the extra fields and its metadata; the export does not read the file's styles table)."""
    temp = polygons + ".reviewing.gpkg"
    with fiona.open(polygons, layer="masks") as src:
        schema = dict(src.schema)
        schema["properties"] = dict(schema["properties"], review="str", class_orig="str")
        tags = src.tags()
        with fiona.open(temp, "w", driver="GPKG", layer="masks", schema=schema, crs_wkt=src.crs_wkt) as out:
            out.update_tags(tags)
            for f in src:
                p = dict(f["properties"], review=None, class_orig=None)
                decision = decisions.get(p["instance_id"])
                if decision:
                    review, name, class_id = decision
                    p["review"] = review
                    if name:
                        p["class_orig"], p["class_name"], p["class_id"] = p["class_name"], name, class_id
                out.write({"geometry": f["geometry"], "properties": p})
    os.replace(temp, polygons)


def read_array(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read(1) if ds.count == 1 else ds.read()


def load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_export")
    images, labels = build_dataset(root)
    source = root / "segmented"
    segment_dataset(images, labels, str(source),
                    SegmentOptions(backend="grabcut", embedding_cache=False))
    plain = export_reviewed(source, root / "plain")  # before any review
    original = root / "original"
    shutil.copytree(source, original)  # the outputs as segmented, to compare with
    for stem, decisions in REVIEW.items():
        write_review(str(ImageOutputs.of(str(source), stem).polygons), decisions)
    progress = RecordingProgress()
    summary = export_reviewed(str(source), str(root / "reviewed"), progress=progress)
    return dict(root=root, source=source, original=original, out=root / "reviewed", summary=summary,
                progress=progress, plain=plain)


def paths(folder, stem):
    return ImageOutputs.of(str(folder), stem)


def test_export_without_review_reproduces_the_dataset(run):
    original, plain = run["original"], run["root"] / "plain"
    assert files(plain) == files(original)
    for rel in files(original):
        a, b = os.path.join(original, rel), os.path.join(plain, rel)
        if rel.endswith((".tif", ".png")):
            assert np.array_equal(read_array(a), read_array(b)), rel
        elif rel.endswith(".json") and rel != "manifest.json":
            assert load(a) == load(b), rel
        elif rel.endswith(".gpkg"):
            rows = [[dict(f, geometry=f["geometry"] and f["geometry"].wkb)
                     for f in support.read_features(p, "masks" if "geo" in rel else "boxes")] for p in (a, b)]
            assert rows[0] == rows[1], rel
    with rasterio.open(paths(plain, "a").semantic) as ds, rasterio.open(paths(original, "a").semantic) as ref:
        assert (ds.crs, ds.transform, ds.nodata, ds.dtypes) == (ref.crs, ref.transform, ref.nodata, ref.dtypes)
        assert ds.tags()["SAMRS_CLASSES"] == ref.tags()["SAMRS_CLASSES"]
    summary = run["plain"]
    assert (summary.exported, summary.carried, summary.dropped, summary.relabelled) == (2, 1, 0, 0)


def test_rejected_masks_are_gone_and_their_pixels_go_back(run):
    from pycocotools import mask as mask_utils

    original, out = run["original"], run["out"]
    for stem, rejected in (("a", 1), ("b", 6)):
        layer = support.read_features(paths(out, stem).polygons, "masks")
        assert rejected not in {f["instance_id"] for f in layer}
        assert all(f["review"] != "rejected" for f in layer)
        assert len(layer) == len(support.read_features(paths(original, stem).polygons, "masks")) - 1
        assert not (read_array(paths(out, stem).instances) == rejected).any()
        assert rejected not in {r["instance_id"] for r in load(paths(out, stem).instance_file)}
    # a: the rejected tank owned the pixels it shares with the plane; they are the plane's now
    before, after = read_array(paths(original, "a").instances), read_array(paths(out, "a").instances)
    plane = {r["instance_id"]: r for r in load(paths(original, "a").instance_file)}[PLANE_A]
    plane_mask = mask_utils.decode(plane["segmentation"]).astype(bool)
    shared = (before == 1) & plane_mask
    assert shared.sum() > 20
    expected = before.copy()
    expected[before == 1] = np.where(plane_mask[before == 1], PLANE_A, 0)
    assert np.array_equal(after, expected)
    semantic_before, semantic_after = read_array(paths(original, "a").semantic), read_array(paths(out, "a").semantic)
    assert (semantic_after[shared] == CLASSES.index("plane")).all()
    assert (semantic_after[(before == 1) & ~plane_mask] == 255).all()
    assert (semantic_before[shared] == CLASSES.index("storage-tank")).all()
    class_index, colour = read_array(paths(out, "a").class_index), read_array(paths(out, "a").colour)
    assert np.array_equal(class_index, semantic_after)
    assert (colour[:, shared] == np.array(class_colours([0])[0][:3])[:, None]).all()


def test_relabelled_masks_carry_their_new_class(run):
    out = run["out"]
    new_id = len(CLASSES)
    for stem, relabels in (("a", {3: 1, 5: new_id}), ("b", {2: new_id})):
        files_ = paths(out, stem)
        instances, semantic = read_array(files_.instances), read_array(files_.semantic)
        class_index, colour = read_array(files_.class_index), read_array(files_.colour)
        records = {r["instance_id"]: r for r in load(files_.instance_file)}
        layer = {f["instance_id"]: f for f in support.read_features(files_.polygons, "masks")}
        for k, class_id in relabels.items():
            pixels = instances == k
            assert pixels.sum() > 50
            assert (semantic[pixels] == class_id).all() and (class_index[pixels] == class_id).all()
            assert (colour[:, pixels] == np.array(class_colours([class_id])[class_id][:3])[:, None]).all()
            assert records[k]["category_id"] == class_id and records[k]["category"] == (CLASSES + [NEW])[class_id]
            assert layer[k]["class_id"] == class_id and layer[k]["review"] == "relabelled"
            assert layer[k]["class_orig"] in CLASSES
        with rasterio.open(files_.semantic) as ds:
            assert json.loads(ds.tags()["SAMRS_CLASSES"])[str(new_id)] == NEW
    assert "ghost" not in run["summary"].classes  # only on a rejected mask


def test_untouched_masks_are_unchanged(run):
    original, out = run["original"], run["out"]
    for stem in ("a", "b"):
        touched = set(REVIEW[stem]) - {k for k, (review, _, _) in REVIEW[stem].items() if review == "accepted"}
        before = {r["instance_id"]: r for r in load(paths(original, stem).instance_file)}
        after = {r["instance_id"]: r for r in load(paths(out, stem).instance_file)}
        for k, record in before.items():
            if k in touched and REVIEW[stem][k][0] == "rejected":
                continue
            if k in touched:  # relabelled: only the class changed
                assert {**after[k], "category_id": None, "category": None} == \
                       {**record, "category_id": None, "category": None}
            else:
                assert after[k] == record  # bbox, rbox, area, score and RLE
        instances_before = read_array(paths(original, stem).instances)
        instances_after = read_array(paths(out, stem).instances)
        semantic_before = read_array(paths(original, stem).semantic)
        semantic_after = read_array(paths(out, stem).semantic)
        rejected = [k for k, (review, _, _) in REVIEW[stem].items() if review == "rejected"]
        for k in before:
            if k in touched or (stem == "a" and k == PLANE_A):
                continue
            assert np.array_equal(instances_before == k, instances_after == k), (stem, k)
            assert np.array_equal(semantic_before[instances_before == k], semantic_after[instances_after == k])
        layer_before = {f["instance_id"]: f for f in support.read_features(paths(original, stem).polygons, "masks")}
        for f in support.read_features(paths(out, stem).polygons, "masks"):
            ref = layer_before[f["instance_id"]]
            assert f["geometry"].equals_exact(ref["geometry"], 0) and f["area_px"] == ref["area_px"]
            if f["instance_id"] not in touched:
                assert f["class_name"] == ref["class_name"] and f["class_id"] == ref["class_id"]
        assert rejected and not set(rejected) & set(after)


def test_coco_file(run):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out, original = run["out"], run["original"]
    coco = COCO(str(out / "coco_instances.json"))
    ref = load(original / "coco_instances.json")
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == list(enumerate(CLASSES + [NEW]))
    assert coco.dataset["images"] == ref["images"]  # ids and file names as the dataset gave them (e included)
    assert len(coco.dataset["annotations"]) == len(ref["annotations"]) - 2
    assert [a["id"] for a in coco.dataset["annotations"]] == list(range(1, len(coco.dataset["annotations"]) + 1))
    image_of = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    for stem in ("a", "b"):
        anns = {a["instance_id"]: a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_of[f"{stem}.tif"]]))}
        records = {r["instance_id"]: r for r in load(paths(out, stem).instance_file)}
        assert set(anns) == {k for k, r in records.items() if r["area"]}
        for k, ann in anns.items():
            assert ann["category_id"] == records[k]["category_id"] and ann["segmentation"] == records[k]["segmentation"]
            assert mask_utils.decode(coco.annToRLE(ann)).sum() == ann["area"]
        for k, (review, name, _) in REVIEW[stem].items():
            if review == "rejected":
                assert k not in anns
            elif review == "relabelled":
                assert coco.loadCats(anns[k]["category_id"])[0]["name"] == name


def test_manifest(run):
    out, source = run["out"], run["source"]
    manifest, ref = load(out / "manifest.json"), load(run["original"] / "manifest.json")
    assert manifest["classes"] == CLASSES + [NEW] and manifest["exported_from"] == str(source)
    assert manifest["settings"] == ref["settings"] and manifest["background"] == 255
    a, b = (len(load(paths(run["original"], s).instance_file)) for s in ("a", "b"))
    assert manifest["images"]["a"]["review"] == {"kept": a - 1, "dropped": 1, "relabelled": 2, "accepted": 1,
                                                 "unreviewed": a - 4}
    assert manifest["images"]["b"]["review"] == {"kept": b - 1, "dropped": 1, "relabelled": 1, "accepted": 0,
                                                 "unreviewed": b - 2}
    assert {k: v for k, v in manifest["images"]["a"].items() if k != "review"} == ref["images"]["a"]
    assert manifest["images"]["e"] == ref["images"]["e"] == {**ref["images"]["e"], "status": "no_annotations"}
    assert not any(os.path.exists(p) for p in paths(out, "e").all())  # carried over without files
    summary = run["summary"]
    assert (summary.images, summary.exported, summary.carried, summary.dropped, summary.relabelled) == (3, 2, 1, 2, 3)
    assert summary.new_classes == [NEW] and "2 rejected and dropped" in summary.describe()
    progress = run["progress"]
    assert progress.fractions == sorted(progress.fractions) and progress.fractions[-1] == 1.0
    assert any(m.startswith("image 2/2: b: ") for m in progress.messages)
    assert not any(name.startswith(".") or "partial" in name for name in files(out))


def test_the_export_reads_as_a_dataset(run):
    from samrs.samrs_qgis.report import result_set_from_folder, statistics_from_folder

    pairs, class_names = result_set_from_folder(run["out"])
    assert class_names == dict(enumerate(CLASSES + [NEW]))
    assert [os.path.basename(layer) for layer, _ in pairs] == ["a.gpkg", "b.gpkg"] and all(png for _, png in pairs)
    stats = statistics_from_folder(run["out"])
    before = statistics_from_folder(run["original"])
    assert sum(stats.instances_per_class.values()) == sum(before.instances_per_class.values()) - 2
    assert stats.instances_per_class[len(CLASSES)] == 2  # helipad: a's 5 and b's 2


def test_refused_folders(run, tmp_path):
    source = run["source"]
    with pytest.raises(InputError, match="is the dataset folder itself"):
        export_reviewed(source, source)
    os.symlink(source, tmp_path / "link")
    with pytest.raises(InputError, match="is the dataset folder itself"):
        export_reviewed(source, tmp_path / "link")
    with pytest.raises(InputError, match="not empty"):
        export_reviewed(source, run["original"])  # another dataset is never overwritten
    with pytest.raises(InputError, match="manifest"):
        export_reviewed(run["root"] / "images", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_cancelled_export_writes_nothing(run, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        export_reviewed(run["source"], out, progress=RecordingProgress(cancel_at="image 1/2: a:"))
    assert not os.path.exists(out)  # not even the folders it made
    # An earlier export stays as it was; a finished export replaces it.
    export_reviewed(run["original"], out)
    before = {rel: os.path.getmtime(out / rel) for rel in files(out)}
    with pytest.raises(Cancelled):
        export_reviewed(run["source"], out, progress=RecordingProgress(cancel_at="image 2/2: b:"))
    assert {rel: os.path.getmtime(out / rel) for rel in files(out)} == before
    export_reviewed(run["source"], out)
    assert files(out) == files(run["out"])
    assert load(out / "manifest.json")["images"] == load(run["out"] / "manifest.json")["images"]


def test_a_dataset_with_shaped_polygons_exports_with_their_masks(tmp_path):
    """Regularised polygons are not their masks' exact outlines: the export takes the pixels they cover (no
    "not on the image's grid" error), and a rejected one is gone."""
    images, labels = build_dataset(tmp_path)
    source = tmp_path / "segmented"
    segment_dataset(images, labels, str(source), SegmentOptions(backend="grabcut", embedding_cache=False,
                                                                regularise=True, simplify_px=1.0))
    polygons = str(ImageOutputs.of(str(source), "a").polygons)
    write_review(polygons, {1: ("rejected", None, None)})
    summary = export_reviewed(str(source), str(tmp_path / "reviewed"))
    assert summary.exported == 2 and summary.dropped == 1
    records = load(ImageOutputs.of(str(tmp_path / "reviewed"), "a").instance_file)
    assert 1 not in [r["instance_id"] for r in records] and all(r["area"] > 0 for r in records)

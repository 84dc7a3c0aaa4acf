"""The command line of the tools: ``import-annotations``, ``report``, ``evaluate``, ``compare``, ``ablation``
and ``segment``'s prompt and post-processing options, run as ``python -m samrs_qgis`` from the checkout; bad
input exits with status 2 and one clear line."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

import tools_data as td
from support import read_features

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "samrs_qgis", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def bad(result, *phrases):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    return result


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- import-annotations ---------------------------------------------------------------------------

def test_import_annotations(tmp_path):
    folder = tmp_path / "labelTxt"
    folder.mkdir()
    (folder / "a.txt").write_text(td.DOTA_A)
    (folder / "b.txt").write_text(td.DOTA_B)
    raster = td.scene_raster(tmp_path / "scene.tif")
    out = tmp_path / "boxes.gpkg"
    result = ok(run_cli("import-annotations", folder, "--out", out, "--image", raster, "--dataset", "dota1.0"))
    assert "Imported 4 box(es) from 2 file(s)" in result.stdout and "1 problem(s)" in result.stdout
    assert f"problem: {folder / 'a.txt'}:5:" in result.stderr
    rows = read_features(out, layer="boxes")
    assert [(r["class_name"], r["class_id"]) for r in rows] == [("storage-tank", 2), ("swimming-pool", 14),
                                                                 ("storage-tank", 2), ("plane", 0)]
    bad(run_cli("import-annotations", tmp_path / "missing.txt", "--out", tmp_path / "x.gpkg"), "does not exist")
    bad(run_cli("import-annotations", folder, "--out", tmp_path / "x.shp"), "must be a GeoPackage")
    assert not (tmp_path / "x.gpkg").exists()


# -- report ---------------------------------------------------------------------------------------

def test_report_of_named_subsets(tmp_path):
    root = tmp_path / "dataset"
    td.write_dataset_folder(root / "train", layers=2)
    td.write_dataset_folder(root / "val", layers=1)
    layer = td.write_mask_layer(tmp_path / "extra.gpkg")
    html, tables = tmp_path / "r" / "report.html", tmp_path / "r" / "csv"
    result = ok(run_cli("report", root, f"more={layer}", "--html", html, "--csv-dir", tables, "--quiet"))
    assert "train: 6 boxes, 4 instances" in result.stdout and "more: 3 boxes, 2 instances" in result.stdout
    assert html.is_file() and "val" in html.read_text(encoding="utf-8")
    summary = {r["subset"]: r for r in read_csv(tables / "summary.csv")}
    assert set(summary) == {"train", "val", "more"} and summary["val"]["instances"] == "2"
    bad(run_cli("report", tmp_path / "nowhere", "--html", tmp_path / "x.html"), "does not exist")
    bad(run_cli("report", f"all={root}", "--html", tmp_path / "x.html"), "names a folder of 2 subsets")
    assert not (tmp_path / "x.html").exists()


# -- evaluate / compare ---------------------------------------------------------------------------

def test_evaluate_one_image_pairs_and_folders(tmp_path):
    grid = td.scene_raster(tmp_path / "scene.tif")
    produced, reference = td.write_squares(tmp_path)
    metrics, per_instance = tmp_path / "metrics.csv", tmp_path / "instances.csv"
    result = ok(run_cli("evaluate", produced, reference, "--grid", grid, "--reference-class-field", "kind", "--metrics", metrics,
                        "--instances-csv", per_instance, "--quiet"))
    assert "2 instances in 1 image(s)" in result.stdout
    overall = {r["class"]: r for r in read_csv(metrics)}["(all)"]
    assert float(overall["mean_iou"]) == pytest.approx(td.MEAN_IOU, abs=1e-6)
    assert float(overall["weighted_iou"]) == pytest.approx(td.WEIGHTED_IOU, abs=1e-6)
    assert float(overall["ap"]) == pytest.approx(td.AP, abs=1e-6)
    assert float(overall["ap50"]) == pytest.approx(td.AP50, abs=1e-6)
    assert len(read_csv(per_instance)) == 2

    # a dataset of two images, as repeated --pair (the second with an instance raster and no grid)
    raster = td.write_instance_raster(tmp_path / "tile_instances.tif")
    result = ok(run_cli("evaluate", "--pair", produced, reference, grid, "--pair", raster, reference,
                        "--reference-class-field", "kind", "--metrics", metrics, "--quiet"))
    assert "4 instances in 2 image(s)" in result.stdout
    overall = {r["class"]: r for r in read_csv(metrics)}["(all)"]
    assert float(overall["mean_iou"]) == pytest.approx(td.MEAN_IOU, abs=1e-6)

    # folders matched by name: tile_masks.gpkg <-> tile.gpkg, grid tile.tif
    for name in ("prod", "ref", "grid"):
        (tmp_path / name).mkdir()
    td.write_squares(tmp_path / "prod", prefix="x")  # writes xproduced.gpkg and xreference.gpkg
    (tmp_path / "prod" / "xproduced.gpkg").rename(tmp_path / "prod" / "tile_masks.gpkg")
    (tmp_path / "prod" / "xreference.gpkg").rename(tmp_path / "ref" / "tile.gpkg")
    td.scene_raster(tmp_path / "grid" / "tile.tif")
    result = ok(run_cli("evaluate", tmp_path / "prod", tmp_path / "ref", "--grid", tmp_path / "grid",
                        "--reference-class-field", "kind", "--quiet"))
    assert "2 instances in 1 image(s)" in result.stdout and "mean IoU 0.833" in result.stdout


def test_evaluate_bad_input_exits_2(tmp_path):
    produced, reference = td.write_squares(tmp_path)
    bad(run_cli("evaluate", produced, reference), "No pixel grid")
    bad(run_cli("evaluate", produced), "Give PRODUCED and REFERENCE")
    bad(run_cli("evaluate", "--pair", produced), "--pair takes PRODUCED REFERENCE [GRID]")
    bad(run_cli("evaluate", tmp_path / "none.gpkg", reference, "--grid", produced), "does not exist")


def test_compare_named_produced_masks(tmp_path):
    grid = td.scene_raster(tmp_path / "scene.tif")
    produced, reference = td.write_squares(tmp_path)
    perfect, _ = td.write_squares(tmp_path, prefix="perfect_",
                                  produced=[s[:4] + (0.9,) for s in td.REF_SQUARES])
    out = tmp_path / "comparison.csv"
    ok(run_cli("compare", f"offset={produced}", f"perfect={perfect}", "--reference", reference, "--grid", grid,
               "--reference-class-field", "kind", "--out", out, "--quiet"))
    rows = read_csv(out)
    assert [r["name"] for r in rows] == ["offset", "perfect"]
    assert float(rows[0]["mean_iou"]) == pytest.approx(td.MEAN_IOU, abs=1e-6)
    assert float(rows[1]["mean_iou"]) == pytest.approx(1.0) and float(rows[1]["ap"]) == pytest.approx(1.0)
    bad(run_cli("compare", produced, "--reference", reference, "--grid", grid, "--out", out), "has no name")


# -- ablation -------------------------------------------------------------------------------------

def disc_scene(folder):
    """The discs' raster, its boxes and the true discs as reference masks, written into ``folder``."""
    return (td.scene_raster(folder / "scene.tif"), td.scene_boxes(folder / "boxes.gpkg"),
            td.reference_discs(folder / "reference.gpkg"))


def test_ablation_with_tiny_sam_encodes_once(tmp_path, tiny_sam_checkpoint):
    raster, boxes, reference = disc_scene(tmp_path)
    out = tmp_path / "ablation"
    result = ok(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", out, "--checkpoint",
                        tiny_sam_checkpoint, "--device", "cpu", "--prompts", "box,point,box+point",
                        "--cache-dir", tmp_path / "cache", "--class-field", "label", "--quiet"))
    lines = result.stdout.splitlines()
    assert any(line.startswith("box: 3 boxes") and "0 of 1 window(s) from the embedding cache" in line
               for line in lines), result.stdout
    for mode in ("point", "box+point"):  # the encoder ran once: the other modes read its embedding
        assert any(line.startswith(f"{mode}: 3 boxes") and "1 of 1 window(s)" in line for line in lines), result.stdout
    rows = read_csv(out / "comparison.csv")
    assert [r["name"] for r in rows] == ["box", "point", "box+point"]
    assert all(r["instances"] == "3" and 0 <= float(r["mean_iou"]) <= 1 for r in rows)
    for mode in ("box", "point", "box+point"):
        assert (out / mode / "scene_masks.gpkg").is_file() and (out / mode / "metrics.csv").is_file()


def test_ablation_with_grabcut(tmp_path):
    raster, boxes, reference = disc_scene(tmp_path)
    out = tmp_path / "ablation"
    result = ok(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", out,
                        "--reference-class-field", "kind", "--quiet"))
    assert "not SAM" in result.stdout
    rows = read_csv(out / "comparison.csv")
    assert [r["name"] for r in rows] == ["box"]  # GrabCut takes the box prompt only
    assert float(rows[0]["mean_iou"]) > 0.7  # high-contrast discs
    bad(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", tmp_path / "a2",
                "--prompts", "box,point"), "grabcut backend takes the prompt modes box", "not point")
    bad(run_cli("ablation", raster, boxes, "--reference", tmp_path / "none.gpkg", "--out-dir", tmp_path / "a3"),
        "do not exist")
    assert not (tmp_path / "a2").exists() and not (tmp_path / "a3").exists()


# -- segment: prompt and post-processing ----------------------------------------------------------

def test_segment_prompt_and_post_processing_options(tmp_path, tiny_sam_checkpoint):
    raster = td.scene_raster(tmp_path / "scene.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    ok(run_cli("segment", raster, boxes, "--polygons", tmp_path / "p.gpkg", "--checkpoint", tiny_sam_checkpoint,
               "--device", "cpu", "--prompt", "point", "--quiet"))
    assert len(read_features(tmp_path / "p.gpkg")) == len(td.DISCS)
    ok(run_cli("segment", raster, boxes, "--polygons", tmp_path / "g.gpkg", "--fill-holes", "--keep-largest",
               "--min-island-px", "20", "--quiet"))
    for row in read_features(tmp_path / "g.gpkg"):
        if row["status"] == "ok":
            assert len(list(getattr(row["geometry"], "geoms", [row["geometry"]]))) == 1
    bad(run_cli("segment", raster, boxes, "--polygons", tmp_path / "x.gpkg", "--prompt", "point"),
        "grabcut backend takes the prompt modes box")
    result = run_cli("segment", raster, boxes, "--polygons", tmp_path / "x.gpkg", "--min-island-px", "-3")
    assert result.returncode == 2 and "0 or more" in result.stderr
    assert not (tmp_path / "x.gpkg").exists()


# -- the prompt ablation over a dataset, and the reviewed export ---------------------------------------

def dota_line(bounds, cls):
    x0, y0, x1, y1 = bounds
    return f"{x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1} {cls} 0"


def disc_dataset(tmp_path, stems=("a", "b")):
    """Images (the disc scene), DOTA annotations of its discs, and reference polygons, one per image."""
    images, labels, reference = tmp_path / "images", tmp_path / "labels", tmp_path / "reference"
    for folder in (images, labels, reference):
        folder.mkdir()
    import rasterio

    for n, stem in enumerate(stems):
        td.scene_raster(images / f"{stem}.tif")
        with rasterio.open(images / f"{stem}.tif", "r+") as ds:  # images differ (the embedding cache is keyed by content)
            ds.write(ds.read(1) // (n + 1), 1)
        (labels / f"{stem}.txt").write_text("\n".join(dota_line(b, cls) for b, (*_, cls) in
                                                      zip(td.disc_bounds(), td.DISCS)) + "\n")
        td.reference_discs(reference / f"{stem}.gpkg")
    return images, labels, reference


def test_ablation_of_polygon_options_scores_raw_and_shaped_polygons_side_by_side(tmp_path):
    raster, boxes, reference = disc_scene(tmp_path)
    out = tmp_path / "ablation"
    result = ok(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", out,
                        "--polygon-options", "raw,regularise,smooth=2,simplify=1", "--reference-class-field", "kind",
                        "--quiet"))
    assert "regularise: 3 boxes, 3 ok" in result.stdout  # (GrabCut has no embedding to cache)
    rows = {r["name"]: r for r in read_csv(out / "comparison.csv")}
    assert list(rows) == ["raw", "regularise", "smooth=2", "simplify=1"]
    iou = {name: float(r["mean_iou"]) for name, r in rows.items()}
    assert iou["regularise"] == iou["raw"] > 0.7  # discs are not rectilinear: left as traced
    assert all("not rectilinear" in f["detail"] for f in read_features(out / "regularise" / "scene_masks.gpkg"))
    assert abs(iou["smooth=2"] - iou["raw"]) < 0.05 and abs(iou["simplify=1"] - iou["raw"]) < 0.05
    assert iou["smooth=2"] != iou["raw"] and iou["simplify=1"] != iou["raw"]  # the shaped polygons were scored
    bad(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", tmp_path / "a2",
                "--polygon-options", "raw,smooth=0"), "'smooth=0' is not a polygon variant")
    bad(run_cli("ablation", raster, boxes, "--reference", reference, "--out-dir", tmp_path / "a3",
                "--polygon-options", "raw", "--prompts", "box"), "not both")


def test_ablation_over_a_dataset_encodes_each_image_once(tmp_path, tiny_sam_checkpoint):
    images, labels, reference = disc_dataset(tmp_path)
    out, cache = tmp_path / "ablation", tmp_path / "cache"
    result = ok(run_cli("ablation-dataset", images, labels, "--reference", reference, "--out-dir", out,
                        "--checkpoint", tiny_sam_checkpoint, "--device", "cpu", "--prompts", "box,point",
                        "--cache-dir", cache, "--quiet"))
    rows = read_csv(out / "comparison.csv")
    assert [r["name"] for r in rows] == ["box", "point"], result.stdout
    assert all(r["instances"] == str(2 * len(td.DISCS)) and 0 <= float(r["mean_iou"]) <= 1 for r in rows)
    assert rows[0]["mean_iou"] != rows[1]["mean_iou"]  # the prompt reached SAM
    for mode in ("box", "point"):
        assert (out / mode / "manifest.json").is_file() and (out / mode / "metrics.csv").is_file()
    assert len(list(cache.rglob("*.npz"))) == 2  # one embedding per image, shared by both modes


def test_export_reviewed_drops_rejected_masks(tmp_path):
    import fiona

    images, labels, _ = disc_dataset(tmp_path, stems=("a",))
    dataset = tmp_path / "dataset"
    ok(run_cli("segment-dataset", images, labels, "--out-dir", dataset, "--quiet"))
    layer = dataset / "geo" / "a.gpkg"
    with fiona.open(layer, layer="masks") as src:
        schema, crs, features = src.schema, src.crs_wkt, list(src)
    schema["properties"]["review"] = "str"
    with fiona.open(layer, "w", driver="GPKG", layer="masks", schema=schema, crs_wkt=crs) as dst:
        for f in features:  # the review dock's decision: the first mask rejected
            review = "rejected" if f["properties"]["instance_id"] == 1 else "accepted"
            dst.write({"geometry": f["geometry"], "properties": dict(f["properties"], review=review)})
    ok(run_cli("export-reviewed", dataset, tmp_path / "reviewed", "--quiet"))
    kept = read_features(tmp_path / "reviewed" / "geo" / "a.gpkg", layer="masks")
    assert sorted(r["instance_id"] for r in kept) == [2, 3]
    bad(run_cli("export-reviewed", dataset, dataset), "is the dataset folder itself")

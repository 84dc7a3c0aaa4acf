"""Prompt modes and mask post-processing.

Prompts: every mode gives SAM exactly what segment-anything's own prompt encoder and MaskDecoder
compute for the same prompts made by hand (boxes as first/last pixel inside, points at x - 0.5, dense
mask prompts of +/-1000 per 4-px cell), also when logits are cropped to a region; every mode runs
end to end. Post-processing: hole filling, island removal and keeping the largest part, with the
connectivity of the polygons the masks are traced into (4-connected parts, 4-connected holes).
"""
import json
import math
import re

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from shapely import affinity
from shapely.geometry import MultiPolygon

from samrs.samrs_qgis.backends.sam import SamBackend, sam_box_prompt, sam_mask_prompt, sam_point_prompt
from samrs.samrs_qgis.boxes import read_box_file
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.masks import MaskCrop, polygonize
from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
from samrs.samrs_qgis.settings import SegmentOptions
from samrs.samrs_qgis.postprocess import PostProcessing, clean_mask
from samrs.samrs_qgis.prompts import PROMPT_MODES, Prompts, build_prompts, polygon_centre
from support import pixel_box, read_features, synthetic_scene, write_boxes, write_raster

# Rotated rectangles in a 1024x1024 frame: (centre x, centre y, width, height, angle in degrees).
RECTS = [(200.0, 300.0, 120.0, 60.0, 30.0), (700.0, 650.0, 80.0, 200.0, -20.0), (512.3, 100.7, 50.0, 50.0, 45.0),
         (100.0, 950.0, 120.0, 100.0, 0.0), (980.0, 40.0, 70.0, 40.0, 63.0)]


def rect_ring(cx, cy, w, h, angle):
    """Closed ring (5, 2) of a w x h rectangle centred on (cx, cy), turned by ``angle`` degrees."""
    a = math.radians(angle)
    u, v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    corners = [np.array([cx, cy]) + sx * w / 2 * u + sy * h / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return np.array(corners + corners[:1])


RINGS = [rect_ring(*r) for r in RECTS]
BOXES = np.array([[r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()] for r in RINGS])
CENTRES = np.array([[r[0], r[1]] for r in RECTS])


def mask_prompt_by_hand(cx, cy, w, h, angle, size=256, cell=4.0):
    """SAM's 256x256 mask input for a rotated rectangle: +1000 where a cell's centre is inside, else -1000.

    Inside-ness is computed in the rectangle's own axes, independently of GDAL; no cell centre may
    lie on the boundary (the test would not be well defined).
    """
    a = math.radians(angle)
    centres = (np.arange(size) + 0.5) * cell
    x, y = np.meshgrid(centres, centres)  # x varies along columns, y along rows
    du = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
    dv = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
    margin = np.minimum(w / 2 - np.abs(du), h / 2 - np.abs(dv))
    assert np.abs(margin).min() > 1e-6
    return np.where(margin > 0, 1000.0, -1000.0).astype(np.float32)


@pytest.fixture(scope="module")
def encoded(tiny_sam_checkpoint):
    frame = np.random.default_rng(11).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    backend.encode(frame)
    return backend


def reference(backend, multimask, points=None, boxes=None, masks=None):
    """segment-anything's prompt encoder + MaskDecoder on the backend's embedding: (logits (n, 256, 256), iou (n,))."""
    model = backend.model
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou = model.mask_decoder(image_embeddings=backend.predictor.features,
                                          image_pe=model.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
    low_res, iou = low_res.numpy(), iou.numpy()
    choice = iou.argmax(axis=1) if multimask else np.zeros(len(iou), dtype=int)
    rows = np.arange(len(iou))
    return low_res[rows, choice], iou[rows, choice]


def hand_made_inputs(mode):
    """The segment-anything inputs of ``mode`` made without the engine's prompt helpers."""
    n = len(RECTS)
    points = boxes = masks = None
    if mode in ("point", "box+point"):
        coords = torch.as_tensor((CENTRES - 0.5).reshape(n, 1, 2), dtype=torch.float32)
        points = (coords, torch.ones((n, 1), dtype=torch.int))
    if mode in ("box", "box+point"):
        boxes = torch.as_tensor(np.stack([BOXES[:, 0], BOXES[:, 1], BOXES[:, 2] - 1, BOXES[:, 3] - 1], axis=1),
                                dtype=torch.float32)
    if mode == "rbox-mask":
        masks = torch.as_tensor(np.stack([mask_prompt_by_hand(*r) for r in RECTS])[:, None])
    return points, boxes, masks


# -- 1. every mode's SAM inputs and outputs -------------------------------------------------------

@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_each_prompt_mode_decodes_as_segment_anything_does(encoded, mode, multimask):
    prompts = build_prompts(mode, BOXES, RINGS)
    assert prompts.count == len(RECTS)
    encoded.multimask = multimask
    try:
        ours = encoded.decode(BOXES, None, prompts)
    finally:
        encoded.multimask = False
    logits, scores = reference(encoded, multimask, *hand_made_inputs(mode))
    assert len(ours) == len(RECTS)
    for i, out in enumerate(ours):
        assert (out.origin_x, out.origin_y, out.cell, out.grid.shape) == (0.0, 0.0, 4.0, (256, 256))
        assert np.allclose(out.grid, logits[i], atol=1e-5), (mode, i, np.abs(out.grid - logits[i]).max())
        assert out.score == pytest.approx(float(scores[i]), abs=1e-5)


def test_modes_are_different_prompts(encoded):
    """Each mode reaches the decoder: the four give four different answers for the same boxes."""
    grids = {mode: encoded.decode(BOXES, None, build_prompts(mode, BOXES, RINGS))[0].grid for mode in PROMPT_MODES}
    for i, a in enumerate(PROMPT_MODES):
        for b in PROMPT_MODES[i + 1:]:
            assert not np.allclose(grids[a], grids[b], atol=1e-3), (a, b)
    # "box" given explicitly is the default prompt
    default = encoded.decode(BOXES)
    for out, ref in zip(encoded.decode(BOXES, None, build_prompts("box", BOXES, RINGS)), default):
        assert np.array_equal(out.grid, ref.grid) and out.score == ref.score


def test_engine_prompt_tensors_equal_the_hand_made_ones():
    points, boxes, masks = hand_made_inputs("box+point")
    assert np.allclose(sam_point_prompt(build_prompts("point", BOXES, RINGS).points), points[0].numpy(), atol=1e-4)
    assert np.allclose(sam_box_prompt(build_prompts("box", BOXES, RINGS).boxes), boxes.numpy(), atol=1e-4)
    _, _, masks = hand_made_inputs("rbox-mask")
    ours = sam_mask_prompt(build_prompts("rbox-mask", BOXES, RINGS).polygons, 256, 4.0)
    assert ours.shape == (len(RECTS), 1, 256, 256) and ours.dtype == np.float32
    assert np.array_equal(ours, masks.numpy())


@pytest.mark.parametrize("mode", ["point", "box+point", "rbox-mask"])
def test_region_crops_equal_the_whole_grid_for_points_and_masks(encoded, mode):
    prompts = build_prompts(mode, BOXES, RINGS)
    pad = np.maximum(4.0, 0.25 * np.maximum(BOXES[:, 2] - BOXES[:, 0], BOXES[:, 3] - BOXES[:, 1]))
    regions = np.clip(BOXES + np.stack([-pad, -pad, pad, pad], axis=1), 0, 1024)
    cropped = encoded.decode(BOXES, regions, prompts)
    whole = encoded.decode(BOXES, None, prompts)
    for crop, full in zip(cropped, whole):
        row, col = int(crop.origin_y // crop.cell), int(crop.origin_x // crop.cell)
        rows, cols = crop.grid.shape
        assert rows * cols < 256 * 256  # these boxes are far smaller than the window
        assert np.allclose(crop.grid, full.grid[row:row + rows, col:col + cols], atol=1e-5)
        assert crop.score == pytest.approx(full.score, abs=1e-6)


# -- 2. pixel conventions -----------------------------------------------------------------------

def test_point_prompt_is_half_a_pixel_before_the_point():
    out = sam_point_prompt(np.array([[10.0, 20.0], [0.5, 1023.25]]))
    assert out.shape == (2, 1, 2) and out.dtype == np.float32
    assert out.tolist() == [[[9.5, 19.5]], [[0.0, 1022.75]]]


@pytest.mark.parametrize("rect", RECTS)
def test_polygon_centre_of_a_rotated_rectangle_is_its_centre(rect):
    ring = rect_ring(*rect)
    for r in (ring, ring[:-1], ring[::-1]):  # closed, open, clockwise
        assert polygon_centre(r) == pytest.approx(rect[:2], abs=1e-9)
    # an L shape: the area centroid, not the mean of the vertices
    ell = np.array([[0, 0], [4, 0], [4, 1], [1, 1], [1, 4], [0, 4]], dtype=float)
    assert polygon_centre(ell) == pytest.approx([9.5 / 7, 9.5 / 7])  # (4 * 2 + 3 * 0.5) / 7 and by symmetry
    assert polygon_centre(np.array([[2, 2], [6, 2], [2, 2]], dtype=float)) == pytest.approx([4, 2])  # no area


def test_build_prompts_gives_each_mode_its_parts():
    parts = {mode: build_prompts(mode, BOXES, RINGS) for mode in PROMPT_MODES}
    assert [(p.boxes is not None, p.points is not None, p.polygons is not None) for p in parts.values()] == \
        [(True, False, False), (False, False, True), (False, True, False), (True, True, False)]
    assert np.allclose(parts["box+point"].points, CENTRES)
    assert np.array_equal(parts["box"].boxes, BOXES)
    with pytest.raises(InputError, match="Unknown prompt mode 'mask'"):
        build_prompts("mask", BOXES, RINGS)
    assert Prompts().count == 0


def test_mask_prompt_marks_the_cells_whose_centre_is_inside():
    square = np.array([[8, 8], [24, 8], [24, 24], [8, 24], [8, 8]], dtype=float)  # frame pixels [8, 24)
    out = sam_mask_prompt([square], 256, 4.0)[0, 0]
    rows, cols = np.nonzero(out > 0)
    assert sorted(set(rows)) == [2, 3, 4, 5] and sorted(set(cols)) == [2, 3, 4, 5]
    assert (out > 0).sum() == 16
    assert set(np.unique(out)) == {-1000.0, 1000.0}
    # a rectangle [8, 24) x [40, 48): cells 2..5 in columns, 10..11 in rows (row = y)
    wide = np.array([[8, 40], [24, 40], [24, 48], [8, 48]], dtype=float)
    rows, cols = np.nonzero(sam_mask_prompt([wide], 256, 4.0)[0, 0] > 0)
    assert sorted(set(rows)) == [10, 11] and sorted(set(cols)) == [2, 3, 4, 5]


# -- 3. end to end ------------------------------------------------------------------------------

E2E_TRANSFORM = Affine(0.5, 0, 600000, 0, -0.5, 3300000)
E2E_POST = {"box": (False, 0, False), "rbox-mask": (True, 5, False), "point": (False, 0, True),
            "box+point": (True, 2, True)}


def e2e_inputs(tmp_path):
    image, objects = synthetic_scene(256, seed=1)
    raster = write_raster(tmp_path / "scene.tif", image, E2E_TRANSFORM)
    polygons = []
    for i, (_, _, bounds) in enumerate(objects):
        box = pixel_box(E2E_TRANSFORM, *bounds)
        polygons.append(affinity.rotate(box, 25 * (i % 3), origin="centroid"))  # a third horizontal
    polygons.append(pixel_box(E2E_TRANSFORM, 1000, 1000, 1040, 1030))  # outside the raster
    boxes = write_boxes(tmp_path / "boxes.gpkg", polygons, properties=[{"ref": i} for i in range(len(polygons))])
    return raster, boxes, len(polygons)


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory, tiny_sam_checkpoint):
    tmp = tmp_path_factory.mktemp("prompt-modes")
    raster, boxes, count = e2e_inputs(tmp)
    runs = {}
    for mode in PROMPT_MODES:
        fill, islands, largest = E2E_POST[mode]
        out = OutputPaths(str(tmp / mode / "inst.tif"), str(tmp / mode / "sem.tif"), str(tmp / mode / "masks.gpkg"))
        options = SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu", precision="fp32",
                                 embedding_cache=False, prompt=mode, fill_holes=fill, min_island_px=islands,
                                 keep_largest=largest)
        summary = segment_boxes(raster, read_box_file(boxes), out, options)
        runs[mode] = (summary, out, count)
    return runs


@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_every_prompt_mode_runs_end_to_end(e2e_runs, mode):
    summary, out, count = e2e_runs[mode]
    assert summary.boxes == count and summary.status_counts.get("outside") == 1
    features = read_features(out.polygons)
    assert sorted(f["ref"] for f in features) == list(range(count))  # every box, once
    fill, islands, largest = E2E_POST[mode]
    with rasterio.open(out.instances) as ds:
        instances = ds.read(1)
        settings = json.loads(ds.tags()["SAMRS_SETTINGS"])
    assert (settings["prompt"], settings["fill_holes"], settings["min_island_px"], settings["keep_largest"]) == \
        (mode, fill, islands, largest)
    for f in features:
        if f["ref"] == count - 1:
            assert f["status"] == "outside" and f["geometry"] is None
            continue
        assert f["status"] in ("ok", "empty") and f["score"] is not None
        if f["status"] == "empty":
            assert f["geometry"] is None and f["area_px"] == 0
            continue
        geom = f["geometry"]
        assert isinstance(geom, MultiPolygon) and geom.is_valid
        assert f["area_px"] == pytest.approx(geom.area / 0.25)
        assert (instances == f["instance_id"]).sum() <= f["area_px"]  # smaller masks own contested pixels
        if largest:
            assert len(geom.geoms) == 1
        if fill and largest:
            assert not geom.geoms[0].interiors
        if islands:
            assert all(p.area / 0.25 >= islands for p in geom.geoms)


def test_prompt_modes_reach_the_decoder_end_to_end(e2e_runs):
    scores = {mode: [f["score"] for f in sorted(read_features(out.polygons), key=lambda f: f["ref"])][:-1]
              for mode, (_, out, _) in e2e_runs.items()}
    for i, a in enumerate(PROMPT_MODES):
        for b in PROMPT_MODES[i + 1:]:
            assert scores[a] != scores[b], (a, b)


def test_grabcut_refuses_prompt_modes_it_cannot_take(tmp_path):
    raster, boxes, _ = e2e_inputs(tmp_path)
    out = OutputPaths(polygons=str(tmp_path / "out" / "masks.gpkg"))
    for mode in ("point", "rbox-mask", "box+point"):
        with pytest.raises(InputError, match=f"grabcut backend .*{re.escape(repr(mode))}"):
            segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", prompt=mode))
    assert not (tmp_path / "out" / "masks.gpkg").exists()
    with pytest.raises(InputError, match="Unknown prompt mode 'points'"):
        segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", prompt="points"))
    with pytest.raises(InputError, match="minimum island area -1"):
        segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", min_island_px=-1))


# -- 4. clean_mask ------------------------------------------------------------------------------

def grid(text):
    """A bool mask from rows of '#' (mask) and '.' (background)."""
    return np.array([[c == "#" for c in row] for row in text.split()], dtype=bool)


def traced(mask):
    """The polygon the pipeline would write for ``mask``."""
    return polygonize(MaskCrop(0, 0, mask), Affine.identity())


def test_fill_holes_fills_an_enclosed_hole_but_not_a_notch_open_to_the_border():
    ring = grid("""
        .......
        .#####.
        .#...#.
        .#...#.
        .#####.
        .......""")
    filled = clean_mask(ring, PostProcessing(fill_holes=True))
    assert filled[1:5, 1:6].all() and filled.sum() == 20
    notch = grid("""
        ##.##
        ##.##
        #####""")  # the gap reaches the crop border: not a hole
    assert np.array_equal(clean_mask(notch, PostProcessing(fill_holes=True)), notch)
    edge = grid("""
        .###
        .#.#
        .###""")  # a hole next to background that touches the border is still enclosed
    assert clean_mask(edge, PostProcessing(fill_holes=True))[1, 2]


def test_fill_holes_uses_the_connectivity_of_the_traced_polygons():
    """Polygons are traced 4-connected and written as valid OGC geometries, in which a background
    pixel that meets the outside only at a corner is an interior ring (it touches the shell at one
    point). So a hole is background with no 4-connected path to the crop border: diagonal contact
    does not open it, and after filling the traced polygon has no interior ring."""
    mask = grid("""
        .......
        .#####.
        .#####.
        .##.##.
        .###.#.
        .#####.
        .......""")
    assert len(traced(mask).geoms[0].interiors) == 2  # (3, 3) and (4, 4) are rings although (4, 4) touches (3, 3)
    diagonal_out = grid("""
        .......
        .#####.
        .#####.
        .##.##.
        .###.#.
        .####..
        .......""")  # (4, 4) meets the outside (5, 5) at a corner only
    assert len(traced(diagonal_out).geoms[0].interiors) == 2
    filled = clean_mask(diagonal_out, PostProcessing(fill_holes=True))
    expected = diagonal_out.copy()
    expected[3, 3] = expected[4, 4] = True
    assert np.array_equal(filled, expected)  # the corner notch (5, 5) stays: it shares an edge with the outside
    geom = traced(filled)
    assert len(geom.geoms) == 1 and not geom.geoms[0].interiors


def test_min_island_px_drops_4_connected_components_smaller_than_n():
    mask = grid("""
        #.......##
        .#......##
        ..........
        ##..###...
        .....#....
        ##........
        ##.......#""")
    # components (4-connected): two singles touching diagonally, a 2x2 block (4), a pair (2),
    # a T of 4, a 2x2 block (4), a single
    out2 = clean_mask(mask, PostProcessing(min_island_px=2))
    assert not out2[0, 0] and not out2[1, 1] and not out2[6, 9]  # the diagonal pair is two islands of 1
    assert out2[3, 0] and out2[3, 1]  # a pair of exactly 2 stays
    assert out2.sum() == mask.sum() - 3
    out4 = clean_mask(mask, PostProcessing(min_island_px=4))
    expected = mask.copy()
    expected[[0, 1, 6, 3, 3], [0, 1, 9, 0, 1]] = False
    assert np.array_equal(out4, expected)  # components of exactly 4 stay
    assert not clean_mask(mask, PostProcessing(min_island_px=5)).any()
    assert np.array_equal(clean_mask(mask, PostProcessing(min_island_px=1)), mask)


def test_keep_largest_keeps_one_component_first_in_raster_order_on_ties():
    mask = grid("""
        .....###
        ##....#.
        ##......
        ........
        .###....
        .###....""")
    out = clean_mask(mask, PostProcessing(keep_largest=True))
    assert np.array_equal(out, grid("""
        ........
        ........
        ........
        ........
        .###....
        .###...."""))
    tie = grid("""
        .....##.
        ##...##.
        ##......""")  # two blocks of 4: the one whose first pixel comes first in raster order stays
    assert np.array_equal(clean_mask(tie, PostProcessing(keep_largest=True)), grid("""
        .....##.
        .....##.
        ........"""))
    diagonal = grid("""
        #.
        .#""")
    assert clean_mask(diagonal, PostProcessing(keep_largest=True)).sum() == 1  # a corner touch: two parts


def test_steps_combine_in_order_fill_then_islands_then_largest():
    mask = grid("""
        ####.....
        ####.....
        .........
        .....###.
        .....#.#.
        .....###.""")  # a block of 8 first in raster order, a ring of 8 (9 once filled)
    ring_filled = grid("""
        .........
        .........
        .........
        .....###.
        .....###.
        .....###.""")
    assert np.array_equal(clean_mask(mask, PostProcessing(fill_holes=True, keep_largest=True)), ring_filled)
    assert np.array_equal(clean_mask(mask, PostProcessing(keep_largest=True)), mask & ~ring_filled)  # tie: first
    assert np.array_equal(clean_mask(mask, PostProcessing(fill_holes=True, min_island_px=9)), ring_filled)
    assert not clean_mask(mask, PostProcessing(min_island_px=9)).any()
    assert not clean_mask(mask, PostProcessing(fill_holes=True, min_island_px=10, keep_largest=True)).any()
    everything = clean_mask(mask, PostProcessing(fill_holes=True, min_island_px=8, keep_largest=True))
    assert np.array_equal(everything, ring_filled)


@pytest.mark.parametrize("steps", [PostProcessing(), PostProcessing(fill_holes=True), PostProcessing(min_island_px=3),
                                   PostProcessing(keep_largest=True), PostProcessing(True, 2, True)])
def test_empty_stays_empty_and_the_input_is_not_modified(steps):
    empty = np.zeros((5, 6), bool)
    out = clean_mask(empty, steps)
    assert out.shape == (5, 6) and out.dtype == bool and not out.any()
    mask = grid("""
        ##...#
        ##.#.#
        ...#..
        ####..
        #..#..""")
    before = mask.copy()
    out = clean_mask(mask, steps)
    assert np.array_equal(mask, before)
    assert out.dtype == bool and out.shape == mask.shape
    assert not (out & ~clean_mask(mask, PostProcessing(fill_holes=steps.fill_holes))).any()  # only removes, after filling
    if not steps.active:
        assert np.array_equal(out, mask)


# -- 5. post-processing through the pipeline -------------------------------------------------------

def defective_scene(size=384, seed=5):
    """The synthetic scene with a ground-coloured hole in every object and an object-coloured speck
    in a corner of its box, apart from the object: what hole filling and keeping the largest part remove."""
    image, objects = synthetic_scene(size, seed=seed)
    for _, mask, (c0, r0, c1, r1) in objects:
        rows, cols = np.nonzero(mask)
        cy, cx = int(rows.mean()), int(cols.mean())
        colour = image[:, cy, cx].copy()
        image[:, cy - 2:cy + 3, cx - 2:cx + 3] = np.array([86, 95, 67], np.uint8)[:, None, None]
        for r, c in ((r0 + 1, c0 + 1), (r0 + 1, c1 - 5), (r1 - 5, c0 + 1), (r1 - 5, c1 - 5)):
            if not mask[max(r - 2, 0):r + 6, max(c - 2, 0):c + 6].any():
                image[:, r:r + 4, c:c + 4] = colour[:, None, None]
                break
    return image, objects


def grabcut_run(tmp_path, name, **post):
    image, objects = defective_scene()
    transform = Affine(0.3, 0, 404000, 0, -0.3, 3285000)
    raster = write_raster(tmp_path / "scene.tif", image, transform)
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(transform, *o[2]) for o in objects],
                        properties=[{"ref": i} for i in range(len(objects))])
    out = OutputPaths(str(tmp_path / name / "i.tif"), None, str(tmp_path / name / "m.gpkg"))
    segment_boxes(raster, read_box_file(boxes), out, SegmentOptions(backend="grabcut", **post))
    features = read_features(out.polygons)
    assert sorted(f["ref"] for f in features) == list(range(len(objects)))
    with rasterio.open(out.instances) as ds:
        settings = json.loads(ds.tags()["SAMRS_SETTINGS"])
    return features, settings


def test_grabcut_with_fill_holes_and_keep_largest_gives_one_solid_part_per_box(tmp_path):
    raw, _ = grabcut_run(tmp_path, "raw")
    # without post-processing the defects show: holes or extra parts
    assert any(len(f["geometry"].geoms) > 1 or any(p.interiors for p in f["geometry"].geoms) for f in raw)
    clean, settings = grabcut_run(tmp_path, "clean", fill_holes=True, keep_largest=True)
    assert (settings["fill_holes"], settings["keep_largest"], settings["prompt"]) == (True, True, "box")
    for f in clean:
        geom = f["geometry"]
        assert f["status"] == "ok" and isinstance(geom, MultiPolygon) and geom.is_valid
        assert len(geom.geoms) == 1 and not geom.geoms[0].interiors, f["ref"]
        assert f["area_px"] == pytest.approx(geom.area / 0.09)

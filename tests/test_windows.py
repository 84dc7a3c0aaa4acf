"""Window planning: every usable box lies wholly inside one window, windows lie inside the raster."""
import numpy as np
from shapely.geometry import box as shapely_box

from samrs.samrs_qgis.boxes import STATUS_OK, STATUS_OUTSIDE, BoxFeature, PixelBox
from samrs.samrs_qgis.windows import plan_windows


def make_boxes(bounds, status=STATUS_OK):
    return [PixelBox(feature=BoxFeature(i, i, {}, None), instance_id=i + 1, class_name="x", class_id=0,
                     status=status, polygon=shapely_box(*b), bounds=tuple(float(v) for v in b))
            for i, b in enumerate(bounds)]


def test_every_box_in_exactly_one_window_inside_the_raster():
    rng = np.random.default_rng(0)
    width, height = 5000, 3000
    bounds = []
    for _ in range(400):
        w, h = rng.integers(5, 300, 2)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        bounds.append((x, y, x + w, y + h))
    bounds += [(100, 100, 2100, 900), (0, 0, 5000, 3000)]  # larger than a window
    boxes = make_boxes(bounds)
    plans = plan_windows(boxes, (width, height), 1024)
    seen = [b.instance_id for p in plans for b in p.boxes]
    assert sorted(seen) == [b.instance_id for b in boxes]
    for p in plans:
        w = p.window
        assert 0 <= w.col and 0 <= w.row and w.col_end <= width and w.row_end <= height
        assert max(p.frame_shape) == 1024
        for b in p.boxes:
            assert w.contains(b.bounds)
        if len(p.boxes) == 1 and max(p.boxes[0].size) > 1024:
            assert p.scale[0] < 1  # a big box is seen shrunk in its own window
        else:
            assert (w.width, w.height) == (1024, 1024) and p.scale == (1.0, 1.0)  # native resolution


def test_clustered_boxes_share_a_window_and_unusable_boxes_get_none():
    boxes = make_boxes([(10 + 30 * i, 20, 30 + 30 * i, 40) for i in range(20)])
    boxes += make_boxes([(5000, 5000, 5010, 5010)], status=STATUS_OUTSIDE)
    plans = plan_windows(boxes, (4096, 4096), 1024)
    assert len(plans) == 1 and len(plans[0].boxes) == 20


def test_raster_smaller_than_a_window_is_one_upscaled_window():
    plans = plan_windows(make_boxes([(10, 10, 50, 50), (300, 200, 390, 290)]), (400, 300), 1024)
    assert len(plans) == 1
    assert (plans[0].window.width, plans[0].window.height) == (400, 300)
    assert plans[0].frame_shape == (768, 1024)


def test_plan_is_never_below_the_lower_bound_and_close_to_it_on_clusters():
    from samrs.samrs_qgis.windows import window_lower_bound

    rng = np.random.default_rng(1)
    bounds = []
    for cx, cy in rng.uniform(500, 7500, (12, 2)):  # 12 tight clusters of 30 small boxes
        for _ in range(30):
            x, y = cx + rng.uniform(-300, 300), cy + rng.uniform(-300, 300)
            bounds.append((x, y, x + 20, y + 20))
    boxes = make_boxes(bounds)
    plans = plan_windows(boxes, (8192, 8192), 1024)
    bound = window_lower_bound(boxes, (8192, 8192), 1024)
    assert 1 <= bound <= len(plans) <= 1.5 * bound


def test_two_clusters_one_window_apart_take_two_windows():
    # The "most boxes" placement alone straddles the clusters and needs a third window.
    rng = np.random.default_rng(0)
    bounds = []
    for cx, cy in ((300, 500), (1500, 500)):
        for _ in range(20):
            x, y = cx + rng.uniform(-200, 200), cy + rng.uniform(-200, 200)
            bounds.append((x, y, x + 40, y + 40))
    plans = plan_windows(make_boxes(bounds), (2048, 1024), 1024)
    assert len(plans) == 2

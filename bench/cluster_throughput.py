"""Figure 9: images per minute of ``segment-dataset`` on a generated dataset (tiny SAM), without a cluster and on
a local Dask cluster of 1 and of 2 worker processes, measured in one run.

The rate is the steady one: images finished after the first one, over the time from the first to the last
(cluster start, worker start-up and model loading are printed apart). The scheduler's overhead per image is the
1-worker time per image less the local one. 1 worker uses all cores; 2 workers share them (one thread each on 2
cores).

    .venv/bin/python bench/cluster_throughput.py      the figure alone (about a minute on 2 cores)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGES = 16
TILE = 256
BOXES_PER_IMAGE = 10
TARGET_TWO_WORKERS = 1.6
TARGET_ONE_WORKER = 0.9  # of the local rate: the scheduler's overhead within 10 %


def write_dataset(bench, folder: Path):
    """IMAGES tiles of the bench's real 1024² image with BOXES_PER_IMAGE boxes each (DOTA text)."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    real = bench.real_image_1024()
    rng = np.random.default_rng(9)
    per_row = real.shape[1] // TILE
    for i in range(IMAGES):
        r, c = divmod(i % (per_row * per_row), per_row)
        bench.write_image(images / f"tile{i:02d}.tif", np.ascontiguousarray(real[r * TILE:(r + 1) * TILE,
                                                                                 c * TILE:(c + 1) * TILE]))
        lines = [f"{x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1} object 0"
                 for x0, y0, x1, y1 in bench.random_boxes(rng, BOXES_PER_IMAGE, (0, TILE), (0, TILE), 16, 80)]
        (labels / f"tile{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return images, labels


def measure(images, labels, out: Path, checkpoint: str, cluster) -> dict:
    """One run: its wall time, the steady rate (images per minute) and when the first image finished."""
    from samrs_qgis.dataset import segment_dataset
    from samrs_qgis.progress import Progress
    from samrs_qgis.settings import SegmentOptions

    finished = []

    class Stamps(Progress):
        def info(self, message):
            if ": done, " in message:
                finished.append(time.perf_counter())

    t0 = time.perf_counter()
    summary = segment_dataset(str(images), str(labels), str(out), SegmentOptions(
        checkpoint=checkpoint, device="cpu", embedding_cache=False), progress=Stamps(), cluster=cluster)
    wall = time.perf_counter() - t0
    assert summary.done == IMAGES and len(finished) == IMAGES, (summary.describe(), len(finished))
    steady = (IMAGES - 1) / (finished[-1] - finished[0]) * 60
    return {"wall": wall, "rate": steady, "first": finished[0] - t0}


def figure(torch, work: Path, checkpoint: str, log, out) -> bool:
    """Measure and print figure 9; True when both targets hold."""
    sys.path.insert(0, str(HERE))
    import bench
    from samrs_qgis.cluster import ClusterSpec

    images, labels = write_dataset(bench, work / "fig9")
    runs = {}
    for name, cluster in (("local", None), ("1 worker", ClusterSpec(workers=1)), ("2 workers", ClusterSpec(workers=2))):
        runs[name] = measure(images, labels, work / "fig9" / name.replace(" ", "_"), checkpoint, cluster)
        log(f"  {name}: {runs[name]['rate']:.1f} images/min steady, first image after {runs[name]['first']:.1f} s, "
            f"wall {runs[name]['wall']:.1f} s")
    local, one, two = runs["local"]["rate"], runs["1 worker"]["rate"], runs["2 workers"]["rate"]
    overhead = 60 / one - 60 / local
    r_two, r_one = two / one, one / local
    ok = r_two >= TARGET_TWO_WORKERS and r_one >= TARGET_ONE_WORKER
    out(f"Fig 9  segment-dataset on a local Dask cluster, {IMAGES} images {TILE}² x {BOXES_PER_IMAGE} boxes, tiny SAM: "
        f"2 workers / 1 worker {r_two:.2f}, 1 worker / local {r_one:.2f} | images per minute (steady: after the first) "
        f"local {local:.1f}, 1 worker {one:.1f}, 2 workers {two:.1f}; scheduler overhead per image "
        f"{1000 * overhead:.0f} ms; start (cluster, workers, model) to the first image: local "
        f"{runs['local']['first']:.1f} s, 1 worker {runs['1 worker']['first']:.1f} s, 2 workers "
        f"{runs['2 workers']['first']:.1f} s | targets 2 workers >= {TARGET_TWO_WORKERS}x 1 worker "
        f"{'PASS' if r_two >= TARGET_TWO_WORKERS else 'MISS'}, 1 worker >= {TARGET_ONE_WORKER:.2f} of local "
        f"{'PASS' if r_one >= TARGET_ONE_WORKER else 'MISS'}")
    return ok


def main():
    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    torch = bench.set_threads()
    work = Path(tempfile.mkdtemp(prefix="samrs-bench-fig9-"))
    try:
        checkpoint = bench.save_checkpoint(torch, work / "sam_tiny_random.pth", bench.TINY_SAM)
        figure(torch, work, checkpoint, bench.log, bench.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

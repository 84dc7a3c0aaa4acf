"""Images without georeferencing: the engine reads and writes them in pixel space without rasterio's
NotGeoreferencedWarning (whose source line would land between the progress bars), while a user's own
rasterio calls, in the same process, keep the warning."""
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from samrs.samrs_qgis.georef import PIXEL_SPACE, image_frame, open_raster, pixel_space_expected
from samrs.samrs_qgis.raster_input import RasterInput

REPO = Path(__file__).resolve().parent.parent


def png_dataset(root: Path):
    """``root/imgs/a.png`` (96 x 96 RGB, no georeferencing) and its DOTA annotation ``root/anns/a.txt``."""
    (root / "imgs").mkdir(parents=True)
    (root / "anns").mkdir()
    image = np.random.default_rng(3).integers(80, 120, (3, 96, 96), dtype=np.uint8)
    image[:, 20:50, 20:50] = 230
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / "imgs" / "a.png", "w", driver="PNG", width=96, height=96, count=3,
                           dtype="uint8") as ds:
            ds.write(image)
    (root / "anns" / "a.txt").write_text("18 18 52 18 52 52 18 52 plane 0\n")
    return root / "imgs", root / "anns"


def python(*args, cwd=REPO):
    # Default warning filters: no PYTHONWARNINGS, no -W, as a user runs the CLI.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def assert_no_warning_text(stderr: str):
    text = stderr.replace("\r", "\n")
    assert "NotGeoreferencedWarning" not in text and "Warning:" not in text, stderr
    assert not re.search(r"\.py:\d+:", text), stderr  # a warning's "file.py:123: Category: message" header
    # ... and the source line the warnings module prints under it, e.g. "  dataset = writer("
    assert not re.search(r"^\s+[A-Za-z_][\w.]*\s*(=|\()", text, re.M), stderr


def test_cli_segment_dataset_on_png_prints_no_warning(tmp_path):
    images, annotations = png_dataset(tmp_path)
    result = python("-m", "samrs_qgis", "segment-dataset", images, annotations, "--out-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").exists() and (tmp_path / "out" / "geo" / "a_semantic.tif").exists()
    assert "image 1/1: a: done" in result.stderr  # the progress lines are there, only the warnings are gone
    assert_no_warning_text(result.stderr)


def test_user_rasterio_open_still_warns_after_the_engine_ran(tmp_path):
    images, annotations = png_dataset(tmp_path)
    code = (
        "import sys, rasterio\n"
        "from samrs_qgis.cli import main\n"
        f"assert main(['segment-dataset', {str(images)!r}, {str(annotations)!r}, '--out-dir', "
        f"{str(tmp_path / 'out')!r}, '--quiet']) == 0\n"
        "print('engine done', file=sys.stderr, flush=True)\n"
        f"rasterio.open({str(images / 'a.png')!r}).close()  # the user's own call\n"
    )
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    engine, user = result.stderr.split("engine done\n")
    assert_no_warning_text(engine)
    assert "NotGeoreferencedWarning" in user, result.stderr


def test_only_the_engine_thread_inside_the_block_is_silenced(tmp_path):
    png = str(png_dataset(tmp_path)[0] / "a.png")

    def user_open():
        rasterio.open(png).close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = image_frame(png)
        raster = RasterInput(png)
        raster.close()
        with open_raster(tmp_path / "scratch.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                         transform=PIXEL_SPACE) as ds:
            ds.write(np.zeros((1, 4, 4), np.uint8))
        assert not frame.georeferenced and raster.transform == PIXEL_SPACE
        assert [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)] == []

        with pixel_space_expected():  # another thread (the QGIS GUI, the user's console) still hears it
            other = threading.Thread(target=user_open)
            other.start()
            other.join()
        user_open()  # and so does this thread once outside the engine
        heard = [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]
        assert len(heard) == 2 and all(w.filename == rasterio.__file__ for w in heard), heard

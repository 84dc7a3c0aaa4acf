"""All-or-nothing outputs: OutputTransaction as a context manager, and an output's sidecars."""
import os

import pytest

from samrs.samrs_qgis.errors import Cancelled
from samrs.samrs_qgis.transaction import OutputTransaction, remove_with_sidecars, with_sidecars


def write(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def visible(folder):
    return sorted(os.listdir(folder))


def test_a_block_that_succeeds_commits_every_staged_file(tmp_path):
    with OutputTransaction() as transaction:
        a = transaction.stage(str(tmp_path / "a.tif"), "instance raster")
        b = transaction.stage(str(tmp_path / "sub" / "b.gpkg"), "polygon layer")
        write(a, "A")
        write(a + ".aux.xml", "sidecar")
        write(b, "B")
        scratch = transaction.scratch_path("canvas.tif")
        write(scratch, "scratch")
        assert not (tmp_path / "a.tif").exists()  # nothing in place before the commit
    assert read(tmp_path / "a.tif") == "A" and read(tmp_path / "a.tif.aux.xml") == "sidecar"
    assert read(tmp_path / "sub" / "b.gpkg") == "B"
    assert visible(tmp_path) == ["a.tif", "a.tif.aux.xml", "sub"] and not os.path.exists(scratch)


@pytest.mark.parametrize("error", [RuntimeError("driver failed"), KeyboardInterrupt(), Cancelled("stop")])
def test_an_exception_mid_write_leaves_no_file_and_an_earlier_file_untouched(tmp_path, error):
    earlier = tmp_path / "a.tif"
    write(earlier, "earlier good output")
    write(tmp_path / "a.qml", "earlier style")
    with pytest.raises(type(error)):
        with OutputTransaction() as transaction:
            a = transaction.stage(str(earlier), "instance raster")
            b = transaction.stage(str(tmp_path / "b.gpkg"), "polygon layer")
            write(a, "half")
            write(b, "half")
            write(b + "-wal", "journal")
            scratch = transaction.scratch_path("canvas.tif")
            write(scratch, "scratch")
            raise error
    assert read(earlier) == "earlier good output" and read(tmp_path / "a.qml") == "earlier style"
    assert visible(tmp_path) == ["a.qml", "a.tif"] and not os.path.exists(scratch)


def test_a_commit_that_fails_is_rolled_back_and_re_raised(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="disk full"):
        with OutputTransaction() as transaction:
            write(transaction.stage(str(tmp_path / "a.tif"), "instance raster"), "A")

            def failing_commit():
                raise OSError("disk full")

            monkeypatch.setattr(transaction, "commit", failing_commit)
    assert visible(tmp_path) == []


def test_sidecars_are_known_companions_only(tmp_path):
    for name in ("x.shp", "x.dbf", "x.shx", "x.qml", "x.tif", "x.shp.aux.xml", "y.shp"):
        write(tmp_path / name, name)
    found = {os.path.basename(p) for p in with_sidecars(str(tmp_path / "x.shp"))}
    assert found == {"x.shp", "x.dbf", "x.shx", "x.qml", "x.shp.aux.xml"}  # not the raster sharing the stem
    remove_with_sidecars(str(tmp_path / "x.shp"))
    assert visible(tmp_path) == ["x.tif", "y.shp"]
    remove_with_sidecars(str(tmp_path / "missing.tif"))  # nothing to remove is no error

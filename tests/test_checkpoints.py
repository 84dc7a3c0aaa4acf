"""Checkpoint download: a file is kept only when its MD5 matches; a bad download leaves nothing behind.

The real download code runs against a local folder served through a file:// URL (no internet here)."""
import hashlib

import pytest

from samrs.samrs_qgis import checkpoints
from samrs.samrs_qgis.checkpoints import OfficialCheckpoint, download_checkpoint
from samrs.samrs_qgis.errors import InputError


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    served = tmp_path / "mirror"
    served.mkdir()
    monkeypatch.setattr(checkpoints, "BASE_URL", served.as_uri() + "/")
    return served


def test_a_download_with_the_right_md5_is_kept_and_not_fetched_again(mirror, tmp_path, monkeypatch):
    payload = b"weights" * 1000
    (mirror / "sam_test.pth").write_bytes(payload)
    spec = OfficialCheckpoint("vit_b", "sam_test.pth", hashlib.md5(payload).hexdigest(), 1)
    monkeypatch.setitem(checkpoints.OFFICIAL_CHECKPOINTS, "vit_b", spec)
    seen = []
    path = download_checkpoint("vit_b", str(tmp_path / "ckpt"), report=lambda done, total: seen.append(done))
    assert open(path, "rb").read() == payload and seen[-1] == len(payload)
    (mirror / "sam_test.pth").unlink()  # a verified copy is not downloaded again
    assert download_checkpoint("vit_b", str(tmp_path / "ckpt")) == path


def test_a_corrupt_download_is_refused_and_removed(mirror, tmp_path):
    spec = checkpoints.OFFICIAL_CHECKPOINTS["vit_b"]
    (mirror / spec.file_name).write_bytes(b"not the checkpoint")
    with pytest.raises(InputError, match="corrupt.*expected 01ec64d29a2fca3f0661936605ae66f8"):
        download_checkpoint("vit_b", str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").iterdir()) == []
    with pytest.raises(InputError, match="failed"):
        download_checkpoint("vit_l", str(tmp_path / "ckpt"))  # not on the mirror
    with pytest.raises(InputError, match="Unknown model type"):
        download_checkpoint("vit_x", str(tmp_path / "ckpt"))

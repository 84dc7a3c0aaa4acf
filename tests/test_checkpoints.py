"""Checkpoint download: every official file has an https URL, a model-type name and a way to be verified; a download
is kept only once verified (by its checksum, or by what it holds when no checksum is published) and a bad one
leaves nothing behind.

The real download code runs against a local HTTP server (no internet here), reached through
SAMRS_CHECKPOINT_MIRROR or base_url."""
import functools
import hashlib
import http.server
import threading
import warnings

import pytest

from samrs.samrs_qgis import checkpoints
from samrs.samrs_qgis.backends.model_files import FAMILIES, MODEL_TYPE_CHOICES
from samrs.samrs_qgis.checkpoints import (OFFICIAL_CHECKPOINTS, OfficialCheckpoint, checkpoint_table,
                                          download_checkpoint, find_checkpoint)
from samrs.samrs_qgis.cli import main
from samrs.samrs_qgis.errors import InputError


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1, set as SAMRS_CHECKPOINT_MIRROR."""
    served = tmp_path / "mirror"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAMRS_CHECKPOINT_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    _QuietHandler.cut_after, _QuietHandler.ranges = None, []
    yield served
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; honours ``Range: bytes=N-`` (206) and, while ``cut_after`` is set, closes the connection
    after that many bytes of a file (a download interrupted midway); ``ranges`` records the ranges asked for."""

    cut_after = None
    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.translate_path(self.path)
        asked = self.headers.get("Range")
        type(self).ranges.append(asked)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = int(asked.split("=")[1].rstrip("-")) if asked else 0
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if type(self).cut_after is not None:
            body = body[:type(self).cut_after]
            self.close_connection = True
        self.wfile.write(body)


def served_as_vit_b(mirror, monkeypatch, payload: bytes, checksum: str = "md5") -> OfficialCheckpoint:
    """``payload`` on the mirror as sam_test.pth, and the vit_b entry of the table made its description (its size
    and its ``checksum``: md5 or sha256)."""
    (mirror / "sam_test.pth").write_bytes(payload)
    spec = OfficialCheckpoint("vit_b", "sam", "vit_b", "sam_test.pth", "https://example.invalid/", len(payload),
                              source="test", **{checksum: hashlib.new(checksum, payload).hexdigest()})
    monkeypatch.setitem(OFFICIAL_CHECKPOINTS, "vit_b", spec)
    return spec


def test_every_official_checkpoint_has_an_https_url_a_model_type_name_and_a_verification():
    assert {"vit_b", "vit_l", "vit_h", "sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "sam_hq_tiny_vit", "mobile_sam",
            "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"} == set(OFFICIAL_CHECKPOINTS)
    for name, spec in OFFICIAL_CHECKPOINTS.items():
        assert spec.name == name and name in MODEL_TYPE_CHOICES  # as the model-type setting names it
        assert spec.family in FAMILIES and spec.url.startswith("https://") and spec.url.endswith(spec.file_name)
        assert spec.source and spec.size_mb > 0
        if spec.sha256:
            assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 and spec.verification == "sha256"
        elif spec.md5:
            assert len(spec.md5) == 32 and spec.verification == "md5"
        else:
            assert spec.verification == "content" and "no published checksum" in spec.describe_verification()
    assert OFFICIAL_CHECKPOINTS["vit_b"].md5.startswith("01ec64")  # the file name carries it
    assert all(c.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/")
               for c in OFFICIAL_CHECKPOINTS.values() if c.family == "sam2")
    assert find_checkpoint("sam_hq_vit_tiny") is find_checkpoint("sam_hq_vit_tiny.pth") is \
        OFFICIAL_CHECKPOINTS["sam_hq_tiny_vit"]
    assert find_checkpoint("sam2.1_hiera_tiny.pt").name == "sam2.1_hiera_t"
    with pytest.raises(InputError, match="Unknown model type 'vit_x'.*sam2.1_hiera_l"):
        find_checkpoint("vit_x")


def test_the_list_shows_every_file_and_the_mirror(monkeypatch, capsys):
    monkeypatch.setenv("SAMRS_CHECKPOINT_MIRROR", "https://mirror.example/sam")
    assert main(["download-checkpoints", "--list"]) == 0
    out = capsys.readouterr().out
    for spec in OFFICIAL_CHECKPOINTS.values():
        assert spec.name in out and f"https://mirror.example/sam/{spec.file_name}" in out
    assert "SAM 2.1" in out and "MobileSAM" in out and "SAM-HQ" in out
    monkeypatch.delenv("SAMRS_CHECKPOINT_MIRROR")
    assert OFFICIAL_CHECKPOINTS["sam2.1_hiera_l"].url in checkpoint_table()


def test_a_download_with_the_right_checksum_is_kept_and_not_fetched_again(mirror, tmp_path, monkeypatch):
    payload = b"weights" * 1000
    served_as_vit_b(mirror, monkeypatch, payload, "md5")
    seen = []
    path = download_checkpoint("vit_b", str(tmp_path / "ckpt"), report=lambda done, total: seen.append(done))
    assert open(path, "rb").read() == payload and seen[-1] == len(payload)
    (mirror / "sam_test.pth").unlink()  # a verified copy is not downloaded again
    assert download_checkpoint("vit_b", str(tmp_path / "ckpt")) == path


def test_a_wrong_file_for_an_entry_with_a_checksum_is_refused_and_removed(mirror, tmp_path, monkeypatch):
    for name in ("vit_b", "sam2.1_hiera_t"):
        spec = OFFICIAL_CHECKPOINTS[name]
        (mirror / spec.file_name).write_bytes(b"not the checkpoint")
        with pytest.raises(InputError, match=f"{spec.file_name} .* corrupt or not the official file "
                                             f"\\(18 bytes, expected {spec.size_bytes}\\)"):
            download_checkpoint(name, str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").iterdir()) == []
    # the right size but not the right bytes: the checksum refuses it
    spec = OfficialCheckpoint("sam_hq_vit_b", "sam_hq", "vit_b", "sam_hq_test.pth", "https://example.invalid/", 18,
                              sha256=hashlib.sha256(b"the real checkpoint").hexdigest(), source="test")
    monkeypatch.setitem(OFFICIAL_CHECKPOINTS, "sam_hq_vit_b", spec)
    (mirror / "sam_hq_test.pth").write_bytes(b"not the checkpoint")
    with pytest.raises(InputError, match=f"SHA256 [0-9a-f]{{64}}, expected {spec.sha256}"):
        download_checkpoint("sam_hq_vit_b", str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").iterdir()) == []
    with pytest.raises(InputError, match="failed"):
        download_checkpoint("vit_l", str(tmp_path / "ckpt"))  # not on the mirror
    with pytest.raises(InputError, match="Unknown model type"):
        download_checkpoint("vit_x", str(tmp_path / "ckpt"))


def test_an_interrupted_download_is_resumed_where_it_stopped(mirror, tmp_path, monkeypatch):
    payload = bytes(range(256)) * 4000  # 1 MB
    served_as_vit_b(mirror, monkeypatch, payload, "sha256")
    folder = tmp_path / "ckpt"
    _QuietHandler.cut_after = 300_000  # the connection drops after 300 kB
    with pytest.raises(InputError, match=r"ended early \(300000 of 1024000 bytes\).*resumes from"):
        download_checkpoint("vit_b", str(folder))
    partial = folder / "sam_test.pth.partial"
    assert partial.read_bytes() == payload[:300_000] and not (folder / "sam_test.pth").exists()
    _QuietHandler.cut_after = None
    path = download_checkpoint("vit_b", str(folder))
    assert _QuietHandler.ranges[-1] == "bytes=300000-"  # only the rest was asked for
    assert open(path, "rb").read() == payload and not partial.exists()


def test_a_resumed_download_whose_bytes_are_wrong_is_refused_and_removed(mirror, tmp_path, monkeypatch):
    payload = b"checkpoint bytes" * 10000
    served_as_vit_b(mirror, monkeypatch, payload, "md5")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "sam_test.pth.partial").write_bytes(b"X" * 5000)  # a part that is not the start of this file
    with pytest.raises(InputError, match="corrupt or not the official file .*MD5"):
        download_checkpoint("vit_b", str(folder))
    assert _QuietHandler.ranges[-1] == "bytes=5000-" and list(folder.iterdir()) == []
    assert open(download_checkpoint("vit_b", str(folder)), "rb").read() == payload  # then from the start


def test_a_stopped_download_keeps_its_part(mirror, tmp_path, monkeypatch):
    from samrs.samrs_qgis.errors import Cancelled

    payload = b"w" * (3 << 20)
    served_as_vit_b(mirror, monkeypatch, payload, "md5")
    seen = []
    with pytest.raises(Cancelled, match="resumes"):
        download_checkpoint("vit_b", str(tmp_path), report=lambda done, total: seen.append((done, total)),
                            cancelled=lambda: len(seen) >= 1)
    assert seen == [(1 << 20, len(payload))] and (tmp_path / "sam_test.pth.partial").stat().st_size == 1 << 20


def _mobile_sam_state():
    """A random-weight MobileSAM of the official architecture (TinyViT + SAM's decoder), as mobile_sam.pt holds."""
    import torch
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    with warnings.catch_warnings():  # its TinyViT imports timm's deprecated paths
        warnings.simplefilter("ignore")
        from segment_anything_hq.modeling import TinyViT
    torch.manual_seed(0)
    model = Sam(image_encoder=TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                                      depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7]),
                prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                             input_image_size=(1024, 1024), mask_in_chans=16),
                mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                    depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
                    iou_head_hidden_dim=256),
                pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return {k: v.half() for k, v in model.state_dict().items()}  # half: a smaller file, the same shapes


def test_a_file_without_checksum_is_kept_when_it_holds_the_named_model(mirror, tmp_path, capsys):
    import torch

    spec = OFFICIAL_CHECKPOINTS["mobile_sam"]
    assert spec.verification == "content"
    torch.save(_mobile_sam_state(), mirror / spec.file_name)
    assert main(["download-checkpoints", "mobile_sam", "--dir", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert f"mobile_sam: {tmp_path / 'ckpt' / spec.file_name} (no published checksum: verified by its contents)" in out
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [spec.file_name]
    (mirror / spec.file_name).unlink()  # a verified copy is not downloaded again
    assert download_checkpoint("mobile_sam", str(tmp_path / "ckpt")).endswith(spec.file_name)


def test_a_file_without_checksum_is_refused_when_it_holds_another_model(mirror, tmp_path, monkeypatch,
                                                                        tiny_sam_checkpoint):
    import shutil

    spec = OFFICIAL_CHECKPOINTS["mobile_sam"]
    shutil.copy(tiny_sam_checkpoint, mirror / spec.file_name)  # a SAM 1 file under MobileSAM's name
    with pytest.raises(InputError, match=r"mobile_sam.pt .* not the official file \(it holds a SAM custom.*"
                                         r"expected mobile_sam\)"):
        download_checkpoint("mobile_sam", str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").iterdir()) == []

    # a SAM 2.1 name with no checksum (as a file whose checksum is not published would be): a SAM 1 file is refused
    unpinned = OfficialCheckpoint("sam2.1_hiera_t", "sam2", "hiera_t", "sam2.1_test.pt", "https://example.invalid/",
                                  source="test")
    monkeypatch.setitem(OFFICIAL_CHECKPOINTS, "sam2.1_hiera_t", unpinned)
    shutil.copy(tiny_sam_checkpoint, mirror / "sam2.1_test.pt")
    with pytest.raises(InputError, match=r"it holds a SAM custom.*expected sam2.1_hiera_t"):
        download_checkpoint("sam2.1_hiera_t", str(tmp_path / "ckpt"))
    (mirror / "sam2.1_test.pt").write_bytes(b"garbage")  # not a model at all
    with pytest.raises(InputError, match="not a model file of a recognised family, expected sam2.1_hiera_t"):
        download_checkpoint("sam2.1_hiera_t", str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").iterdir()) == []

    # a known byte count is checked too, before the contents
    sized = OfficialCheckpoint("mobile_sam", "mobile_sam", "tiny_vit", "mobile_sam.pt", "https://example.invalid/",
                               size_bytes=123, source="test")
    monkeypatch.setitem(OFFICIAL_CHECKPOINTS, "mobile_sam", sized)
    with pytest.raises(InputError, match=r"bytes, expected 123\)"):
        download_checkpoint("mobile_sam", str(tmp_path / "ckpt"))


def test_the_base_url_overrides_the_mirror_and_a_bad_one_says_so(mirror, tmp_path, monkeypatch):
    payload = b"x" * 10
    served_as_vit_b(mirror, monkeypatch, payload, "md5")
    base = checkpoints.os.environ["SAMRS_CHECKPOINT_MIRROR"]
    monkeypatch.setenv("SAMRS_CHECKPOINT_MIRROR", "http://127.0.0.1:9/nothing")
    with pytest.raises(InputError, match="127.0.0.1:9/nothing/sam_test.pth failed.*SAMRS_CHECKPOINT_MIRROR"):
        download_checkpoint("vit_b", str(tmp_path / "ckpt"))
    assert download_checkpoint("vit_b", str(tmp_path / "ckpt"), base_url=base.rstrip("/")).endswith("sam_test.pth")

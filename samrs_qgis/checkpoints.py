"""The official SAM checkpoints: where to get them and how to check a downloaded file.

The file names carry the first hex digits of each file's MD5, the full sums are below.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import InputError

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class OfficialCheckpoint:
    model_type: str
    file_name: str
    md5: str
    size_mb: int

    @property
    def url(self) -> str:
        return BASE_URL + self.file_name


OFFICIAL_CHECKPOINTS = {
    c.model_type: c for c in (
        OfficialCheckpoint("vit_b", "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8", 358),
        OfficialCheckpoint("vit_l", "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c", 1192),
        OfficialCheckpoint("vit_h", "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6", 2446),
    )
}


def file_md5(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_checkpoint(model_type: str, folder: str,
                        report: Optional[Callable[[int, int], None]] = None) -> str:
    """Download one official checkpoint into ``folder`` (skipped when a verified copy is there).

    The file is written under a temporary name and kept only if its MD5 matches. Returns its path.
    ``report(bytes_done, bytes_total)`` is called as the download goes.
    """
    if model_type not in OFFICIAL_CHECKPOINTS:
        raise InputError(f"Unknown model type '{model_type}'. Choose one of: {', '.join(OFFICIAL_CHECKPOINTS)}.")
    spec = OFFICIAL_CHECKPOINTS[model_type]
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, spec.file_name)
    if os.path.isfile(target) and file_md5(target) == spec.md5:
        return target
    partial = target + ".partial"
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if report:
                    report(done, total)
    except OSError as exc:
        if os.path.exists(partial):
            os.remove(partial)
        raise InputError(f"Downloading {spec.url} failed ({exc}). Check the internet connection, or download "
                         f"the file by hand into '{folder}'.") from exc
    actual = file_md5(partial)
    if actual != spec.md5:
        os.remove(partial)
        raise InputError(f"The download of {spec.file_name} is corrupt (MD5 {actual}, expected {spec.md5}). "
                         "Try again.")
    os.replace(partial, target)
    return target

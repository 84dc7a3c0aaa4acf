"""The official checkpoints of every family the engine runs: where to get them and how to check a downloaded file.

Each file is named as the model-type setting names what it holds (:func:`.backends.model_files.model_type_name`):
SAM ``vit_b``, SAM-HQ ``sam_hq_vit_b`` / ``sam_hq_tiny_vit``, MobileSAM ``mobile_sam``, SAM 2.1 ``sam2.1_hiera_t``.

A download is written as ``<file>.partial`` (an interrupted one is resumed from there) and kept only once
verified, by one of:

- ``md5`` / ``sha256``: the file's checksum as published (SAM's file names carry the first hex digits of their
  MD5; Hugging Face shows the SHA-256 of each file it stores with Git LFS);
- ``content``: for a file with no checksum published, what the file holds: :func:`.backends.model_files.identify`
  must tell the expected family and size (and the byte count must match when it is known).

``SAMRS_CHECKPOINT_MIRROR`` (or ``base_url=``) fetches the files from another server: ``<mirror>/<file name>``.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .errors import InputError

MIRROR_ENV = "SAMRS_CHECKPOINT_MIRROR"

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
MOBILE_SAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/"
SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class OfficialCheckpoint:
    name: str  # the model type, as model_type_name spells what the file holds
    family: str  # a key of model_files.FAMILIES
    size: str  # ModelFile.size: vit_b, tiny_vit, hiera_t, ...
    file_name: str
    base_url: str  # the official place; the file is base_url + file_name
    size_bytes: Optional[int] = None  # exact, when published
    md5: Optional[str] = None
    sha256: Optional[str] = None
    source: str = ""  # where the URL, the size and the checksum were read
    approx_mb: Optional[int] = None  # the size in MB when the exact byte count is not known

    @property
    def model_type(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return self.base_url + self.file_name

    @property
    def size_mb(self) -> int:
        return round(self.size_bytes / 1e6) if self.size_bytes else (self.approx_mb or 0)

    @property
    def verification(self) -> str:
        """``sha256``, ``md5`` or ``content`` (no checksum published: identify() and the byte count)."""
        return "sha256" if self.sha256 else "md5" if self.md5 else "content"

    def describe_verification(self) -> str:
        if self.verification != "content":
            return f"{self.verification.upper()} verified"
        return "no published checksum: verified by its contents"


# Sources:
# - SAM: URLs and MD5 from facebookresearch/segment-anything's README and the file names; byte counts from the
#   Git LFS pointers of copies on Hugging Face (e.g. huggingface.co/mashb1t/misc commit 78e1813).
# - SAM-HQ: URLs from SysCV/sam-hq's README (huggingface.co/lkeab/hq-sam); SHA-256 and byte counts from the Git LFS
#   pointers of lkeab/hq-sam's upload commits (8a94b5e vit_b, 519b37f vit_l, 67ab824 vit_h, a3a77cd vit_tiny).
# - MobileSAM: the URL from ChaoningZhang/MobileSAM's README (the file is kept in that Git repository, which
#   publishes no checksum; copies on Hugging Face disagree), so it is verified by its contents.
# - SAM 2.1: URLs from facebookresearch/sam2's README and checkpoints/download_ckpts.sh (092824 release); SHA-256 from
#   Meta's own Hugging Face repositories (facebook/sam2.1-hiera-tiny, facebook/sam2.1-hiera-small) and, for all
#   four with the byte counts, the Git LFS pointers of huggingface.co/camenduru/sam2-1-hiera commit cdd35a4
#   (the same SHA-256 as Meta's for tiny and small; large's also on several other copies).
_S = "facebookresearch/segment-anything"
_HQ = "SysCV/sam-hq (huggingface.co/lkeab/hq-sam)"
_S2 = "facebookresearch/sam2 (release 092824)"
OFFICIAL_CHECKPOINTS: Dict[str, OfficialCheckpoint] = {c.name: c for c in (
    OfficialCheckpoint("vit_b", "sam", "vit_b", "sam_vit_b_01ec64.pth", SAM_URL, 375042383,
                       md5="01ec64d29a2fca3f0661936605ae66f8", source=_S),
    OfficialCheckpoint("vit_l", "sam", "vit_l", "sam_vit_l_0b3195.pth", SAM_URL, 1249524607,
                       md5="0b3195507c641ddb6910d2bb5adee89c", source=_S),
    OfficialCheckpoint("vit_h", "sam", "vit_h", "sam_vit_h_4b8939.pth", SAM_URL, 2564550879,
                       md5="4b8939a88964f0f4ff5f5b2642c598a6", source=_S),
    OfficialCheckpoint("sam_hq_vit_b", "sam_hq", "vit_b", "sam_hq_vit_b.pth", SAM_HQ_URL, 379335069,
                       sha256="14a9d662cd6f5a9c2dba6d40ab0058d88d287e4a18fd6fdc6ad5fb1a3fdeaa57", source=_HQ),
    OfficialCheckpoint("sam_hq_vit_l", "sam_hq", "vit_l", "sam_hq_vit_l.pth", SAM_HQ_URL, 1254865805,
                       sha256="e1a6c385d62bf005ded91a54d5ec55c985cfc4103ef89c08d90f39f04934c343", source=_HQ),
    OfficialCheckpoint("sam_hq_vit_h", "sam_hq", "vit_h", "sam_hq_vit_h.pth", SAM_HQ_URL, 2570940653,
                       sha256="a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35", source=_HQ),
    OfficialCheckpoint("sam_hq_tiny_vit", "sam_hq", "tiny_vit", "sam_hq_vit_tiny.pth", SAM_HQ_URL, 42526881,
                       sha256="0f32c075ccdd870ae54db2f7630e7a0878ede5a2b06d05d6fe02c65a82fb7196", source=_HQ),
    OfficialCheckpoint("mobile_sam", "mobile_sam", "tiny_vit", "mobile_sam.pt", MOBILE_SAM_URL,
                       source="ChaoningZhang/MobileSAM", approx_mb=41),
    OfficialCheckpoint("sam2.1_hiera_t", "sam2", "hiera_t", "sam2.1_hiera_tiny.pt", SAM21_URL, 156008466,
                       sha256="7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", source=_S2),
    OfficialCheckpoint("sam2.1_hiera_s", "sam2", "hiera_s", "sam2.1_hiera_small.pt", SAM21_URL, 184416285,
                       sha256="6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", source=_S2),
    OfficialCheckpoint("sam2.1_hiera_b+", "sam2", "hiera_b+", "sam2.1_hiera_base_plus.pt", SAM21_URL, 323606802,
                       sha256="a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", source=_S2),
    OfficialCheckpoint("sam2.1_hiera_l", "sam2", "hiera_l", "sam2.1_hiera_large.pt", SAM21_URL, 898083611,
                       sha256="2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", source=_S2),
)}


def find_checkpoint(name: str) -> OfficialCheckpoint:
    """The official checkpoint named ``name``: its model type (``sam2.1_hiera_t``), or its file name with or
    without the extension (``sam2.1_hiera_tiny.pt``, ``sam_hq_vit_tiny``). An InputError naming the choices."""
    if name in OFFICIAL_CHECKPOINTS:
        return OFFICIAL_CHECKPOINTS[name]
    for spec in OFFICIAL_CHECKPOINTS.values():
        if name in (spec.file_name, os.path.splitext(spec.file_name)[0]):
            return spec
    raise InputError(f"Unknown model type '{name}'. Choose one of: {', '.join(OFFICIAL_CHECKPOINTS)} "
                     "(`download-checkpoints --list` shows them).")


def checkpoint_url(spec: OfficialCheckpoint, base_url: Optional[str] = None) -> str:
    """Where to fetch ``spec``: ``base_url`` or the ``SAMRS_CHECKPOINT_MIRROR`` folder + its file name, else the
    official URL."""
    base = base_url or os.environ.get(MIRROR_ENV, "").strip()
    return base.rstrip("/") + "/" + spec.file_name if base else spec.url


def file_digest(path: str, algorithm: str = "md5", chunk: int = 1 << 22) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: str, chunk: int = 1 << 22) -> str:
    return file_digest(path, "md5", chunk)


def check_file(path: str, spec: OfficialCheckpoint) -> Optional[str]:
    """Why the file at ``path`` is not ``spec``'s official file, or None when it is: its byte count (when known),
    then its checksum, or, with no checksum published, what identify() tells it holds."""
    actual_size = os.path.getsize(path)
    if spec.size_bytes is not None and actual_size != spec.size_bytes:
        return f"{actual_size} bytes, expected {spec.size_bytes}"
    if spec.verification != "content":
        expected = spec.sha256 or spec.md5
        actual = file_digest(path, spec.verification)
        return None if actual == expected else f"{spec.verification.upper()} {actual}, expected {expected}"
    from .backends.model_files import identify, model_type_name

    try:
        found = identify(path)
    except InputError:
        return f"not a model file of a recognised family, expected {spec.name}"
    if (found.family, found.size) != (spec.family, spec.size) or model_type_name(found) != spec.name:
        return f"it holds a {found.describe()} model ({model_type_name(found)}), expected {spec.name}"
    return None


def download_checkpoint(model_type: str, folder: str,
                        report: Optional[Callable[[int, int], None]] = None,
                        base_url: Optional[str] = None,
                        cancelled: Optional[Callable[[], bool]] = None) -> str:
    """Download one official checkpoint into ``folder`` (skipped when a verified copy is there).

    The file is written as ``<file>.partial`` and kept only once verified (:func:`check_file`): a file that fails
    verification leaves nothing behind. An interrupted download keeps its ``.partial``, and the next call resumes
    it where it stopped (an HTTP range request; a server that ignores ranges sends the whole file again).
    ``base_url`` (else ``SAMRS_CHECKPOINT_MIRROR``) replaces the official server. Returns the file's path.
    ``report(bytes_done, bytes_total)`` is called as the download goes; ``cancelled()`` True stops it (the
    partial file kept) with :class:`.errors.Cancelled`.
    """
    from .errors import Cancelled

    spec = find_checkpoint(model_type)
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, spec.file_name)
    if os.path.isfile(target) and check_file(target, spec) is None:
        return target
    url = checkpoint_url(spec, base_url)
    partial = target + ".partial"
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if spec.size_bytes is not None and have > spec.size_bytes:
        os.remove(partial)  # longer than the file can be: not a part of it
        have = 0
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = have > 0 and getattr(response, "status", None) == 206
            done = have if resumed else 0
            length = int(response.headers.get("Content-Length") or 0)
            total = length + done if length else 0  # what the server said it sends, 0: not said
            with open(partial, "ab" if resumed else "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if report:
                        report(done, total)
                    if cancelled and cancelled():
                        raise Cancelled(f"The download of {spec.file_name} was stopped; downloading it again "
                                        "resumes where it stopped.")
    except (OSError, ValueError) as exc:  # ValueError: a malformed mirror URL
        if os.path.exists(partial) and os.path.getsize(partial) == 0:
            os.remove(partial)
        kept = (f" The {os.path.getsize(partial)} bytes received are kept in '{partial}': downloading again "
                "resumes from there." if os.path.exists(partial) else "")
        raise InputError(f"Downloading {url} failed ({exc}). Check the internet connection (or the mirror in "
                         f"{MIRROR_ENV}), or download the file by hand into '{folder}'.{kept}") from exc
    expected = total
    if expected and os.path.getsize(partial) < expected:  # the connection ended before the server's length
        raise InputError(f"The download of {spec.file_name} from {url} ended early ({os.path.getsize(partial)} of "
                         f"{expected} bytes). Download it again: it resumes from '{partial}'.")
    try:
        problem = check_file(partial, spec)
    except BaseException:
        os.remove(partial)
        raise
    if problem is not None:
        os.remove(partial)
        raise InputError(f"The download of {spec.file_name} from {url} is corrupt or not the official file "
                         f"({problem}); it was deleted. Try again.")
    os.replace(partial, target)
    return target


def describe_official(spec: OfficialCheckpoint) -> str:
    """``SAM 2.1 hiera_t (sam2.1_hiera_tiny.pt, 156 MB)``: a choice in a list."""
    from .backends.model_files import FAMILIES

    family = "SAM 2.1" if spec.family == "sam2" else FAMILIES[spec.family].name
    size = f"{spec.size_mb} MB" if spec.size_bytes else f"~{spec.size_mb} MB"
    return f"{family} {spec.size} ({spec.file_name}, {size})"


def checkpoint_table() -> str:
    """The official checkpoints as a text table: name, family, size, verification, source."""
    from .backends.model_files import FAMILIES

    rows = [("name", "family", "size MB", "verified by", "source")]
    for spec in OFFICIAL_CHECKPOINTS.values():
        family = "SAM 2.1" if spec.family == "sam2" else FAMILIES[spec.family].name
        size = f"{spec.size_mb}" if spec.size_bytes else f"~{spec.size_mb}"
        rows.append((spec.name, family, size, spec.verification, checkpoint_url(spec)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    if any(spec.verification == "content" for spec in OFFICIAL_CHECKPOINTS.values()):
        lines.append("content: no checksum is published; the download is kept when it holds the named model "
                     "(family and size, and the byte count when known).")
    return "\n".join(lines)

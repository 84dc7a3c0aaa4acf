"""Window embeddings kept on disk, so a second run over the same raster (other prompts, other
post-processing) skips the image encoder.

An embedding is what a backend needs besides the frame to decode boxes: named arrays (SAM: the image
embedding; SAM-HQ adds the encoder's early features, SAM 2 its high-resolution features), kept as one
``.npz`` file per window. The key is a hash of the frame the encoder would see (its pixels carry the raster
content, the window, the bands and the stretch) and of the backend's identity (checkpoint fingerprint, model
type, precision, device type). The folder is trimmed to a size limit, oldest use first.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from typing import Dict, Optional

import numpy as np

DEFAULT_LIMIT_MB = 2048
ENTRY_SUFFIXES = (".npz", ".npy")  # .npy: single-array entries of earlier versions, never read, trimmed first

Embedding = Dict[str, np.ndarray]  # name -> array, as a backend's ``embedding`` gives it


def cache_root() -> str:
    """The engine's cache folder: ``$XDG_CACHE_HOME/samrs`` (``~/.cache/samrs``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "samrs")


def default_cache_dir() -> str:
    return os.path.join(cache_root(), "embeddings")


class EmbeddingCache:
    def __init__(self, folder: Optional[str] = None, limit_mb: float = DEFAULT_LIMIT_MB):
        self.folder = folder or default_cache_dir()
        self.limit_bytes = int(limit_mb * 1024 * 1024)
        os.makedirs(self.folder, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(frame: np.ndarray, backend_identity: str) -> str:
        digest = hashlib.sha256()
        digest.update(backend_identity.encode())
        digest.update(str(frame.shape).encode())
        digest.update(np.ascontiguousarray(frame).data)
        return digest.hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.npz")

    def get(self, key: str) -> Optional[Embedding]:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as stored:
                embedding = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # missing, or damaged (a full disk)
            self.misses += 1
            return None
        os.utime(path)  # most recently used survives trimming
        self.hits += 1
        return embedding

    def put(self, key: str, embedding: Embedding) -> None:
        fd, temp = tempfile.mkstemp(dir=self.folder, suffix=".npz.partial")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **embedding)  # uncompressed: embeddings are float noise to a compressor
        os.replace(temp, self._path(key))  # readers never see a half-written file
        self.trim()

    def trim(self) -> None:
        """Delete least recently used entries until the folder is within the size limit."""
        entries = []
        for name in os.listdir(self.folder):
            if name.endswith(ENTRY_SUFFIXES):
                path = os.path.join(self.folder, name)
                stat = os.stat(path)
                entries.append((name.endswith(".npz"), stat.st_mtime, stat.st_size, path))
        total = sum(size for _, _, size, _ in entries)
        for _, _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            os.remove(path)
            total -= size

"""Loading SAM checkpoints and telling their model type from the tensors they hold.

Official checkpoints (``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_b_01ec64.pth``) and
any other SAM with segment-anything's architecture (e.g. a small test model) go through the same
path: read the state dict, infer the image-encoder configuration from tensor shapes, build the model
with segment-anything's own builder, load the weights strictly.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from ..errors import BackendUnavailableError, InputError

MODEL_TYPES = ("auto", "vit_h", "vit_l", "vit_b")

# (embed_dim, depth, num_heads, global attention blocks) of the registry's models.
OFFICIAL_ENCODERS = {
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
}

INSTALL_HINT = ("Install them with `make setup` in the plugin folder, or into the Python QGIS uses: "
                "`pip install torch torchvision segment-anything`. "
                "The GrabCut backend needs neither.")


@dataclass(frozen=True)
class EncoderConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: Tuple[int, ...]

    @property
    def model_type(self) -> str:
        """``vit_h``/``vit_l``/``vit_b`` for the official architectures, else a description."""
        for name, spec in OFFICIAL_ENCODERS.items():
            if spec == (self.embed_dim, self.depth, self.num_heads, self.global_attn_indexes):
                return name
        return f"custom(dim={self.embed_dim},depth={self.depth},heads={self.num_heads})"


def import_torch():
    """torch and segment_anything, or a :class:`BackendUnavailableError` saying how to install them."""
    try:
        import torch
        import segment_anything
    except ImportError as exc:
        raise BackendUnavailableError(f"The SAM backend needs torch and segment-anything, which cannot be "
                                      f"imported here ({exc}). {INSTALL_HINT}") from exc
    return torch, segment_anything


def encoder_config_from_state(state: Dict[str, Any]) -> EncoderConfig:
    """Infer the image encoder's configuration from a SAM state dict.

    embed_dim from the patch embedding; depth from the block count; head size from the relative
    position tables (2 * size - 1 rows: 127 for global blocks over the 64x64 grid, 27 for 14x14 windows).
    """
    embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    block_ids = sorted({int(m.group(1)) for k in state
                        if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    depth = len(block_ids)
    global_blocks, head_dim = [], None
    for i in block_ids:
        rel = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if rel is None:
            raise KeyError(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        head_dim = rel.shape[1]
        if rel.shape[0] != 27:  # windowed attention uses 14x14 windows
            global_blocks.append(i)
    return EncoderConfig(embed_dim, depth, embed_dim // head_dim, tuple(global_blocks))


def checkpoint_fingerprint(path: str, chunk: int = 1 << 20) -> str:
    """A cheap identity of a checkpoint file: SHA-256 of its size, first and last MiB (not the whole 2.5 GB)."""
    import hashlib

    digest = hashlib.sha256()
    size = os.path.getsize(path)
    digest.update(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(size - chunk, 0))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:16]


def _read_state(torch, checkpoint: str):
    """The checkpoint's tensors, memory-mapped when the file allows it: the weights are then read from
    the page cache straight into the model instead of being held twice in memory (vit_h: 2.4 GB)."""
    import zipfile

    mmap = zipfile.is_zipfile(checkpoint)  # torch's zip format maps; the legacy format cannot
    return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=mmap)


def load_sam(checkpoint: str, model_type: str = "auto"):
    """Load a SAM checkpoint on the CPU: returns ``(sam_model, model_type)``.

    Raises :class:`InputError` for a missing, unreadable or non-SAM file and for a ``model_type``
    that does not match the checkpoint.
    """
    if model_type not in MODEL_TYPES:
        raise InputError(f"Unknown model type '{model_type}'. Choose one of: {', '.join(MODEL_TYPES)}.")
    if not checkpoint:
        raise InputError("No SAM checkpoint was given. Download one with "
                         "`python -m samrs_qgis download-checkpoints` (or `make checkpoints`), "
                         "or use the GrabCut backend, which needs no weights.")
    if not os.path.isfile(checkpoint):
        raise InputError(f"SAM checkpoint '{checkpoint}' does not exist. Give the path of a .pth file such as "
                         "sam_vit_b_01ec64.pth (`python -m samrs_qgis download-checkpoints` fetches them).")
    torch, _ = import_torch()
    from segment_anything.build_sam import _build_sam

    try:
        state = _read_state(torch, checkpoint)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        # torch's own text may advise weights_only=False, which is unsafe for an unknown file: not shown.
        raise InputError(f"SAM checkpoint '{checkpoint}' cannot be read ({type(exc).__name__}). The file is "
                         "corrupt, truncated or not a PyTorch checkpoint; download it again and check its "
                         "checksum (`python -m samrs_qgis download-checkpoints` verifies it).") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # checkpoints saved by training scripts wrap the weights
    try:
        config = encoder_config_from_state(state)
    except (KeyError, AttributeError, TypeError, IndexError, ZeroDivisionError) as exc:
        raise InputError(f"'{checkpoint}' is a PyTorch file but not a SAM checkpoint (missing {exc}). "
                         "Give an official SAM checkpoint (vit_h, vit_l or vit_b).") from exc
    detected = config.model_type
    if model_type != "auto" and model_type != detected:
        choice = f"'{detected}' or 'auto'" if detected in MODEL_TYPES else "'auto'"
        raise InputError(f"Model type mismatch: '{checkpoint}' holds a {detected} model, not {model_type}. "
                         f"Choose model type {choice}.")
    model = _build_sam(encoder_embed_dim=config.embed_dim, encoder_depth=config.depth,
                       encoder_num_heads=config.num_heads,
                       encoder_global_attn_indexes=list(config.global_attn_indexes), checkpoint=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"SAM checkpoint '{checkpoint}' does not fit segment-anything's {detected} model "
                         f"({str(exc).splitlines()[0]}).") from exc
    del state  # unmaps the file
    model.eval()
    return model, detected

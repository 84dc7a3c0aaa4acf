"""Loading SAM checkpoints and telling their model type from the tensors they hold.

Official checkpoints (``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_b_01ec64.pth``) and
any other SAM with segment-anything's architecture (e.g. a small test model) go through the same
path: read the state dict, tell the family and the image-encoder configuration from tensor shapes
(:mod:`.model_files`), build the model with segment-anything's own builder, load the weights strictly.
"""
from __future__ import annotations

import os

from ..errors import BackendUnavailableError, InputError
from .model_files import (EncoderConfig, encoder_config_from_state, identify_onnx, identify_state, is_onnx_file,
                          read_state, unsupported_message)

__all__ = ["MODEL_TYPES", "EncoderConfig", "encoder_config_from_state", "import_torch", "checkpoint_fingerprint",
           "load_sam"]

MODEL_TYPES = ("auto", "vit_h", "vit_l", "vit_b")

INSTALL_HINT = ("Install them with `make setup` in the plugin folder, or into the Python QGIS uses: "
                "`pip install torch torchvision segment-anything`. "
                "The GrabCut backend needs neither.")


def import_torch():
    """torch and segment_anything, or a :class:`BackendUnavailableError` saying how to install them."""
    try:
        import torch
        import segment_anything
    except ImportError as exc:
        raise BackendUnavailableError(f"The SAM backend needs torch and segment-anything, which cannot be "
                                      f"imported here ({exc}). {INSTALL_HINT}") from exc
    return torch, segment_anything


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

    if is_onnx_file(checkpoint):
        raise InputError(unsupported_message(identify_onnx(checkpoint)))
    state = read_state(checkpoint, torch)
    found = identify_state(state, checkpoint)
    if found.family != "sam":
        raise InputError(unsupported_message(found))
    config = found.encoder
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

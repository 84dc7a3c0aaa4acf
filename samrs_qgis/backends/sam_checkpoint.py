"""Loading SAM-family checkpoints and telling their model type from the tensors they hold.

Official checkpoints (``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_b_01ec64.pth``,
``mobile_sam.pt``, ``sam_hq_vit_b.pth`` ... ``sam_hq_vit_tiny.pth``) and any other model of those
architectures (e.g. a small test model) go through the same path: read the state dict, tell the family and
the image-encoder configuration from tensor shapes (:mod:`.model_files`), build the model with the family's
own package, load the weights strictly.

- SAM: segment-anything's builder.
- MobileSAM: a TinyViT image encoder (segment-anything-hq's copy of MobileSAM's) with segment-anything's
  prompt encoder and mask decoder, as MobileSAM builds it; the encoder gives the image embedding alone, as
  segment-anything's ``SamPredictor`` expects.
- SAM-HQ: segment-anything-hq's builder (ViT) or its classes as its ``vit_tiny`` builder uses them
  (the light model's TinyViT); the encoder gives the image embedding and the early features HQ's decoder takes.
"""
from __future__ import annotations

import contextlib
import os
import threading

from ..errors import InputError, missing_packages
from .model_files import (FAMILIES, EncoderConfig, encoder_config_from_state, identify_onnx,
                          identify_state, is_onnx_file, read_state, unsupported_message)

__all__ = ["MODEL_TYPES", "EncoderConfig", "encoder_config_from_state", "import_torch", "checkpoint_fingerprint",
           "load_sam", "load_model", "import_sam_hq"]

MODEL_TYPES = ("auto", "vit_h", "vit_l", "vit_b")


def import_torch():
    """torch and segment_anything, or a :class:`BackendUnavailableError` saying how to install them."""
    try:
        import torch
        import segment_anything
    except ImportError as exc:
        raise missing_packages("The SAM backend needs torch and segment-anything to run a PyTorch model file (the "
                               "GrabCut backend and ONNX model pairs do not)", exc, "full") from exc
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


_INIT_LOCK = threading.Lock()
_SKIPPING = threading.local()  # .active: this thread builds a model whose weights all come from a file


@contextlib.contextmanager
def skipping_random_init(torch):
    """Build a model whose every weight is then loaded strictly: ``torch.nn.init``'s random fills do nothing in
    this thread meanwhile (other threads keep them). Random initialisation is most of a build, measured here:
    vit_b 2.0 -> 0.1 s, vit_h 18.3 -> 0.7 s. Buffers that no file holds (e.g. pixel mean and std) are made
    by the modules' own code, not by these functions, so they stay as built."""
    init = torch.nn.init
    with _INIT_LOCK:
        if not getattr(init, "_samrs_skippable", False):
            for name in [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]:
                setattr(init, name, _skippable(getattr(init, name)))
            init._samrs_skippable = True
    previous = getattr(_SKIPPING, "active", False)
    _SKIPPING.active = True
    try:
        yield
    finally:
        _SKIPPING.active = previous


def _skippable(fill):
    """``fill`` (an in-place ``torch.nn.init`` function), returning its tensor untouched while this thread is in
    :func:`skipping_random_init`."""
    import functools

    @functools.wraps(fill)
    def maybe_fill(tensor, *args, **kwargs):
        return tensor if getattr(_SKIPPING, "active", False) else fill(tensor, *args, **kwargs)

    return maybe_fill


def _check_file(checkpoint: str) -> None:
    if not checkpoint:
        raise InputError("No SAM checkpoint was given. Download one with "
                         "`python -m samrs_qgis download-checkpoints` (or `make checkpoints`), "
                         "or use the GrabCut backend, which needs no weights.")
    if not os.path.isfile(checkpoint):
        raise InputError(f"SAM checkpoint '{checkpoint}' does not exist. Give the path of a .pth file such as "
                         "sam_vit_b_01ec64.pth (`python -m samrs_qgis download-checkpoints` fetches them).")


def load_sam(checkpoint: str, model_type: str = "auto"):
    """Load a SAM checkpoint on the CPU: returns ``(sam_model, model_type)``.

    Raises :class:`InputError` for a missing, unreadable or non-SAM file (other families included: see
    :func:`load_model`) and for a ``model_type`` that does not match the checkpoint.
    """
    model, found = _load(checkpoint, model_type, ("sam",), unsupported_message)
    return model, found.size


# The model types a family's files come in, besides ``auto``.
FAMILY_MODEL_TYPES = {"sam": MODEL_TYPES[1:], "mobile_sam": ("tiny_vit",),
                      "sam_hq": MODEL_TYPES[1:] + ("tiny_vit",)}


def load_model(checkpoint: str, model_type: str = "auto", families=("sam", "mobile_sam")):
    """Load a checkpoint of one of ``families`` (keys of :data:`.model_files.FAMILIES`: ``sam``, ``mobile_sam``,
    ``sam_hq``) on the CPU: returns ``(model, model_file)``, ``model_file`` the :class:`.model_files.ModelFile`
    it was identified as (its ``family`` and ``size``: vit_b, tiny_vit, custom(...)).

    Raises :class:`InputError` for a missing, unreadable or unrecognised file, a file of another family and a
    ``model_type`` that does not match the checkpoint.
    """
    return _load(checkpoint, model_type, families, None)


def _other_family(found, families) -> str:
    if found.family in FAMILY_MODEL_TYPES:  # run here, by another class
        return (f"'{found.path}' holds a {found.describe()} model, not one of "
                f"{', '.join(FAMILIES[f].name for f in families)}: load it as a {found.family_name} model (the sam "
                "backend picks the class that runs it from the file).")
    return unsupported_message(found)


def _load(checkpoint: str, model_type: str, families, refuse):
    """:func:`load_model`; ``refuse(model_file)``: the message for a file of another family (None: the default)."""
    known = ("auto",) + tuple(dict.fromkeys(t for f in families for t in FAMILY_MODEL_TYPES[f]))
    if model_type not in known:
        raise InputError(f"Unknown model type '{model_type}'. Choose one of: {', '.join(known)}.")
    _check_file(checkpoint)
    torch, _ = import_torch()
    if is_onnx_file(checkpoint):
        raise InputError(unsupported_message(identify_onnx(checkpoint)))
    state = read_state(checkpoint, torch)
    found = identify_state(state, checkpoint)
    if found.family not in families:
        raise InputError(refuse(found) if refuse else _other_family(found, families))
    detected = found.size
    if model_type != "auto" and model_type != detected:
        choice = f"'{detected}' or 'auto'" if detected in known else "'auto'"
        raise InputError(f"Model type mismatch: '{checkpoint}' holds a {found.describe()} model, not {model_type}. "
                         f"Choose model type {choice}.")
    with skipping_random_init(torch):  # every weight comes from the file: strictly loaded below
        model = BUILDERS[found.family](found, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"Checkpoint '{checkpoint}' does not fit {FAMILIES[found.family].package}'s "
                         f"{found.describe()} model ({str(exc).splitlines()[0]}).") from exc
    del state  # unmaps the file
    model.eval()  # after loading: TinyViT's attention keeps its biases, as loaded, when put in eval mode
    return model, found


def import_sam_hq():
    """segment_anything_hq (HQ-SAM; also the TinyViT MobileSAM uses), or a :class:`BackendUnavailableError`."""
    import warnings

    try:
        with warnings.catch_warnings():  # its TinyViT imports timm's deprecated paths, re-registers timm's models
            warnings.simplefilter("ignore")
            import segment_anything_hq
            import segment_anything_hq.modeling  # noqa: F401 - the classes the builders below use
    except ImportError as exc:
        raise missing_packages("SAM-HQ and MobileSAM model files need segment-anything-hq (with timm)", exc,
                               "full") from exc
    return segment_anything_hq


def _build_sam(found, state):
    from segment_anything.build_sam import _build_sam as build

    config = found.encoder
    return build(encoder_embed_dim=config.embed_dim, encoder_depth=config.depth, encoder_num_heads=config.num_heads,
                 encoder_global_attn_indexes=list(config.global_attn_indexes), checkpoint=None)


def _tiny_vit(found, state, embedding_only: bool):
    """The TinyViT image encoder of a MobileSAM or SAM-HQ light file, as segment-anything-hq's ``vit_tiny``
    builder makes it; window sizes from the attention bias tables (one bias per offset in a window)."""
    import math

    modeling = import_sam_hq().modeling
    config = found.tiny_vit
    windows = [7] + [math.isqrt(state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"].shape[1])
                     for i in range(1, len(config.depths))]
    head = state.get("image_encoder.head.weight")
    cls = _embedding_only_tiny_vit(modeling.TinyViT) if embedding_only else modeling.TinyViT
    return cls(img_size=1024, in_chans=3, num_classes=0 if head is None else head.shape[0],
               embed_dims=list(config.embed_dims), depths=list(config.depths),
               num_heads=[config.num_heads[0]] + list(config.num_heads), window_sizes=windows, mlp_ratio=4.0,
               drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
               layer_lr_decay=0.8)


def _embedding_only_tiny_vit(tiny_vit):
    """segment-anything-hq's TinyViT gives (embedding, early features); MobileSAM's gives the embedding alone,
    what segment-anything's predictor takes. Same parameters, same names."""

    class MobileSamTinyViT(tiny_vit):
        def forward(self, x):
            return super().forward(x)[0]

    return MobileSamTinyViT


def _build_mobile_sam(found, state):
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(image_encoder=_tiny_vit(found, state, embedding_only=True),
               prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                            input_image_size=(1024, 1024), mask_in_chans=16),
               mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                   depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
                   iou_head_hidden_dim=256),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def _build_sam_hq(found, state):
    sam_hq = import_sam_hq()
    if found.encoder is not None:
        from segment_anything_hq.build_sam import _build_sam as build

        config = found.encoder
        return build(encoder_embed_dim=config.embed_dim, encoder_depth=config.depth,
                     encoder_num_heads=config.num_heads,
                     encoder_global_attn_indexes=list(config.global_attn_indexes), checkpoint=None)
    modeling = sam_hq.modeling
    # the early features' width (the TinyViT's third stage): what HQ's decoder compresses
    vit_dim = state["mask_decoder.compress_vit_feat.0.weight"].shape[0]
    return modeling.Sam(image_encoder=_tiny_vit(found, state, embedding_only=False),
                        prompt_encoder=modeling.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                                              input_image_size=(1024, 1024), mask_in_chans=16),
                        mask_decoder=modeling.MaskDecoderHQ(
                            num_multimask_outputs=3, transformer=modeling.TwoWayTransformer(
                                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256, vit_dim=vit_dim),
                        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


BUILDERS = {"sam": _build_sam, "mobile_sam": _build_mobile_sam, "sam_hq": _build_sam_hq}

"""What model a file holds: its SAM family, its size and what a backend needs to build it, told from the file.

A PyTorch checkpoint is told by its tensor names and shapes (read memory-mapped, nothing is built):

- ``sam``: Segment Anything (segment-anything): a ViT image encoder (``image_encoder.blocks.N``) whose
  configuration (:class:`EncoderConfig`) comes from the shapes; vit_b, vit_l, vit_h or a custom size.
- ``sam_hq``: HQ-SAM (segment-anything-hq): SAM's model plus the HQ decoder parts
  (``mask_decoder.hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``,
  ``embedding_maskfeature``), with a ViT encoder or the light model's TinyViT.
- ``sam2``: SAM 2 / SAM 2.1 (sam2): a Hiera trunk (``image_encoder.trunk``); the size from its embedding
  width and block count, 2.1 from the parameters only 2.1 has (``no_obj_embed_spatial``,
  ``obj_ptr_tpos_proj``); the official hydra config that builds it.
- ``mobile_sam``: MobileSAM: a TinyViT image encoder (``image_encoder.layers.N``) with SAM's decoder.
- ``sam3``: SAM 3 (sam3): the detector's ViT trunk and its SAM 2-style neck
  (``detector.backbone.vision_backbone.trunk`` / ``.sam2_convs``) with the tracker's SAM 2 prompt encoder and mask
  decoder (``tracker.sam_mask_decoder``), what its interactive (box-prompt) image model runs; the trunk's
  configuration (:class:`Sam3TrunkConfig`) from its shapes.

An ONNX file is told by its graph's input and output names (weights are not loaded), as samexporter and
AnyLabeling publish them: a SAM encoder (``input_image`` -> ``image_embeddings``; SAM and MobileSAM
alike), a SAM decoder (``image_embeddings``, ``point_coords``, ... ``orig_im_size``), HQ-SAM's pair (with
``interm_embeddings``), and SAM 2's pair (``image`` -> ``image_embed``, ``high_res_feats_0``,
``high_res_feats_1``; its decoder takes them with the prompts).
"""
from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import BackendUnavailableError, InputError, missing_packages


@dataclass(frozen=True)
class Family:
    name: str  # as shown to people
    package: str  # the Python package that builds this family's models (or runs its ONNX graphs)
    official: str  # the official files and where they come from


FAMILIES: Dict[str, Family] = {
    "sam": Family("SAM", "segment-anything",
                  "sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth from "
                  "facebookresearch/segment-anything"),
    "sam_hq": Family("SAM-HQ", "segment-anything-hq",
                     "sam_hq_vit_b.pth, sam_hq_vit_l.pth, sam_hq_vit_h.pth, sam_hq_vit_tiny.pth from SysCV/sam-hq"),
    "sam2": Family("SAM 2", "sam2",
                   "sam2.1_hiera_tiny.pt, sam2.1_hiera_small.pt, sam2.1_hiera_base_plus.pt, sam2.1_hiera_large.pt "
                   "(and SAM 2.0's sam2_hiera_*.pt) from facebookresearch/sam2"),
    "mobile_sam": Family("MobileSAM", "segment-anything-hq (its TinyViT)",
                         "mobile_sam.pt from ChaoningZhang/MobileSAM"),
    "sam3": Family("SAM 3", "sam3",
                   "sam3.pt from facebook/sam3 on Hugging Face (gated: request access there, then download it)"),
    "onnx_sam": Family("SAM ONNX", "onnxruntime",
                       "an encoder and a decoder .onnx of SAM or MobileSAM as samexporter exports them "
                       "(AnyLabeling publishes such pairs)"),
    "onnx_sam_hq": Family("SAM-HQ ONNX", "onnxruntime",
                          "an HQ-SAM encoder and decoder .onnx (with interm_embeddings), as AnyLabeling publishes them"),
    "onnx_sam2": Family("SAM 2 ONNX", "onnxruntime",
                        "a SAM 2 / 2.1 encoder and decoder .onnx as samexporter exports them "
                        "(AnyLabeling publishes such pairs)"),
}

# -- SAM 1 ViT image encoder ------------------------------------------------------------------------
# (embed_dim, depth, num_heads, global attention blocks) of segment-anything's registry models.
OFFICIAL_ENCODERS = {
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
}


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


def encoder_config_from_state(state: Mapping[str, Any]) -> EncoderConfig:
    """Infer the ViT image encoder's configuration from a SAM (or HQ-SAM) state dict.

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


# -- TinyViT image encoder (MobileSAM, HQ-SAM's light model) ----------------------------------------
@dataclass(frozen=True)
class TinyVitConfig:
    embed_dims: Tuple[int, ...]
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]  # of the attention stages (all but the first, convolutional one)

    @property
    def size(self) -> str:
        if self == MOBILE_SAM_TINY_VIT:
            return "tiny_vit"
        return f"tiny_vit(dims={','.join(map(str, self.embed_dims))},depths={','.join(map(str, self.depths))})"


# MobileSAM's encoder, also HQ-SAM's light model (segment_anything_hq.build_sam.build_sam_vit_t)
MOBILE_SAM_TINY_VIT = TinyVitConfig((64, 128, 160, 320), (2, 2, 6, 2), (4, 5, 10))


def tiny_vit_config_from_state(state: Mapping[str, Any]) -> TinyVitConfig:
    """The TinyViT's stage widths, block counts and attention heads, from ``image_encoder.layers.N.blocks.M``."""
    blocks: Dict[int, set] = {}
    for k in state:
        if m := re.match(r"image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.", k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))):
        raise KeyError("image_encoder.layers.0.blocks.0")
    dims = [state["image_encoder.layers.0.blocks.0.conv3.c.weight"].shape[0]]
    heads = []
    for i in stages[1:]:
        dims.append(state[f"image_encoder.layers.{i}.blocks.0.attn.norm.weight"].shape[0])
        heads.append(state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"].shape[0])
    return TinyVitConfig(tuple(dims), tuple(len(blocks[i]) for i in stages), tuple(heads))


# -- SAM 2 Hiera trunk ------------------------------------------------------------------------------
# (trunk embed_dim, block count) -> size; sam2's configs: t (96, stages 1,2,7,2), s (96, 1,2,11,2),
# b+ (112, Hiera's default 2,3,16,3), l (144, 2,6,36,4).
SAM2_SIZES = {(96, 12): "hiera_t", (96, 16): "hiera_s", (112, 24): "hiera_b+", (144, 48): "hiera_l"}
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")  # sam2.1 configs' extra parameters


def sam2_config_name(version: str, size: str) -> str:
    """The sam2 package's config for build_sam2, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``."""
    return f"configs/sam2.1/sam2.1_{size}.yaml" if version == "2.1" else f"configs/sam2/sam2_{size}.yaml"


# -- SAM 3 ViT trunk -------------------------------------------------------------------------------
SAM3_VISION = "detector.backbone.vision_backbone."  # the detector's image encoder (the tracker's too): trunk, necks
SAM3_TRUNK = f"{SAM3_VISION}trunk."  # the ViT
SAM3_NECK = f"{SAM3_VISION}sam2_convs."  # its SAM 2-style neck, the interactive model's
SAM3_TRACKER = "tracker."  # the tracker: SAM 2's prompt encoder and mask decoder (and video-only memory parts)


@dataclass(frozen=True)
class Sam3TrunkConfig:
    """What SAM 3's ViT trunk (``sam3.model.vitdet.ViT``) takes that differs between sizes; the rest is fixed."""
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    global_blocks: Tuple[int, ...]  # blocks attending over the whole 72 x 72 grid; the others over windows
    window_size: int  # in patches

    @property
    def size(self) -> str:
        """``sam3`` for the published model's trunk, else a description."""
        if self == SAM3_OFFICIAL_TRUNK:
            return "sam3"
        return f"custom(dim={self.embed_dim},depth={self.depth})"


# sam3.model_builder._create_vit_backbone: 1024 wide, 32 blocks of 16 heads, MLP 4.625 x, global every 8th block
SAM3_OFFICIAL_TRUNK = Sam3TrunkConfig(1024, 32, 16, 4.625, (7, 15, 23, 31), 24)


def sam3_trunk_config_from_state(state: Mapping[str, Any]) -> Sam3TrunkConfig:
    """The trunk's configuration from its tensors: width from the patch embedding, blocks counted, head size from
    the rotary tables (``attn.freqs_cis``: one row per position it attends over, head size / 2 columns), a block
    global when its table covers more positions than a window's."""
    embed_dim = state[f"{SAM3_TRUNK}patch_embed.proj.weight"].shape[0]
    depth = len({m.group(1) for k in state if (m := re.match(re.escape(SAM3_TRUNK) + r"blocks\.(\d+)\.", k))})
    tables = [state[f"{SAM3_TRUNK}blocks.{i}.attn.freqs_cis"].shape for i in range(depth)]
    window = min(rows for rows, _ in tables)
    hidden = state[f"{SAM3_TRUNK}blocks.0.mlp.fc1.weight"].shape[0]
    return Sam3TrunkConfig(embed_dim, depth, embed_dim // (2 * tables[0][1]), hidden / embed_dim,
                           tuple(i for i, (rows, _) in enumerate(tables) if rows > window), math.isqrt(window))


HQ_DECODER_PARTS = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")

# -- ONNX graphs ------------------------------------------------------------------------------------
ONNX_SAM_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                           "orig_im_size")
ONNX_SAM2_ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
ONNX_SAM2_DECODER_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
                            "mask_input", "has_mask_input")


@dataclass(frozen=True)
class ModelFile:
    """One model file and what it holds."""
    path: str
    family: str  # a key of FAMILIES
    size: Optional[str] = None  # vit_b/vit_l/vit_h, tiny_vit, hiera_t/s/b+/l, custom(...); None for ONNX
    role: str = "model"  # "model": a whole PyTorch model; ONNX halves: "encoder" or "decoder"
    version: Optional[str] = None  # SAM 2: "2.0" or "2.1"
    encoder: Optional[EncoderConfig] = None  # the ViT image encoder (sam, sam_hq)
    tiny_vit: Optional[TinyVitConfig] = None  # the TinyViT image encoder (mobile_sam, sam_hq light)
    sam2_config: Optional[str] = None  # the sam2 package's config that builds it (None for a custom size)
    sam3_trunk: Optional[Sam3TrunkConfig] = None  # SAM 3's ViT trunk (sam3)
    hq_parts: Tuple[str, ...] = ()  # HQ-SAM decoder parts present (mask_decoder.<part>)
    inputs: Tuple[Tuple[str, Tuple[Any, ...]], ...] = field(default=())  # ONNX: (name, shape), shape's
    outputs: Tuple[Tuple[str, Tuple[Any, ...]], ...] = field(default=())  # unknown dims as names or None

    @property
    def family_name(self) -> str:
        return FAMILIES[self.family].name

    @property
    def in_graph_preprocessing(self) -> Optional[bool]:
        """A SAM ONNX encoder: True when it takes an (H, W, 3) image and normalises it itself (samexporter's
        --use-preprocess), False when it takes a normalised (1, 3, 1024, 1024) tensor; None otherwise."""
        if self.family in ("onnx_sam", "onnx_sam_hq") and self.role == "encoder":
            return len(dict(self.inputs)["input_image"]) == 3
        return None

    def describe(self) -> str:
        """E.g. ``SAM vit_b``, ``SAM-HQ tiny_vit``, ``SAM 2.1 hiera_t``, ``MobileSAM tiny_vit``,
        ``SAM 2 ONNX decoder``."""
        if self.family == "sam2":
            return f"SAM {self.version} {self.size}"
        if self.family == "sam3" and self.size == "sam3":
            return self.family_name
        if self.role != "model":
            return f"{self.family_name} {self.role}"
        return f"{self.family_name} {self.size}"


# The model types offered next to the model file (``auto``: whatever the file holds), as model_type_name spells them;
# new ones are appended (the toolbox's enum numbers of earlier ones stay).
MODEL_TYPE_CHOICES = ("auto", "vit_h", "vit_l", "vit_b", "mobile_sam", "sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h",
                      "sam_hq_tiny_vit", "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
                      "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l", "sam3")


def model_type_name(model: "ModelFile") -> str:
    """The model type a file holds, as the model-type setting and download-checkpoints name it: SAM ``vit_b``,
    MobileSAM ``mobile_sam``, SAM-HQ ``sam_hq_vit_b`` / ``sam_hq_tiny_vit``, SAM 2.1 ``sam2.1_hiera_t``, SAM 2
    ``sam2_hiera_t``, SAM 3 ``sam3``; ONNX halves by their family (no size is told from an ONNX file)."""
    if model.family == "sam":
        return model.size
    if model.family == "mobile_sam":
        return "mobile_sam"
    if model.family == "sam_hq":
        return f"sam_hq_{model.size}"
    if model.family == "sam2":
        return f"sam{'2' if model.version == '2.0' else model.version}_{model.size}"
    if model.family == "sam3":
        return "sam3" if model.size == "sam3" else f"sam3_{model.size}"
    return model.family


def check_model_type(model: "ModelFile", model_type: str) -> None:
    """An InputError when ``model_type`` (a :data:`MODEL_TYPE_CHOICES` value) is neither ``auto`` nor what the file
    holds, naming both."""
    if model_type not in MODEL_TYPE_CHOICES:
        raise InputError(f"Unknown model type '{model_type}'. Choose one of: {', '.join(MODEL_TYPE_CHOICES)}.")
    held = model_type_name(model)
    if model_type not in ("auto", held):
        choice = f"'{held}' or 'auto'" if held in MODEL_TYPE_CHOICES else "'auto'"
        raise InputError(f"Model type mismatch: '{model.path}' holds a {model.describe()} model ({held}), not "
                         f"{model_type}. Choose model type {choice}.")


def recognised_families() -> str:
    """The families told here and where their official files come from, for messages."""
    return ("; ".join(f"{f.name}: {f.official}" for f in FAMILIES.values()) +
            " (`python -m samrs_qgis download-checkpoints --list` shows the official checkpoints it fetches)")


def unsupported_message(model: ModelFile) -> str:
    """Why a recognised file cannot be run where it was given, naming its family and its package: a family this
    version runs (another class runs it: the sam backend picks it from the file), or one it does not run yet."""
    from . import FAMILY_CLASSES  # the families this version runs

    family = FAMILIES[model.family]
    if model.family in FAMILY_CLASSES:
        return (f"'{model.path}' holds a {model.describe()} model ({family.package}), which this loader does not "
                f"load; give it as the model file of the sam backend, which runs {family.name} files.")
    runs = ", ".join(FAMILIES[f].name for f in FAMILY_CLASSES)
    return (f"'{model.path}' holds a {model.describe()} model ({family.package}): recognised, but not supported yet. "
            f"This version runs {runs} model files.")


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise missing_packages("The SAM backend needs torch to read a PyTorch model file (the GrabCut backend and "
                               "ONNX model pairs do not)", exc, "full") from exc
    return torch


def read_state(path: str, torch=None) -> Dict[str, Any]:
    """The tensors of a PyTorch checkpoint, memory-mapped when the file allows it (the weights are then read
    from the page cache straight into the model instead of being held twice in memory: vit_h is 2.4 GB),
    unwrapped from ``{"model": ...}`` (SAM 2's files, training scripts). An InputError for an unreadable file."""
    torch = torch or _import_torch()
    mmap = zipfile.is_zipfile(path)  # torch's zip format maps; the legacy format cannot
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        # torch's own text may advise weights_only=False, which is unsafe for an unknown file: not shown.
        raise InputError(f"Model file '{path}' cannot be read ({type(exc).__name__}). The file is corrupt, "
                         "truncated or not a PyTorch checkpoint; download it again and check its checksum "
                         "(`python -m samrs_qgis download-checkpoints` verifies the official ones). Recognised: "
                         f"{recognised_families()}.") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def identify_state(state: Any, path: str = "<state dict>") -> ModelFile:
    """The family and size of a state dict (tensors or anything with a ``shape``, e.g. on the meta device)."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise _not_a_model(path, "it holds no named tensors")
    try:
        if "image_encoder.trunk.patch_embed.proj.weight" in state:
            return _sam2(state, path)
        if f"{SAM3_TRUNK}patch_embed.proj.weight" in state:
            return _sam3(state, path)
        hq_parts = tuple(p for p in HQ_DECODER_PARTS if any(k.startswith(f"mask_decoder.{p}.") for k in state))
        if "image_encoder.layers.0.blocks.0.conv3.c.weight" in state and "mask_decoder.iou_token.weight" in state:
            tiny = tiny_vit_config_from_state(state)
            return ModelFile(path, "sam_hq" if hq_parts else "mobile_sam", tiny.size, tiny_vit=tiny,
                             hq_parts=hq_parts)
        if "image_encoder.patch_embed.proj.weight" in state:
            encoder = encoder_config_from_state(state)
            return ModelFile(path, "sam_hq" if hq_parts else "sam", encoder.model_type, encoder=encoder,
                             hq_parts=hq_parts)
    except (KeyError, AttributeError, TypeError, IndexError, ZeroDivisionError) as exc:
        raise _not_a_model(path, f"missing {exc}") from exc
    raise _not_a_model(path, "no SAM image encoder")


def _sam2(state: Mapping[str, Any], path: str) -> ModelFile:
    dim = state["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
    blocks = len({m.group(1) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})
    if "sam_mask_decoder.iou_token.weight" not in state:
        raise KeyError("sam_mask_decoder.iou_token.weight")
    version = "2.1" if any(k in state for k in SAM21_ONLY_KEYS) else "2.0"
    size = SAM2_SIZES.get((dim, blocks))
    config = sam2_config_name(version, size) if size else None
    return ModelFile(path, "sam2", size or f"custom(dim={dim},blocks={blocks})", version=version, sam2_config=config)


def _sam3(state: Mapping[str, Any], path: str) -> ModelFile:
    for needed in (f"{SAM3_NECK}0.conv_1x1.weight", f"{SAM3_TRACKER}sam_mask_decoder.iou_token.weight"):
        if needed not in state:  # the interactive model's neck and decoder: without them only the detector
            raise KeyError(needed)
    trunk = sam3_trunk_config_from_state(state)
    return ModelFile(path, "sam3", trunk.size, sam3_trunk=trunk)


def _not_a_model(path: str, reason: str) -> InputError:
    return InputError(f"'{path}' is a PyTorch file but not a SAM checkpoint of a family recognised here ({reason}). "
                      f"Recognised: {recognised_families()}.")


def _onnx_io(path: str):
    """The graph's inputs (less its initializers) and outputs as ((name, shape), ...), weights not loaded."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        model = onnx.load(path, load_external_data=False)

        def shape(value):
            dims = value.type.tensor_type.shape.dim
            return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)

        weights = {t.name for t in model.graph.initializer}
        return (tuple((v.name, shape(v)) for v in model.graph.input if v.name not in weights),
                tuple((v.name, shape(v)) for v in model.graph.output))
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_packages("Reading an ONNX model needs onnx or onnxruntime", exc, "light") from exc
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return (tuple((v.name, tuple(v.shape)) for v in session.get_inputs()),
            tuple((v.name, tuple(v.shape)) for v in session.get_outputs()))


def identify_onnx(path: str) -> ModelFile:
    """Which half of which family's ONNX pair a graph is, from its input and output names."""
    try:
        inputs, outputs = _onnx_io(path)
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise InputError(f"Model file '{path}' cannot be read as an ONNX model ({type(exc).__name__}): it is "
                         f"corrupt, truncated or not an ONNX file. Recognised: {recognised_families()}.") from exc
    ins, outs = {n for n, _ in inputs}, {n for n, _ in outputs}
    kind = None
    if ins == {"input_image"} and "image_embeddings" in outs:
        kind = ("onnx_sam_hq" if "interm_embeddings" in outs else "onnx_sam", "encoder")
    elif ins == {"image"} and set(ONNX_SAM2_ENCODER_OUTPUTS) <= outs:
        kind = ("onnx_sam2", "encoder")
    elif set(ONNX_SAM2_DECODER_INPUTS) <= ins and "masks" in outs:
        kind = ("onnx_sam2", "decoder")
    elif set(ONNX_SAM_DECODER_INPUTS) <= ins and "masks" in outs:
        kind = ("onnx_sam_hq" if "interm_embeddings" in ins else "onnx_sam", "decoder")
    if kind is None:
        raise InputError(f"'{path}' is an ONNX model but not a SAM encoder or decoder recognised here (inputs "
                         f"{', '.join(sorted(ins)) or 'none'}; outputs {', '.join(sorted(outs)) or 'none'}). "
                         f"Recognised: {recognised_families()}.")
    return ModelFile(path, kind[0], role=kind[1], inputs=inputs, outputs=outputs)


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def is_onnx_file(path: str) -> bool:
    """By its name (.onnx; .pth, .pt, .bin, .ckpt are PyTorch's), else by its first byte: an ONNX ModelProto
    starts with its ir_version (field 1, a varint: 0x08); torch's files are zip archives ("PK") or pickles (0x80)."""
    name = path.lower()
    if name.endswith(".onnx"):
        return True
    if name.endswith(TORCH_SUFFIXES):
        return False
    with open(path, "rb") as f:
        return f.read(1) == b"\x08"


def identify(path: str) -> ModelFile:
    """What model the file at ``path`` holds. An InputError for a missing, unreadable or unrecognised file,
    naming the file and the families recognised here."""
    if not path or not os.path.isfile(path):
        raise InputError(f"Model file '{path}' does not exist. Recognised: {recognised_families()}.")
    if is_onnx_file(path):
        return identify_onnx(path)
    return identify_state(read_state(path), path)


def check_onnx_pair(encoder: ModelFile, decoder: ModelFile) -> str:
    """The family of an ONNX encoder/decoder pair; an InputError naming each file's role and family when
    they are not the encoder and the decoder of one family."""
    for model, role in ((encoder, "encoder"), (decoder, "decoder")):
        if model.role != role:
            what = model.describe() if model.role != "model" else f"a PyTorch {model.describe()} checkpoint"
            raise InputError(f"'{model.path}' was given as the ONNX {role} but is {what}.")
    if encoder.family != decoder.family:
        raise InputError(f"The ONNX encoder and decoder are of different models: '{encoder.path}' is a "
                         f"{encoder.describe()}, '{decoder.path}' a {decoder.describe()}. Give the encoder and "
                         "decoder exported from the same model.")
    return encoder.family

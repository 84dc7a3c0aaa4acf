"""SAM as an ONNX encoder/decoder pair run by ONNX Runtime: SAM's masks without torch.

The pair is what ``python -m samrs_qgis export-onnx`` writes (:mod:`samrs_qgis.onnx_export`) or what samexporter
and AnyLabeling publish for SAM and MobileSAM (:mod:`.model_files` tells them by their inputs and outputs). The
``checkpoint`` setting names a folder holding one encoder and one decoder .onnx, or one of the two files, its
partner lying beside it under the same name with ``encoder`` and ``decoder`` swapped.

The frame is prepared as segment-anything does (longest side 1024, SAM's pixel mean and std, zero padding to
1024x1024) unless the encoder does it in its graph. Boxes go to the decoder as SAM's ONNX models take them: two
corner points labelled 2 and 3 (SAM's box convention, :func:`.sam.sam_box_prompt`); points with label 1; a mask
prompt as ``mask_input``. A decoder with a batch dimension decodes a batch of boxes in one run; one without it
(segment-anything's own export) runs once per box. The low-resolution logits (256x256 over the padded frame, 4
frame pixels per value) and the predicted IoU as score leave the backend, each box's logits cropped to its region,
as from :class:`.sam.SamBackend`. Nothing here imports torch.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError, missing_packages
from ..prompts import PROMPT_MODES, Prompts
from .base import Backend, BoxLogits
from .devices import cpu_name, device_index, device_type, is_device
from .model_files import ModelFile, check_onnx_pair, identify_onnx
from .sam import sam_box_prompt, sam_mask_prompt, sam_point_prompt
from .sam_decoder import EMBED_CELL, LOGIT_CELL, region_cells

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)  # segment-anything's, RGB
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
CPU_BATCH = 8  # boxes per decoder run on a CPU (a decoder with a batch dimension)
CUDA_BATCH = 64
# ``orig_im_size`` given to the decoder: its ``masks`` output (logits upscaled to that size) is not used here,
# only ``low_res_masks``; one row keeps the work of making it small.
UNUSED_MASK_SIZE = np.array([1.0, 1024.0], dtype=np.float32)
FAMILIES = ("onnx_sam",)
METADATA_PREFIX = "samrs_"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_packages("Running an ONNX model needs onnxruntime", exc, "light") from exc
    return onnxruntime


def _partner(path: str) -> str:
    """The other half's file name: the last ``encoder`` in the name becomes ``decoder`` or the reverse (same case)."""
    folder, name = os.path.split(path)
    matches = list(re.finditer(r"encoder|decoder", name, flags=re.IGNORECASE))
    if not matches:
        return ""
    m = matches[-1]
    word = m.group(0)
    other = "decoder" if word.lower() == "encoder" else "encoder"
    other = other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other
    return os.path.join(folder, name[:m.start()] + other + name[m.end():])


def find_pair(checkpoint: str) -> Tuple[ModelFile, ModelFile]:
    """(encoder, decoder) of the ONNX pair ``checkpoint`` names: a folder holding one encoder and one decoder
    .onnx, or one of the two files with its partner beside it. InputErrors say what is missing."""
    if os.path.isdir(checkpoint):
        names = sorted(n for n in os.listdir(checkpoint) if n.lower().endswith(".onnx"))
        models = [identify_onnx(os.path.join(checkpoint, n)) for n in names]
        encoders = [m for m in models if m.role == "encoder"]
        decoders = [m for m in models if m.role == "decoder"]
        if len(encoders) != 1 or len(decoders) != 1:
            listed = ", ".join(f"{os.path.basename(m.path)} ({m.describe()})" for m in models) or "no .onnx files"
            raise InputError(f"Model folder '{checkpoint}' must hold one ONNX encoder and one ONNX decoder; it holds "
                             f"{listed}. Give the folder of one pair, or the encoder file itself.")
        encoder, decoder = encoders[0], decoders[0]
    else:
        if not os.path.isfile(checkpoint):
            raise InputError(f"Model file '{checkpoint}' does not exist.")
        given = identify_onnx(checkpoint)
        if given.role not in ("encoder", "decoder"):
            raise InputError(f"'{checkpoint}' is not an ONNX encoder or decoder.")
        other = _partner(checkpoint)
        if not other or not os.path.isfile(other):
            want = "decoder" if given.role == "encoder" else "encoder"
            raise InputError(f"'{checkpoint}' is an ONNX {given.role}; its {want} was looked for beside it as "
                             f"'{other or '(a name with encoder/decoder in it)'}' and not found. Put the {want} "
                             "there under that name, or give the folder holding both.")
        found = identify_onnx(other)
        encoder, decoder = (given, found) if given.role == "encoder" else (found, given)
    check_onnx_pair(encoder, decoder)
    return encoder, decoder


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def choose_provider(ort, device: str) -> Tuple[list, str, Optional[str]]:
    """(providers for a session, the device as outputs name it, a note): CUDA when ONNX Runtime has it and the
    device setting allows, else the CPU."""
    if not is_device(device):
        raise InputError(f"Unknown device '{device}'. Choose one of: auto, cpu, cuda, cuda:N.")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    kind = device_type(device)
    if kind == "mps":
        raise InputError("Device 'mps' is not available to ONNX models here (ONNX Runtime runs them on the CPU or a "
                         "CUDA GPU). Use device 'auto' or 'cpu'.")
    if kind == "cuda" or (device == "auto" and has_cuda):
        if not has_cuda:
            raise InputError(f"Device '{device}' was asked for, but this ONNX Runtime has no CUDA support (install "
                             "onnxruntime-gpu). Use device 'auto' or 'cpu'.")
        index = device_index(device)
        return ([("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}", None)
    return ["CPUExecutionProvider"], "cpu", None


def new_session(ort, path: str, providers: list, threads: int, arena: bool = True):
    """An ONNX Runtime session of the model at ``path`` on ``providers`` with ``threads`` intra-op threads.
    ``arena=False`` for an image encoder: run once per window, it gains nothing from ONNX Runtime keeping the
    memory of its largest intermediates (measured, vit_b on a 1024² frame: a graph with SAM's full attention peaks
    at 6.9 GB RSS with the arena, 4.0 GB without; one exported with banded attention 2.4 GB and 2.0 GB)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no notes on nodes placed on the CPU
    return ort.InferenceSession(path, options, providers=providers)


def read_metadata(session) -> Dict[str, str]:
    props = session.get_modelmeta().custom_metadata_map or {}
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}


def crop_logits(grid: np.ndarray, region: Optional[np.ndarray]) -> Tuple[np.ndarray, int, int]:
    """A box's low-resolution logits over the input -> (their crop over ``region``, input pixels, in whole embedding
    cells; the crop's first embedding cell row, column). The crop is a copy: the batch it came from can go."""
    cells = (grid.shape[0] * LOGIT_CELL // EMBED_CELL, grid.shape[1] * LOGIT_CELL // EMBED_CELL)
    r0, c0, r1, c1 = region_cells(region, cells)
    per = EMBED_CELL // LOGIT_CELL
    return np.array(grid[r0 * per:r1 * per, c0 * per:c1 * per], dtype=np.float32), r0, c0


class OnnxPairBackend(Backend):
    """What the backends of ONNX encoder/decoder pairs share: the pair found and its two ONNX Runtime sessions
    (:func:`find_pair`, :func:`choose_provider`, :func:`new_session`), the model type and precision checked against
    the pair, a batch of prompts per decoder run or one run per box, ONNX Runtime's out-of-memory errors, the
    encoder's weights as identity and where it all runs in :meth:`describe`. A family's backend sets ``families``
    and ``runs`` (the families it runs, as its errors name them) and gives the encoder's inputs and the decoder's
    outputs their meaning."""

    name = "onnx"
    prompt_modes = PROMPT_MODES
    families: Tuple[str, ...] = ()  # ModelFile.family of the encoders this backend runs
    runs = ""  # the families it runs, in its errors: "SAM and MobileSAM"

    def __init__(self, checkpoint: str, device: str = "auto", multimask: bool = False, model_type: str = "auto",
                 precision: str = "auto"):
        ort = import_onnxruntime()
        self.checkpoint = checkpoint
        self.encoder_file, self.decoder_file = find_pair(checkpoint)
        if self.encoder_file.family not in self.families:
            raise InputError(f"'{checkpoint}' is a {self.encoder_file.family_name} pair; this backend runs "
                             f"{self.runs} ONNX pairs.")
        self._check_decoder()
        providers, self.device, note = choose_provider(ort, device)
        self.threads = cpu_threads()
        self._encoder = new_session(ort, self.encoder_file.path, providers, self.threads, arena=False)
        self._decoder = new_session(ort, self.decoder_file.path, providers, self.threads)
        self.provider = self._encoder.get_providers()[0]
        if self.provider != "CUDAExecutionProvider":
            self.device = "cpu"
        self.device_name = cpu_name() if self.device == "cpu" else self.device
        self.runtime = f"ONNX Runtime {ort.__version__}"
        self.multimask = multimask
        self.metadata = read_metadata(self._encoder)
        exported = self._exported_type()
        if model_type not in ("auto", None) and exported and exported != model_type:
            raise InputError(f"Model type mismatch: '{checkpoint}' was exported from a {exported} model, not "
                             f"{model_type}. Choose model type 'auto'.")
        notes = [note] if note else []
        if precision not in ("auto", "fp32", None):
            notes.append(f"Precision {precision} does not apply to an ONNX model: it runs in the precision it was "
                         "exported in.")
        self.notes = tuple(notes)

    @classmethod
    def from_options(cls, options) -> "OnnxPairBackend":
        return cls(options.checkpoint, options.device, options.multimask, options.model_type, options.precision)

    def _check_decoder(self) -> None:
        """Called before the sessions are made: an InputError for a decoder (``self.decoder_file``) this backend
        cannot run."""

    def _exported_type(self) -> Optional[str]:
        """The model type the pair was exported from as its metadata says; None when it does not say."""
        return self.metadata.get("size")

    def _set_batching(self, decoder_inputs: Dict[str, tuple]) -> None:
        """A decoder whose prompts have a batch dimension (``decoder_inputs``: input name -> shape) decodes a batch
        of them per run; one without it, one box per run."""
        self.batched = all(not isinstance(decoder_inputs[n][0], int) for n in ("point_coords", "mask_input"))
        self.preferred_batch = (CUDA_BATCH if self.device != "cpu" else CPU_BATCH) if self.batched else 1

    def _run_decoder(self, coords, labels, masks, has_mask):
        """(predicted IoU (n, C), low-resolution logits (n, C, 256, 256)) of one decoder run."""
        raise NotImplementedError

    def _run_prompts(self, arrays, count: int):
        """``_run_decoder`` over the ``count`` prompts of ``arrays`` (point_coords, point_labels, mask_input,
        has_mask_input): in one run, or one run per box for a decoder without a batch dimension."""
        if self.batched:
            return self._run_decoder(*arrays)
        runs = [self._run_decoder(arrays[0][i:i + 1], arrays[1][i:i + 1], arrays[2][i:i + 1], arrays[3])
                for i in range(count)]
        return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])

    def is_out_of_memory(self, error: BaseException) -> bool:
        text = str(error).lower()
        return "out of memory" in text or "failed to allocate" in text

    # -- identity ---------------------------------------------------------------------------------
    def identity(self) -> str:
        """What decides the embedding besides the frame: the encoder's weights and where they run."""
        from .sam_checkpoint import checkpoint_fingerprint

        parts = [checkpoint_fingerprint(self.encoder_file.path)]
        data = self.encoder_file.path + ".data"
        if os.path.isfile(data):
            parts.append(checkpoint_fingerprint(data))
        return f"onnx:{':'.join(parts)}:{'cuda' if self.device != 'cpu' else 'cpu'}"

    def _model(self) -> str:
        """The model's name in :meth:`describe`, before its size: "SAM", "MobileSAM", "SAM 2.1"."""
        raise NotImplementedError

    def _decoding(self) -> str:
        return f"batches of {self.preferred_batch} boxes" if self.batched else "one box per decoder run"

    def where_it_runs(self) -> str:
        """The runtime, its execution provider and the device: "ONNX Runtime 1.20.1, CPUExecutionProvider on CPU
        (its name), 8 threads"."""
        where = (f"CPU ({self.device_name}), {self.threads} threads" if self.device == "cpu"
                 else f"{self.device} (CUDA)")
        return f"{self.runtime}, {self.provider} on {where}"

    def describe(self) -> str:
        meta = self.metadata
        model = self._model()
        if meta.get("size"):
            model += f" {meta['size']}"
        if meta.get("quantization") == "int8":
            model += ", int8 encoder"
        return (f"{model} ONNX (encoder {self.encoder_file.path}, decoder {self.decoder_file.path}) on "
                f"{self.where_it_runs()}, {self._decoding()}")

    def close(self) -> None:
        self._encoder = self._decoder = None


class OnnxSamBackend(OnnxPairBackend):
    """A SAM (or MobileSAM) ONNX encoder/decoder pair in ONNX Runtime; ``multimask=True`` keeps the best of three
    candidates by predicted IoU, as :class:`.sam.SamBackend`."""

    families = FAMILIES
    runs = "SAM and MobileSAM"

    def __init__(self, checkpoint: str, device: str = "auto", multimask: bool = False, model_type: str = "auto",
                 precision: str = "auto"):
        super().__init__(checkpoint, device, multimask, model_type, precision)
        self.preprocessing_in_graph = bool(self.encoder_file.in_graph_preprocessing)
        shape = dict(self._shapes(self._encoder.get_inputs()))["input_image"]
        self.input_size = int(shape[-2] if not self.preprocessing_in_graph else 1024)
        decoder_inputs = dict(self._shapes(self._decoder.get_inputs()))
        self._set_batching(decoder_inputs)
        outputs = [o.name for o in self._decoder.get_outputs()]
        if "low_res_masks" not in outputs or "iou_predictions" not in outputs:
            raise InputError(f"ONNX decoder '{self.decoder_file.path}' has no low_res_masks or iou_predictions "
                             f"output (it has {', '.join(outputs)}); export it again with `python -m samrs_qgis "
                             "export-onnx`.")
        self._mask_input_size = tuple(decoder_inputs["mask_input"][-2:])
        self._features: Optional[np.ndarray] = None
        self._scale = 1.0  # input pixels per frame pixel

    @staticmethod
    def _shapes(values):
        return [(v.name, tuple(v.shape)) for v in values]

    # -- encoding ---------------------------------------------------------------------------------
    def _resized(self, frame: np.ndarray) -> np.ndarray:
        """The frame with its longest side at ``input_size`` (segment-anything's ResizeLongestSide: bilinear, sizes
        rounded half up); frames already that size pass as they are."""
        rows, cols = frame.shape[:2]
        scale = self.input_size / max(rows, cols)
        size = (int(cols * scale + 0.5), int(rows * scale + 0.5))
        if size == (cols, rows):
            return frame
        from PIL import Image

        return np.asarray(Image.fromarray(frame).resize(size, resample=Image.BILINEAR))

    def _set_frame(self, frame_shape) -> None:
        self._scale = self.input_size / max(frame_shape[:2])

    def encode(self, frame: np.ndarray) -> None:
        image = self._resized(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
        if self.preprocessing_in_graph:
            tensor = image.astype(np.float32)
        else:
            size = self.input_size
            tensor = np.zeros((1, 3, size, size), dtype=np.float32)
            rows, cols = image.shape[:2]
            tensor[0, :, :rows, :cols] = ((image.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
        self._features = self._encoder.run(["image_embeddings"], {"input_image": tensor})[0]
        self._set_frame(frame.shape)

    @property
    def embedding(self) -> Dict[str, np.ndarray]:
        """The current window's image embedding: ``image_embeddings`` float32 (1, 256, 64, 64)."""
        return {"image_embeddings": self._features}

    def load_embedding(self, embedding: Dict[str, np.ndarray], frame_shape) -> None:
        self._features = np.ascontiguousarray(embedding["image_embeddings"], dtype=np.float32)
        self._set_frame(tuple(frame_shape))

    # -- decoding ---------------------------------------------------------------------------------
    def _prompt_arrays(self, prompts: Prompts, count: int):
        """(point_coords (n, k, 2), point_labels (n, k), mask_input (n, 1, 256, 256), has_mask_input (1,)) in the
        encoder's input frame, as segment-anything's prompt encoder orders them: points, then box corners."""
        scale = self._scale
        coords, labels = [], []
        if prompts.points is not None:
            coords.append(sam_point_prompt(prompts.points) * scale)
            labels.append(np.ones((count, 1), dtype=np.float32))
        if prompts.boxes is not None:
            coords.append(sam_box_prompt(prompts.boxes).reshape(-1, 2, 2) * scale)
            labels.append(np.tile(np.array([[2.0, 3.0]], dtype=np.float32), (count, 1)))
        mask_rows = self._mask_input_size[0] if isinstance(self._mask_input_size[0], int) else 256
        if prompts.polygons is not None:
            masks = sam_mask_prompt(prompts.polygons, mask_rows, self.input_size / mask_rows / scale)
            has_mask = np.ones(1, dtype=np.float32)
        else:
            masks = np.zeros((count, 1, mask_rows, mask_rows), dtype=np.float32)
            has_mask = np.zeros(1, dtype=np.float32)
        if prompts.points is not None and prompts.boxes is None:  # a point alone gets SAM's padding point
            coords.append(np.zeros((count, 1, 2), dtype=np.float32))
            labels.append(np.full((count, 1), -1.0, dtype=np.float32))
        point_coords = (np.concatenate(coords, axis=1) if coords else np.zeros((count, 0, 2))).astype(np.float32)
        point_labels = (np.concatenate(labels, axis=1) if labels else np.zeros((count, 0))).astype(np.float32)
        return point_coords, point_labels, masks.astype(np.float32), has_mask

    def _run_decoder(self, coords, labels, masks, has_mask):
        feed = {"image_embeddings": self._features, "point_coords": coords, "point_labels": labels,
                "mask_input": masks, "has_mask_input": has_mask, "orig_im_size": UNUSED_MASK_SIZE}
        iou, low = self._decoder.run(["iou_predictions", "low_res_masks"], feed)
        return iou, low

    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        if self._features is None:
            raise RuntimeError("decode before encode")
        prompts = prompts or Prompts(boxes=boxes)
        count = prompts.count or len(boxes)
        iou, low = self._run_prompts(self._prompt_arrays(prompts, count), count)
        if low.shape[1] == 1:  # the decoder chose its one mask itself
            choice = np.zeros(count, dtype=np.int64)
        elif self.multimask:
            choice = 1 + iou[:, 1:].argmax(axis=1) if low.shape[1] == 4 else iou.argmax(axis=1)
        else:
            choice = np.zeros(count, dtype=np.int64)
        return [self._box_logits(low[i, choice[i]], float(iou[i, choice[i]]), None if regions is None else regions[i])
                for i in range(count)]

    def _box_logits(self, grid: np.ndarray, score: float, region: Optional[np.ndarray]) -> BoxLogits:
        """A box's low-resolution logits over its region (whole embedding cells), placed in frame space."""
        scale = self._scale
        crop, r0, c0 = crop_logits(grid, None if region is None else np.asarray(region, dtype=np.float64) * scale)
        return BoxLogits(grid=crop, origin_x=c0 * EMBED_CELL / scale, origin_y=r0 * EMBED_CELL / scale,
                         cell=LOGIT_CELL / scale, score=score)

    def _model(self) -> str:
        return "SAM" if self.metadata.get("family") != "mobile_sam" else "MobileSAM"

    def close(self) -> None:
        super().close()
        self._features = None

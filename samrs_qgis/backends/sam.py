"""SAM as a backend: segment-anything's predictor encodes a window once, its mask decoder takes boxes in batches.

Only low-resolution logits (4 frame pixels per value) over each box's region leave the backend
(:mod:`.sam_decoder`); upsampling to native pixels happens per box (see :mod:`samrs_qgis.logits`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, List, Optional

import numpy as np

from ..prompts import MASK_PROMPT_LOGIT, PROMPT_MODES, Prompts
from ..embedding_cache import cache_root
from . import compile_verdict as verdicts
from .base import Backend, BoxLogits, PendingLogits
from .compile_verdict import CompileVerdict
from . import lean_attention
from .devices import (backend_notes, choose_device, device_label, device_type, free_cached_memory, int8_encoder,
                      is_out_of_memory, precision_context, resolve_precision, to_device)
from .model_files import FAMILIES
from .sam_checkpoint import checkpoint_fingerprint, import_torch, load_model
from .sam_decoder import EMBED_CELL, LOGIT_CELL, WindowMaskDecoder


# Boxes decoded together. On a CPU the decoder is bound by memory traffic (each box carries a
# 4096x256 copy of the image tokens through the transformer), so small batches that stay in cache are
# fastest: measured here (vit_b bf16, 2 cores) 14-15 ms/box at 2 to 8, 16 at 1, 19 at 16. A GPU wants many.
CPU_BATCH = 4
CUDA_BATCH = 64
# torch.compile fuses the decoder's element-wise work. Whether that is faster depends on the CPU (AVX-512,
# vit_b bf16 batch 4: 15-19 -> 7-11 ms/box; a 2-core AVX2 CPU: 3.4-3.7x slower), so it is measured once per
# machine (:mod:`.compile_verdict`). Compiling costs ~18 s the first time on a machine and ~1.5 s once its
# kernels are in the compile cache (kept in the engine's cache folder): where compiled measured faster, worth
# it from about this many boxes in a run.
COMPILE_MIN_BOXES = 2000  # nothing compiled here before
COMPILE_MIN_BOXES_WARM = 300  # the same decoder was compiled here before (a marker in the compile cache)


def sam_box_prompt(boxes: np.ndarray) -> np.ndarray:
    """Frame-space pixel-corner boxes (n, 4) -> SAM's convention, inclusive pixel indices.

    SAM was trained on boxes whose x1/y1 are the last pixel inside (its prompt encoder adds 0.5 to
    reach pixel centres), so a box covering pixels [x0, x1) is given as (x0, y0, x1 - 1, y1 - 1).
    """
    out = boxes.astype(np.float32).copy()
    out[:, 2] = np.maximum(out[:, 2] - 1.0, out[:, 0])
    out[:, 3] = np.maximum(out[:, 3] - 1.0, out[:, 1])
    return out


def sam_point_prompt(points: np.ndarray) -> np.ndarray:
    """Frame-space points (n, 2), continuous pixel-corner coordinates -> SAM's (n, 1, 2) point coordinates.

    SAM's prompt encoder adds 0.5 to reach a pixel centre, so the point (x, y) is given as (x - 0.5, y - 0.5).
    """
    return (points.astype(np.float32) - 0.5).reshape(-1, 1, 2)


def sam_mask_prompt(polygons, size: int, cell: float) -> np.ndarray:
    """Frame-space rings (each (k, 2)) -> dense mask prompts (n, 1, size, size), float32.

    Cell (i, j) of SAM's mask input covers frame pixels [j*cell, (j+1)*cell) x [i*cell, (i+1)*cell); it is
    +MASK_PROMPT_LOGIT when its centre lies inside the polygon, else -MASK_PROMPT_LOGIT.
    """
    from affine import Affine
    from rasterio import features
    from shapely.geometry import Polygon, mapping

    out = np.full((len(polygons), 1, size, size), -MASK_PROMPT_LOGIT, dtype=np.float32)
    for i, ring in enumerate(polygons):
        inside = features.rasterize([(mapping(Polygon(ring)), 1)], out_shape=(size, size), fill=0, dtype="uint8",
                                    transform=Affine.scale(cell)).astype(bool)
        out[i, 0][inside] = MASK_PROMPT_LOGIT
    return out


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _pad(array: Optional[np.ndarray], size: int) -> Optional[np.ndarray]:
    """Repeat the last row until ``size`` rows (a compiled decoder has one batch shape)."""
    if array is None or len(array) >= size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


class SamBackend(Backend):
    """SAM from a checkpoint; ``multimask=True`` keeps the best of three candidates by predicted IoU.

    Also MobileSAM (a TinyViT image encoder with SAM's prompt encoder and mask decoder): the same predictor and
    decoder, another encoder. A subclass for another family overrides :attr:`families` and the ``_`` hooks
    (loading, predictor, decoder, the window's tensors).
    """

    name = "sam"
    families = ("sam", "mobile_sam")  # the model files this class runs (keys of model_files.FAMILIES)
    window_tensor_names = ("image_embeddings",)  # what an encoded window is (the embedding cache's arrays)
    prompt_modes = PROMPT_MODES
    compilable = True

    def __init__(self, checkpoint: str, model_type: str = "auto", device: str = "auto",
                 multimask: bool = False, precision: str = "auto"):
        torch, _ = import_torch()
        self._torch = torch
        choice = choose_device(torch, device)
        self.device = choice.device  # as torch takes it: "cpu", "cuda", "cuda:1", "mps"
        self.device_name = choice.name  # e.g. "NVIDIA GeForce RTX 4090", the CPU model
        self.precision, precision_note = resolve_precision(precision, self.device, torch)
        self.notes, self.remarks = backend_notes(choice.note, precision, precision_note)
        self.preferred_batch = CUDA_BATCH if device_type(self.device) == "cuda" else CPU_BATCH
        model, found = load_model(checkpoint, model_type, self.families)
        self.family, self.model_type = found.family, found.size  # e.g. "mobile_sam", "tiny_vit"
        self.model = model.to(self.device)
        lean_attention.apply(self.model)  # the same embedding, without 0.8 GB score matrices (vit_b's global blocks)
        if self.precision == "int8":
            int8_encoder(torch, self.model.image_encoder)
        self.predictor = self._make_predictor()
        self.multimask = multimask
        self.checkpoint = checkpoint
        self.input_size = self.model.image_encoder.img_size
        self.decoder = self._make_decoder(torch.bfloat16 if self.precision == "bf16" else None)
        self._compiled_noted = False

    def _make_predictor(self):
        """The predictor that encodes a window (its ``features``: the image embedding)."""
        return import_torch()[1].SamPredictor(self.model)

    def _make_decoder(self, dtype) -> WindowMaskDecoder:
        return WindowMaskDecoder(self.model, dtype)

    def _window_tensors(self) -> Dict[str, object]:
        """The encoded window as named tensors on the device: what :attr:`embedding` keeps."""
        return {"image_embeddings": self.predictor.features}

    def _set_window_tensors(self, tensors: Dict[str, object]) -> None:
        """Put named tensors (as :meth:`_window_tensors` gives them) back into the predictor."""
        self.predictor.features = tensors["image_embeddings"]

    def _window_to_decoder(self) -> None:
        """Hand the predictor's encoded window to the decoder (inference mode and precision are the caller's)."""
        self.decoder.set_embedding(self.predictor.features)

    def close(self) -> None:
        if self.model is None:
            return
        self._description = self.describe()  # what the outputs record, also after closing
        self.decoder = self.predictor = self.model = None  # nothing else holds them (no reference cycles)
        self.free_cached_memory()  # give the freed blocks back to the driver, for QGIS's next run

    @classmethod
    def from_options(cls, options) -> "SamBackend":
        return cls(options.checkpoint, options.model_type, options.device, options.multimask, options.precision)

    @property
    def compiled(self) -> bool:
        return self.decoder.compiled

    def compile_decoder(self) -> None:
        """Run the decoder's transformer through ``torch.compile`` (same computation, fused kernels).

        Shapes are kept static (batches are padded to ``preferred_batch``) so it compiles once;
        if compiling fails (e.g. no C++ compiler) the eager decoder is used again, and
        :attr:`compile_error` says why. Compiled kernels are cached in the engine's cache folder, so
        later runs compile in seconds.
        """
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_root(), "compiled"))
        if self.decoder.compiled:
            return
        errors = self._compile_errors = []  # what compiling raised; a list the compiled function may hold
        try:
            self.decoder.compile()
        except Exception as exc:  # noqa: BLE001 - cannot compile here: the eager decoder stays
            self.decoder.uncompile()
            errors.append(_first_line(exc))
            return
        self._watch_compiled(errors)

    def _watch_compiled(self, errors: List[str]) -> None:
        """Wrap the compiled transformer so that what it raises first (compiling happens at its first call,
        and a failure there makes :meth:`decode` fall back to eager) is kept in ``errors``. The wrapper holds
        the list, not the backend (no reference cycle)."""
        compiled = getattr(self.decoder, "_compiled_transformer", None)
        if compiled is None:
            return

        def watched(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:
                if not errors:
                    errors.append(_first_line(exc))
                raise

        self.decoder._compiled_transformer = watched

    @property
    def compile_error(self) -> str:
        """Why compiling the decoder failed ('' when it did not, or was not tried)."""
        errors = getattr(self, "_compile_errors", None)
        return errors[0] if errors else ""

    def _compile_marker(self) -> str:
        device = device_label(self.device).replace(":", "-")  # a file name on every system
        name = f"decoder-{self._torch.__version__}-{device}-{self.precision}-b{self.preferred_batch}"
        return os.path.join(os.environ.get("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_root(), "compiled")),
                            "samrs-markers", name)

    def compile_threshold(self) -> int:
        """Boxes in a run from which compiling pays off where it measured faster: fewer once this decoder
        was compiled here (its kernels are in the compile cache)."""
        return COMPILE_MIN_BOXES_WARM if os.path.exists(self._compile_marker()) else COMPILE_MIN_BOXES

    def _note_compiled(self) -> None:
        """Leave the marker that this decoder compiled here (once per backend, not per batch)."""
        if self._compiled_noted:
            return
        marker = self._compile_marker()
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        open(marker, "w").close()
        self._compiled_noted = True

    def compile_verdict_key(self) -> dict:
        """What the verdict on compiling is kept under: machine, torch version, device, precision, model, batch."""
        model = self.model_type if self.family == "sam" else f"{self.family} {self.model_type}"
        return verdicts.verdict_key(self._torch, self.device, self.precision, model, self.preferred_batch)

    def compile_verdict(self) -> Optional[CompileVerdict]:
        return verdicts.load(self.compile_verdict_key())

    def measure_compile(self, boxes: np.ndarray, regions: Optional[np.ndarray], progress) -> CompileVerdict:
        """Time the eager decoder against the compiled one on ``boxes`` of the current window (frame
        coordinates, with their ``regions``; repeated to fill the batches), keep the verdict for this machine
        and leave the decoder compiled iff it was faster. After a warm-up batch of each (the compiled one
        compiles, timed apart), the two decode the same batches alternately, so that other work on the machine
        weighs on both alike; the verdict compares their median times per box. Cancelling leaves it eager."""
        from time import perf_counter

        batch = self.preferred_batch
        count = (verdicts.MEASURE_BATCHES + 1) * batch
        pick = np.resize(np.arange(len(boxes)), count)
        batches = [(boxes[pick[i:i + batch]], None if regions is None else regions[pick[i:i + batch]])
                   for i in range(0, count, batch)]
        timed = batch * verdicts.MEASURE_BATCHES
        progress.info(f"Measuring whether the compiled mask decoder is faster on this machine: {timed} boxes each, "
                      "eager and compiled (once per machine and settings; compiling takes up to a minute the first "
                      "time).")
        try:
            self._time_batch(batches[0], progress)  # warm-up
            progress.check_cancelled()
            t0 = perf_counter()
            self.compile_decoder()
            if self.compiled:
                self.decode(*batches[0])  # compiles
            compile_seconds = perf_counter() - t0
            eager, compiled = [], []
            for pair in batches[1:]:
                if self.compiled:
                    compiled.append(self._time_batch(pair, progress))
                with self._eager():
                    eager.append(self._time_batch(pair, progress))
            eager_ms = float(np.median(eager))
            if not self.compiled:  # compiling failed: decode fell back to the eager decoder
                verdict = verdicts.failed(self.compile_error or "the compiled decoder raised an error",
                                          eager_ms, compile_seconds, timed)
            else:
                verdict = verdicts.decide(eager_ms, float(np.median(compiled)), compile_seconds, timed)
        except BaseException:
            self.decoder.uncompile()  # cancelled (or failed) while measuring: the eager decoder, no verdict
            raise
        if not verdict.compile:
            self.decoder.uncompile()
        try:
            verdicts.save(self.compile_verdict_key(), verdict)
        except Exception as exc:  # noqa: BLE001 - the run goes on; the next big run measures again
            progress.warning(f"Could not keep the compile verdict ({_first_line(exc)}).")
        progress.info(f"Measured on this machine, {verdict.describe()}: "
                      f"{'compiling' if verdict.compile else 'not compiling'} the mask decoder.")
        return verdict

    def _time_batch(self, batch, progress) -> float:
        """Milliseconds per box decoding ``batch`` (boxes, regions)."""
        from time import perf_counter

        progress.check_cancelled()
        t0 = perf_counter()
        self.decode(*batch)
        return 1000.0 * (perf_counter() - t0) / len(batch[0])

    @contextlib.contextmanager
    def _eager(self):
        """The eager decoder for a while (timed between compiled batches), then the compiled one again."""
        compiled = getattr(self.decoder, "_compiled_transformer", None)
        self.decoder.uncompile()
        try:
            yield
        finally:
            if compiled is not None:
                self.decoder._compiled_transformer = compiled

    def _precision(self):
        """Autocast to the reduced precision in use (weights stay fp32; fp32-sensitive ops stay fp32); fp32 on
        CUDA without TensorFloat-32 (:func:`.devices.precision_context`)."""
        return precision_context(self._torch, self.device, self.precision)

    def encode(self, frame: np.ndarray) -> None:
        with self._torch.inference_mode(), self._precision():
            # segment-anything's encoder makes some tensors without a device (get_rel_pos): a default device
            # set elsewhere in the process (another plugin) must not reach them
            with self._torch.device(self.device):
                self.predictor.set_image(frame, image_format="RGB")
            self._window_to_decoder()

    @property
    def embedding(self) -> Dict[str, np.ndarray]:
        """The current window's image embedding: ``image_embeddings`` float32 (1, 256, 64, 64) (and what else
        the family's decoder takes, see :meth:`_window_tensors`)."""
        return {name: tensor.float().cpu().numpy() for name, tensor in self._window_tensors().items()}

    def load_embedding(self, embedding: Dict[str, np.ndarray], frame_shape) -> None:
        """Use a stored embedding (from :attr:`embedding`) for a frame of ``frame_shape`` instead of encoding."""
        torch = self._torch
        self.predictor.reset_image()
        self._set_window_tensors({name: to_device(torch, embedding[name], self.device)
                                  for name in self.window_tensor_names})
        self.predictor.original_size = tuple(frame_shape)
        self.predictor.input_size = tuple(frame_shape)
        self.predictor.is_image_set = True
        with torch.inference_mode(), self._precision():
            self._window_to_decoder()

    def free_cached_memory(self) -> None:
        free_cached_memory(self._torch, self.device)

    def is_out_of_memory(self, error: BaseException) -> bool:
        return is_out_of_memory(self._torch, error)

    def identity(self) -> str:
        """What decides the embedding besides the image: model weights, family (what the embedding holds),
        precision and the kind of device (a bf16 embedding computed on a CPU differs from a GPU's)."""
        return (f"{checkpoint_fingerprint(self.checkpoint)}:{self.family}:{self.model_type}:{self.precision}:"
                f"{device_type(self.device)}")

    def decode(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
               prompts: Optional[Prompts] = None) -> List[BoxLogits]:
        return self.decode_async(boxes, regions, prompts).result()

    def decode_async(self, boxes: np.ndarray, regions: Optional[np.ndarray] = None,
                     prompts: Optional[Prompts] = None) -> PendingLogits:
        torch = self._torch
        prompts = prompts or Prompts(boxes=boxes)
        count = len(boxes)
        size = self.preferred_batch if self.compiled else count  # pad to the one compiled shape

        def tensor(array):
            return None if array is None else to_device(torch, _pad(array, size), self.device)

        box_t = tensor(None if prompts.boxes is None else sam_box_prompt(prompts.boxes))
        points = None
        if prompts.points is not None:
            coords = tensor(sam_point_prompt(prompts.points))
            points = (coords, torch.ones(coords.shape[:2], dtype=torch.int, device=self.device))
        masks = None
        if prompts.polygons is not None:
            grid = self.model.prompt_encoder.mask_input_size[0]
            masks = tensor(sam_mask_prompt(prompts.polygons, grid, self.input_size / grid))
        with torch.inference_mode(), self._precision():
            compile_failed = False
            try:
                batch = self.decoder.decode_async(box_t, regions, self.multimask, count, points, masks)
            except Exception as exc:  # noqa: BLE001 - a failed compilation falls back to the eager decoder
                if not self.compiled or self.is_out_of_memory(exc):
                    raise  # out of memory is the caller's to handle (smaller batches), not a compilation failure
                compile_failed = True
            if compile_failed:  # retried outside the except block, whose traceback holds the failed attempt
                self.decoder.uncompile()
                batch = self.decoder.decode_async(box_t, regions, self.multimask, count, points, masks)
            elif self.compiled:
                self._note_compiled()
        return PendingLogits(lambda: [BoxLogits(grid=grid, origin_x=col * EMBED_CELL, origin_y=row * EMBED_CELL,
                                                cell=LOGIT_CELL, score=score)
                                      for grid, row, col, score in batch.result()])

    def describe(self) -> str:
        if self.model is None:
            return self._description
        compiled = ", compiled decoder" if self.compiled else ""
        precision = ("int8 (image encoder's MLP layers; fp32 elsewhere)" if self.precision == "int8"
                     else self.precision)
        return (f"{FAMILIES[self.family].name} {self.model_type} ({self.checkpoint}) on {device_label(self.device)} "
                f"({self.device_name}), {precision}{compiled}")

"""Which device a model runs on and in which precision: the choice (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
``mps``), checked against what this machine and this torch build can really run, the precision that suits it,
and the context a model computes in. Every backend that uses torch asks here.

A CUDA GPU that ``torch.cuda.is_available()`` reports may still be unusable: the torch build carries kernels
for some compute capabilities only (torch 2.14 with CUDA 13: sm_75 and newer), so on an older card the first
kernel fails with "no kernel image is available". A card is *usable* when its capability is among the build's
architectures (or a PTX target at or below it can be compiled for it) and one tiny operation runs on it.
Under ``auto`` an unusable card means the Apple GPU (``mps``) when there is one, else the CPU, with the reason
said; an explicit ``cuda`` then fails with a message naming the card and the fix. ``cuda`` is the first card
(``cuda:0``); ``cuda:N`` names another.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_PATTERN = r"cuda:\d+"  # a CUDA card by its index, accepted besides DEVICES
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
MPS_NAME = "Apple GPU (mps)"


def is_device(device) -> bool:
    """True for the names :func:`choose_device` takes: one of DEVICES or ``cuda:N``."""
    return device in DEVICES or re.fullmatch(DEVICE_PATTERN, str(device)) is not None


def device_type(device) -> str:
    """The kind of a device name, as ``torch.device(device).type`` gives it: ``"cuda:1"`` -> ``"cuda"``."""
    return str(device).split(":", 1)[0]


def device_index(device) -> int:
    """The card a CUDA device name means: ``"cuda:1"`` -> 1; ``"cuda"`` -> 0 (the first card)."""
    _, _, index = str(device).partition(":")
    return int(index) if index else 0


def device_label(device) -> str:
    """The device as the outputs name it: ``"cuda"`` -> ``"cuda:0"`` (which card), others as they are."""
    return f"cuda:{device_index(device)}" if device_type(device) == "cuda" else str(device)


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # as torch takes it: "cpu", "cuda", "cuda:N" or "mps"
    note: Optional[str] = None  # why ``auto`` did not choose the GPU it found, when it did not
    name: str = ""  # the device's own name, e.g. "NVIDIA GeForce RTX 4090", "Apple GPU (mps)", the CPU model

    @property
    def type(self) -> str:
        return device_type(self.device)


UNKNOWN_CPU = "CPU"  # the CPU's name when the system does not tell it


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo, else the platform's), or "CPU" when neither says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor().strip() or UNKNOWN_CPU


def mps_available(torch) -> bool:
    """True when torch can use an Apple GPU (Metal Performance Shaders)."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except (RuntimeError, AttributeError):
        return False


def _arch_capability(arch: str, prefix: str) -> Optional[Tuple[int, int]]:
    """``"sm_86"`` -> (8, 6), ``"compute_120"`` -> (12, 0); None for another prefix or a variant (``sm_90a``)."""
    digits = arch[len(prefix):]
    if not arch.startswith(prefix) or not digits.isdigit() or len(digits) < 2:
        return None
    return int(digits[:-1]), int(digits[-1])


def _capability_supported(capability: Tuple[int, int], arch_list) -> bool:
    """Kernels for ``sm_XY`` of this major version at or below this minor one (CUDA binaries run on later
    minor versions of their major one: sm_86 kernels on an 8.9 card), or PTX (``compute_XY``) of one at or below
    it."""
    major, minor = tuple(capability)
    sass = [_arch_capability(a, "sm_") for a in arch_list]
    if any(c is not None and c[0] == major and c[1] <= minor for c in sass):
        return True
    ptx = [_arch_capability(a, "compute_") for a in arch_list]
    return any(c is not None and c <= (major, minor) for c in ptx)


def cuda_problem(torch, index: int = 0) -> Optional[str]:
    """None when CUDA device ``index`` can run this torch build's kernels, else why not (one sentence)."""
    if not torch.cuda.is_available():
        return "torch sees no usable CUDA GPU"
    name = torch.cuda.get_device_name(index)
    capability = tuple(torch.cuda.get_device_capability(index))
    arch_list = torch.cuda.get_arch_list()
    if arch_list and not _capability_supported(capability, arch_list):
        return (f"the GPU {name} (compute capability {capability[0]}.{capability[1]}) is not supported by this "
                f"torch {torch.__version__} build, which has kernels for {', '.join(arch_list)}")
    try:
        (torch.ones(1, device=f"cuda:{index}") + 1).cpu()
    except RuntimeError as exc:
        return f"the GPU {name} cannot run torch {torch.__version__}'s kernels ({str(exc).splitlines()[0]})"
    return None


def choose_device(torch, device: str) -> DeviceChoice:
    """``auto`` -> ``cuda`` when the first GPU is usable, else ``mps`` when torch has an Apple GPU, else ``cpu``
    (with the reason when a CUDA GPU was there); ``cuda``/``cuda:N``/``mps`` -> an InputError naming the card
    and the fix when it is not usable."""
    if not is_device(device):
        raise InputError(f"Unknown device '{device}'. Choose one of: auto, cpu, cuda, cuda:N (N: the card's "
                         "number, from 0), mps.")
    if device == "cpu":
        return DeviceChoice("cpu", name=cpu_name())
    if device == "mps":
        if not mps_available(torch):
            raise InputError("Device 'mps' was asked for, but torch sees no usable Apple GPU (mps needs a Mac with "
                             "Apple silicon, macOS 12.3 or newer and a torch build with MPS). Use device 'auto' or "
                             "'cpu'.")
        return DeviceChoice("mps", name=MPS_NAME)
    if device == "auto":
        problem = cuda_problem(torch)
        if problem is None:
            return DeviceChoice("cuda", name=torch.cuda.get_device_name(0))
        note = None if not torch.cuda.is_available() else problem
        if mps_available(torch):
            return DeviceChoice("mps", note and f"Running on the Apple GPU (mps): {note}.", MPS_NAME)
        return DeviceChoice("cpu", note and f"Running on the CPU: {note}.", cpu_name())
    index = device_index(device)
    if torch.cuda.is_available() and index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        seen = (f"{count} CUDA GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})" if count > 1
                else "one CUDA GPU (cuda:0)" if count == 1 else "no CUDA GPU")
        raise InputError(f"Device '{device}' was asked for, but torch sees {seen}. Give a card number below "
                         f"{count}, or device 'auto'.")
    problem = cuda_problem(torch, index)
    if problem is not None:
        raise InputError(f"Device '{device}' was asked for, but {problem}. Use device 'auto' or 'cpu', or install "
                         "a torch build for this card (see pytorch.org: an older CUDA build supports older cards).")
    return DeviceChoice(device, name=torch.cuda.get_device_name(index))


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def backend_notes(device_note: Optional[str], asked_precision: str,
                  precision_note: Optional[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(warnings, remarks) a torch backend tells the user once made: a device or precision other than asked is
    a warning; what ``auto`` precision chose and why is a remark (information, nothing is wrong)."""
    chose = asked_precision == "auto"
    warnings = tuple(n for n in (device_note, None if chose else precision_note) if n)
    return warnings, ((precision_note,) if chose and precision_note else ())


def resolve_precision(precision: str, device: str, torch=None) -> Tuple[str, Optional[str]]:
    """(precision, note): ``auto`` -> fp16 on CUDA, fp32 on an Apple GPU (mps), bf16 on a CPU that has bf16
    instructions, else fp32 (on a CPU the note says which and why). bf16 asked for on a GPU below compute
    capability 8.0 would run emulated (very slowly): fp16 then, said in the note. fp16 needs a GPU; bf16 is
    refused on mps; int8 (the image encoder's MLP layers in int8, :func:`int8_encoder`) runs on the CPU only."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}.")
    kind = device_type(device)
    if precision == "auto":
        if kind == "cuda":
            return "fp16", None
        if kind == "mps":
            return "fp32", None
        if cpu_supports_bf16():
            return "bf16", "Precision auto: bf16 (this CPU has bf16 instructions)."
        # Not torch's int8: 1.1-1.2x faster than fp32 as an AVX2 CPU (FBGEMM without VNNI), 1.4x with VNNI, its
        # embedding within 2.4 % of fp32's with random weights only; trained ViTs carry outlier activations that
        # per-call int8 quantization rounds worse. ONNX Runtime's int8 encoder is the fast int8 (bench figure 8).
        return "fp32", ("Precision auto: fp32 (this CPU has no bf16 instructions). To encode about 2x faster, "
                        "run an int8 ONNX pair (export-onnx --quantize int8; embedding within ~3 % of fp32).")
    if precision == "int8" and kind != "cpu":
        raise InputError(f"Precision int8 runs on the CPU only, not on device '{device}'. Use device 'cpu' for "
                         "int8, or precision auto (fp16 on CUDA, fp32 on mps).")
    if precision == "fp16" and kind == "cpu":
        raise InputError("Precision fp16 needs a CUDA GPU or an Apple GPU (mps); on the CPU use bf16, int8 or fp32.")
    if precision == "bf16" and kind == "mps":
        raise InputError("Precision bf16 is not supported on the Apple GPU (mps); use fp16 or fp32.")
    if precision == "bf16" and kind == "cuda" and torch is not None:
        index = device_index(device)
        capability = tuple(torch.cuda.get_device_capability(index))
        if capability < (8, 0):
            return "fp16", (f"Precision bf16 has no hardware support on {torch.cuda.get_device_name(index)} "
                            f"(compute capability {capability[0]}.{capability[1]}, bf16 needs 8.0) and would run "
                            "emulated; using fp16.")
    return precision, None


@contextlib.contextmanager
def _tf32_off(torch):
    """TensorFloat-32 off for CUDA matrix products and cuDNN convolutions, the previous state restored after."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        before = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # TF32 was set through torch's per-operation API, where the old flags cannot be read
        before = None
    if before is not None:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = before
        return
    settings = (matmul, cudnn.conv, cudnn.rnn)
    saved = [s.fp32_precision for s in settings]
    for s in settings:
        s.fp32_precision = "ieee"
    try:
        yield
    finally:
        for s, value in zip(settings, saved):
            s.fp32_precision = value


def to_device(torch, array, device: str):
    """A numpy array as a tensor on ``device``. On CUDA through pinned memory without waiting: a plain copy from
    pageable memory first waits for all the work queued on the device (the batch being decoded)."""
    tensor = torch.as_tensor(array, device="cpu")
    if device_type(device) == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def precision_context(torch, device: str, precision: str):
    """The context a model computes in: autocast to bf16/fp16 (weights stay fp32, fp32-sensitive operations
    stay fp32); fp32 on CUDA with TensorFloat-32 off, so fp32 means full fp32 matrix products. int8: fp32 (the
    quantized layers are int8 by themselves)."""
    kind = device_type(device)
    if precision in ("fp32", "int8"):
        return _tf32_off(torch) if kind == "cuda" else contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)



# The Linear layers int8 computes: the MLPs of segment-anything's ViT blocks (lin1, lin2) and of TinyViT's (fc1,
# fc2), two thirds of a ViT's linear work. Measured (vit_b, random weights, one 1024² window, bench figure 7g, fp32
# with the lean attention): every MLP in int8 1.43x faster than fp32 as an AVX2 CPU (9.7 -> 6.8 s), 1.49x natively;
# with the first two blocks' in fp32 (below) 1.07-1.18x and 1.38-1.48x in two later runs (FBGEMM's int8 on AVX2,
# without VNNI, gains little over MKL's fp32). All Linear layers in int8
# (attention's qkv and projection too) were no faster (CPU seconds, best of 3: fp32 24.1, MLPs 18.1, all 18.5) and
# further off (4.2 % at most, 3.0 % on average).
INT8_LAYERS = ("lin1", "lin2", "fc1", "fc2")
# The MLPs of a ViT's first blocks stay fp32: their rounding errors grow through every later block. vit_b's
# embedding error against fp32 with all MLPs in int8 / the first two blocks' in fp32 (random weights): as an AVX2
# CPU 3.7 % / 2.4 % at most, 2.2 % / 1.8 % on average; natively (AVX-512) 3.0 % / 2.6 % and 2.2 % / 1.9 %. Only the
# first block in fp32: 3.0 % / 2.9 % at most.
FP32_BLOCKS = 2


def _in_first_blocks(name: str) -> bool:
    """True for a module of blocks 0 .. FP32_BLOCKS - 1 of a ViT (segment-anything's names: ``blocks.N.``)."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() and int(parts[1]) < FP32_BLOCKS


def int8_encoder(torch, encoder, layers=INT8_LAYERS):
    """``encoder`` (changed in place) with its MLP Linear layers (names ending in one of ``layers``) computing in
    int8, but for a ViT's first :data:`FP32_BLOCKS` blocks: weights quantized once (per output channel), activations
    per call (torch's dynamic quantization). Attention, convolutions and norms stay fp32."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in encoder.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in layers
            and not _in_first_blocks(name)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its eager-mode quantization as deprecated; it is still there
        return quantize_dynamic(encoder, spec, dtype=torch.qint8, inplace=True)


def free_cached_memory(torch, device: str) -> None:
    """Give the memory torch keeps cached on ``device`` back to the driver (CUDA, mps; nothing on a CPU)."""
    kind = device_type(device)
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def is_out_of_memory(torch, error: BaseException) -> bool:
    """True when ``error`` means a torch device ran out of memory."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()

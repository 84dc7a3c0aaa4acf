"""Which device a model runs on and in which precision: the choice (``auto``, ``cpu``, ``cuda``), checked against
what this machine and this torch build can really run, and the precision that suits it. Every backend that
uses torch asks here.

A CUDA GPU that ``torch.cuda.is_available()`` reports may still be unusable: the torch build carries kernels
for some compute capabilities only (torch 2.14 with CUDA 13: sm_75 and newer), so on an older card the first
kernel fails with "no kernel image is available". A card is *usable* when its capability is among the build's
architectures (or a PTX target at or below it can be compiled for it) and one tiny operation runs on it.
Under ``auto`` an unusable card means the CPU, with the reason said; an explicit ``cuda`` then fails with a
message naming the card and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda"
    note: Optional[str] = None  # why ``auto`` did not choose the GPU it found, when it did not


def _capability_supported(capability: Tuple[int, int], arch_list) -> bool:
    """Kernels for ``sm_XY`` of exactly this capability, or PTX (``compute_XY``) of one at or below it."""
    major, minor = capability
    if f"sm_{major}{minor}" in arch_list:
        return True
    ptx = [a for a in arch_list if a.startswith("compute_")]
    return any((int(a[8:-1]), int(a[-1])) <= (major, minor) for a in ptx if a[8:].isdigit())


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
    """``auto`` -> ``cuda`` when the GPU is usable, else ``cpu`` (with the reason when a GPU was there);
    ``cuda`` -> an InputError naming the card and the fix when it is not usable."""
    if device not in DEVICES:
        raise InputError(f"Unknown device '{device}'. Choose one of: {', '.join(DEVICES)}.")
    if device == "cpu":
        return DeviceChoice("cpu")
    problem = cuda_problem(torch)
    if problem is None:
        return DeviceChoice("cuda")
    if device == "cuda":
        raise InputError(f"Device 'cuda' was asked for, but {problem}. Use device 'auto' or 'cpu', or install a "
                         "torch build for this card (see pytorch.org: an older CUDA build supports older cards).")
    return DeviceChoice("cpu", None if not torch.cuda.is_available() else f"Running on the CPU: {problem}.")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str, torch=None) -> Tuple[str, Optional[str]]:
    """(precision, note): ``auto`` -> fp16 on CUDA, bf16 on a CPU that has bf16 instructions, else fp32.
    bf16 asked for on a GPU below compute capability 8.0 would run emulated (very slowly): fp16 then, said in
    the note."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device == "cuda":
            return "fp16", None
        return ("bf16" if cpu_supports_bf16() else "fp32"), None
    if precision == "fp16" and device == "cpu":
        raise InputError("Precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32.")
    if precision == "bf16" and device == "cuda" and torch is not None:
        capability = tuple(torch.cuda.get_device_capability(0))
        if capability < (8, 0):
            return "fp16", (f"Precision bf16 has no hardware support on {torch.cuda.get_device_name(0)} (compute "
                            f"capability {capability[0]}.{capability[1]}, bf16 needs 8.0) and would run emulated; "
                            "using fp16.")
    return precision, None

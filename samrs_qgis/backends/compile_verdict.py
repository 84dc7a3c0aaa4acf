"""Whether a compiled mask decoder is faster on this machine, as measured here: the verdict store.

``torch.compile`` fuses the decoder's element-wise work. On a CPU with AVX-512 that made decoding about
2x faster per box; on a 2-core AVX2 CPU the compiled decoder was 3.4-3.7x *slower*. So the engine does
not guess: the first big run on a machine times the eager decoder against the compiled one on its own
boxes and keeps the verdict here, one small JSON file per key, in the engine's cache folder. The key
is everything that changes the answer: the machine (CPU model, the instruction set torch uses, core
count; the GPU's name on CUDA), the torch version, device, precision, model type and batch size.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional

from ..embedding_cache import cache_root
from .devices import UNKNOWN_CPU, cpu_name

MEASURE_MIN_BOXES = 2000  # boxes in a run from which measuring (a first compile, ~20 s) pays off
MEASURE_BATCHES = 6  # batches timed per decoder (after a warm-up batch; the compiled one's warm-up compiles)
MIN_SPEEDUP = 1.10  # eager / compiled time per box from which the compiled decoder counts as faster
VERDICT_FOLDER = "compile-verdicts"


@dataclass(frozen=True)
class CompileVerdict:
    """What timing the eager against the compiled decoder found. ``compile`` is the decision."""

    compile: bool
    reason: str  # one line: why (the timings, or why compiling failed)
    eager_ms: Optional[float] = None  # per box, warm-up excluded
    compiled_ms: Optional[float] = None  # per box, warm-up excluded; None: compiling failed
    compile_seconds: Optional[float] = None  # the first compiled call (compiling included)
    boxes: int = 0  # boxes timed per decoder
    measured: str = ""  # when, ISO 8601 UTC

    @property
    def speedup(self) -> Optional[float]:
        """Eager time / compiled time per box (> 1: compiled is faster)."""
        if not self.eager_ms or not self.compiled_ms:
            return None
        return self.eager_ms / self.compiled_ms

    def describe(self) -> str:
        return f"{'compiled' if self.compile else 'eager'} decoder: {self.reason}"


def decide(eager_ms: float, compiled_ms: float, compile_seconds: float, boxes: int) -> CompileVerdict:
    """The verdict from timings: compiled iff it is at least :data:`MIN_SPEEDUP` times faster per box."""
    speedup = eager_ms / compiled_ms
    faster = speedup >= MIN_SPEEDUP
    relation = f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"
    reason = (f"compiled {compiled_ms:.1f} ms/box, eager {eager_ms:.1f} ms/box ({relation}; compiling took "
              f"{compile_seconds:.1f} s)" + ("" if faster else f"; not {MIN_SPEEDUP:.2f}x faster"))
    return CompileVerdict(compile=faster, reason=reason, eager_ms=eager_ms, compiled_ms=compiled_ms,
                          compile_seconds=compile_seconds, boxes=boxes, measured=_now())


def failed(reason: str, eager_ms: Optional[float] = None, compile_seconds: Optional[float] = None,
           boxes: int = 0) -> CompileVerdict:
    """The verdict when compiling failed (e.g. no C++ compiler): eager, with why."""
    return CompileVerdict(compile=False, reason=f"compiling failed: {reason}", eager_ms=eager_ms,
                          compile_seconds=compile_seconds, boxes=boxes, measured=_now())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def machine(torch, device: str) -> Dict[str, object]:
    """What about this machine decides the verdict: the CPU model, the instruction set torch's CPU kernels
    use (e.g. AVX512, AVX2), the core count, on CUDA the GPU; the host name when the CPU model is unknown."""
    cpu = cpu_name()
    summary: Dict[str, object] = {"cpu": cpu, "isa": _cpu_capability(torch), "cores": os.cpu_count() or 0}
    if cpu == UNKNOWN_CPU:
        summary["host"] = socket.gethostname()
    if device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name(device)
    return summary


def _cpu_capability(torch) -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch: no summary, the CPU model still identifies the machine
        return ""


def verdict_key(torch, device: str, precision: str, model_type: str, batch: int) -> Dict[str, object]:
    """The key a verdict is kept under (see the module docstring)."""
    return {"machine": machine(torch, device), "torch": str(torch.__version__), "device": device,
            "precision": precision, "model_type": model_type, "batch": int(batch)}


def verdict_path(key: Dict[str, object], folder: Optional[str] = None) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return os.path.join(folder or os.path.join(cache_root(), VERDICT_FOLDER), f"{digest}.json")


def load(key: Dict[str, object], folder: Optional[str] = None) -> Optional[CompileVerdict]:
    """The verdict kept for ``key``; None when there is none (or it cannot be read: measured again)."""
    try:
        with open(verdict_path(key, folder), encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("key") != key:
            return None
        fields = stored["verdict"]
        return CompileVerdict(**{k: fields[k] for k in CompileVerdict.__dataclass_fields__ if k in fields})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(key: Dict[str, object], verdict: CompileVerdict, folder: Optional[str] = None) -> str:
    """Keep ``verdict`` for ``key`` (written atomically); returns the file's path."""
    from ..transaction import write_text_files

    path = verdict_path(key, folder)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps({"key": key, "verdict": asdict(verdict)}, indent=1, ensure_ascii=False)
    write_text_files([(path, text + "\n")], "compile verdict")
    return path

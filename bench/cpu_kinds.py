#!/usr/bin/env python3
"""Kinds of CPU for the bench: a measurement run in a child process as this CPU is, and as a CPU with AVX2 only.

Most users' CPUs have AVX2 but neither AVX-512 nor bf16 instructions. In a child process started with
:data:`AVX2_ENV`, torch's own kernels (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``, which does torch's
bf16 matrix products), MKL (``MKL_ENABLE_INSTRUCTIONS``, fp32 matrix products) and FBGEMM
(``FBGEMM_ENABLE_INSTRUCTIONS``, int8 matrix products) use their AVX2 code only, as on such a CPU; :func:`probe`
checks that they did (torch's reported capability; bf16 matrix products no longer faster than fp32).

    .venv/bin/python bench/cpu_kinds.py            runs the probe and the encoder measurement both ways

Measurements (run in the child, reached by name): ``probe`` and ``encoder`` (vit_b with random weights, seeded,
on one 1024x1024 window: fp32 with segment-anything's attention and with the engine's lean attention, int8,
each timed alternately, best of ``reps``; the embeddings' relative errors against fp32; peak RSS of a child
that encodes one way only, ``encoder_rss``; ``decoder``: the engine's fp32 decoder against segment-anything's
``predict_torch``, milliseconds per box).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
KINDS = ("native", "avx2")
WINDOW = 1024


def cpu_features() -> list:
    """The CPU features of :data:`FEATURES` that /proc/cpuinfo lists."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), set())
    except OSError:
        flags = set()
    return [name for name in FEATURES if name in flags]


def run(measurement: str, args: dict = None, kind: str = "native", timeout: float = 1800) -> dict:
    """``measurement`` run in a fresh child process, as this CPU (``native``) or as an AVX2 CPU (``avx2``)."""
    env = dict(os.environ)
    for name in AVX2_ENV:
        env.pop(name, None)
    if kind == "avx2":
        env.update(AVX2_ENV)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", measurement,
                           json.dumps(args or {})], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=os.path.dirname(os.path.abspath(os.sep)))
    if proc.returncode:
        raise RuntimeError(f"{measurement} ({kind}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- measurements (in the child) ------------------------------------------------------------------
def _torch():
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _engine():
    """The engine package (through bench.py's temporary link: the repository root stays off sys.path)."""
    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    import samrs_qgis

    return samrs_qgis


def _peak_mb() -> float:
    """This process's peak RSS in MiB: VmHWM (ru_maxrss carries the parent's peak at fork over an exec)."""
    sys.path.insert(0, str(HERE))
    import bench

    return bench.vm_hwm_mb()


def probe(args: dict) -> dict:
    """What torch runs with here: its CPU capability and matrix products fp32 vs bf16 (GFLOP/s, best of 3)."""
    torch = _torch()
    n = int(args.get("n", 2048))
    speeds = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        speeds[name] = 2 * n ** 3 / best / 1e9
    return {"capability": torch.backends.cpu.get_cpu_capability(), "fp32_gflops": speeds["fp32"],
            "bf16_gflops": speeds["bf16"], "threads": torch.get_num_threads()}


def _frame():
    """A synthetic 1024x1024 RGB frame: smooth ground, noise and painted rectangles (seeded)."""
    import numpy as np

    rng = np.random.default_rng(7)
    x = np.arange(WINDOW)
    ground = 96 + 24 * np.sin(x / 97.0)[None, :] + 20 * np.cos(x / 131.0)[:, None]
    frame = np.stack([ground + s for s in (0, 12, -20)], axis=-1) + rng.integers(0, 8, (WINDOW, WINDOW, 3))
    for _ in range(48):
        x0, y0 = rng.integers(0, WINDOW - 200, 2)
        w, h = rng.integers(20, 200, 2)
        frame[y0:y0 + h, x0:x0 + w] = rng.integers(20, 236, 3)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _encoder_input(torch, model):
    from segment_anything.utils.transforms import ResizeLongestSide

    frame = ResizeLongestSide(WINDOW).apply_image(_frame())
    return model.preprocess(torch.as_tensor(frame).permute(2, 0, 1)[None].float())


def _vit_b(torch):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    return sam_model_registry["vit_b"]().eval()


def _variant(torch, model, name: str, copy: bool = True):
    """The image encoder of ``model`` as variant ``name`` computes: fp32 (segment-anything's attention), fp32_lean,
    int8 (lean attention, Linear layers quantized as the engine's int8 precision does; int8_all: all of them); a
    copy, or ``model``'s own encoder changed."""
    import copy as copying

    from samrs_qgis.backends import devices, lean_attention

    encoder = copying.deepcopy(model.image_encoder) if copy else model.image_encoder
    if name in ("fp32_lean", "int8", "int8_all"):
        lean_attention.apply(encoder)
    if name == "int8":
        encoder = devices.int8_encoder(torch, encoder)
    if name == "int8_all":  # every Linear layer, attention's too
        encoder = devices.int8_encoder(torch, encoder, layers=("qkv", "proj", "lin1", "lin2"))
    return encoder


def encoder(args: dict) -> dict:
    """Seconds per 1024x1024 window of each variant in ``args["variants"]`` (alternating, best of ``reps``) and
    each embedding's error against the first variant's (max |a-b| / max |a|, mean |a-b| / mean |a|)."""
    torch = _torch()
    _engine()
    variants = args.get("variants", ["fp32", "fp32_lean", "int8"])
    reps = int(args.get("reps", 2))
    model = _vit_b(torch)
    x = _encoder_input(torch, model)
    encoders = {name: _variant(torch, model, name) for name in variants}
    del model
    seconds = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    outputs = {}
    with torch.inference_mode():
        for _ in range(reps):
            for name in variants:
                t0, c0 = time.perf_counter(), time.process_time()
                outputs[name] = encoders[name](x)
                seconds[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    ref = outputs[variants[0]].float()
    errors = {}
    for name in variants[1:]:
        diff = (outputs[name].float() - ref).abs()
        errors[name] = {"max": float(diff.max() / ref.abs().max()), "mean": float(diff.mean() / ref.abs().mean())}
    return {"seconds": {k: min(v) for k, v in seconds.items()}, "all_seconds": seconds,
            "cpu_seconds": {k: min(v) for k, v in cpu.items()}, "errors": errors,
            "capability": torch.backends.cpu.get_cpu_capability()}


def encoder_rss(args: dict) -> dict:
    """Peak RSS of this process encoding one window as ``args["variant"]`` (model built, one encode)."""
    torch = _torch()
    _engine()
    model = _vit_b(torch)
    x = _encoder_input(torch, model)
    enc = _variant(torch, model, args["variant"], copy=False)
    del model
    before = _peak_mb()
    with torch.inference_mode():
        t0 = time.perf_counter()
        enc(x)
        seconds = time.perf_counter() - t0
    return {"peak_mb": _peak_mb(), "before_mb": before, "seconds": seconds}


def decoder(args: dict) -> dict:
    """Milliseconds per box in fp32 (what ``auto`` runs on a CPU without bf16) of the engine's decoder
    (``SamBackend.decode``, its batches, each box's neighbourhood region) and of segment-anything's
    ``SamPredictor.predict_torch`` as SAMRS ran it (batches of 20, full-window masks to numpy), alternating, best
    of ``reps``; 48 boxes of 20-200 px on one window, the backend made as a run makes it. The decoder is SAM's (the same for every ViT size); the image
    encoder is a small one, as its cost is not measured here."""
    torch = _torch()
    _engine()
    import tempfile

    import numpy as np
    from segment_anything.build_sam import _build_sam

    import bench
    from samrs_qgis.backends import make_backend
    from samrs_qgis.settings import SegmentOptions

    torch.manual_seed(0)
    model = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1],
                       checkpoint=None)
    reps = int(args.get("reps", 3))
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "sam_small_encoder.pth")
        torch.save(model.state_dict(), path)
        backend = make_backend(SegmentOptions(checkpoint=path, device="cpu", precision="fp32"))  # as a run makes it
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, WINDOW - 200, (48, 2))
    boxes = np.hstack([corners, corners + rng.uniform(20, 200, (48, 2))])
    regions = bench.neighbourhood_regions(boxes)
    frame = _frame()
    backend.encode(frame)
    predictor = backend.predictor
    with torch.inference_mode():
        predictor.set_image(frame)
    ours, peers = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        bench.decode_all(backend, boxes, regions)
        ours.append((time.perf_counter() - t0) / len(boxes))
        peers.append(bench.predict_torch_per_box(torch, predictor, boxes))
    return {"ours_ms": 1000 * min(ours), "peers_ms": 1000 * min(peers), "batch": backend.preferred_batch,
            "capability": torch.backends.cpu.get_cpu_capability()}


MEASUREMENTS = {"probe": probe, "encoder": encoder, "encoder_rss": encoder_rss, "decoder": decoder}


# -- bench figures (in the bench's process: every measurement in a child) --------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def figure4c(run_4096: dict) -> tuple:
    """Figure 4c's line and verdict: ``run_4096`` is bench's memory child for vit_b fp32 on the 4096² raster;
    here one 1024² encode in a fresh process with segment-anything's attention and with the lean one."""
    full = run("encoder_rss", {"variant": "fp32"})
    lean = run("encoder_rss", {"variant": "fp32_lean"})
    gb = run_4096["maxrss_mb"] * 1024 * 1024 / 1e9
    line = (f"Fig 4c peak RSS, vit_b fp32 (forced, lean attention) on the 4096² raster, {run_4096['boxes']} boxes in "
            f"{run_4096['windows']} windows: {gb:.2f} GB ({run_4096['maxrss_mb']:.0f} MiB), run "
            f"{run_4096['wall']:.1f} s | one 1024² fp32 encode, fresh process each: segment-anything's attention "
            f"{full['peak_mb']:.0f} MiB peak, lean {lean['peak_mb']:.0f} MiB (model and input before the encode "
            f"{full['before_mb']:.0f} / {lean['before_mb']:.0f}) | target < 3 GB {verdict(gb < 3.0)}")
    return line, gb < 3.0


def figure7g(reps: int = 2, variants=("fp32", "fp32_lean", "int8")) -> tuple:
    """Figure 7g's lines and verdict: the encoder in fp32 and torch's int8 on this CPU and on it as an AVX2 CPU
    (children of each kind). The verdict says whether the AVX2 simulation took effect (figures 2f and 8u rely
    on it); int8's speed target is figure 8's."""
    probes = {kind: run("probe", kind=kind) for kind in KINDS}
    results = {kind: run("encoder", {"reps": reps, "variants": list(variants)}, kind=kind) for kind in KINDS}
    simulated = probes["avx2"]["capability"] == "AVX2"
    lines = [f"Fig 7g CPU features found: {', '.join(cpu_features()) or 'none of ' + ', '.join(FEATURES)}; torch "
             f"{probes['native']['capability']} natively, {probes['avx2']['capability']} under the AVX2 simulation "
             f"({', '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}); 2048² matmul fp32/bf16 "
             f"{probes['native']['fp32_gflops']:.0f}/{probes['native']['bf16_gflops']:.0f} GFLOP/s natively, "
             f"{probes['avx2']['fp32_gflops']:.0f}/{probes['avx2']['bf16_gflops']:.1f} simulated (no bf16 "
             "instructions there: no bf16 figure applies to that kind of CPU)"]
    for kind in KINDS:
        r = results[kind]
        sec, cpu, err = r["seconds"], r["cpu_seconds"], r["errors"]["int8"]
        speedup = sec["fp32_lean"] / sec["int8"]  # the engine's fp32 (lean attention) against its int8
        cpu_speedup = cpu["fp32_lean"] / cpu["int8"]
        name = "natively" if kind == "native" else "AVX2 simulation"
        # torch's int8 and ONNX Runtime's are both measured; ONNX Runtime's is the faster on both kinds of CPU
        # (figure 8: about 2x over torch fp32), so the int8 target is figure 8's and this line informs
        target = "torch's int8, no target: the int8 target is figure 8's (ONNX Runtime's int8, the faster)"
        lines.append(
            f"Fig 7g encoder per 1024² window, vit_b random weights, {name} ({r['capability']}): fp32 / int8 "
            f"{speedup:.2f} (CPU time {cpu_speedup:.2f}) | fp32 {sec['fp32_lean']:.2f} s (lean attention; "
            f"segment-anything's {sec['fp32']:.2f} s), int8 {sec['int8']:.2f} s (best of {reps}, alternating; CPU s "
            f"{cpu['fp32_lean']:.1f} / {cpu['fp32']:.1f} / {cpu['int8']:.1f}); embedding vs fp32: lean max "
            f"{r['errors']['fp32_lean']['max']:.1e}, int8 max {100 * err['max']:.1f} %, mean "
            f"{100 * err['mean']:.1f} % | {target}")
    ok = simulated
    if not simulated:
        lines.append("Fig 7g the AVX2 simulation did not take effect (torch reports "
                     f"{probes['avx2']['capability']}): its figures are this CPU's | MISS")
    return lines, ok


def figure2f(post_ms: float, reps: int = 3) -> tuple:
    """Figure 2f's line and verdict: figure 2's comparison in fp32, the precision of a CPU without bf16: ours
    (the engine's decoder, plus figure 2's post-processing per box, ``post_ms``) against predict_torch, natively
    and as an AVX2 CPU (children of each kind)."""
    results = {kind: run("decoder", {"reps": reps}, kind=kind) for kind in KINDS}
    parts, ok = [], results["avx2"]["capability"] == "AVX2"
    for kind in KINDS:
        r = results[kind]
        ratio = r["peers_ms"] / (r["ours_ms"] + post_ms)
        ok = ok and ratio >= 5.0
        parts.append((kind, ratio, r))
    ratios = ", ".join(f"{'natively' if k == 'native' else 'as an AVX2 CPU'} ({r['capability']}) {ratio:.2f}"
                       for k, ratio, r in parts)
    detail = "; ".join(f"{k}: ours {r['ours_ms']:.1f} ms/box decode (batch {r['batch']}) + {post_ms:.1f} "
                       f"post-process, predict_torch {r['peers_ms']:.1f} ms/box" for k, _, r in parts)
    line = (f"Fig 2f per-box cost in fp32 (auto's precision without bf16), 48 boxes 20-200 px on one 1024² window: "
            f"predict_torch/ours {ratios} | {detail} (best of {reps}, alternating; post-process from figure 2) | "
            f"target >= 5x cheaper on both kinds {verdict(ok)}")
    return line, ok


def main():
    line, _ = figure2f(2.3)
    print(line)
    lines, _ = figure7g()
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        result = MEASUREMENTS[sys.argv[2]](json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
        print(json.dumps(result), flush=True)
    else:
        main()

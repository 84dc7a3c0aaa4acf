"""Figure 8: the SAM families and runtimes the engine runs, side by side on one window.

Each model (random weights, seeded, saved as its family's files are) is measured in a fresh child process that
makes its backend as a run does (``make_backend`` with ``device="cpu"``), encodes the window twice and decodes
the boxes twice over their regions: encoder seconds and decoder ms/box are the best of 2, the peak RSS is the
child's VmHWM (model loaded, window encoded, boxes decoded), as figure 4 measures memory. ONNX pairs are
exported once per run with the engine's ``export_onnx``. The ONNX int8 encoders' embeddings are compared with
fp32 ones (max |a-b| / max |a|): vit_b's with its ONNX fp32 pair's, Hiera-tiny's with its torch model's. The
light models' targets are judged on each one's fastest path within the int8 error bound, and the matrix-product
FLOPs of each encoder are counted beside them (the ratio a runtime of the same efficiency would give).

Where :mod:`cpu_kinds` is beside this file, the encoder ratios are measured again in children started as an
AVX2-only CPU (no AVX-512, no bf16): torch's kernels, oneDNN, MKL and FBGEMM use their AVX2 code there, while
ONNX Runtime chooses its kernels from the CPU itself (no setting caps it), so ratios of an ONNX model to a
torch one measured that way favour the ONNX model.

    .venv/bin/python bench/families.py          the figure alone (3 minutes or more on 2 cores)
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPS = 2
TARGET_INT8_SPEEDUP = 1.5
TARGET_INT8_ERROR = 0.03
TARGET_HIERA_T = 5.0
TARGET_MOBILE_SAM = 20.0
MOBILE_SAM_TINY_VIT = dict(embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                           window_sizes=[7, 7, 14, 7])
SAM2_CONFIGS = {"hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml", "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml"}

try:  # beside this file when the bench measures kinds of CPU
    import cpu_kinds
except ImportError:  # pragma: no cover - the AVX2 ratios are then not measured
    cpu_kinds = None

# key -> label; the order of the report
MODELS = {"vit_b": "SAM vit_b torch fp32", "onnx_fp32": "SAM vit_b ONNX fp32", "onnx_int8": "SAM vit_b ONNX int8",
          "hq_vit_b": "HQ-SAM vit_b torch fp32", "hiera_t": "SAM 2.1 hiera_t torch fp32",
          "hiera_s": "SAM 2.1 hiera_s torch fp32", "hiera_t_int8": "SAM 2.1 hiera_t ONNX int8",
          "mobile_sam": "MobileSAM ONNX fp32"}
AVX2_MODELS = ("vit_b", "onnx_int8", "hiera_t", "hiera_t_int8", "mobile_sam")  # what the AVX2 targets need
# Encoders whose matrix-product FLOPs are counted (torch's FlopCounterMode, one 1024² window): the bound a same-
# efficiency runtime puts on the ratios of the light encoders to vit_b.
FLOP_MODELS = ("vit_b", "hiera_t", "mobile_sam")


# -- model files ----------------------------------------------------------------------------------
def _quiet_imports():
    with warnings.catch_warnings():  # TinyViT imports timm's deprecated paths
        warnings.simplefilter("ignore")
        import segment_anything_hq  # noqa: F401
        from segment_anything_hq.modeling import TinyViT  # noqa: F401


def save_mobile_sam(torch, path):
    """A random-weight MobileSAM (TinyViT of the published size + segment-anything's prompt encoder and decoder)."""
    _quiet_imports()
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from segment_anything_hq.modeling import TinyViT

    torch.manual_seed(0)
    model = Sam(image_encoder=TinyViT(img_size=1024, in_chans=3, num_classes=1000, **MOBILE_SAM_TINY_VIT),
                prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                             input_image_size=(1024, 1024), mask_in_chans=16),
                mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                    depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
                    iou_head_hidden_dim=256),
                pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    torch.save(model.state_dict(), path)
    return str(path)


def save_sam_hq(torch, path):
    _quiet_imports()
    import segment_anything_hq

    torch.manual_seed(0)
    torch.save(segment_anything_hq.sam_model_registry["vit_b"]().state_dict(), path)
    return str(path)


def save_sam2(torch, path, size):
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2(SAM2_CONFIGS[size], ckpt_path=None, device="cpu", apply_postprocessing=False)
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def model_files(torch, work: Path, vit_b: str, log) -> dict:
    """key -> model file or ONNX folder of every model of :data:`MODELS` (ONNX pairs exported here)."""
    from samrs_qgis.onnx_export import export_onnx

    files = {"vit_b": vit_b}
    t0 = time.perf_counter()
    files["hq_vit_b"] = save_sam_hq(torch, work / "sam_hq_vit_b_random.pth")
    for size in SAM2_CONFIGS:
        files[size] = save_sam2(torch, work / f"sam2.1_{size}_random.pt", size)
    mobile = save_mobile_sam(torch, work / "mobile_sam_random.pt")
    log(f"  random-weight HQ-SAM, SAM 2.1 and MobileSAM files written in {time.perf_counter() - t0:.1f} s")
    for key, source in (("onnx_fp32", vit_b), ("mobile_sam", mobile)):
        t0 = time.perf_counter()
        files[key] = str(work / f"onnx_{key}")
        export_onnx(source, files[key])
        log(f"  exported {MODELS[key]} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    files["onnx_int8"] = quantized_pair(files["onnx_fp32"], str(work / "onnx_onnx_int8"))
    log(f"  quantized {MODELS['onnx_int8']} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    files["hiera_t_int8"] = str(work / "onnx_hiera_t_int8")
    export_onnx(files["hiera_t"], files["hiera_t_int8"], quantize="int8")
    files["mobile_sam_torch"] = mobile
    log(f"  exported {MODELS['hiera_t_int8']} in {time.perf_counter() - t0:.1f} s")
    return files


def quantized_pair(fp32_folder: str, out_dir: str) -> str:
    """The int8 pair ``export_onnx(..., quantize="int8")`` writes, made from an exported fp32 pair (the vit_b
    graph exported once): the encoder quantized the same way and labelled the same, the fp32 decoder copied."""
    import onnx

    from samrs_qgis.onnx_export import METADATA_PREFIX, _add_metadata, pair_paths, quantize_encoder

    os.makedirs(out_dir, exist_ok=True)
    encoder = next(n for n in os.listdir(fp32_folder) if n.endswith("_encoder.onnx"))
    stem = encoder[:-len("_encoder.onnx")]
    src_encoder, src_decoder = pair_paths(fp32_folder, stem, None)
    encoder_path, decoder_path = pair_paths(out_dir, stem, "int8")
    quantize_encoder(src_encoder, encoder_path)
    metadata = {p.key[len(METADATA_PREFIX):]: p.value for p in onnx.load(src_encoder, load_external_data=False)
                .metadata_props if p.key.startswith(METADATA_PREFIX)}
    _add_metadata(encoder_path, dict(metadata, quantization="int8"))
    shutil.copyfile(src_decoder, decoder_path)
    return out_dir


# -- measurement in a child process ---------------------------------------------------------------
def count_flops(spec: dict) -> dict:
    """GFLOP of matrix products of each model's image encoder on one 1024² window (``spec["models"]``: key ->
    torch model file)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    _quiet_imports()
    from samrs_qgis.backends import make_backend
    from samrs_qgis.settings import SegmentOptions

    counted = {}
    for key, path in spec["models"].items():
        backend = make_backend(SegmentOptions(checkpoint=path, device="cpu", precision="fp32"))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            backend.model.image_encoder(torch.zeros(1, 3, 1024, 1024))
        counted[key] = counter.get_total_flops() / 1e9
        backend.close()
    return counted


def child(spec: dict) -> dict:
    """Make the backend of ``spec["model"]`` on the CPU, encode the frame ``reps`` times and decode the boxes
    ``decodes`` times (best of each), peak RSS of this process; the embedding saved when ``spec["save"]``."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    _quiet_imports()
    from samrs_qgis.backends import make_backend
    from samrs_qgis.settings import SegmentOptions

    frame = np.load(spec["frame"])
    boxes = np.load(spec["boxes"])
    regions = bench.neighbourhood_regions(boxes)
    t0 = time.perf_counter()
    backend = make_backend(SegmentOptions(checkpoint=spec["model"], device="cpu", precision=spec["precision"]))
    load = time.perf_counter() - t0
    encodes, decodes = [], []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        backend.encode(frame)
        encodes.append(time.perf_counter() - t0)
    for _ in range(spec["decodes"]):
        t0 = time.perf_counter()
        bench.decode_all(backend, boxes, regions)
        decodes.append((time.perf_counter() - t0) / len(boxes))
    if spec.get("save"):  # the image embedding (SAM 2's keeps SAM 2's ONNX name)
        embedding = backend.embedding
        np.save(spec["save"], np.asarray(embedding.get("image_embeddings", embedding.get("image_embed")),
                                         dtype=np.float32))
    return {"load": load, "encodes": encodes, "decodes": decodes, "describe": backend.describe(),
            "peak_mb": bench.vm_hwm_mb(), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "capability": torch.backends.cpu.get_cpu_capability()}


def run_child(spec: dict, kind: str = "native") -> dict:
    """:func:`child` in a fresh process, as this CPU (``native``) or as an AVX2-only CPU (``avx2``)."""
    env = dict(os.environ)
    avx2_env = cpu_kinds.AVX2_ENV if cpu_kinds is not None else {}
    for name in avx2_env:
        env.pop(name, None)
    if kind == "avx2":
        env.update(avx2_env)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--flops" if "models" in spec else "--child",
                           json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{spec.get('model', 'the FLOP count')} ({kind}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_features() -> list:
    if cpu_kinds is not None:
        return cpu_kinds.cpu_features()
    with open("/proc/cpuinfo") as f:
        flags = next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), set())
    return [n for n in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16") if n in flags]


# -- the figure -----------------------------------------------------------------------------------
def _targets(enc: dict, error: float, hiera_error: float):
    """[(text, ok)] of figure 8's targets from encoder seconds per key. Each light model is judged on its fastest
    path whose embedding stays within the int8 error bound of fp32; vit_b is segment-anything's torch fp32."""
    r_int8 = enc["vit_b"] / enc["onnx_int8"]
    r_t_fp32 = enc["vit_b"] / enc["hiera_t"]
    r_t_int8 = enc["vit_b"] / enc["hiera_t_int8"]
    int8_ok = hiera_error <= TARGET_INT8_ERROR
    r_t = max(r_t_fp32, r_t_int8) if int8_ok else r_t_fp32
    r_m = enc["vit_b"] / enc["mobile_sam"]
    return [(f"ONNX int8 vit_b encoder {r_int8:.2f}x faster than torch fp32 (>= {TARGET_INT8_SPEEDUP}x) "
             f"{_v(r_int8 >= TARGET_INT8_SPEEDUP)}, relative error {100 * error:.2f} % (<= "
             f"{100 * TARGET_INT8_ERROR:.0f} %) {_v(error <= TARGET_INT8_ERROR)}",
             r_int8 >= TARGET_INT8_SPEEDUP and error <= TARGET_INT8_ERROR),
            (f"Hiera-tiny encoder {r_t:.2f}x cheaper than vit_b on its fastest path within {100 * TARGET_INT8_ERROR:.0f} "
             f"% error (torch fp32 {r_t_fp32:.2f}x, ONNX int8 {r_t_int8:.2f}x at {100 * hiera_error:.2f} %) "
             f"(>= {TARGET_HIERA_T:.0f}x) {_v(r_t >= TARGET_HIERA_T)}", r_t >= TARGET_HIERA_T),
            (f"MobileSAM encoder {r_m:.2f}x cheaper than vit_b (>= {TARGET_MOBILE_SAM:.0f}x) "
             f"{_v(r_m >= TARGET_MOBILE_SAM)}", r_m >= TARGET_MOBILE_SAM)]


def _relative_error(reference_path: str, other_path: str):
    """(max |a-b| / max |a|, mean |a-b| / mean |a|) of two saved embeddings."""
    a, b = np.load(reference_path), np.load(other_path)
    return float(np.abs(a - b).max() / np.abs(a).max()), float(np.abs(a - b).mean() / np.abs(a).mean())


def _v(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def figure(torch, work: Path, vit_b: str, frame: np.ndarray, boxes: np.ndarray, log, out, avx2: bool = True):
    """Measure and print figure 8; True when every target holds. ``frame`` (1024, 1024, 3) uint8, ``boxes``
    (n, 4) in its pixels; ``vit_b`` a random-weight SAM vit_b file."""
    files = model_files(torch, work, vit_b, log)
    frame_path, boxes_path = str(work / "fig8_frame.npy"), str(work / "fig8_boxes.npy")
    np.save(frame_path, np.ascontiguousarray(frame))
    np.save(boxes_path, np.asarray(boxes, dtype=np.float64))
    rows = {}
    embeddings = {key: str(work / f"fig8_{key}.npy") for key in ("onnx_fp32", "onnx_int8", "hiera_t", "hiera_t_int8")}
    for key in MODELS:
        t0 = time.perf_counter()
        rows[key] = run_child({"model": files[key], "precision": "fp32", "frame": frame_path, "boxes": boxes_path,
                               "reps": REPS, "decodes": REPS, "save": embeddings.get(key)})
        log(f"  {MODELS[key]}: encoder {min(rows[key]['encodes']):.2f} s, decoder "
            f"{1000 * min(rows[key]['decodes']):.1f} ms/box, peak RSS {rows[key]['peak_mb']:.0f} MiB "
            f"(child {time.perf_counter() - t0:.1f} s)")
    error, mean_error = _relative_error(embeddings["onnx_fp32"], embeddings["onnx_int8"])
    hiera_error, hiera_mean_error = _relative_error(embeddings["hiera_t"], embeddings["hiera_t_int8"])
    flops = run_child({"models": {key: files.get(f"{key}_torch", files[key]) for key in FLOP_MODELS}})
    enc = {key: min(r["encodes"]) for key, r in rows.items()}
    features = cpu_features()
    n = len(boxes)
    for key, label in MODELS.items():
        r = rows[key]
        extra = {"onnx_int8": f", embedding vs ONNX fp32 max {100 * error:.2f} % / mean {100 * mean_error:.2f} %",
                 "hiera_t_int8": f", embedding vs torch fp32 max {100 * hiera_error:.2f} % / mean "
                                 f"{100 * hiera_mean_error:.2f} %"}.get(key, "")
        out(f"Fig 8{'abcdefgh'[list(MODELS).index(key)]} {label}: encoder {enc[key]:.2f} s per 1024² window "
            f"({enc['vit_b'] / enc[key]:.2f}x cheaper than vit_b torch), decoder {1000 * min(r['decodes']):.1f} "
            f"ms/box ({n} boxes, regions), peak RSS {r['peak_mb']:.0f} MiB (load {r['load']:.1f} s){extra}")
    out("Fig 8x matrix-product FLOPs per 1024² window (torch's counter): " + ", ".join(
        f"{key} {flops[key]:.0f} GFLOP" + ("" if key == "vit_b" else f" ({flops['vit_b'] / flops[key]:.2f}x fewer than "
                                                                  f"vit_b: a same-efficiency fp32 runtime's bound)")
        for key in FLOP_MODELS))
    native = _targets(enc, error, hiera_error)
    bf16 = [f for f in features if "bf16" in f]
    out(f"Fig 8t targets on this CPU ({', '.join(features) or 'no listed features'}; "
        f"{'with ' + '/'.join(bf16) + ' (the targets are for a CPU without bf16; fp32 runs here use no bf16)' if bf16 else 'no bf16'}; "
        f"torch {rows['vit_b']['capability']}; best of {REPS}): "
        + "; ".join(t for t, _ in native))
    ok = all(o for _, o in native)
    if cpu_kinds is None or not avx2:
        out("Fig 8u targets on an AVX2 CPU without bf16: not measured here (no AVX2 simulation in this bench)")
        return ok
    log("  figure 8u: the encoders again in children started as an AVX2-only CPU")
    enc2 = {}
    caps = set()
    for key in AVX2_MODELS:
        r = run_child({"model": files[key], "precision": "fp32", "frame": frame_path, "boxes": boxes_path,
                       "reps": REPS, "decodes": 0}, kind="avx2")
        enc2[key] = min(r["encodes"])
        caps.add(r["capability"])
        log(f"  {MODELS[key]} (AVX2): encoder {enc2[key]:.2f} s")
    avx2_targets = _targets(enc2, error, hiera_error)
    out(f"Fig 8u targets as an AVX2 CPU (torch capability {'/'.join(sorted(caps))}; torch, oneDNN, MKL, FBGEMM "
        f"held to AVX2; ONNX Runtime's kernels are not held, so the ONNX ratios favour ONNX; error from the native "
        f"run; encoders " + ", ".join(f"{MODELS[k]} {enc2[k]:.2f} s" for k in AVX2_MODELS) + "): "
        + "; ".join(t for t, _ in avx2_targets))
    return ok and all(o for _, o in avx2_targets)


def main():
    sys.path.insert(0, str(HERE))
    import bench

    bench.engine_on_path()
    torch = bench.set_threads()
    work = Path(tempfile.mkdtemp(prefix="samrs-bench-fig8-"))
    import atexit

    atexit.register(shutil.rmtree, str(work), True)
    t0 = time.perf_counter()
    vit_b = bench.save_checkpoint(torch, work / "sam_vit_b_random.pth")
    frame = bench.real_image_1024()
    boxes = np.array(bench.random_boxes(np.random.default_rng(2), 48, (0, bench.WINDOW), (0, bench.WINDOW)),
                     dtype=np.float64)
    ok = figure(torch, work, vit_b, frame, boxes, bench.log, bench.out)
    bench.out(f"Figure 8 {'PASS' if ok else 'MISS'} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] in ("--child", "--flops"):
        measure = child if sys.argv[1] == "--child" else count_flops
        print(json.dumps(measure(json.loads(sys.argv[2]))), flush=True)
    else:
        main()

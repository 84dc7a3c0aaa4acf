"""What is installed and working, seen from a fresh interpreter: run as a script by :mod:`.status`
(``python probe.py [--run]``), it prints one JSON object and imports only the standard
library before trying each component, so a broken package is reported, never fatal.

Each component: ``{"ok": bool, "version": str, "detail": str, "error": str}``; with ``--run`` a tiny model is
run too: a 2-layer ONNX graph through ONNX Runtime, GrabCut on a synthetic image, a tiny SAM (segment-anything's
classes, random weights) on one box.
"""
import json
import sys
import traceback


def _version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a module without metadata
        return ""


def _component(check):
    try:
        answer = check() or {}
        answer.setdefault("ok", True)
        return answer
    except BaseException as exc:  # noqa: BLE001 - a broken import can raise anything (even SystemExit)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:600],
                "trace": traceback.format_exc()[-1500:]}


def check_numpy():
    import numpy

    return {"version": numpy.__version__, "detail": numpy.__file__}


def check_torch(run):
    import torch

    cuda = torch.cuda.is_available()
    detail = {"cuda_build": torch.version.cuda or "", "cuda_available": cuda,
              "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
              "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    answer = {"version": torch.__version__, "detail": detail}
    if run:
        x = torch.ones(8, 8, device="cuda" if cuda else "cpu")
        answer["ran"] = f"a matrix product on {x.device}: {float((x @ x).sum()):.0f}"
    return answer


# -- a tiny ONNX graph, written as protobuf by hand (the plugin ships no model file, and the light profile has
# no onnx package): p = softmax(x W), x (1, 4) float32, W (4, 2) = arange(8) / 8, opset 13.
def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, value):
    """One protobuf field: an int (varint) or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor_info(name, dims):  # ValueInfoProto: name, type.tensor_type (float, shape)
    shape = b"".join(_field(1, _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))


def tiny_onnx_model():
    """The bytes of an ONNX model computing ``softmax(x W)`` for ``x`` (1, 4)."""
    import struct

    weights = b"".join(struct.pack("<f", i / 8) for i in range(8))
    initializer = _field(1, 4) + _field(1, 2) + _field(2, 1) + _field(8, "w") + _field(9, weights)
    matmul = _field(1, "x") + _field(1, "w") + _field(2, "y") + _field(4, "MatMul")
    softmax = _field(1, "y") + _field(2, "p") + _field(4, "Softmax") + _field(5, _field(1, "axis") + _field(3, 1) +
                                                                             _field(20, 2))
    graph = (_field(1, matmul) + _field(1, softmax) + _field(2, "samrs_check") + _field(5, initializer) +
             _field(11, _tensor_info("x", (1, 4))) + _field(12, _tensor_info("p", (1, 2))))
    return _field(1, 8) + _field(2, "samrs") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 13))


def check_onnxruntime(run):
    import onnxruntime

    answer = {"version": onnxruntime.__version__, "detail": {"providers": onnxruntime.get_available_providers()}}
    if run:
        import numpy

        session = onnxruntime.InferenceSession(tiny_onnx_model(), providers=["CPUExecutionProvider"])
        out = session.run(None, {"x": numpy.ones((1, 4), dtype=numpy.float32)})[0]
        answer["ran"] = f"a tiny graph: sum {float(out.sum()):.3f}"
    return answer


def check_opencv(run):
    import cv2

    answer = {"version": cv2.__version__}
    if run:
        import numpy

        image = numpy.zeros((48, 48, 3), numpy.uint8)
        image[12:36, 12:36] = 200
        mask = numpy.zeros(image.shape[:2], numpy.uint8)
        cv2.grabCut(image, mask, (8, 8, 32, 32), numpy.zeros((1, 65)), numpy.zeros((1, 65)), 2,
                    cv2.GC_INIT_WITH_RECT)
        answer["ran"] = f"GrabCut: {int(((mask == 1) | (mask == 3)).sum())} foreground pixels"
    return answer


def check_segment_anything(run):
    import segment_anything  # noqa: F401 - the import is the check

    answer = {"version": _version("segment-anything")}
    if run:
        import numpy
        import torch
        from segment_anything import SamPredictor
        from segment_anything.build_sam import _build_sam

        torch.manual_seed(0)
        model = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                           encoder_global_attn_indexes=[1], checkpoint=None).eval()
        predictor = SamPredictor(model)
        with torch.inference_mode():
            predictor.set_image(numpy.zeros((64, 64, 3), numpy.uint8))
            masks, scores, _ = predictor.predict(box=numpy.array([8, 8, 40, 40]), multimask_output=False)
        answer["ran"] = f"a tiny SAM on one box: mask {masks.shape[1]}x{masks.shape[2]}"
    return answer


def check_module(module, distribution):
    def check():
        __import__(module)
        return {"version": _version(distribution)}

    return check


def main(argv):
    run = "--run" in argv
    report = {"python": {"ok": True, "version": ".".join(map(str, sys.version_info[:3])), "detail": sys.executable},
              "numpy": _component(check_numpy),
              "torch": _component(lambda: check_torch(run)),
              "onnxruntime": _component(lambda: check_onnxruntime(run)),
              "opencv": _component(lambda: check_opencv(run)),
              "segment_anything": _component(lambda: check_segment_anything(run)),
              "sam2": _component(check_module("sam2.build_sam", "sam2")),
              "sam_hq": _component(check_module("segment_anything_hq", "segment-anything-hq")),
              "distributed": _component(check_module("distributed", "distributed"))}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])

"""SAM without torch: ``export-onnx`` writes an encoder/decoder pair from the tiny SAM, ONNX Runtime runs it
(:class:`samrs_qgis.backends.onnx_sam.OnnxSamBackend`) with the torch backend's results, and whole runs work
where torch cannot be imported: the engine in a Python whose ``import torch`` fails, and ``samrs:segmentboxes``
under a real ``qgis_process`` whose Python has ONNX Runtime but no torch."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tools_data
from support import on_common_cells, read_features

from samrs.samrs_qgis.backends import family_class, identify_model
from samrs.samrs_qgis.backends.model_files import check_onnx_pair, identify
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.prompts import Prompts

REPO = Path(__file__).resolve().parent.parent
VENV_SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
PLUGINS_DIR = Path(sys.modules["conftest"].PLUGINS_DIR)
# Run first in a Python meant to lack torch: importing it fails from then on, whatever is installed.
BLOCK_TORCH = "import sys\nsys.modules['torch'] = None  # import torch -> ImportError\n"


@pytest.fixture(scope="module")
def pairs(tiny_sam_checkpoint, tmp_path_factory):
    """The tiny SAM exported once: {"fp32": folder, "int8": folder}, each holding one encoder and one decoder."""
    from samrs.samrs_qgis.cli import main

    root = tmp_path_factory.mktemp("onnx")
    assert main(["export-onnx", tiny_sam_checkpoint, "--out", str(root / "fp32")]) == 0
    assert main(["export-onnx", tiny_sam_checkpoint, "--out", str(root / "int8"), "--quantize", "int8"]) == 0
    return {"fp32": root / "fp32", "int8": root / "int8"}


def onnx_files(folder):
    return sorted(str(p) for p in Path(folder).glob("*.onnx"))


def test_exported_files_are_a_recognised_pair(pairs):
    for kind, folder in pairs.items():
        decoder, encoder = onnx_files(folder)
        assert encoder.endswith("_encoder.onnx") and decoder.endswith("_decoder.onnx")
        enc, dec = identify(encoder), identify(decoder)
        assert (enc.role, dec.role) == ("encoder", "decoder")
        assert check_onnx_pair(enc, dec) == "onnx_sam"
        assert enc.in_graph_preprocessing is False
        inputs = dict(dec.inputs)
        assert not isinstance(inputs["point_coords"][0], int)  # a batch of prompts per run
        assert identify_model(str(folder)).family == "onnx_sam"
        assert family_class("onnx_sam").__name__ == "OnnxSamBackend"
    assert os.path.getsize(onnx_files(pairs["int8"])[1]) < 0.6 * os.path.getsize(onnx_files(pairs["fp32"])[1])


def test_export_refuses_an_onnx_file(pairs, tmp_path):
    from samrs.samrs_qgis.onnx_export import export_onnx

    with pytest.raises(InputError, match="already an ONNX encoder"):
        export_onnx(onnx_files(pairs["fp32"])[1], str(tmp_path))


def scene():
    """A 1024x800 RGB frame with a bright square, boxes around things, regions a little larger."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1024, 800, 3), dtype=np.uint8)
    frame[200:500, 100:400] = 220
    boxes = np.array([[90, 190, 410, 510], [500, 600, 700, 900], [10, 10, 60, 80], [300, 300, 780, 1000]], float)
    return frame, boxes, boxes + np.array([-20, -20, 20, 20])


def prompts_of(mode, boxes):
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    rings = [np.array([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]) for b in boxes]
    return Prompts(boxes=boxes if mode in ("box", "box+point") else None,
                   points=centres if "point" in mode else None, polygons=rings if mode == "rbox-mask" else None)


def compare(torch_backend, onnx_backend, boxes, regions, prompts):
    """(largest logit difference, mask agreement, largest score difference) of the two backends' answers."""
    answers = list(zip(torch_backend.decode(boxes, regions, prompts), onnx_backend.decode(boxes, regions, prompts)))
    pairs = [on_common_cells(a, b) for a, b in answers]
    scores = [abs(a.score - b.score) for a, b in answers]
    difference = max(float(np.abs(a - b).max()) for a, b in pairs)
    agreement = float(np.mean(np.concatenate([((a > 0) == (b > 0)).ravel() for a, b in pairs])))
    return difference, agreement, max(scores)


@pytest.fixture(scope="module")
def torch_backend(tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends.sam import SamBackend

    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    yield backend
    backend.close()


def test_onnx_backend_matches_the_torch_backend(pairs, torch_backend):
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend

    frame, boxes, regions = scene()
    backend = OnnxSamBackend(str(pairs["fp32"]), device="cpu")
    assert "ONNX Runtime" in backend.describe() and "CPUExecutionProvider" in backend.describe()
    assert backend.batched and backend.preferred_batch > 1
    torch_backend.encode(frame)
    backend.encode(frame)
    reference = torch_backend.embedding["image_embeddings"]
    assert np.abs(backend.embedding["image_embeddings"] - reference).max() <= 1e-4 * np.abs(reference).max()
    for multimask, mode in ((False, "box"), (False, "point"), (False, "box+point"), (False, "rbox-mask"),
                            (True, "box")):
        torch_backend.multimask = backend.multimask = multimask
        difference, agreement, score = compare(torch_backend, backend, boxes, regions, prompts_of(mode, boxes))
        assert difference < 1e-3 and agreement >= 0.99 and score < 1e-4, (multimask, mode)
    torch_backend.multimask = backend.multimask = False
    logits = backend.decode(boxes, regions)
    for box, region, answer in zip(boxes, regions, logits):  # each box's logits cover its region, no more
        x0, y0 = answer.origin_x, answer.origin_y
        x1, y1 = x0 + 4 * answer.grid.shape[1], y0 + 4 * answer.grid.shape[0]
        assert x0 <= max(region[0], 0) and y0 <= max(region[1], 0)
        assert x1 >= min(region[2], 800) and y1 >= min(region[3], 1024)
        assert answer.grid.shape[0] * answer.grid.shape[1] < 256 * 256
    backend.batched = False  # a decoder without a batch dimension: one run per box, the same answers
    for a, b in zip(logits, backend.decode(boxes, regions)):
        assert np.allclose(a.grid, b.grid, atol=1e-5) and a.score == pytest.approx(b.score, abs=1e-5)
    embedding = backend.embedding  # the embedding cache's way: a stored embedding instead of encoding
    other = OnnxSamBackend(onnx_files(pairs["fp32"])[1], device="cpu")  # the encoder file, its partner beside it
    other.load_embedding(embedding, frame.shape[:2])
    for a, b in zip(logits, other.decode(boxes, regions)):
        assert np.array_equal(a.grid, b.grid)
    assert other.identity() == backend.identity() != ""
    backend.close()
    other.close()
    assert "ONNX" in backend.describe()  # still described once closed


def test_exported_encoder_computes_attention_in_bands(tiny_sam_checkpoint, torch_backend, tmp_path, monkeypatch):
    """The encoder is traced with the lean attention: its global blocks' scores exist a band of query rows at a
    time in the graph too (bands made small here so the tiny SAM has several), with the same embedding."""
    import onnx

    from samrs.samrs_qgis.backends import lean_attention
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend
    from samrs.samrs_qgis.onnx_export import export_onnx

    monkeypatch.setattr(lean_attention, "CHUNK_BYTES", 3 << 20)
    pair = export_onnx(tiny_sam_checkpoint, str(tmp_path))
    graph = onnx.load(pair.encoder, load_external_data=False).graph
    softmaxes = sum(node.op_type == "Softmax" for node in graph.node)
    blocks = len(torch_backend.model.image_encoder.blocks)
    assert softmaxes > blocks + 4  # several bands per global block, one softmax per windowed block
    frame, _, _ = scene()
    backend = OnnxSamBackend(str(tmp_path), device="cpu")
    torch_backend.encode(frame)
    backend.encode(frame)
    reference = torch_backend.embedding["image_embeddings"]
    assert np.abs(backend.embedding["image_embeddings"] - reference).max() <= 1e-4 * np.abs(reference).max()
    backend.close()


def test_int8_encoder_stays_close(pairs, torch_backend):
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend

    frame, boxes, regions = scene()
    backend = OnnxSamBackend(str(pairs["int8"]), device="cpu")
    assert "int8" in backend.describe()
    torch_backend.encode(frame)
    backend.encode(frame)
    reference = torch_backend.embedding["image_embeddings"]
    assert np.abs(backend.embedding["image_embeddings"] - reference).max() <= 0.1 * np.abs(reference).max()
    _, agreement, _ = compare(torch_backend, backend, boxes, regions, prompts_of("box", boxes))
    assert agreement >= 0.97
    assert backend.identity() != OnnxSamBackend(str(pairs["fp32"]), device="cpu").identity()


def test_pair_errors_name_what_is_missing(pairs, tmp_path):
    from samrs.samrs_qgis.backends.onnx_sam import OnnxSamBackend

    decoder, encoder = onnx_files(pairs["fp32"])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    os.symlink(encoder, lonely / "model_encoder.onnx")
    with pytest.raises(InputError, match="model_decoder.onnx"):
        OnnxSamBackend(str(lonely / "model_encoder.onnx"))
    with pytest.raises(InputError, match="one ONNX encoder and one ONNX decoder"):
        OnnxSamBackend(str(lonely))
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for i, path in enumerate((encoder, decoder, onnx_files(pairs["int8"])[1])):
        os.symlink(path, crowded / f"{i}.onnx")
    with pytest.raises(InputError, match="one ONNX encoder and one ONNX decoder"):
        OnnxSamBackend(str(crowded))
    with pytest.raises(InputError, match="mps"):
        OnnxSamBackend(str(pairs["fp32"]), device="mps")


# -- whole runs without torch ---------------------------------------------------------------------

def run_without_torch(body: str) -> dict:
    """Run ``body`` in a fresh Python whose ``import torch`` fails, the engine importable and ``read_box_file``,
    ``OutputPaths``, ``segment_boxes``, ``SegmentOptions`` and ``json`` imported; ``torch_modules()`` there lists
    the torch modules loaded. ``body`` prints a JSON line last: returned, read."""
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        sys.path.insert(0, {str(PLUGINS_DIR)!r})
        from samrs.samrs_qgis.boxes import read_box_file
        from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
        from samrs.samrs_qgis.settings import SegmentOptions

        def torch_modules():
            return sorted(m for m in sys.modules
                          if m.split(".")[0] in ("torch", "torchvision") and sys.modules[m] is not None)
    """) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_segment_boxes_runs_where_torch_cannot_be_imported(pairs, tmp_path):
    raster = tools_data.scene_raster(tmp_path / "scene.tif")
    boxes = tools_data.scene_boxes(tmp_path / "boxes.gpkg")
    out = tmp_path / "out"
    report = run_without_torch(f"""
        outputs = OutputPaths(instances={str(out / 'instances.tif')!r}, polygons={str(out / 'masks.gpkg')!r})
        summary = segment_boxes({str(raster)!r}, read_box_file({str(boxes)!r}), outputs,
                                SegmentOptions(backend="sam", checkpoint={str(pairs['fp32'])!r}, device="cpu",
                                               class_field="label"))
        try:
            import torch
            torch_loaded = True
        except ImportError:
            torch_loaded = False
        print(json.dumps(dict(backend=summary.backend, counts=summary.status_counts, torch=torch_loaded,
                              modules=torch_modules())))
    """)
    assert not report["torch"] and not report["modules"]
    assert "ONNX Runtime" in report["backend"]
    counts = report["counts"]
    assert counts.get("ok", 0) + counts.get("empty", 0) == len(tools_data.DISCS)
    features = read_features(str(out / "masks.gpkg"), layer="masks")
    assert len(features) == len(tools_data.DISCS)
    assert (out / "instances.tif").is_file()


def onnxruntime_only(folder: Path) -> Path:
    """A folder for PYTHONPATH holding ONNX Runtime (the venv's, linked) and nothing else of the venv."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(VENV_SITE / "onnxruntime", folder / "onnxruntime")
    return folder


def test_qgis_process_runs_an_onnx_pair_without_torch(pairs, tmp_path):
    """``samrs:segmentboxes`` under ``qgis_process.bin`` with the ONNX encoder as checkpoint (its decoder beside
    it): QGIS's own Python, the plugin installed in a fresh profile (no venv of its own), ONNX Runtime on
    PYTHONPATH, torch blocked before anything is imported."""
    config = tmp_path / "config"
    plugin = config / "profiles" / "default" / "python" / "plugins" / "samrs"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text((REPO / "__init__.py").read_text())  # its own: finds no .venv
    for name in ("metadata.txt", "processing", "samrs_qgis", "icons"):
        (plugin / name).symlink_to(REPO / name)
    startup = tmp_path / "startup.py"
    startup.write_text(BLOCK_TORCH)
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_PLUGINPATH", "SAMRS_VENV", "VIRTUAL_ENV",
                                                            "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen", PYQGIS_STARTUP=str(startup),
               PYTHONPATH=str(onnxruntime_only(tmp_path / "site")), PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    qgis = "/usr/bin/qgis_process.bin"
    enabled = subprocess.run([qgis, "plugins", "enable", "samrs"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    raster = tools_data.scene_raster(tmp_path / "scene.tif")
    boxes = tools_data.scene_boxes(tmp_path / "boxes.gpkg")
    polygons = tmp_path / "out" / "masks.gpkg"
    proc = subprocess.run([qgis, "--json", "run", "samrs:segmentboxes", "--", f"INPUT={raster}", f"BOXES={boxes}",
                           "CLASS_FIELD=label", "BACKEND=0", f"CHECKPOINT={onnx_files(pairs['fp32'])[1]}", "DEVICE=1",
                           f"OUTPUT_POLYGONS={polygons}"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout[proc.stdout.find("{"):])["results"]
    assert results["BOX_COUNT"] == len(tools_data.DISCS)
    assert results["OK_COUNT"] + results["EMPTY_COUNT"] == len(tools_data.DISCS)
    assert "ONNX Runtime" in results["BACKEND_USED"]
    assert len(read_features(str(polygons), layer="masks")) == len(tools_data.DISCS)

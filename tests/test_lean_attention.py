"""The lean attention (segment-anything's attention computed a band of query rows at a time) gives the same
embedding as segment-anything's, with far less memory, and SAM backends use it; the int8 precision."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling.image_encoder import Attention

import samrs
from samrs.samrs_qgis.backends import lean_attention
from samrs.samrs_qgis.backends.sam import SamBackend
from samrs.samrs_qgis.backends.sam_checkpoint import load_sam


def relative(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def global_block(size=(64, 64), dim=768, heads=12, seed=0):
    """A global-attention module as vit_b's (768 channels, 12 heads, 64x64 tokens), random weights and
    relative-position tables (segment-anything starts them at zero)."""
    torch.manual_seed(seed)
    attn = Attention(dim, heads, use_rel_pos=True, rel_pos_zero_init=False, input_size=size).eval()
    torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
    torch.nn.init.normal_(attn.rel_pos_w, std=0.5)
    return attn, torch.randn(1, *size, dim)


def lean_copy(module):
    lean = copy.deepcopy(module)
    assert lean_attention.apply(lean) >= 1
    return lean


def test_lean_attention_equals_segment_anythings_on_the_tiny_sam(tiny_sam_checkpoint, monkeypatch):
    model, _ = load_sam(tiny_sam_checkpoint)
    lean = lean_copy(model.image_encoder)
    assert lean_attention.is_lean(lean) and not lean_attention.is_lean(model.image_encoder)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model.image_encoder(x)
        assert relative(lean(x), full) < 1e-5
        monkeypatch.setattr(lean_attention, "CHUNK_BYTES", 3 << 20)  # bands of 3 rows (and a last one of 1)
        assert relative(lean(x), full) < 1e-5
    # the model's own attention is untouched, the state dict the same
    assert type(model.image_encoder.blocks[1].attn) is Attention
    assert lean.state_dict().keys() == model.image_encoder.state_dict().keys()


def test_lean_attention_equals_segment_anythings_on_a_vit_b_global_block():
    attn, x = global_block()
    lean = lean_copy(attn)
    with torch.inference_mode():
        assert relative(lean(x), attn(x)) < 1e-5


def test_lean_attention_under_bf16_autocast(monkeypatch):
    attn, x = global_block(size=(24, 40))  # not square: rows and columns kept apart
    lean = lean_copy(attn)
    monkeypatch.setattr(lean_attention, "CHUNK_BYTES", 5 * 40 * 960 * 12 * 4)  # bands of 5 rows
    with torch.inference_mode():
        fp32 = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full, bands = attn(x), lean(x)
    assert relative(bands, full) < 1e-2  # the same operations as autocast runs them
    assert relative(bands, fp32) < 5e-2


MEMORY_CHILD = r"""
import json, sys, torch
from samrs.samrs_qgis.backends import lean_attention
from samrs.samrs_qgis.backends.sam import SamBackend
if sys.argv[2] == "full":
    lean_attention.apply = lambda model: 0
torch.set_num_threads(1)
backend = SamBackend(sys.argv[1], device="cpu", precision="fp32")
frame = torch.randint(0, 255, (1024, 1024, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
def hwm():  # this process's peak RSS (not ru_maxrss, which carries the parent's peak over at exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
before = hwm()
backend.encode(frame)
print(json.dumps({"lean": lean_attention.is_lean(backend.model), "before_mb": before, "peak_mb": hwm()}))
"""


def encode_memory(checkpoint, kind):
    """Peak RSS of a fresh process that loads ``checkpoint`` and encodes one window (``kind``: lean or full)."""
    env = dict(os.environ, PYTHONPATH=str(Path(samrs.__path__[0]).parent))  # the folder holding the samrs link
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, checkpoint, kind], capture_output=True, text=True,
                          env=env, timeout=300, cwd=os.path.dirname(checkpoint))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_backend_encodes_with_the_lean_attention_in_far_less_memory(tiny_sam_checkpoint):
    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    assert lean_attention.is_lean(backend.model)
    # the tiny SAM's global block: 2 heads x 4096 x 4096 scores, 134 MB each for the scores, the biased scores
    # and their softmax in segment-anything's attention; a band of 32 MB here
    full = encode_memory(tiny_sam_checkpoint, "full")
    lean = encode_memory(tiny_sam_checkpoint, "lean")
    assert lean["lean"] and not full["lean"]
    assert lean["peak_mb"] - lean["before_mb"] < full["peak_mb"] - full["before_mb"] - 150


def box_masks(backend, boxes):
    return np.concatenate([(b.grid > 0).ravel() for b in backend.decode(boxes)])


def test_int8_masks_agree_with_fp32_on_the_tiny_sam(tiny_sam_checkpoint, monkeypatch):
    from samrs.samrs_qgis.backends import devices

    monkeypatch.setattr(devices, "FP32_BLOCKS", 1)  # the tiny SAM has two blocks: its first stays fp32
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 255, (512, 640, 3), dtype=np.uint8)
    frame[100:300, 200:400] = (200, 40, 40)
    x0 = rng.uniform(0, 500, 24)
    y0 = rng.uniform(0, 380, 24)
    boxes = np.stack([x0, y0, x0 + rng.uniform(20, 140, 24), y0 + rng.uniform(20, 130, 24)], axis=1)
    fp32 = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    int8 = SamBackend(tiny_sam_checkpoint, device="cpu", precision="int8")
    assert "int8" in int8.describe() and "int8" not in fp32.describe()
    assert int8.identity() != fp32.identity()  # their embeddings are cached apart
    quantized = torch.ao.nn.quantized.dynamic.Linear
    blocks = int8.model.image_encoder.blocks
    assert not any(isinstance(m, quantized) for m in blocks[0].modules())  # a first block's MLP stays fp32
    assert isinstance(blocks[1].mlp.lin1, quantized) and isinstance(blocks[1].mlp.lin2, quantized)
    assert not any(isinstance(m, quantized) for m in int8.model.mask_decoder.modules())
    assert not any(isinstance(m, quantized) for m in fp32.model.modules())
    for backend in (fp32, int8):
        backend.encode(frame)
    a, b = box_masks(fp32, boxes), box_masks(int8, boxes)
    assert (a == b).mean() >= 0.99



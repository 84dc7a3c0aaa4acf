"""No tensor made without a device: the tiny SAM on the CPU encodes and decodes inside ``torch.device("meta")``,
where every tensor created without an explicit device lands on the meta device (no data). Mixed with the CPU
weights such a tensor fails or silently gives garbage, as it would on a GPU when another plugin in the same
QGIS has set torch's default device. The results must equal those computed outside the context.

segment-anything's own ``get_rel_pos`` (segment_anything/modeling/image_encoder.py, ``torch.arange(q_size)`` and
``torch.arange(k_size)`` without a device) has the fault: the encoder's relative positions come out as garbage
there. The backend runs segment-anything's encoder under its own device; one test checks the code around it
with ``get_rel_pos`` fixed, another that a default device set elsewhere does not change the embedding.
"""
import numpy as np
import pytest
import torch

from samrs.samrs_qgis.prompts import Prompts

FRAME = np.random.RandomState(0).randint(0, 255, (256, 256, 3), dtype=np.uint8)
BOXES = np.array([[10, 10, 60, 80], [100, 120, 200, 220], [30, 150, 90, 250]], dtype=np.float32)
CENTRES = (BOXES[:, :2] + BOXES[:, 2:]) / 2
RINGS = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64) for x0, y0, x1, y1 in BOXES]
PROMPTS = {"box": Prompts(boxes=BOXES), "point": Prompts(points=CENTRES),
           "box+point": Prompts(boxes=BOXES, points=CENTRES), "rbox-mask": Prompts(polygons=RINGS)}


@pytest.fixture(params=["fp32", "bf16"])
def backend(request, tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends.sam import SamBackend

    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision=request.param)
    yield backend
    backend.close()


@pytest.fixture
def rel_pos_on_its_device(monkeypatch):
    """segment-anything's get_rel_pos with its coordinates made on the device of the positions it indexes."""
    from segment_anything.modeling import image_encoder

    get_rel_pos = image_encoder.get_rel_pos

    def on_its_device(q_size, k_size, rel_pos):
        with torch.device(rel_pos.device):
            return get_rel_pos(q_size, k_size, rel_pos)

    monkeypatch.setattr(image_encoder, "get_rel_pos", on_its_device)


def _decode_all(backend):
    return {mode: backend.decode(BOXES, None, prompts) for mode, prompts in PROMPTS.items()}


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x.grid, y.grid) and x.score == y.score and
                                    (x.origin_x, x.origin_y) == (y.origin_x, y.origin_y) for x, y in zip(a, b))


def test_encoding_makes_no_tensor_without_a_device(backend, rel_pos_on_its_device):
    backend.encode(FRAME)
    expected = backend.embedding["image_embeddings"].copy()
    with torch.device("meta"):
        backend.encode(FRAME)
    assert backend.predictor.features.device.type == "cpu"
    assert np.array_equal(backend.embedding["image_embeddings"], expected)


def test_a_default_device_set_elsewhere_does_not_change_the_embedding(backend):
    backend.encode(FRAME)
    expected = backend.embedding["image_embeddings"].copy()
    with torch.device("meta"):
        backend.encode(FRAME)
    assert np.array_equal(backend.embedding["image_embeddings"], expected)


def test_decoding_makes_no_tensor_without_a_device(backend):
    backend.encode(FRAME)
    expected = _decode_all(backend)
    embedding = backend.embedding
    with torch.device("meta"):
        assert all(_same(logits, expected[mode]) for mode, logits in _decode_all(backend).items())
        backend.load_embedding(embedding, FRAME.shape[:2])
        assert all(_same(logits, expected[mode]) for mode, logits in _decode_all(backend).items())

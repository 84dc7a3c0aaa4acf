"""The backend interface's defaults, the compile decision the pipeline makes through it, and backends by name."""
import pytest

from samrs.samrs_qgis.backends import BACKEND_CLASSES, backend_class, make_backend
from samrs.samrs_qgis.backends.base import Backend
from samrs.samrs_qgis.backends.compile_verdict import MEASURE_MIN_BOXES, CompileVerdict
from samrs.samrs_qgis.backends.grabcut import GrabCutBackend
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.window_segmenter import maybe_compile_decoder
from samrs.samrs_qgis.settings import BACKENDS, SegmentOptions
from support import RecordingProgress


class Compilable(Backend):
    """A backend whose compile decision is all stand-ins: a stored verdict (None: not measured), a measurement."""
    compilable = True

    def __init__(self, device="cpu", threshold=100, faster=None):
        self.device, self.threshold, self.compiles, self.measured = device, threshold, 0, []
        self.verdict = None if faster is None else CompileVerdict(compile=faster, reason="stand-in")

    @property
    def compiled(self):
        return self.compiles > 0

    def compile_decoder(self):
        self.compiles += 1

    def compile_threshold(self):
        return self.threshold

    def compile_verdict(self):
        return self.verdict

    def measure_compile(self, boxes, regions, progress):
        self.measured.append(len(boxes))
        self.verdict = CompileVerdict(compile=True, reason="measured")
        self.compile_decoder()
        return self.verdict


def test_a_backend_that_cannot_compile_says_so_and_is_never_compiled():
    backend = Backend()
    assert (backend.compilable, backend.compiled, backend.device) == (False, False, "cpu")
    assert backend.embedding is None and backend.identity() == "" and not backend.is_out_of_memory(MemoryError())
    backend.compile_decoder()  # nothing to compile: no error
    assert not backend.compiled
    progress = RecordingProgress()
    for choice in ("on", "auto", "off"):
        maybe_compile_decoder(backend, 10 ** 6, choice, progress)
    assert progress.messages == []
    assert not GrabCutBackend().compilable


def test_the_compile_decision_asks_the_backend_interface_only():
    progress = RecordingProgress()
    few, many = Compilable(faster=True), Compilable(faster=True)
    maybe_compile_decoder(few, 99, "auto", progress)  # compiled measured faster: from the backend's threshold
    maybe_compile_decoder(many, 100, "auto", progress)
    assert (few.compiles, many.compiles) == (0, 1)
    maybe_compile_decoder(many, 100, "on", progress)  # compiled already: stays as it is
    assert many.compiles == 1 and len(progress.messages) == 1
    slower = Compilable(faster=False)
    maybe_compile_decoder(slower, 10 ** 6, "auto", progress)  # measured slower: not compiled
    assert slower.compiles == 0
    unmeasured = Compilable()
    maybe_compile_decoder(unmeasured, MEASURE_MIN_BOXES - 1, "auto", progress)  # too few boxes to measure
    maybe_compile_decoder(unmeasured, 10 ** 6, "auto", progress)  # no window encoded yet: nothing to measure on
    assert unmeasured.compiles == 0 and unmeasured.measured == []
    gpu = Compilable(device="cuda", faster=True)
    maybe_compile_decoder(gpu, 10 ** 6, "auto", progress)  # auto compiles on a CPU only
    maybe_compile_decoder(gpu, 10 ** 6, "off", progress)
    assert gpu.compiles == 0
    maybe_compile_decoder(gpu, 1, "on", progress)
    assert gpu.compiles == 1
    with pytest.raises(InputError, match="Unknown compile_decoder 'sometimes'"):
        maybe_compile_decoder(gpu, 1, "sometimes", progress)


def test_backends_are_made_by_name():
    assert tuple(BACKEND_CLASSES) == BACKENDS
    for name in BACKENDS:
        assert issubclass(backend_class(name), Backend) and backend_class(name).name == name
    assert isinstance(make_backend(SegmentOptions(backend="grabcut")), GrabCutBackend)
    assert isinstance(make_backend(SegmentOptions(backend="auto", checkpoint=None)), GrabCutBackend)
    with pytest.raises(InputError, match="Unknown backend 'magic'. Choose one of: sam, grabcut"):
        make_backend(SegmentOptions(backend="magic"))
    with pytest.raises(InputError, match="grabcut backend takes the prompt modes box, not 'point'"):
        backend_class("grabcut").check_prompt_mode("point")
    backend_class("sam").check_prompt_mode("point")


def test_the_sam_backend_runs_the_class_of_the_model_files_family(tmp_path, tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends import FAMILY_CLASSES, family_class, identify_model
    from samrs.samrs_qgis.backends.model_files import FAMILIES

    assert set(FAMILY_CLASSES) <= set(FAMILIES)
    assert identify_model(tiny_sam_checkpoint).family == "sam" and family_class("sam").name == "sam"
    backend = make_backend(SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu"))
    try:
        assert type(backend) is family_class("sam")
    finally:
        backend.close()
    empty = tmp_path / "models"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .onnx files"):
        identify_model(str(empty))
    (empty / "notes.onnx").write_bytes(b"not a graph")
    with pytest.raises(InputError, match="notes.onnx"):
        identify_model(str(empty))


def test_the_model_type_is_checked_once_for_every_family(tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends import identify_model
    from samrs.samrs_qgis.backends.model_files import MODEL_TYPE_CHOICES, ModelFile, model_type_name

    assert MODEL_TYPE_CHOICES[:4] == ("auto", "vit_h", "vit_l", "vit_b")  # the toolbox's enum numbers of 0.2 stay
    names = {(f, s, v): model_type_name(ModelFile("x", f, s, version=v)) for f, s, v in (
        ("sam", "vit_b", None), ("mobile_sam", "tiny_vit", None), ("sam_hq", "vit_l", None),
        ("sam_hq", "tiny_vit", None), ("sam2", "hiera_t", "2.1"), ("sam2", "hiera_b+", "2.0"))}
    assert list(names.values()) == ["vit_b", "mobile_sam", "sam_hq_vit_l", "sam_hq_tiny_vit", "sam2.1_hiera_t",
                                    "sam2_hiera_b+"]
    assert set(names.values()) <= set(MODEL_TYPE_CHOICES)
    with pytest.raises(InputError, match=r"Model type mismatch: .* holds a SAM custom\(dim=32.*not "
                                         r"sam2.1_hiera_t\. Choose model type 'auto'"):
        make_backend(SegmentOptions(checkpoint=tiny_sam_checkpoint, model_type="sam2.1_hiera_t", device="cpu"))
    with pytest.raises(InputError, match="Unknown model type 'vit_x'"):
        identify_model(tiny_sam_checkpoint, "vit_x")

"""Device choice as a user's first GPU run meets it, simulated on a CPU-only machine by patching torch's device
queries (the only part a CPU cannot run): a card this torch build has no kernels for, a card whose first
kernel fails, and a usable one. Under ``auto`` the run goes on on the CPU and says why; an explicit ``cuda``
is a clear error naming the card and the fix. Also: a card by its number (``cuda:N``), an Apple GPU (``mps``),
fp32 on CUDA without TensorFloat-32, and the device named in the outputs and in the embedding cache key."""
import copy

import pytest
import torch

import tools_data as td
from samrs.samrs_qgis.backends.devices import (MPS_NAME, DeviceChoice, choose_device, cpu_name, cuda_problem,
                                               device_index, device_label, device_type, precision_context,
                                               resolve_precision)
from samrs.samrs_qgis.errors import InputError
from support import RecordingProgress

BUILD_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # as torch 2.14+cu130


def fake_gpus(monkeypatch, cards, archs=BUILD_ARCHS):
    """CUDA cards (name, capability), numbered from 0 as torch numbers them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: cards[index][0])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: cards[index][1])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))


def fake_gpu(monkeypatch, name, capability, archs=BUILD_ARCHS):
    fake_gpus(monkeypatch, [(name, capability)], archs)


def kernels_run(monkeypatch):
    """The one operation that proves a card usable runs (on the CPU here); returns the devices it was asked on."""
    asked = []
    zeros = torch.zeros

    def ones(*args, device=None, **kwargs):
        asked.append(device)
        return zeros(1)

    monkeypatch.setattr(torch, "ones", ones)
    return asked


def test_a_card_the_build_has_no_kernels_for_falls_back_to_the_cpu_under_auto(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA GeForce GTX 1080", (6, 1))
    choice = choose_device(torch, "auto")
    assert choice.device == "cpu"
    assert "GTX 1080" in choice.note and "6.1" in choice.note and "sm_75" in choice.note
    with pytest.raises(InputError, match=r"Device 'cuda' was asked for, but the GPU NVIDIA GeForce GTX 1080 "
                                         r"\(compute capability 6.1\) is not supported.*'auto' or 'cpu'"):
        choose_device(torch, "cuda")


def test_a_card_whose_first_kernel_fails_falls_back_too(monkeypatch):
    """Capability 8.6 is in the build, but the tiny operation fails (here for real: there is no driver)."""
    fake_gpu(monkeypatch, "NVIDIA RTX A4000", (8, 6))
    problem = cuda_problem(torch)
    assert problem.startswith("the GPU NVIDIA RTX A4000 cannot run torch")
    assert choose_device(torch, "auto").device == "cpu"
    with pytest.raises(InputError, match="RTX A4000 cannot run"):
        choose_device(torch, "cuda")


def test_ptx_of_an_older_architecture_covers_a_newer_card(monkeypatch):
    fake_gpu(monkeypatch, "future card", (13, 0), archs=["sm_90", "compute_120"])
    monkeypatch.setattr(torch, "ones", lambda *a, **k: torch.zeros(1))  # the one operation, run on the CPU here
    assert cuda_problem(torch) is None and choose_device(torch, "auto").device == "cuda"
    fake_gpu(monkeypatch, "old card", (7, 0), archs=["sm_90", "compute_120"])
    assert "not supported" in cuda_problem(torch)


def test_a_card_runs_the_kernels_of_an_earlier_minor_version_of_its_architecture(monkeypatch):
    """The official builds carry sm_86 but no sm_89: an RTX 4090 (8.9) runs the sm_86 kernels."""
    kernels_run(monkeypatch)
    for name, capability in (("NVIDIA GeForce RTX 4090", (8, 9)), ("NVIDIA Jetson AGX Orin", (8, 7)),
                             ("NVIDIA H100", (9, 0)), ("NVIDIA GeForce RTX 5090", (12, 0))):
        fake_gpu(monkeypatch, name, capability)
        assert cuda_problem(torch) is None, name
    fake_gpu(monkeypatch, "NVIDIA B200", (10, 0), archs=["sm_90a", "sm_120"])  # a variant is for its card only
    assert "not supported" in cuda_problem(torch)
    fake_gpu(monkeypatch, "NVIDIA GeForce GTX 1080", (6, 1))
    assert "not supported" in cuda_problem(torch)


def test_no_gpu_is_the_cpu_without_a_note():
    assert choose_device(torch, "auto") == choose_device(torch, "cpu")
    assert choose_device(torch, "auto").note is None
    with pytest.raises(InputError, match="torch sees no usable CUDA GPU"):
        choose_device(torch, "cuda")


def test_the_run_says_why_it_is_on_the_cpu(monkeypatch, tmp_path, tiny_sam_checkpoint):
    from samrs.samrs_qgis.boxes import read_box_file
    from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs.samrs_qgis.settings import SegmentOptions

    fake_gpu(monkeypatch, "NVIDIA Tesla V100", (7, 0))
    progress = RecordingProgress()
    summary = segment_boxes(td.scene_raster(tmp_path / "s.tif"), read_box_file(td.scene_boxes(tmp_path / "b.gpkg")),
                            OutputPaths(polygons=str(tmp_path / "m.gpkg")),
                            SegmentOptions(checkpoint=tiny_sam_checkpoint, embedding_cache=False), progress)
    assert "on cpu" in summary.backend
    assert any("Running on the CPU: the GPU NVIDIA Tesla V100 (compute capability 7.0)" in w for w in progress.warnings)


def test_bf16_on_a_card_without_it_runs_fp16_and_says_so(monkeypatch):
    from samrs.samrs_qgis.backends.devices import resolve_precision

    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    precision, note = resolve_precision("bf16", "cuda", torch)
    assert precision == "fp16" and "Tesla T4" in note and "7.5" in note and "emulated" in note
    fake_gpu(monkeypatch, "NVIDIA A100", (8, 0))
    assert resolve_precision("bf16", "cuda", torch) == ("bf16", None)
    assert resolve_precision("auto", "cuda", torch) == ("fp16", None)
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu", torch)


def test_device_names():
    assert [device_type(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda", "mps"]
    assert [device_type(d) for d in ("cpu", "cuda:1")] == [torch.device(d).type for d in ("cpu", "cuda:1")]
    assert (device_index("cuda"), device_index("cuda:3")) == (0, 3)
    assert [device_label(d) for d in ("cpu", "cuda", "cuda:2", "mps")] == ["cpu", "cuda:0", "cuda:2", "mps"]
    for wrong in ("gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "mps:0"):
        with pytest.raises(InputError, match=r"Unknown device .*auto, cpu, cuda, cuda:N .*mps"):
            choose_device(torch, wrong)


def test_cuda_n_is_that_card_with_its_own_name_and_capability(monkeypatch):
    fake_gpus(monkeypatch, [("Tesla T4", (7, 5)), ("NVIDIA GeForce RTX 4090", (8, 9))])
    asked = kernels_run(monkeypatch)
    choice = choose_device(torch, "cuda:1")
    assert (choice.device, choice.name, choice.type, choice.note) == ("cuda:1", "NVIDIA GeForce RTX 4090", "cuda", None)
    assert asked == ["cuda:1"]
    assert choose_device(torch, "cuda") == choose_device(torch, "auto") == DeviceChoice("cuda", name="Tesla T4")
    assert choose_device(torch, "cuda:0").device == "cuda:0"
    assert resolve_precision("bf16", "cuda:1", torch) == ("bf16", None)  # the 4090 (8.9) has bf16
    precision, note = resolve_precision("bf16", "cuda:0", torch)  # the T4 (7.5) has not
    assert precision == "fp16" and "Tesla T4" in note
    assert resolve_precision("auto", "cuda:1", torch) == ("fp16", None)


def test_cuda_n_of_a_card_not_there_names_the_cards_torch_sees(monkeypatch):
    fake_gpus(monkeypatch, [("NVIDIA RTX A4000", (8, 6)), ("NVIDIA RTX A4000", (8, 6))])
    kernels_run(monkeypatch)
    with pytest.raises(InputError, match=r"Device 'cuda:3' was asked for, but torch sees 2 CUDA GPUs "
                                         r"\(cuda:0 to cuda:1\)\. Give a card number below 2"):
        choose_device(torch, "cuda:3")
    fake_gpus(monkeypatch, [("NVIDIA RTX A4000", (8, 6))])
    with pytest.raises(InputError, match=r"torch sees one CUDA GPU \(cuda:0\)"):
        choose_device(torch, "cuda:1")


def test_a_card_by_number_that_cannot_run_is_an_error_naming_it(monkeypatch):
    fake_gpus(monkeypatch, [("NVIDIA GeForce RTX 4090", (8, 9)), ("NVIDIA GeForce GTX 1080", (6, 1))])
    with pytest.raises(InputError, match=r"Device 'cuda:1' was asked for, but the GPU NVIDIA GeForce GTX 1080 "
                                         r"\(compute capability 6.1\) is not supported"):
        choose_device(torch, "cuda:1")


def test_mps_under_auto_and_its_precisions(monkeypatch):
    with pytest.raises(InputError, match=r"Device 'mps' was asked for, but torch sees no usable Apple GPU.*Apple "
                                         r"silicon.*'auto' or 'cpu'"):
        choose_device(torch, "mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_device(torch, "auto") == choose_device(torch, "mps")
    choice = choose_device(torch, "auto")
    assert (choice.device, choice.name, choice.note) == ("mps", MPS_NAME, None)
    assert resolve_precision("auto", "mps", torch) == ("fp32", None)
    assert resolve_precision("fp16", "mps", torch) == ("fp16", None)
    assert resolve_precision("fp32", "mps", torch) == ("fp32", None)
    with pytest.raises(InputError, match=r"bf16 is not supported on the Apple GPU \(mps\); use fp16 or fp32"):
        resolve_precision("bf16", "mps", torch)
    assert choose_device(torch, "cpu").device == "cpu"  # asked for, the CPU it is

    fake_gpu(monkeypatch, "NVIDIA GeForce GTX 1080", (6, 1))  # a CUDA card that cannot run: the Apple GPU then
    choice = choose_device(torch, "auto")
    assert choice.device == "mps" and "Running on the Apple GPU (mps): the GPU NVIDIA GeForce GTX 1080" in choice.note
    kernels_run(monkeypatch)
    fake_gpu(monkeypatch, "NVIDIA RTX A4000", (8, 6))  # a usable CUDA card comes first
    assert choose_device(torch, "auto") == choose_device(torch, "cuda")
    assert choose_device(torch, "auto").device == "cuda"


def test_fp16_on_the_cpu_is_still_an_error():
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU or an Apple GPU"):
        resolve_precision("fp16", "cpu", torch)


def test_int8_runs_on_the_cpu_only():
    from samrs.samrs_qgis.backends import devices

    assert "int8" in devices.PRECISIONS
    assert resolve_precision("int8", "cpu", torch) == ("int8", None)
    for device in ("cuda", "cuda:1", "mps"):
        with pytest.raises(InputError, match=f"int8 runs on the CPU only, not on device '{device}'. Use device "
                                             "'cpu' for int8"):
            resolve_precision("int8", device, torch)
    with precision_context(torch, "cpu", "int8"):
        assert not torch.is_autocast_enabled("cpu")  # fp32 outside the quantized layers


def test_auto_on_the_cpu_says_what_it_picked(monkeypatch):
    from samrs.samrs_qgis.backends import devices

    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: True)
    precision, note = resolve_precision("auto", "cpu", torch)
    assert precision == "bf16" and note == "Precision auto: bf16 (this CPU has bf16 instructions)."
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    precision, note = resolve_precision("auto", "cpu", torch)
    assert precision == "fp32" and note.startswith("Precision auto: fp32 (this CPU has no bf16 instructions).")
    assert "int8" in note


def test_the_cpu_is_named():
    choice = choose_device(torch, "cpu")
    assert choice.name == cpu_name() and choice.name and choice.name != "cpu"
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if models:
        assert cpu_name() == " ".join(models[0].split())


TF32_SETTINGS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


def _setting(path):
    obj = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


@pytest.fixture
def tf32_flags():
    """torch's TF32 flags as they were before the test, restored after it (old flags first, then the newer
    per-operation settings)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    legacy = (matmul.allow_tf32, cudnn.allow_tf32)
    new = [(_setting(path), _setting(path).fp32_precision) for path in TF32_SETTINGS]
    yield
    matmul.allow_tf32, cudnn.allow_tf32 = legacy
    for setting, value in new:
        setting.fp32_precision = value


def test_fp32_on_cuda_runs_without_tf32_and_restores_the_flags(tf32_flags):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    matmul.allow_tf32 = cudnn.allow_tf32 = True  # e.g. set by another plugin in the same QGIS
    with precision_context(torch, "cuda:1", "fp32"):
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
    matmul.allow_tf32, cudnn.allow_tf32 = False, True  # torch's defaults
    with pytest.raises(ValueError):
        with precision_context(torch, "cuda", "fp32"):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
            raise ValueError("a failed batch")
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
    matmul.allow_tf32 = True
    with precision_context(torch, "cpu", "fp32"), precision_context(torch, "mps", "fp32"):
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)  # not CUDA: left alone


def test_fp32_on_cuda_without_tf32_when_it_was_set_per_operation(tf32_flags):
    """torch's newer per-operation settings, where the old flags cannot even be read once both were used."""
    settings = [_setting(path) for path in ("cuda.matmul", "cudnn.conv", "cudnn.rnn")]
    for setting in settings:
        setting.fp32_precision = "tf32"
    with precision_context(torch, "cuda", "fp32"):
        assert [s.fp32_precision for s in settings] == ["ieee"] * 3
    assert [s.fp32_precision for s in settings] == ["tf32"] * 3


@pytest.mark.filterwarnings("ignore::UserWarning")  # autocast for a device this machine does not have
def test_reduced_precisions_autocast_on_the_device_type():
    for device, precision, dtype in (("cuda:1", "fp16", torch.float16), ("cpu", "bf16", torch.bfloat16),
                                     ("mps", "fp16", torch.float16)):
        context = precision_context(torch, device, precision)
        assert isinstance(context, torch.autocast)
        assert (context.device, context.fast_dtype) == (device_type(device), dtype)


def test_cuda_n_is_taken_by_both_front_ends_and_the_checks():
    from samrs.samrs_qgis.cli import build_parser
    from samrs.samrs_qgis.settings import SegmentOptions, check_options

    parser = build_parser()
    assert parser.parse_args(["segment", "r.tif", "b.gpkg", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "r.tif", "b.gpkg", "--device", "gpu"])
    check_options(SegmentOptions(backend="grabcut", device="cuda:12"))
    check_options(SegmentOptions(backend="grabcut", device="mps"))
    with pytest.raises(InputError, match=r"Unknown device 'cuda:x'. Choose one of: auto, cpu, cuda, mps, cuda:N "
                                         r"\(--device, DEVICE\)"):
        check_options(SegmentOptions(backend="grabcut", device="cuda:x"))


def test_the_outputs_name_the_device(tmp_path, tiny_sam_checkpoint):
    import rasterio

    from samrs.samrs_qgis.boxes import read_box_file
    from samrs.samrs_qgis.pipeline import OutputPaths, segment_boxes
    from samrs.samrs_qgis.settings import SegmentOptions

    instances = str(tmp_path / "i.tif")
    summary = segment_boxes(td.scene_raster(tmp_path / "s.tif"), read_box_file(td.scene_boxes(tmp_path / "b.gpkg")),
                            OutputPaths(instances=instances),
                            SegmentOptions(checkpoint=tiny_sam_checkpoint, embedding_cache=False, device="cpu",
                                           precision="fp32"), RecordingProgress())
    assert f"on cpu ({cpu_name()}), fp32" in summary.backend
    with rasterio.open(instances) as ds:
        tags = ds.tags()
    assert f"on cpu ({cpu_name()}), fp32" in tags["SAMRS_BACKEND"]
    assert tags["SAMRS_DEVICE"] == f"cpu ({cpu_name()})"


def test_the_embedding_cache_key_holds_the_device_type(tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends.sam import SamBackend

    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="bf16")
    try:
        identities = {}
        for device in ("cpu", "cuda", "cuda:1", "mps"):
            other = copy.copy(backend)
            other.device = device
            identities[device] = other.identity()
        assert identities["cpu"] == backend.identity() and identities["cpu"].endswith(":bf16:cpu")
        assert len({identities["cpu"], identities["cuda"], identities["mps"]}) == 3
        assert identities["cuda"] == identities["cuda:1"]  # the same kind of card computes the same embedding
    finally:
        backend.close()


def test_describe_names_a_gpu_by_its_number_and_name(tiny_sam_checkpoint):
    from samrs.samrs_qgis.backends.sam import SamBackend

    backend = SamBackend(tiny_sam_checkpoint, device="cpu", precision="fp32")
    try:
        gpu = copy.copy(backend)
        gpu.device, gpu.device_name, gpu.precision = "cuda", "NVIDIA GeForce RTX 4090", "fp16"
        assert gpu.describe().endswith(" on cuda:0 (NVIDIA GeForce RTX 4090), fp16")
    finally:
        backend.close()


def test_what_auto_picked_is_information_and_a_refused_precision_a_warning(tiny_sam_checkpoint, monkeypatch):
    """A real backend made the engine's way: auto's choice reaches the log as information (nothing is wrong),
    a precision the machine cannot run as asked as a warning."""
    from samrs.samrs_qgis.backends import devices, make_backend
    from samrs.samrs_qgis.settings import SegmentOptions

    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    progress = RecordingProgress()
    make_backend(SegmentOptions(checkpoint=tiny_sam_checkpoint, device="cpu"), progress).close()
    assert any(m.startswith("Precision auto: fp32") for m in progress.messages)
    assert not any("Precision" in w for w in progress.warnings)
    warnings, remarks = devices.backend_notes(None, "bf16", "bf16 would be emulated here: fp16 instead.")
    assert warnings == ("bf16 would be emulated here: fp16 instead.",) and remarks == ()
    assert devices.backend_notes("No GPU: the CPU.", "auto", None) == (("No GPU: the CPU.",), ())

"""Device choice as a user's first GPU run meets it, simulated on a CPU-only machine by patching torch's device
queries (the only part a CPU cannot run): a card this torch build has no kernels for, a card whose first
kernel fails, and a usable one. Under ``auto`` the run goes on on the CPU and says why; an explicit ``cuda``
is a clear error naming the card and the fix."""
import pytest
import torch

import tools_data as td
from samrs.samrs_qgis.backends.devices import choose_device, cuda_problem
from samrs.samrs_qgis.errors import InputError
from support import RecordingProgress

BUILD_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # as torch 2.14+cu130


def fake_gpu(monkeypatch, name, capability, archs=BUILD_ARCHS):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))


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

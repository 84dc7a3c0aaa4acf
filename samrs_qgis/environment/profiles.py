"""What each install profile puts into the managed environment, as pip steps.

- ``light``: ONNX Runtime (its GPU build where an NVIDIA driver is present) and OpenCV: SAM through ONNX
  Runtime (an exported or published ONNX pair) and GrabCut, no torch. Both profiles add Dask's distributed
  scheduler (a few MB of pure Python) for running on a cluster.
- ``full``: torch and torchvision (the CUDA build matched to the driver, else the CPU build), segment-anything,
  SAM-HQ, SAM 2, OpenCV, and ONNX Runtime with onnx: every model file and ONNX pair the engine runs, plus
  ``export-onnx``.

Versions are the ones the engine is tested with (the development venv's, ``requirements/venv.txt``). QGIS's own
packages are held by the constraints file (:mod:`.constraints`), never by these steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import InputError
from .nvidia import NvidiaDriver, TorchBuild, torch_build

TORCH = ("torch==2.14.1", "torchvision==0.29.1")
ONNXRUNTIME_VERSION = "1.32.0"
OPENCV = "opencv-python-headless==4.10.0.84"
SAM_PACKAGES = ("segment-anything==1.0", "segment-anything-hq==0.3", "timm==1.0.31", "hydra-core==1.3.8",
                "iopath==0.1.10")
SAM2 = "sam2==1.1.0"  # a source distribution whose build imports torch
ONNX_EXPORT = ("onnx==1.17.0", "ml_dtypes==0.4.1")  # export-onnx; newer ones want numpy 2
DASK = ("dask==2026.8.0", "distributed==2026.8.0")  # running on a Dask cluster (WORKERS, SCHEDULER); pure Python


@dataclass(frozen=True)
class InstallStep:
    """One pip run: ``packages`` from ``index_url`` (None: pip's configured index), with ``options`` and extra
    environment variables."""

    title: str
    packages: Tuple[str, ...]
    index_url: Optional[str] = None
    options: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)
    pin_installed: Tuple[str, ...] = ()  # packages an earlier step installed that this one must keep


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    summary: str


PROFILES = {p.name: p for p in (
    Profile("light", "Light (ONNX Runtime, no torch)",
            "ONNX Runtime and OpenCV, a few hundred MB: SAM, MobileSAM and SAM 2 as ONNX pairs, and GrabCut."),
    Profile("full", "Full (torch)",
            "torch, segment-anything, SAM-HQ, SAM 2, OpenCV and ONNX Runtime, several GB with a CUDA build: "
            "every model file and ONNX pair, and exporting ONNX pairs."),
)}


def find_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise InputError(f"Unknown profile '{name}'. Choose one of: {', '.join(PROFILES)}.")
    return PROFILES[name]


def onnxruntime_package(driver: Optional[NvidiaDriver], platform: str) -> str:
    """``onnxruntime-gpu`` where an NVIDIA driver is present on Linux or Windows, else ``onnxruntime``."""
    gpu = driver is not None and platform in ("linux", "win32")
    return f"onnxruntime{'-gpu' if gpu else ''}=={ONNXRUNTIME_VERSION}"


def install_steps(profile: str, driver: Optional[NvidiaDriver], platform: str,
                  torch_index_url: Optional[str] = None) -> Tuple[List[InstallStep], Optional[TorchBuild]]:
    """The pip steps of ``profile`` for this machine (``driver``: :func:`.nvidia.detect`'s answer, ``platform``:
    ``sys.platform``), and the torch build chosen (None for ``light``). ``torch_index_url`` replaces the index the
    build comes from (a mirror); an empty string means pip's configured index."""
    find_profile(profile)
    if profile == "light":
        return [InstallStep("ONNX Runtime and OpenCV", (onnxruntime_package(driver, platform), OPENCV)),
                InstallStep("Dask's distributed scheduler", DASK)], None
    build = torch_build(driver, platform)
    index = build.index_url if torch_index_url is None else (torch_index_url or None)
    steps = [
        InstallStep(f"torch and torchvision ({build.name} build)", TORCH + build.pins, index_url=index),
        InstallStep("segment-anything, SAM-HQ, SAM 2's dependencies, OpenCV and ONNX Runtime",
                    SAM_PACKAGES + (OPENCV, onnxruntime_package(driver, platform)) + ONNX_EXPORT,
                    pin_installed=("torch", "torchvision")),
        # built against the torch just installed, without its optional CUDA extension (a GPU post-processing
        # helper only), and without its declared dependencies (its numpy>=1.24.4 would replace QGIS's numpy)
        InstallStep("SAM 2 (built from source against torch)", (SAM2,),
                    options=("--no-build-isolation", "--no-deps"),
                    env={"SAM2_BUILD_CUDA": "0", "SAM2_BUILD_ALLOW_ERRORS": "0"},
                    pin_installed=("torch", "torchvision")),
        InstallStep("Dask's distributed scheduler", DASK),
    ]
    return steps, build

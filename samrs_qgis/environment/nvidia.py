"""The NVIDIA driver as ``nvidia-smi`` reports it, and the torch build that driver can run.

PyTorch publishes one build per CUDA release at ``https://download.pytorch.org/whl/<build>``; a CUDA 12 build
runs on any driver that supports CUDA 12.0 or later (CUDA's minor-version compatibility), a CUDA 13 build
needs a CUDA 13 driver, and the last builds for CUDA 11.8 are torch 2.7. Without a usable driver the CPU
build is chosen: on Linux and Windows it is a fraction of the CUDA build's size (macOS has only one build).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
# (build, the CUDA version the driver must support, pins the build needs), newest first
CUDA_BUILDS: Tuple[Tuple[str, Tuple[int, int], Tuple[str, ...]], ...] = (
    ("cu130", (13, 0), ()),
    ("cu128", (12, 8), ()),
    ("cu126", (12, 0), ()),
    ("cu118", (11, 8), ("torch<2.8", "torchvision<0.23")),
)


@dataclass(frozen=True)
class NvidiaDriver:
    """What ``nvidia-smi`` printed: the driver's version, the newest CUDA version it supports, the GPUs' names."""

    driver_version: str
    cuda_version: Tuple[int, int]
    gpus: Tuple[str, ...] = ()

    def describe(self) -> str:
        cards = f" for {', '.join(self.gpus)}" if self.gpus else ""
        return f"NVIDIA driver {self.driver_version} (CUDA {self.cuda_version[0]}.{self.cuda_version[1]}){cards}"


@dataclass(frozen=True)
class TorchBuild:
    """The torch build to install: ``name`` (``cu126``, ``cpu``, ``default``), the package index it comes from
    (None: the default index, PyPI), pins it needs, and why it was chosen."""

    name: str
    index_url: Optional[str]
    reason: str
    pins: Tuple[str, ...] = field(default=())

    @property
    def cuda(self) -> bool:
        return self.name.startswith("cu")


def parse_nvidia_smi(text: str) -> Optional[NvidiaDriver]:
    """The driver in ``nvidia-smi``'s default output (its header line: ``Driver Version: 550.54.14  CUDA Version:
    12.4``) and the GPU names of its table, or None when the output holds no driver (a failure message)."""
    driver = re.search(r"Driver Version:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9]+)\.([0-9]+)", text)
    if not driver or not cuda:
        return None
    # table rows: "|   0  NVIDIA GeForce RTX 3060        Off |  00000000:01:00.0 ..."
    gpus = tuple(m.group(1).strip() for m in re.finditer(r"^\|\s+\d+\s+(.+?)\s+(?:On|Off)\s+\|", text, re.M))
    return NvidiaDriver(driver.group(1), (int(cuda.group(1)), int(cuda.group(2))), gpus)


def detect(run: Callable = subprocess.run) -> Optional[NvidiaDriver]:
    """The driver ``nvidia-smi`` reports here, or None (no ``nvidia-smi``, or it finds no driver or card)."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    try:
        out = run([program], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out.stdout or "") if out.returncode == 0 else None


def torch_build(driver: Optional[NvidiaDriver], platform: str = sys.platform) -> TorchBuild:
    """The torch build for ``driver`` (None: no NVIDIA driver) on ``platform`` (``sys.platform``'s values)."""
    if platform == "darwin":
        return TorchBuild("default", None, "macOS has one torch build (it uses Apple's GPU through MPS)")
    if driver is None:
        return TorchBuild("cpu", PYTORCH_INDEX + "cpu", "no NVIDIA driver found (nvidia-smi): the CPU build")
    for name, needs, pins in CUDA_BUILDS:
        if driver.cuda_version >= needs:
            return TorchBuild(name, PYTORCH_INDEX + name, f"{driver.describe()}: the CUDA {name[2:-1]}.{name[-1]} "
                              "build", pins)
    return TorchBuild("cpu", PYTORCH_INDEX + "cpu", f"{driver.describe()} is older than any CUDA build of torch "
                      "supports (CUDA 11.8): the CPU build; update the NVIDIA driver to use the GPU")

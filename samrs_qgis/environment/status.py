"""What is installed and working for the plugin: :mod:`.probe` run in a fresh QGIS Python that sees the managed
environment, so packages installed a moment ago are seen without restarting QGIS, and a package that crashes on
import cannot take QGIS down."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import BackendUnavailableError
from .interpreter import child_environment

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe.py"
RECORD_NAME = "samrs-environment.json"  # what a finished install recorded, in its environment
# component -> (label, profiles that need it)
COMPONENTS = {"torch": ("torch", ("full",)), "onnxruntime": ("ONNX Runtime", ("light", "full")),
              "opencv": ("OpenCV", ("light", "full")), "segment_anything": ("segment-anything", ("full",)),
              "sam2": ("SAM 2", ("full",)), "sam_hq": ("SAM-HQ", ("full",)),
              "distributed": ("Dask distributed", ("light", "full"))}


@dataclass
class EnvironmentStatus:
    """The probe's answer: component -> {"ok", "version", "detail", "error", "ran"} (see :mod:`.probe`)."""

    components: Dict[str, dict]
    python: str
    paths: List[str]

    def ok(self, name: str) -> bool:
        return bool(self.components.get(name, {}).get("ok"))

    def missing_for(self, profile: str) -> List[str]:
        """The components ``profile`` installs that do not import (or did not run) here."""
        return [name for name, (_, profiles) in COMPONENTS.items() if profile in profiles and not self.ok(name)]

    def rows(self) -> List[Tuple[str, bool, str]]:
        """One row per component: (label, working, text): the version and what it found (device, providers,
        the tiny model run), or why not (not installed, or the import's error)."""
        out = []
        for name, (label, _) in COMPONENTS.items():
            c = self.components.get(name, {})
            if not c.get("ok"):
                error = c.get("error", "not checked")
                missing = error.startswith(("ModuleNotFoundError", "ImportError: No module"))
                out.append((label, False, "not installed" if missing else f"broken: {error}"))
                continue
            text = c.get("version", "")
            detail = c.get("detail")
            if name == "torch" and isinstance(detail, dict):
                devices = ", ".join(detail.get("devices") or []) or ("Apple MPS" if detail.get("mps") else "CPU only")
                build = f"CUDA {detail['cuda_build']} build" if detail.get("cuda_build") else "CPU build"
                text += f" ({build}; device: {devices})"
            elif name == "onnxruntime" and isinstance(detail, dict):
                text += f" (providers: {', '.join(detail.get('providers', []))})"
            if c.get("ran"):
                text += f"; ran {c['ran']}"
            out.append((label, True, text))
        return out

    def lines(self) -> List[str]:
        """:meth:`rows` as text: ``ONNX Runtime 1.32.0 (providers: ...)``, ``torch: not installed``."""
        return [f"{label} {text}" if working else f"{label}: {text}" for label, working, text in self.rows()]


def probe(python: str, paths: List[str], run: bool = False, timeout: float = 600) -> EnvironmentStatus:
    """Run :mod:`.probe` with the interpreter ``python`` seeing ``paths`` first (the managed environment's
    site-packages); ``run``: run the tiny models too."""
    args = [python, str(PROBE)] + (["--run"] if run else [])
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                             env=child_environment([str(p) for p in paths]), cwd=str(HERE))
    except subprocess.TimeoutExpired as exc:
        raise BackendUnavailableError(f"Checking the environment did not finish in {timeout:.0f} s.") from exc
    except OSError as exc:
        raise BackendUnavailableError(f"Could not start QGIS's Python ({python}) to check the environment: "
                                      f"{exc}") from exc
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise BackendUnavailableError(f"Checking the environment failed (exit status {out.returncode}): "
                                      f"{(out.stderr or out.stdout).strip()[-800:]}")
    return EnvironmentStatus(json.loads(lines[-1]), python, [str(p) for p in paths])


def read_record(environment: Path) -> Optional[dict]:
    """What the last successful install recorded in ``environment`` (profile, torch build, versions), or None."""
    path = Path(environment) / RECORD_NAME
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_record(environment: Path, record: dict) -> None:
    """Record a successful install (written whole, then moved into place)."""
    path = Path(environment) / RECORD_NAME
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.replace(partial, path)


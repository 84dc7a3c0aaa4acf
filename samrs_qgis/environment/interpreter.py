"""The Python interpreter that QGIS runs, as a program pip and the checks can be started with.

Inside QGIS ``sys.executable`` is often QGIS itself (``qgis-bin.exe`` on Windows, the ``QGIS`` app binary on
macOS, ``qgis_process.bin`` under some builds): the interpreter is then looked for beside the running Python's
prefixes, and accepted only when it reports the running Python's version.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional

from ..errors import BackendUnavailableError


def _looks_like_python(path: str) -> bool:
    name = os.path.basename(path).lower()
    return name.startswith("python") and "w.exe" not in name  # pythonw.exe has no console output


def _candidates() -> Iterable[Path]:
    major, minor = sys.version_info[:2]
    names = ([f"python{major}.{minor}", f"python{major}", "python"] if sys.platform != "win32"
             else ["python.exe", f"python{major}.exe", f"python{major}{minor}.exe"])
    base = getattr(sys, "_base_executable", "")
    if sys.prefix != sys.base_prefix and base and _looks_like_python(base):
        yield Path(base)  # a virtual environment's Python: the interpreter it was made from
    if sys.executable and _looks_like_python(sys.executable):
        yield Path(sys.executable)
    prefixes = []
    for prefix in (sys.exec_prefix, sys.base_exec_prefix, sys.prefix, sys.base_prefix):
        if prefix and prefix not in prefixes:
            prefixes.append(prefix)
    for prefix in prefixes:
        for folder in (Path(prefix) / "bin", Path(prefix), Path(prefix) / "Scripts"):
            for name in names:
                yield folder / name
    if sys.platform == "win32" and os.environ.get("OSGEO4W_ROOT"):  # OSGeo4W: apps\Python3X\python.exe
        yield Path(os.environ["OSGEO4W_ROOT"]) / "apps" / f"Python{major}{minor}" / "python.exe"
    if sys.platform not in ("win32", "darwin"):
        for name in names:
            yield Path("/usr/bin") / name


def is_running_python(path: Path) -> bool:
    """Whether the program at ``path`` is the running Python: its version, made from the same installation (same
    base prefix: another Python of that version, e.g. a pyenv shim found first on PATH, cannot load this one's
    standard library extensions)."""
    want = tuple(sys.version_info[:2])
    try:
        out = subprocess.run([str(path), "-c", "import sys; print(sys.version_info[0], sys.version_info[1]); "
                              "print(sys.base_prefix)"], capture_output=True, text=True, timeout=30, env=_clean_env())
    except (OSError, subprocess.SubprocessError):
        return False
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) < 2:
        return False
    same_base = os.path.realpath(lines[1].strip()) == os.path.realpath(sys.base_prefix)
    return tuple(int(v) for v in lines[0].split()[:2]) == want and same_base


def _clean_env() -> dict:
    """The environment a child interpreter gets: without PYTHONHOME/PYTHONPATH set for QGIS's embedded Python
    pointing it elsewhere (its own prefix finds the standard library)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def qgis_python() -> str:
    """The path of the interpreter QGIS's Python is (same version, same prefix). A BackendUnavailableError saying
    where it was looked for when none is found."""
    tried: List[str] = []
    for path in _candidates():
        text = str(path)
        if text in tried:
            continue
        tried.append(text)
        if path.is_file() and is_running_python(path):
            return text
    raise BackendUnavailableError(
        f"The Python interpreter of this QGIS (Python {sys.version_info[0]}.{sys.version_info[1]}) was not found "
        f"(looked for: {', '.join(tried[:8])}). Install the dependencies from a terminal with that Python: "
        "`python -m samrs_qgis setup-env --profile light` run from the plugin folder.")


def child_environment(extra_paths: Optional[List[str]] = None) -> dict:
    """The environment variables for a child of :func:`qgis_python` that must see ``extra_paths`` first."""
    env = _clean_env()
    if extra_paths:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in extra_paths)
    env["PYTHONNOUSERSITE"] = "1"  # packages in the user's own site folder are not QGIS's
    return env

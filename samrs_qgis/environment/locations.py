"""Where the plugin keeps what it installs: a per-user data folder holding the managed environments (one per
QGIS Python version) and the downloaded models.

``SAMRS_HOME`` overrides the data folder; ``SAMRS_VENV`` names an environment that wins over the managed one
(a developer's venv). Nothing here imports more than the standard library: the plugin calls
:func:`add_environments_to_path` while QGIS loads it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

HOME_ENV = "SAMRS_HOME"
VENV_ENV = "SAMRS_VENV"


def data_home() -> Path:
    """The per-user folder of the plugin's environments and models: ``SAMRS_HOME``, else the platform's
    per-user data folder + ``samrs`` (``%LOCALAPPDATA%\\samrs``, ``~/Library/Application Support/samrs``,
    ``$XDG_DATA_HOME/samrs`` or ``~/.local/share/samrs``)."""
    override = os.environ.get(HOME_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(Path.home(), "AppData", "Local")
        return Path(base) / "samrs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "samrs"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "samrs"


def python_tag(version=None) -> str:
    """``py3.11`` for the running Python (or ``version`` (major, minor))."""
    major, minor = (version or sys.version_info)[:2]
    return f"py{major}.{minor}"


def managed_environment(version=None) -> Path:
    """The managed environment's folder for this Python version (it may not exist yet)."""
    return data_home() / "envs" / python_tag(version)


def models_folder() -> Path:
    """The per-user folder that downloaded models go to."""
    return data_home() / "models"


def site_packages(environment: Path, version=None) -> Path:
    """The folder an environment's packages are installed in: a virtual environment's ``lib/pythonX.Y/
    site-packages`` (``Lib/site-packages`` on Windows)."""
    major, minor = (version or sys.version_info)[:2]
    if sys.platform == "win32":
        return Path(environment) / "Lib" / "site-packages"
    return Path(environment) / "lib" / f"python{major}.{minor}" / "site-packages"


def environment_folders(plugin_folder: Optional[str] = None) -> List[Path]:
    """The site-packages folders the plugin puts on ``sys.path``, first one first: ``SAMRS_VENV``'s, the managed
    environment's, then a ``.venv`` inside the plugin folder (a development checkout's); those that exist."""
    candidates = []
    named = os.environ.get(VENV_ENV, "").strip()
    if named:
        candidates.append(site_packages(Path(named)))
    candidates.append(site_packages(managed_environment()))
    if plugin_folder:
        candidates.append(site_packages(Path(plugin_folder) / ".venv"))
    found = []
    for folder in candidates:
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def add_environments_to_path(plugin_folder: Optional[str] = None) -> List[Path]:
    """Put :func:`environment_folders` on ``sys.path``, in that order, ahead of the system's site- and
    dist-packages (an environment's torch must find the versions of its own dependencies it was installed with;
    the environments hold no numpy or GDAL, so QGIS keeps its own). Returns the folders added."""
    added = []
    for folder in environment_folders(plugin_folder):
        text = str(folder)
        if text in sys.path:
            continue
        system = [i for i, p in enumerate(sys.path) if p.rstrip("/\\").endswith(("dist-packages", "site-packages"))
                  and p not in {str(a) for a in added}]
        sys.path.insert(system[0] if system else len(sys.path), text)
        added.append(folder)
    return added

"""The pip constraints that keep QGIS's own packages as they are.

The managed environment sees QGIS's Python's packages (it is made with ``--system-site-packages``). A package
it installs may ask for a newer numpy, GDAL, PyQt or pyproj than QGIS has; pip would then install a second copy
into the environment, which loads ahead of QGIS's own and breaks it (a numpy 2 beside modules built for numpy 1,
a GDAL wheel carrying another GDAL and PROJ). So every package of :data:`PROTECTED` that QGIS's Python holds is
pinned to the version it holds, and pip refuses what would replace it.
"""
from __future__ import annotations

import json
import re
import subprocess
from typing import Dict, Iterable

from ..errors import BackendUnavailableError
from .interpreter import child_environment

# Modules linked with QGIS's libraries (GDAL, PROJ, GEOS, Qt) or built against its numpy's ABI.
PROTECTED = ("numpy", "scipy", "pandas", "matplotlib", "gdal", "pyproj", "shapely", "rasterio", "fiona", "pyogrio",
             "geopandas", "pyqt5", "pyqt5-sip", "pyqt5-qt5", "pyqt6", "pyqt6-sip", "sip", "qscintilla", "h5py",
             "netcdf4", "psycopg2")

_LIST_PACKAGES = ("import json, importlib.metadata as m\n"
                  "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))")


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages(python: str) -> Dict[str, str]:
    """{distribution name: version} of what the interpreter ``python`` has, on its own (no environment added)."""
    try:
        out = subprocess.run([python, "-c", _LIST_PACKAGES], capture_output=True, text=True, timeout=120,
                             env=child_environment())
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendUnavailableError(f"Could not list the packages of QGIS's Python ({python}): {exc}") from exc
    if out.returncode:
        raise BackendUnavailableError(f"Could not list the packages of QGIS's Python ({python}): "
                                      f"{out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def constraint_lines(packages: Dict[str, str], extra: Iterable[str] = ()) -> list:
    """``name==version`` for each protected package of ``packages``, then the ``extra`` pins."""
    lines = [f"{name}=={version}" for name, version in sorted(packages.items(), key=lambda kv: normalized(kv[0]))
             if normalized(name) in PROTECTED]
    return lines + list(extra)


def write_constraints(path: str, packages: Dict[str, str], extra: Iterable[str] = ()) -> list:
    """Write the constraints file at ``path``; the lines written."""
    lines = constraint_lines(packages, extra)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# QGIS's own packages, kept as they are (written by the SAMRS plugin's installer)\n")
        f.write("\n".join(lines) + "\n")
    return lines

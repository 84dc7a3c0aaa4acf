"""QGIS plugin entry point.

Nothing heavy is imported here: torch and segment-anything load only when an algorithm runs, so the
plugin loads even where they are missing. A virtual environment made by ``make setup`` inside the
plugin folder (``.venv``), or the one named by ``SAMRS_VENV``, is put on ``sys.path`` ahead of the
system's dist-packages, so torch finds the versions of its own dependencies it was installed with
(Debian's older sympy breaks it). The venv holds no numpy or GDAL (setup keeps the system's), so QGIS
still uses its own.
"""
import os
import sys


def _add_plugin_venv():
    here = os.path.dirname(os.path.realpath(__file__))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for venv in (os.environ.get("SAMRS_VENV"), os.path.join(here, ".venv")):
        site = os.path.join(venv, "lib", version, "site-packages") if venv else None
        if site and os.path.isdir(site) and site not in sys.path:
            system = [i for i, p in enumerate(sys.path) if p.rstrip("/").endswith("dist-packages")]
            sys.path.insert(system[0] if system else len(sys.path), site)


def classFactory(iface):  # noqa: N802 (QGIS's name)
    _add_plugin_venv()
    from .processing.plugin import SamrsPlugin

    return SamrsPlugin(iface)

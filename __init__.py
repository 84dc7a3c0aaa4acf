"""QGIS plugin entry point.

Nothing heavy is imported here: torch and segment-anything load only when an algorithm runs, so the
plugin loads even where they are missing. A virtual environment made by ``make setup`` inside the
plugin folder (``.venv``), or the one named by ``SAMRS_VENV``, is appended to ``sys.path`` so QGIS
finds torch there while keeping its own numpy and GDAL first.
"""
import os
import sys


def _add_plugin_venv():
    here = os.path.dirname(os.path.realpath(__file__))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for venv in (os.environ.get("SAMRS_VENV"), os.path.join(here, ".venv")):
        site = os.path.join(venv, "lib", version, "site-packages") if venv else None
        if site and os.path.isdir(site) and site not in sys.path:
            sys.path.append(site)


def classFactory(iface):  # noqa: N802 (QGIS's name)
    _add_plugin_venv()
    from .processing.plugin import SamrsPlugin

    return SamrsPlugin(iface)

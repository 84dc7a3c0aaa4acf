"""QGIS plugin entry point.

Nothing heavy is imported here: torch and segment-anything load only when an algorithm runs, so the
plugin loads even where they are missing. The environments that hold them are put on ``sys.path`` ahead of
the system's packages (see :func:`samrs_qgis.environment.locations.add_environments_to_path`): the one named
by ``SAMRS_VENV``, the environment the plugin manages (installed from *Plugins › SAMRS › Set up models and
dependencies…* or ``samrs:installdependencies``), and a ``.venv`` made by ``make setup`` inside the plugin
folder. They hold no numpy or GDAL, so QGIS still uses its own.
"""
import os


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .samrs_qgis.environment.locations import add_environments_to_path

    add_environments_to_path(os.path.dirname(os.path.realpath(__file__)))
    from .processing.plugin import SamrsPlugin

    return SamrsPlugin(iface)

"""The QGIS side: the plugin class, the Processing provider ``samrs`` and its algorithms.

Thin by design: algorithms map parameters and feedback onto the engine in ``samrs_qgis``.
"""

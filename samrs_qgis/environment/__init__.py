"""The Python environment the plugin manages for its heavy dependencies (no QGIS imports).

QGIS's own Python holds QGIS, GDAL, PROJ, numpy and PyQt; torch, ONNX Runtime, OpenCV and the SAM packages go
into a separate environment that the plugin owns, outside the plugin folder (plugin updates keep it), one per
QGIS Python version:

- :mod:`.locations`: where the managed environment and the downloaded models live, and putting the environment
  on ``sys.path`` at plugin load;
- :mod:`.interpreter`: the Python interpreter QGIS runs (``sys.executable`` is QGIS itself on Windows and macOS);
- :mod:`.nvidia`: the NVIDIA driver ``nvidia-smi`` reports, and the torch build it can run;
- :mod:`.profiles`: what the ``light`` and ``full`` profiles install;
- :mod:`.constraints`: the pins that keep QGIS's own packages as they are;
- :mod:`.installer`: pip run into the environment, with progress, a log, cancellation and recognised failures;
- :mod:`.status`: what is installed and working, checked in a subprocess with QGIS's Python.
"""

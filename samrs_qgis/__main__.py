import os
import sys

if __name__ == "__main__":  # not when a worker process (Dask, multiprocessing) imports the parent's main module
    if sys.prefix == sys.base_prefix:  # QGIS's kind of Python, not a virtual environment: its managed one applies
        from .environment.locations import add_environments_to_path

        add_environments_to_path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    from .cli import main

    sys.exit(main())

import os
import sys

if sys.prefix == sys.base_prefix:  # QGIS's kind of Python, not a virtual environment: its managed one applies
    from .environment.locations import add_environments_to_path

    add_environments_to_path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from .cli import main  # noqa: E402 - after the environments are on the path

sys.exit(main())

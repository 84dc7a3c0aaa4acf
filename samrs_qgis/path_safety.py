"""Whether a run's output paths are safe to write: no output is one of the run's inputs, and no two outputs
are the same file.

Paths are compared as the files they name: resolved (``./a/../x.tif``, symbolic links), case as the file
system has it, and by device and inode where the files exist (hard links, bind mounts). A file written
*beside* an output counts as written too: a Shapefile's ``.dbf``/``.shx``/… and the QGIS style
``<stem>.qml`` that every output gets. Overwriting an earlier run's *output* stays allowed (that is how
reruns work); overwriting an *input* never is. (Which files travel with a file: :func:`.transaction.companion_paths`.)

Every front end (CLI, Processing) reaches these checks through the engine's entry points, before any work.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Mapping, Optional, Tuple

from .errors import InputError
from .transaction import companion_paths


def file_identity(path: str) -> Tuple:
    """What identifies the file or folder ``path`` names: (device, inode) when it exists, else its resolved
    path."""
    resolved = os.path.realpath(os.path.abspath(os.fspath(path)))
    try:
        st = os.stat(resolved)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(resolved))


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name the same file (or the same not-yet-existing path)."""
    return file_identity(a) == file_identity(b)


def check_output_paths(outputs: Mapping[str, Optional[str]], inputs: Mapping[str, Optional[str]]) -> None:
    """Raise an InputError naming both when an output (role -> path; None: not asked for) would replace an
    input (role -> path of a file or folder; a folder's own files are not compared) or another output."""
    given_inputs = []  # (role, input path, the input file or one of its existing companions and styles)
    for role, path in inputs.items():
        if path and not os.path.isdir(path):
            given_inputs += [(role, path, f) for f in companion_paths(path) if f == path or os.path.exists(f)]
    given_outputs = [(role, path) for role, path in outputs.items() if path]
    for out_role, out_path in given_outputs:
        for written in companion_paths(out_path):
            for in_role, in_path, in_file in given_inputs:
                if same_file(written, in_file):
                    what = "is" if written == out_path else f"would replace '{written}', which belongs to"
                    raise InputError(f"The {out_role} output '{out_path}' {what} the {in_role} '{in_path}': "
                                     "writing it would destroy an input. Give the output another name or folder.")
    for i, (role_a, path_a) in enumerate(given_outputs):
        for role_b, path_b in given_outputs[i + 1:]:
            if same_file(path_a, path_b):
                raise InputError(f"The {role_a} output and the {role_b} output are the same file '{path_a}'; "
                                 "one would replace the other. Give each output its own name.")


def input_files(paths: Iterable[Optional[str]]) -> List[str]:
    """The given paths that are files (a layer source's ``|layername=…`` suffix dropped)."""
    files = []
    for path in paths:
        if path:
            path = str(path).split("|")[0]
            if os.path.isfile(path):
                files.append(path)
    return files

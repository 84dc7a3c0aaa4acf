"""All-or-nothing outputs, and the files that travel with an output.

Files are written beside their destination under a temporary name and moved into place only when the
whole run succeeded, so a failed or cancelled run never leaves a half-written file where a good one was
expected (an earlier good output stays untouched). :class:`OutputTransaction` does this for files that
drivers write (with their GDAL/OGR sidecars and QGIS style), :func:`write_text_files` for text the
engine writes itself. :func:`with_sidecars` / :func:`remove_with_sidecars` know which files belong to
an output.

A commit moves its whole set of files under a journal, and temporary files carry the writer's process id,
so that the next run into the same folder finishes a commit cut short by a kill and removes what a dead run
left (see :mod:`.leftovers`).
"""
from __future__ import annotations

import os
import shutil
from typing import List, Sequence, Tuple

from .errors import InputError
from .leftovers import move_as_set, partial_name, recover_folder, scratch_folder


LAYERED_FORMATS = (".gpkg",)  # files holding several layers: a run writes its own layer and keeps the others
GDAL_SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", "-wal", "-shm", "-journal")
STYLE_SUFFIX = ".qml"  # QGIS's default style beside a file (see styles.py)
SHAPEFILE_COMPANIONS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".shp.xml", ".qmd")


def companion_paths(path: str) -> List[str]:
    """``path`` and every file that travels with it, whether it exists or not: what GDAL/OGR keep beside it
    (``.aux.xml``, ``-wal``, a Shapefile's ``.dbf``…) and its QGIS style (``<stem>.qml``).

    Only known companion names count: another file that merely shares the stem (an input
    raster ``x.tif`` beside an output ``x.shp``) is never touched.
    """
    stem, _ = os.path.splitext(path)
    candidates = [path + suffix for suffix in GDAL_SIDECAR_SUFFIXES] + [stem + STYLE_SUFFIX]
    if path.lower().endswith(".shp"):
        candidates += [stem + ext for ext in SHAPEFILE_COMPANIONS]
    return list(dict.fromkeys([path] + candidates))


def with_sidecars(path: str) -> List[str]:
    """Those of :func:`companion_paths` that exist."""
    return [p for p in companion_paths(path) if os.path.isfile(p)]


def remove_with_sidecars(path: str) -> None:
    """Remove an output with its sidecars and QGIS style (see :func:`with_sidecars`); a missing file is no error."""
    for candidate in with_sidecars(path):
        if os.path.isfile(candidate):
            os.remove(candidate)


class OutputTransaction:
    """Outputs staged under temporary names, moved into place together by :meth:`commit` or removed by
    :meth:`rollback`.

    As a context manager it commits when the block succeeds and rolls back (then re-raises) when the
    block or the commit raises anything, :class:`KeyboardInterrupt` and cancellation included::

        with OutputTransaction() as transaction:
            temp = transaction.stage(path, "polygon layer")
            write(temp)
    """

    def __init__(self):
        self._staged: List[Tuple[str, str]] = []  # (temporary path, final path)
        self._scratch_dir = None

    def stage(self, final_path: str, role: str) -> str:
        """A temporary path beside ``final_path`` (same folder, same extension), checked to be writable."""
        final_path = os.path.abspath(final_path)
        folder, name = os.path.split(final_path)
        stem, ext = os.path.splitext(name)
        blocking = folder
        while blocking and not os.path.exists(blocking):
            blocking = os.path.dirname(blocking)
        if blocking and not os.path.isdir(blocking):
            raise InputError(f"The {role} output '{final_path}' cannot be written: '{blocking}' is a file, "
                             "not a folder. Choose a writable folder.")
        try:
            os.makedirs(folder, exist_ok=True)
            recover_folder(folder)  # a killed run's commit finished, its partial files removed
            temp = os.path.join(folder, partial_name(stem) + ext)
            with open(temp, "wb"):
                pass
            os.remove(temp)  # drivers create the file themselves; we only proved we can
        except OSError as exc:
            raise InputError(f"The {role} output '{final_path}' cannot be written ({exc.strerror}). "
                             "Choose a writable folder.") from exc
        if os.path.isdir(final_path):
            raise InputError(f"The {role} output '{final_path}' is a folder; give a file name.")
        self._staged.append((temp, final_path))
        if ext.lower() in LAYERED_FORMATS and os.path.isfile(final_path):
            self._copy_existing(final_path, temp, role)
        return temp

    @staticmethod
    def _copy_existing(final_path: str, temp: str, role: str) -> None:
        """Start the staged file from the existing one, so that writing a layer adds or replaces that layer
        and keeps the file's other layers (and their styles)."""
        try:
            shutil.copyfile(final_path, temp)
        except OSError as exc:
            raise InputError(f"The {role} output '{final_path}' exists but cannot be copied to add a layer to it "
                             f"({exc.strerror}). Choose another file.") from exc

    def scratch_path(self, name: str) -> str:
        """A path in a private temporary folder for intermediate files, removed at the end."""
        if self._scratch_dir is None:
            self._scratch_dir = scratch_folder()
        return os.path.join(self._scratch_dir, name)

    def __enter__(self) -> "OutputTransaction":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            self.rollback()
            return False  # the exception goes on
        try:
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return False

    def commit(self) -> None:
        """Move every staged file (with its sidecars and style) into place, as one set: the moves are written
        to a journal first, so a run killed halfway is finished by the next run into the folder, and an
        interruption (Ctrl-C, SIGTERM) during the moves finishes them before it goes on."""
        moves, removals = self._commit_plan()
        move_as_set(moves, removals)  # (interrupted, it finishes first: a rollback then finds nothing to undo)
        self._staged.clear()
        self._remove_scratch()

    def _commit_plan(self) -> Tuple[List[Tuple[str, str]], List[str]]:
        """(temporary file, destination) moves, and the stale files beside the destinations that no moved
        file replaces (an old ``.aux.xml`` would describe the old raster)."""
        moves: List[Tuple[str, str]] = []
        stale: List[str] = []
        for temp, final in self._staged:
            stem_t, _ = os.path.splitext(temp)
            stem_f, _ = os.path.splitext(final)
            keep_style = final.lower().endswith(LAYERED_FORMATS) and not os.path.isfile(stem_t + STYLE_SUFFIX)
            for old in with_sidecars(final):
                if old != final and not (keep_style and old == stem_f + STYLE_SUFFIX):
                    stale.append(old)  # a multi-layer file's own style beside it belongs to its other layers
            for produced in with_sidecars(temp):
                target = final + produced[len(temp):] if produced.startswith(temp) else stem_f + produced[len(stem_t):]
                moves.append((produced, target))
        targets = {target for _, target in moves}
        return moves, [old for old in stale if old not in targets]

    def rollback(self) -> None:
        for temp, _ in self._staged:
            for produced in with_sidecars(temp):
                try:
                    os.remove(produced)
                except OSError:
                    pass
        self._staged.clear()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None


def write_text_files(contents: Sequence[Tuple[str, str]], role: str) -> None:
    """Write each ``(path, text)`` (UTF-8, line ends as in ``text``) all or nothing.

    Every text first goes to a new temporary file beside its path; the temporaries are moved into place
    (``os.replace``, several under a journal) only once all are written, and removed on any failure, so an
    earlier file is either kept whole or replaced whole, and a set of files never ends half old, half new. Raises :class:`InputError` naming ``role`` when a folder or temporary
    file cannot be created or written.
    """
    staged: List[Tuple[str, str]] = []  # (temporary path, final path)
    try:
        for path, text in contents:
            path = os.path.abspath(path)
            staged.append((_write_temp_beside(path, text, role), path))
        move_as_set(staged)
    except BaseException:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.remove(temp)
        raise


def _write_temp_beside(path: str, text: str, role: str) -> str:
    """Write ``text`` to a new temporary file in ``path``'s folder (created with the umask's mode, unlike
    ``mkstemp``'s 0600); returns its path."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, partial_name(name))
    try:
        os.makedirs(folder, exist_ok=True)
        recover_folder(folder)
        with open(temp, "x", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        if os.path.exists(temp):
            os.remove(temp)
        raise InputError(f"The {role} '{path}' cannot be written ({exc.strerror}). Choose a writable "
                         "folder.") from exc
    return temp

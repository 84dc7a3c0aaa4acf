"""What a run leaves behind when it is killed, recognised and put right by the next run.

Every file a run writes before its outputs are in place carries the writer's process id in its name:
staged outputs ``.<stem>.partial-<pid>-<hex>[.ext]`` beside their destination, scratch folders
``samrs-<pid>-…`` under the system's temporary folder, and, while a set of outputs is being moved into place,
a commit journal ``.samrs-commit-<pid>-<hex>.json`` listing every move. A run killed at any moment (SIGKILL,
power loss) leaves at most these. The next run that writes into a folder first finishes every journal of a
dead process there (the moves are all-or-nothing as a set: a journal is written only when every staged file
is complete), then removes the partial files and scratch folders whose process is gone. Files of live
processes, and files that are not ours by name, are never touched.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from typing import List, Sequence, Set, Tuple

PARTIAL_MARK = ".partial-"
PARTIAL_NAME = re.compile(r"^\..+\.partial-(\d+)-[0-9a-f]{8}")  # our staged files and their sidecars
JOURNAL_NAME = re.compile(r"^\.samrs-commit-(\d+)-[0-9a-f]{8}\.json$")
SCRATCH_PREFIX = "samrs-"
SCRATCH_NAME = re.compile(r"^samrs-(\d+)-")

_recovered: Set[str] = set()  # folders this process has already put right
_scratch_cleaned = False


def run_tag() -> str:
    """``<pid>-<8 hex>``: what names this process's temporary files."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def partial_name(name: str) -> str:
    """The staged name of a file called ``name`` (``.<name>.partial-<pid>-<hex>``)."""
    return f".{name}{PARTIAL_MARK}{run_tag()}"


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# -- commit journals ------------------------------------------------------------------------------

def write_journal(folder: str, moves: Sequence[Tuple[str, str]], removals: Sequence[str]) -> str:
    """Record a set of moves (temporary path, destination) and removals (stale files) before carrying them
    out; returns the journal's path. Written whole or not at all."""
    path = os.path.join(folder, f".samrs-commit-{run_tag()}.json")
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "removals": list(removals), "moves": [list(m) for m in moves]}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
    return path


def apply_moves(moves: Sequence[Tuple[str, str]], removals: Sequence[str]) -> None:
    """Carry out a commit: the stale files first, then the moves. Idempotent: a removal is never of a file
    the set puts in place, and a move whose temporary file is gone has happened."""
    for stale in removals:
        if os.path.isfile(stale):
            os.remove(stale)
    for temp, target in moves:
        if os.path.exists(temp):
            os.replace(temp, target)


def move_as_set(moves: Sequence[Tuple[str, str]], removals: Sequence[str] = ()) -> None:
    """Carry out the moves and removals as one set: under a journal (so a kill is finished by the next run
    into the folder of the first destination), and finishing them when interrupted (Ctrl-C, SIGTERM)
    before the interruption goes on. A single move needs no journal: ``os.replace`` is atomic."""
    if len(moves) + len(removals) <= 1:
        apply_moves(moves, removals)
        return
    journal = write_journal(os.path.dirname(moves[0][1] if moves else removals[0]), moves, removals)
    try:
        apply_moves(moves, removals)
    except KeyboardInterrupt:
        apply_moves(moves, removals)
        os.remove(journal)
        raise
    os.remove(journal)


def finish_journal(path: str) -> None:
    """Complete the commit a journal records and remove the journal."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return  # a journal that was never written whole: its commit never started
    apply_moves([tuple(m) for m in record.get("moves", [])], record.get("removals", []))
    os.remove(path)


# -- recovery at the next start -------------------------------------------------------------------

def _dead_owner(pattern: re.Pattern, name: str) -> bool:
    match = pattern.match(name)
    return bool(match) and not process_alive(int(match.group(1)))


def recover_folder(folder: str) -> List[str]:
    """Finish the commits of dead runs in ``folder``, then remove their partial files; returns what was done
    (one line each). Done once per folder and process."""
    folder = os.path.abspath(folder)
    if folder in _recovered or not os.path.isdir(folder):
        return []
    _recovered.add(folder)
    done = []
    names = sorted(os.listdir(folder))
    for name in names:
        if _dead_owner(JOURNAL_NAME, name):
            finish_journal(os.path.join(folder, name))
            done.append(f"finished the interrupted commit {name}")
    for name in names:
        path = os.path.join(folder, name)
        if _dead_owner(PARTIAL_NAME, name) and os.path.exists(path):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            done.append(f"removed {name}")
        elif name.endswith(".json.tmp") and _dead_owner(JOURNAL_NAME, name[:-4]):
            os.remove(path)
    return done


def scratch_folder() -> str:
    """A new private scratch folder ``samrs-<pid>-…`` under the system's temporary folder; the first call
    of a process also removes the scratch folders of dead runs."""
    global _scratch_cleaned
    root = tempfile.gettempdir()
    if not _scratch_cleaned:
        _scratch_cleaned = True
        for name in os.listdir(root):
            if _dead_owner(SCRATCH_NAME, name) and os.path.isdir(os.path.join(root, name)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")

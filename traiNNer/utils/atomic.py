"""Atomic file writes: a crash mid-write never leaves a corrupt file under the final name.

Each write goes to `.<final name>.<8 hex digits>.tmp` next to the final file and is renamed
over it once complete. A process killed mid-write (SIGKILL, power loss) leaves only such a
temp file: `remove_stale_temp_files` deletes them when a run starts or resumes, and
`discard_pending_writes` deletes this process's own when it exits at once on a signal.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

# `tempfile.mkstemp`'s names (used before) have the same shape: 8 characters of [a-z0-9_].
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

# Temp files of writes in progress in this process. A name is added before its file is
# created and removed after the rename, so a signal handler running at any point between
# two bytecodes finds every temp file that exists.
_pending: set[Path] = set()


def _create_temp(path: Path) -> Path:
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        _pending.add(tmp)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer's name: not ours to delete
            _pending.discard(tmp)


def write_atomic(path: str | Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _pending.discard(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_pending_writes() -> None:
    """Delete the temp files of writes in progress (before exiting without finishing them)."""
    for tmp in list(_pending):
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(folders: Iterable[Path]) -> int:
    """Delete temp files that killed writers left in `folders`; returns how many."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP_NAME.match(path.name) and path not in _pending and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed

"""Every image of every dataset decoded once, before training starts.

A file with a valid header but broken pixels (a truncated PNG, a half-copied
JPEG) passes the header checks made when a dataset is built, and would stop
the run when it is first drawn, possibly hours in, and again on every resume
since the order is deterministic. `check_datasets` decodes each file once, on
a thread pool: torchvision's and Pillow's decoders release the GIL, so threads
scale without a process pool's start-up and pickling. Files that decoded are
remembered by (path, size, mtime_ns), so a restart decodes only new or
changed files.

The cache is one SQLite file in the user's cache folder (`$TRAINNER_CACHE_DIR`,
else `$XDG_CACHE_HOME/traiNNer-auto`, else `~/.cache/traiNNer-auto`): not in the
run folder, which must not exist before the checks pass (and differs per run
name, so a renamed run would check again), and not in the dataset folders,
which may be read-only or shared and are not written to without asking.
SQLite because it updates rows in place (a large dataset's entries are not
rewritten every run) and serialises concurrent runs by itself. A cache that
cannot be opened or written only costs the speed-up.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch.distributed as torch_dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.image_io import verify_image
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import DataError
from traiNNer.utils.logger import CONSOLE, LOGGER_NAME

# Bump when what counts as decodable changes, so older cache entries are ignored.
CHECKER_VERSION = 1
CACHE_FILE_NAME = "image_check.sqlite3"
# Below this many files to decode the check takes a second or two: no bar.
PROGRESS_MIN_FILES = 500
# More threads than this only add peak memory (each holds a decoded image).
MAX_THREADS = 16
# Paths named in the skip warning; the rest are counted.
WARN_MAX_PATHS = 10

Stat = tuple[int, int]  # (size, mtime_ns)


@runtime_checkable
class CheckableDataset(Protocol):
    """A dataset whose items are image files (the built-in image datasets)."""

    opt: DatasetOptions
    prefix: str  # 'datasets.<key>'

    def image_files(self) -> list[tuple[tuple[str, Path], ...]]:
        """Per item, its files, each with the option key it comes from."""
        ...

    def keep_items(self, indices: Sequence[int]) -> None:
        """Keep only these items (in this order)."""
        ...

    def __len__(self) -> int: ...


@dataclass
class CheckReport:
    """What a check found: `decoded` of `files` were decoded now, the rest came from the cache."""

    files: int = 0
    decoded: int = 0
    corrupt: dict[Path, str] = field(default_factory=dict)  # file -> why it does not decode
    seconds: float = 0.0


def default_cache_file() -> Path:
    root = os.environ.get("TRAINNER_CACHE_DIR")
    if root:
        return Path(root).expanduser() / CACHE_FILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "traiNNer-auto" / CACHE_FILE_NAME


def thread_count() -> int:
    """The CPU cores this process may use, shared with the other ranks on its node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_THREADS, (cores or 1) // max(1, local_ranks)))


def check_datasets(
    datasets: Mapping[str, Any],
    *,
    dist: DistInfo | None = None,
    cache_file: Path | None = None,
    threads: int | None = None,
) -> CheckReport:
    """Decode every file of `datasets` (keyed as under `datasets:`) once, or raise DataError.

    A file that does not decode is a one-line DataError naming it and its
    option, unless its dataset sets `skip_corrupt_images`: then its items are
    left out with one warning. With DDP each rank decodes a share and all
    ranks see every result, so they leave out the same items. Datasets that
    are not `CheckableDataset`s (registered by plugins) are not checked.
    `cache_file` defaults to `default_cache_file()`.
    """
    dist = dist or DistInfo()
    started = time.perf_counter()
    checkable = {k: d for k, d in datasets.items() if isinstance(d, CheckableDataset)}
    items = {key: dataset.image_files() for key, dataset in checkable.items()}
    # A file in several datasets (val drawn from the training folder) is decoded once.
    files = list(dict.fromkeys(path for rows in items.values() for row in rows for _, path in row))
    share = files[dist.rank :: dist.world_size]
    cache = _Cache(cache_file or default_cache_file())
    decoded, good, corrupt = _check_files(share, cache, threads or thread_count(), dist)
    results = _gather((decoded, good, corrupt), dist)
    report = CheckReport(files=len(files), seconds=time.perf_counter() - started)
    all_good: list[tuple[str, Stat]] = []
    for rank_decoded, rank_good, rank_corrupt in results:
        report.decoded += rank_decoded
        all_good += rank_good
        report.corrupt.update({Path(p): why for p, why in rank_corrupt.items()})
    if dist.is_main:
        cache.store(all_good, [str(p) for p in report.corrupt])
    cache.close()
    if dist.is_main and report.decoded:
        unchanged = report.files - report.decoded
        logging.getLogger(LOGGER_NAME).info(
            f"Decoded {report.decoded:,} dataset images in {report.seconds:.1f} s"
            + (f" ({unchanged:,} unchanged since their last check)" if unchanged else "")
        )
    for key, dataset in checkable.items():
        _apply(dataset, items[key], report.corrupt, dist)
    return report


def _check_files(
    paths: list[Path], cache: _Cache, threads: int, dist: DistInfo
) -> tuple[int, list[tuple[str, Stat]], dict[str, str]]:
    """(files decoded, [(path, stat) that decoded], {path: why it does not}) for `paths`."""
    names = [os.path.abspath(path) for path in paths]
    with ThreadPoolExecutor(threads, thread_name_prefix="image-check") as pool:
        stats = list(pool.map(_stat, paths))  # threads too: a network file system is slow to stat
        corrupt = {
            name: stat for name, stat in zip(names, stats, strict=True) if isinstance(stat, str)
        }
        known = cache.lookup(name for name in names if name not in corrupt)
        todo = [
            (path, name, stat)
            for path, name, stat in zip(paths, names, stats, strict=True)
            if not isinstance(stat, str) and known.get(name) != stat
        ]
        good: list[tuple[str, Stat]] = []
        with _CheckProgress(len(todo) * dist.world_size, dist) as progress:
            for (_, name, stat), error in zip(
                todo, pool.map(_decode_error, [path for path, _, _ in todo]), strict=True
            ):
                if error is None:
                    good.append((name, stat))
                else:
                    corrupt[name] = error
                progress.advance()
    return len(todo), good, corrupt


def _stat(path: Path) -> Stat | str:
    try:
        result = path.stat()
    except OSError as err:
        return f"cannot read image '{path}': {err.strerror or err}"
    return result.st_size, result.st_mtime_ns


def _decode_error(path: Path) -> str | None:
    """None when `path` decodes as training would read it, else why not (one line)."""
    try:
        verify_image(path)
    except DataError as err:
        return _one_line(str(err))
    except Exception as err:  # any decoder failure means training could not read the file
        return _one_line(f"cannot decode image '{path}': {type(err).__name__}: {err}")
    return None


def _one_line(message: str) -> str:
    return " ".join(message.split())


class _CheckProgress:
    """A transient bar on an interactive terminal (rank 0) when there is enough to decode."""

    def __init__(self, total: int, dist: DistInfo) -> None:
        self.bar: Progress | None = None
        if dist.is_main and total >= PROGRESS_MIN_FILES and CONSOLE.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]checking images"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=CONSOLE,
                transient=True,
            )
            # This rank's share: every rank decodes about as many.
            self.task = self.bar.add_task("check", total=total // dist.world_size)

    def __enter__(self) -> _CheckProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *args: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _gather(obj: Any, dist: DistInfo) -> list[Any]:
    if not dist.enabled:
        return [obj]
    gathered: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def _apply(
    dataset: CheckableDataset,
    rows: list[tuple[tuple[str, Path], ...]],
    corrupt: dict[Path, str],
    dist: DistInfo,
) -> None:
    """Raise for the dataset's first bad file, or leave its bad items out when it may."""
    by_name = {os.path.abspath(path): why for path, why in corrupt.items()}
    bad_files: list[tuple[str, Path, str]] = []  # (option key, file, why)
    bad_items: set[int] = set()
    for index, row in enumerate(rows):
        for option, path in row:
            why = by_name.get(os.path.abspath(path))
            if why is not None:
                bad_files.append((option, path, why))
                bad_items.add(index)
    if not bad_files:
        return
    option, path, why = bad_files[0]
    switch = f"{dataset.prefix}.skip_corrupt_images: true"
    unit = "pair(s)" if len(rows[0]) > 1 else "image(s)"
    if not dataset.opt.skip_corrupt_images:
        more = len(bad_files) - 1
        hint = f"{more} more file(s) do not decode; " if more else ""
        raise DataError(f"{option}: {why} ({hint}{switch} leaves such {unit} out)")
    if len(bad_items) == len(rows):
        raise DataError(
            f"{option}: {why} (none of the {len(rows)} {unit} of {dataset.prefix} decodes)"
        )
    dataset.keep_items([i for i in range(len(rows)) if i not in bad_items])
    if dist.is_main:
        names = ", ".join(f"'{p}'" for _, p, _ in bad_files[:WARN_MAX_PATHS])
        rest = len(bad_files) - WARN_MAX_PATHS
        logging.getLogger(LOGGER_NAME).warning(
            f"{switch}: left out {len(bad_items)} of {len(rows)} {unit} because "
            f"{len(bad_files)} file(s) do not decode: {names}"
            + (f" and {rest} more" if rest > 0 else "")
        )


class _Cache:
    """Files that decoded, by absolute path, with the (size, mtime_ns) they had then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(path, timeout=30)
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS decoded (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                "mtime_ns INTEGER NOT NULL, checker INTEGER NOT NULL) WITHOUT ROWID"
            )
            self.connection.commit()
        except (OSError, sqlite3.Error) as err:
            self._give_up(err)

    def _give_up(self, err: Exception) -> None:
        logging.getLogger(LOGGER_NAME).debug(f"image check cache {self.path} not used: {err}")
        self.close()

    def lookup(self, names: Iterable[str]) -> dict[str, Stat]:
        """The cached (size, mtime_ns) of those of `names` that decoded before."""
        found: dict[str, Stat] = {}
        if self.connection is None:
            return found
        pending = list(names)
        try:
            for start in range(0, len(pending), 500):  # SQLite caps parameters per query
                chunk = pending[start : start + 500]
                rows = self.connection.execute(
                    "SELECT path, size, mtime_ns FROM decoded WHERE checker = ? "
                    f"AND path IN ({', '.join('?' * len(chunk))})",
                    [CHECKER_VERSION, *chunk],
                )
                found.update({path: (size, mtime) for path, size, mtime in rows})
        except sqlite3.Error as err:
            self._give_up(err)
            return {}
        return found

    def store(self, good: list[tuple[str, Stat]], bad: list[str]) -> None:
        if self.connection is None or not (good or bad):
            return
        try:
            with self.connection:
                self.connection.executemany(
                    "INSERT OR REPLACE INTO decoded VALUES (?, ?, ?, ?)",
                    [(name, size, mtime, CHECKER_VERSION) for name, (size, mtime) in good],
                )
                self.connection.executemany(
                    "DELETE FROM decoded WHERE path = ?", [(name,) for name in bad]
                )
        except sqlite3.Error as err:
            self._give_up(err)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

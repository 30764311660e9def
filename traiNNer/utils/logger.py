"""Console/file logging, the traiNNer-redux style status line and TensorBoard."""

from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LOGGER_NAME = "traiNNer"
# One console for log lines and the progress bar, so lines print above the bar.
CONSOLE = Console()


def setup_logging(log_file: Path | None, is_main: bool) -> logging.Logger:
    """Console (rich) and file handlers on the `traiNNer` logger; quiet on other ranks."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    console = RichHandler(
        console=CONSOLE, show_path=False, show_time=False, markup=False, rich_tracebacks=False
    )
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if log_file is not None and is_main:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    return logger


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


def status_line(
    epoch: int,
    iteration: int,
    lr: float,
    iters_per_second: float,
    eta_seconds: float,
    peak_memory_gb: float | None,
    values: dict[str, float],
) -> str:
    """`[epoch: 0, iter: 100, lr:(1.000e-04)] [performance: 4.7 it/s] ... l_g_l1: ...`"""
    parts = [
        f"[epoch: {epoch}, iter: {iteration:,}, lr:({lr:.3e})]",
        f"[performance: {iters_per_second:.2f} it/s]",
        f"[eta: {format_eta(eta_seconds)}]",
    ]
    if peak_memory_gb is not None:
        parts.append(f"[peak VRAM: {peak_memory_gb:.2f} GB]")
    parts.append(" ".join(f"{name}: {value:.4e}" for name, value in values.items()))
    return " ".join(parts)


class TensorBoard:
    """A SummaryWriter on rank 0 (or nothing): `add_scalar`/`add_image` are no-ops otherwise."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer: Any = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            from traiNNer.reporting.tensorboard_layout import custom_scalars_layout

            self.writer = SummaryWriter(log_dir=str(log_dir))
            # Written with every (re)start: TensorBoard reads the layout from any event file.
            self.writer.add_custom_scalars(custom_scalars_layout())

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def add_image(self, tag: str, image: Any, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """A rich progress bar over the iterations, shown only on an interactive terminal."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.progress: Progress | None = None
        if enabled and sys.stdout.isatty():
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=CONSOLE,
            )
            self.task = self.progress.add_task("train", total=total, completed=start)
            self.progress.start()

    def update(self, iteration: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def record_in_log_file(message: str) -> None:
    """Write an error the user saw on stderr into the run's log file too, when one exists
    (the console already printed it)."""
    logger = logging.getLogger(LOGGER_NAME)
    record = logger.makeRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, (), None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)

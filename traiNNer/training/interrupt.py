"""Signals stop training at the next iteration boundary, so the saved state is exact.

The first SIGINT (Ctrl+C), SIGTERM (schedulers, `docker stop`, `timeout`) or SIGHUP only
records the signal: the trainer saves a resumable state at the next iteration boundary (a
validation in progress is abandoned and redone on resume) and train.py exits with 128 + the
signal number (130, 143, 129), as a shell reports a process that signal ended. A second
signal exits at once: the temp files of writes in progress are deleted (final names only
ever hold complete files) and the states saved before stay. Under DDP the ranks agree on
the signal every `sync_every` iterations, so that all of them stop at the same iteration.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as torch_dist

from traiNNer.utils.atomic import discard_pending_writes
from traiNNer.utils.checkpoint import latest_training_state
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.logger import CONSOLE, LOGGER_NAME

# SIGHUP (terminal closed) does not exist on Windows.
HANDLED_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class GracefulInterrupt:
    def __init__(self, dist: DistInfo, sync_every: int, states_dir: Path | None = None) -> None:
        self.dist = dist
        self.sync_every = max(1, sync_every)
        self.states_dir = states_dir  # named in the second signal's message
        self.received = 0  # the first signal this process received; 0: none
        self.signum = 0  # the signal training stops for (under DDP: agreed by the ranks)
        self.stopping = False  # all ranks stop at this iteration
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *args: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def flag(self) -> bool:
        """A signal arrived here: work that can be abandoned (validation) stops."""
        return self.received != 0

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if not self.received:
            self.received = signum
            self.signum = self.signum or signum
            return
        # The second signal: exit now, leaving only complete files behind.
        discard_pending_writes()
        state = latest_training_state(self.states_dir) if self.states_dir else None
        logging.getLogger(LOGGER_NAME).warning(
            f"second {signal_name(signum)}: exiting now; the last saved state is "
            f"{state or 'none (nothing saved yet)'}"
        )
        CONSOLE.show_cursor(True)  # a progress bar hides it
        os._exit(128 + signum)

    def stop_now(self, signum: int) -> None:
        """Stop at this iteration; every rank calls it at the same point (after a broadcast)."""
        self.signum = self.signum or signum
        self.stopping = True

    def requested(self, iteration: int) -> bool:
        """True when training should stop after `iteration` (same answer on every rank)."""
        if self.stopping:
            return True
        if not self.dist.enabled:
            self.stopping = self.signum != 0
            return self.stopping
        if iteration % self.sync_every != 0:
            return False
        # The largest signal number wins, so that every rank exits with the same code.
        agreed = torch.tensor([float(self.signum)])
        if torch_dist.get_backend() == "nccl":
            agreed = agreed.cuda()
        torch_dist.all_reduce(agreed, op=torch_dist.ReduceOp.MAX)
        self.signum = int(agreed.item())
        self.stopping = self.signum != 0
        return self.stopping


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: a signal sent to a whole process group or
    cgroup (Ctrl+C, `timeout`, Slurm, systemd) is for the main process, which stops at an
    iteration boundary and then shuts its workers down; a worker the signal killed would make
    the DataLoader raise instead. SIGTERM from the main process itself, which is how the
    DataLoader and multiprocessing stop workers, still ends the worker at once."""
    del worker_id
    for signum in HANDLED_SIGNALS:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # (Linux; elsewhere SIGTERM keeps ending workers)
        # Blocked here, so also in every thread the worker starts later: only the waiting
        # thread sees SIGTERM, with its sender.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)  # as PyTorch's own worker SIGTERM handler does

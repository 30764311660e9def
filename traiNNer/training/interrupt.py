"""Ctrl+C stops training at the next iteration boundary, so the saved state is exact.

The first SIGINT only raises a flag; a second one interrupts at once (the default
behaviour). Under DDP the ranks agree on the flag every `sync_every` iterations,
so that all of them stop at the same iteration.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch
import torch.distributed as torch_dist

from traiNNer.utils.dist import DistInfo


class GracefulInterrupt:
    def __init__(self, dist: DistInfo, sync_every: int) -> None:
        self.dist = dist
        self.sync_every = max(1, sync_every)
        self.flag = False
        self._previous: object = None

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *args: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def requested(self, iteration: int) -> bool:
        """True when training should stop after `iteration` (same answer on every rank)."""
        if not self.dist.enabled:
            return self.flag
        if iteration % self.sync_every != 0:
            return False
        flag = torch.tensor([1.0 if self.flag else 0.0])
        if torch_dist.get_backend() == "nccl":
            flag = flag.cuda()
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

"""An endless, resumable stream of training batches.

Every sample's random crop/flip is drawn after seeding `random` from
(seed, epoch, position), so the stream depends only on where training is, not
on worker scheduling or on how the run was interrupted: a resumed run sees the
same batches as an uninterrupted one. The batch size may change between
iterations (batch-size automation) without losing the position.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.loader import EnlargedSampler, auto_enlarge_ratio
from traiNNer.training.interrupt import ignore_stop_signals
from traiNNer.utils.errors import DataError, UserError

SampleKey = tuple[int, int]

# The last line of the worker traceback PyTorch puts in the re-raised exception's
# message: 'traiNNer.utils.errors.DataError: <the one-line message>'.
_WORKER_ERROR_LINE = re.compile(r"^[\w.]+: (?P<message>.+)$")


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + position) % 2**31


class _SeededSamples(Dataset[dict[str, Any]]):
    """Seeds the augmentation RNGs from the sampler's per-position seed, then loads."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        index, seed = key
        random.seed(seed)
        np.random.seed(seed)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class _PositionSampler(Sampler[SampleKey]):
    """This rank's share of one epoch, from `start` on, with a seed per position."""

    def __init__(self, inner: EnlargedSampler, seed: int) -> None:
        self.inner = inner
        self.seed = seed
        self.start = 0

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(self.inner)
        epoch = self.inner.epoch
        for position in range(self.start, len(indices)):
            yield indices[position], _sample_seed(self.seed, epoch, position)

    def __len__(self) -> int:
        return len(self.inner) - self.start


class TrainBatches:
    """`next(batches)` gives the next training batch; `state_dict` is the position."""

    def __init__(
        self,
        dataset: Dataset[Any],
        opt: DatasetOptions,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        use_cuda: bool = False,
    ) -> None:
        self.dataset = _SeededSamples(dataset)
        self.opt = opt
        self.use_cuda = use_cuda
        size = len(self.dataset)
        ratio = opt.dataset_enlarge_ratio
        if ratio == "auto":
            ratio = auto_enlarge_ratio(size, opt.batch_size_per_gpu, world_size)
        self.sampler = _PositionSampler(
            EnlargedSampler(size, ratio, seed=seed, rank=rank, world_size=world_size),
            seed + rank,
        )
        self.epoch = 0
        self.position = 0
        self.key = "datasets.train"
        self.ratio = ratio
        self.world_size = world_size
        self.batch_size = batch_size
        self._check_batch_size()
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._loader: DataLoader[Any] | None = None

    @property
    def samples_per_epoch(self) -> int:
        return len(self.sampler.inner)

    def set_batch_size(self, batch_size: int) -> None:
        """Takes effect from the next batch; the position in the epoch is kept."""
        if batch_size != self.batch_size:
            self.batch_size = batch_size
            self._check_batch_size()
            self._iterator = None
            self._loader = None

    def _check_batch_size(self) -> None:
        # An epoch shorter than one batch would yield nothing, forever.
        if self.samples_per_epoch < self.batch_size:
            raise DataError(
                f"{self.key}: {len(self.dataset)} image(s) x dataset_enlarge_ratio {self.ratio} "
                f"over {self.world_size} GPU(s) is fewer than one batch of {self.batch_size}; "
                "raise dataset_enlarge_ratio (or use 'auto') or lower batch_size_per_gpu"
            )

    def _start_iterator(self) -> Iterator[dict[str, Any]]:
        if self.samples_per_epoch - self.position < self.batch_size:
            self.epoch += 1
            self.position = 0
        self.sampler.inner.set_epoch(self.epoch)
        self.sampler.start = self.position
        if self._loader is None:
            workers = self.opt.num_worker_per_gpu
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self.sampler,
                drop_last=True,
                num_workers=workers,
                pin_memory=self.opt.pin_memory and self.use_cuda,
                persistent_workers=self.opt.persistent_workers and workers > 0,
                prefetch_factor=self.opt.prefetch_factor if workers > 0 else None,
                worker_init_fn=ignore_stop_signals,
            )
        return iter(self._loader)

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._iterator is None:
                self._iterator = self._start_iterator()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.position = self.samples_per_epoch  # forces the next epoch
                continue
            except UserError as err:  # e.g. a file that changed after the check
                self._stop_workers()
                _reraise_one_line(err)
            self.position += self.batch_size
            return batch

    def _stop_workers(self) -> None:
        """Drop the iterator, ending its workers now.

        The exception being handled holds the iterator in a reference cycle, so
        it would otherwise be freed by the garbage collector, which closes its
        queues before the workers are told to stop: each then takes the 5 s
        join timeout. `_shutdown_workers` is private, hence the getattr.
        """
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()

    def __iter__(self) -> TrainBatches:
        return self

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._iterator = None


def _reraise_one_line(err: UserError) -> NoReturn:
    """A UserError from a loader worker, as the one line the worker raised.

    PyTorch re-raises a worker's exception in the main process as the same
    type with the worker's whole traceback as its message; the user gets only
    the worker's own message.
    """
    message = str(err)
    if message.startswith("Caught ") and "\n" in message:
        last = message.rstrip().splitlines()[-1]
        match = _WORKER_ERROR_LINE.match(last)
        raise type(err)(match["message"] if match else last) from None
    raise err


def first_samples(batch: dict[str, Any], count: int) -> dict[str, Any]:
    """The first `count` samples of a collated batch (tensors and lists alike)."""
    return {
        key: value[:count] if isinstance(value, torch.Tensor | list) else value
        for key, value in batch.items()
    }

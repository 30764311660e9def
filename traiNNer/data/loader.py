"""DataLoader construction: enlarged shuffling sampler, sharding, worker setup."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.base_dataset import Phase
from traiNNer.utils.errors import DataError

# `dataset_enlarge_ratio: auto` repeats the dataset until one epoch holds at
# least this many batches per GPU: epoch boundaries (sampler reshuffle, worker
# restart when workers are not persistent) then cost nothing noticeable even
# for a dataset of a handful of images.
AUTO_MIN_BATCHES_PER_EPOCH = 1000


def auto_enlarge_ratio(dataset_size: int, batch_size: int, world_size: int = 1) -> int:
    """Smallest ratio giving each of `world_size` ranks >= 1000 batches an epoch."""
    wanted = AUTO_MIN_BATCHES_PER_EPOCH * batch_size * world_size
    return max(1, math.ceil(wanted / dataset_size))


class EnlargedSampler(Sampler[int]):
    """Shuffles `dataset_size * ratio` indices, then gives each rank one shard.

    Same semantics as DistributedSampler: all ranks use the same seed, so their
    shuffles agree and rank r takes positions r, r + world_size, ...; the list
    is padded by wrapping so every rank gets the same count. Call
    `set_epoch(epoch)` at each epoch for a fresh shuffle.
    """

    def __init__(
        self, dataset_size: int, ratio: int, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if dataset_size < 1 or ratio < 1:
            raise ValueError(f"dataset_size and ratio must be >= 1, got {dataset_size}, {ratio}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset_size = dataset_size
        self.ratio = ratio
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.total_size = dataset_size * ratio
        self.num_samples = math.ceil(self.total_size / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.total_size, generator=generator)
        padding = self.num_samples * self.world_size - self.total_size
        if padding:
            order = torch.cat([order, order[:padding]])
        shard = order[self.rank :: self.world_size] % self.dataset_size
        # Once per epoch on a CPU tensor, not per iteration.
        return iter(shard.tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(Sampler[int]):
    """Validation sharding: rank r gets images r, r + world_size, ... in order, no padding."""

    def __init__(self, dataset_size: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, dataset_size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _dataset_size(dataset: Dataset[Any]) -> int:
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} must define __len__")
    return len(dataset)


def build_dataloader(
    dataset: Dataset[Any],
    opt: DatasetOptions,
    phase: Phase,
    *,
    batch_size: int | None = None,
    seed: int | None,
    rank: int = 0,
    world_size: int = 1,
    use_cuda: bool,
    key: str | None = None,
) -> DataLoader[Any]:
    """A loader for `phase`; `batch_size` overrides `opt.batch_size_per_gpu`.

    Train: EnlargedSampler (reachable as `loader.sampler`), drop_last, workers
    per `opt`. With a seed the whole stream is reproducible: the sampler
    shuffles from `seed` and workers are seeded from a generator seeded with
    `seed + rank` (PyTorch seeds `random`, numpy and torch in each worker
    from it). Without a seed, world_size must be 1 since ranks must agree.
    Val: batch 1, fixed order, loaded in the main process.
    `key` names the `datasets:` entry in error messages (defaults to the phase).
    """
    size = _dataset_size(dataset)
    pin_memory = opt.pin_memory and use_cuda
    if phase == "val":
        sampler = ShardSampler(size, rank=rank, world_size=world_size) if world_size > 1 else None
        return DataLoader(
            dataset, batch_size=1, shuffle=False, sampler=sampler, pin_memory=pin_memory
        )

    batch = opt.batch_size_per_gpu if batch_size is None else batch_size
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    if seed is None and world_size > 1:
        raise ValueError("a seed is required when world_size > 1 so all ranks shuffle alike")
    ratio = opt.dataset_enlarge_ratio
    if ratio == "auto":
        ratio = auto_enlarge_ratio(size, batch, world_size)
    sampler_seed = seed if seed is not None else random.randrange(2**31)
    sampler = EnlargedSampler(size, ratio, seed=sampler_seed, rank=rank, world_size=world_size)
    if len(sampler) < batch:
        raise DataError(
            f"datasets.{key or phase}: {size} image(s) x dataset_enlarge_ratio {ratio} "
            f"over {world_size} GPU(s) is fewer than one batch of {batch}; raise "
            "dataset_enlarge_ratio (or use 'auto') or lower batch_size_per_gpu"
        )
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh augmentation stream each run
    else:
        generator.manual_seed(seed + rank)
    workers = opt.num_worker_per_gpu
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=opt.persistent_workers and workers > 0,
        prefetch_factor=opt.prefetch_factor if workers > 0 else None,
        generator=generator,
    )

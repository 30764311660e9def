"""Distributed (torchrun) setup: rank information and small helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(launcher: str, backend: str | None, port: int = 29500) -> DistInfo:
    """Join the process group torchrun set up (`--launcher pytorch`), or run alone.

    `port` (dist_params.port) is the rendezvous port when the launcher did not set one.
    """
    if launcher == "none":
        return DistInfo()
    os.environ.setdefault("MASTER_PORT", str(port))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()


def replicas_agree(tensors: list[torch.Tensor], info: DistInfo) -> bool:
    """True when every rank holds the same values (compared by a float64 checksum)."""
    if not info.enabled:
        return True
    checksum = torch.stack([t.detach().double().sum() for t in tensors]).sum().reshape(1)
    checksum = checksum.to("cuda" if torch_dist.get_backend() == "nccl" else "cpu")
    gathered = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    torch_dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown_distributed() -> None:
    """Tear the process group down before exit (its threads otherwise abort the process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

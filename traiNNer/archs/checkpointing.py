"""Activation checkpointing for architectures whose spandrel class has the key but not the
feature (`use_checkpoint` in traiNNer-redux's HAT and DRCT).

Each block keeps its parameters and state-dict keys, so spandrel still recognises the
weights: only its class is swapped for a subclass whose forward recomputes activations
in the backward pass instead of storing them (less memory, about a third more compute).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@cache
def _checkpointed_class(cls: type[nn.Module]) -> type[nn.Module]:
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        parent_forward = cls.forward.__get__(self)  # the block's own forward
        if self.training and torch.is_grad_enabled():
            return checkpoint(parent_forward, *args, use_reentrant=False, **kwargs)
        return parent_forward(*args, **kwargs)

    # A class per block type, cached, so deepcopy (EMA) and isinstance keep working.
    checkpointed = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward})
    return checkpointed


def checkpoint_each(blocks: Iterable[nn.Module]) -> None:
    """Make every block recompute its activations in backward while training."""
    for block in blocks:
        block.__class__ = _checkpointed_class(type(block))

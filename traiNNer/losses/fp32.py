"""Run a loss's forward in float32 even when the training step uses autocast."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)
Forward = Callable[[ModuleT, Tensor, Tensor], Tensor]


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which autocast is off for `device`'s type (a no-op where unsupported)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def fp32_forward(forward: Forward[ModuleT]) -> Forward[ModuleT]:
    """Wrap `forward(self, sr, gt)` so it sees float32 inputs and no autocast.

    Under fp16/bf16 autocast, convolutions, FFTs and variance-style differences
    (SSIM's E[x^2] - E[x]^2) lose too many bits; the casts cost little next to
    the network itself.
    """

    @functools.wraps(forward)
    def wrapper(self: ModuleT, sr: Tensor, gt: Tensor) -> Tensor:
        with autocast_disabled(sr.device):
            return forward(self, sr.float(), gt.float())

    return wrapper

"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `decay`-weighted running averages of parameters; buffers are copied."""

    def __init__(self, net: nn.Module, decay: float, update_after_step: int = 0) -> None:
        self.decay = decay
        self.update_after_step = update_after_step
        self.net = copy.deepcopy(net).eval()
        self.net.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, iteration: int) -> None:
        ema_params: list[torch.Tensor] = list(self.net.parameters())
        params = [p.detach() for p in net.parameters()]
        if iteration <= self.update_after_step:
            torch._foreach_copy_(ema_params, params)
        else:
            # lerp towards the live weights: ema += (1 - decay) * (w - ema)
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.net.buffers(), net.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

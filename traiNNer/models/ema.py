"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `decay`-weighted running averages of parameters; buffers are copied."""

    def __init__(
        self, net: nn.Module, decay: float, update_after_step: int = 0, power: float = 10.0
    ) -> None:
        self.decay = decay
        self.update_after_step = update_after_step
        self.power = power
        self.net = copy.deepcopy(net).eval()
        self.net.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, iteration: int) -> None:
        ema_params: list[torch.Tensor] = list(self.net.parameters())
        params = [p.detach() for p in net.parameters()]
        decay = self.decay_at(iteration)
        if decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            # lerp towards the live weights: ema += (1 - decay) * (w - ema)
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.net.buffers(), net.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def decay_at(self, iteration: int) -> float:
        """0 (a plain copy) up to update_after_step + 1, then the warm-up curve of
        traiNNer-redux's EMA (ema-pytorch): min(decay, 1 - (1 + k)^-power), k steps on."""
        steps = iteration - self.update_after_step - 1
        if steps <= 0:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + steps) ** -self.power)

    def copy_into(self, net: nn.Module) -> None:
        """Put the averaged weights into the trained network (ema_switch_iter)."""
        with torch.no_grad():
            torch._foreach_copy_(
                [p.detach() for p in net.parameters()], list(self.net.parameters())
            )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

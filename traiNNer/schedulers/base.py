"""What every schedule shares: the factor interface and its value checks."""

from __future__ import annotations

from typing import Any

import torch

from traiNNer.utils.errors import ConfigError

# Where a schedule's options live in the option file (composites re-prefix nested ones).
SCHEDULER_PATH = "train.scheduler"


class BadValue(ConfigError):
    """A schedule option with a value out of range; `key` is the option's name."""

    def __init__(self, key: str, message: str, prefix: str = SCHEDULER_PATH) -> None:
        super().__init__(f"{prefix}.{key}: {message}")
        self.key = key
        self.message = message


def need(condition: bool, key: str, message: str) -> None:
    """Raise BadValue for `key` unless `condition` holds."""
    if not condition:
        raise BadValue(key, message)


def ratio_of(absolute: float, base_lr: float) -> float:
    """An absolute LR as a factor of the base LR (0 when the base LR is 0)."""
    return absolute / base_lr if base_lr > 0 else 0.0


class Schedule:
    """Base: constant LR. Subclasses override `factor` (and `bind` when they need the run).

    `factor(iteration)` is the multiplier of the base LR for the step that follows
    `iteration` completed steps, which is torch's `last_epoch` after as many
    `scheduler.step()` calls.
    """

    def bind(self, total_iter: int, base_lr: float) -> None:
        """Fill what depends on the run (defaults from total_iter, absolute LRs as factors)."""
        del total_iter, base_lr

    def factor(self, iteration: int) -> float:
        del iteration
        return 1.0

    def momentum(self, iteration: int) -> float | None:
        """The momentum (beta1) for the step, for schedules that cycle it; None: leave it."""
        del iteration
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def set_momentum(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set beta1 (Adam-like) or momentum (SGD-like) in every group, as torch's cycling
    schedulers do; an optimizer with neither is left alone."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (value, *tuple(group["betas"])[1:])
        elif "momentum" in group:
            group["momentum"] = value

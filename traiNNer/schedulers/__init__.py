"""Learning-rate schedules (`train.scheduler`), counted in iterations.

Each schedule is a pure function of the iteration giving a multiplier of the
base LR, so the model composes it with warmup and the automations' multiplier
(`lr = base_lr * schedule * warmup * automation`) and nothing overwrites
anything. ReduceLROnPlateau is the exception: it is driven by a validation
metric and keeps state, which is saved in the training state. CyclicLR and
OneCycleLR also give the momentum (beta1) for each step, as torch cycles it.

Every scheduler traiNNer-redux accepts is here under its name, with torch's (or
traiNNer-redux's) arguments and defaults, except LambdaLR and MultiplicativeLR,
which need a Python callable; their lookup fails with the reason.
"""

from __future__ import annotations

from typing import Any

from traiNNer.schedulers.base import SCHEDULER_PATH, BadValue, Schedule, set_momentum
from traiNNer.schedulers.composite import ChainedScheduler, SequentialLR
from traiNNer.schedulers.redux import (
    CosineAnnealingRestartLR,
    CosineAnnealingWarmupLR,
    KneeLR,
    WarmupStableDecayLR,
)
from traiNNer.schedulers.torch_schedules import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LinearLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    StepLR,
)
from traiNNer.utils.registry import SCHEDULER_REGISTRY

_CALLABLE = (
    "needs a Python callable ({arg}), which an option file cannot give; use a named "
    "schedule (e.g. LinearLR, ExponentialLR, WarmupStableDecayLR, SequentialLR)"
)
SCHEDULER_REGISTRY.refuse("lambdalr", _CALLABLE.format(arg="lr_lambda"))
SCHEDULER_REGISTRY.refuse("multiplicativelr", _CALLABLE.format(arg="lr_lambda"))


def build_schedule(
    type_name: str | None, kwargs: dict[str, Any], total_iter: int, base_lr: float
) -> Schedule:
    """Build a registered schedule (kwargs already type-checked) bound to the run.

    A value out of range raises a one-line ConfigError naming the key, so the option
    loader calls this once to check the values before anything runs.
    """
    if type_name is None:
        return Schedule()
    schedule: Schedule = SCHEDULER_REGISTRY.get(type_name, f"{SCHEDULER_PATH}.type")(**kwargs)
    schedule.bind(total_iter, base_lr)
    return schedule


def warmup_factor(iteration: int, warmup_iter: int) -> float:
    """Linear warmup over the first `warmup_iter` iterations (<= 0 disables it)."""
    if warmup_iter <= 0 or iteration >= warmup_iter:
        return 1.0
    return (iteration + 1) / warmup_iter


__all__ = [
    "SCHEDULER_PATH",
    "BadValue",
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingRestartLR",
    "CosineAnnealingWarmRestarts",
    "CosineAnnealingWarmupLR",
    "CyclicLR",
    "ExponentialLR",
    "KneeLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "Schedule",
    "SequentialLR",
    "StepLR",
    "WarmupStableDecayLR",
    "build_schedule",
    "set_momentum",
    "warmup_factor",
]

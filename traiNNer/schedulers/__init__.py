"""Learning-rate schedules (`train.scheduler`), counted in iterations.

Each schedule is a pure function of the iteration giving a multiplier of the
base LR, so the model composes it with warmup and the automations' multiplier
(`lr = base_lr * schedule * warmup * automation`) and nothing overwrites
anything. ReduceLROnPlateau is the exception: it is driven by a validation
metric and keeps state, which is saved in the training state.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Literal

from traiNNer.automations.plateau import PlateauDetector
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import SCHEDULER_REGISTRY


class Schedule:
    """Base: constant LR. Subclasses override `factor`."""

    def factor(self, iteration: int) -> float:
        return 1.0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


@SCHEDULER_REGISTRY.register("constantlr")
class ConstantLR(Schedule):
    """The configured LR throughout."""


@SCHEDULER_REGISTRY.register("multisteplr")
class MultiStepLR(Schedule):
    """Multiply by `gamma` at each milestone iteration."""

    def __init__(self, milestones: list[int], gamma: float = 0.1) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, iteration)


@SCHEDULER_REGISTRY.register("steplr")
class StepLR(Schedule):
    """Multiply by `gamma` every `step_size` iterations."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = max(1, step_size)
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma ** (iteration // self.step_size)


@SCHEDULER_REGISTRY.register("exponentiallr")
class ExponentialLR(Schedule):
    """Multiply by `gamma` every iteration."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma**iteration


@SCHEDULER_REGISTRY.register("cosineannealinglr")
class CosineAnnealingLR(Schedule):
    """Half cosine from 1 to `eta_min_factor` over `T_max` iterations (default: total_iter).

    `eta_min` (absolute LR, torch's name) is accepted too; the model converts it.
    """

    def __init__(
        self, T_max: int | None = None, eta_min: float = 0.0, eta_min_factor: float | None = None
    ) -> None:
        self.t_max = T_max
        self.eta_min = eta_min
        self.eta_min_factor = eta_min_factor

    def bind(self, total_iter: int, base_lr: float) -> None:
        """Fill what depends on the run: the period and the floor as a factor."""
        if self.t_max is None:
            self.t_max = total_iter
        if self.eta_min_factor is None:
            self.eta_min_factor = self.eta_min / base_lr if base_lr > 0 else 0.0

    def factor(self, iteration: int) -> float:
        t_max = self.t_max or 1
        floor = self.eta_min_factor or 0.0
        progress = min(iteration, t_max) / t_max
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULER_REGISTRY.add("cosineannealing", CosineAnnealingLR)


@SCHEDULER_REGISTRY.register("cosineannealingwarmrestarts")
class CosineAnnealingWarmRestarts(Schedule):
    """SGDR: cosine cycles of `T_0` iterations, each `T_mult` times longer than the last."""

    def __init__(self, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        self.t_0 = max(1, T_0)
        self.t_mult = max(1, T_mult)
        self.eta_min = eta_min
        self.eta_min_factor = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.eta_min_factor = self.eta_min / base_lr if base_lr > 0 else 0.0

    def factor(self, iteration: int) -> float:
        length, start = self.t_0, 0
        while iteration >= start + length:
            start += length
            length *= self.t_mult
        progress = (iteration - start) / length
        floor = self.eta_min_factor
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULER_REGISTRY.register("cosineannealingrestartlr")
class CosineAnnealingRestartLR(Schedule):
    """BasicSR / traiNNer-redux's cosine with restarts: consecutive `periods` (iterations),
    each a half cosine from `restart_weights[i]` (times the base LR) down to `eta_min`.
    After the last period the LR stays at `eta_min`."""

    def __init__(
        self, periods: list[int], restart_weights: list[float] | None = None, eta_min: float = 0.0
    ) -> None:
        weights = list(restart_weights) if restart_weights is not None else [1.0] * len(periods)
        if not periods or len(weights) != len(periods) or min(periods) < 1:
            raise ConfigError(
                "train.scheduler.periods: needs at least one positive period and one "
                f"restart_weights entry per period (got {len(periods)} periods, "
                f"{len(weights)} weights)"
            )
        self.periods = [int(p) for p in periods]
        self.weights = [float(w) for w in weights]
        self.eta_min = eta_min
        self.eta_min_factor = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.eta_min_factor = self.eta_min / base_lr if base_lr > 0 else 0.0

    def factor(self, iteration: int) -> float:
        floor, start = self.eta_min_factor, 0
        for period, weight in zip(self.periods, self.weights, strict=True):
            if iteration < start + period:
                progress = (iteration - start) / period
                return floor + (weight - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            start += period
        return floor


@SCHEDULER_REGISTRY.register("reducelronplateau")
class ReduceLROnPlateau(Schedule):
    """torch's ReduceLROnPlateau, fed the validation metric `monitor` after each validation.

    `monitor` names a metric as `<metric>` (first validation set) or `<dataset>/<metric>`;
    by default the first configured metric. `patience` counts validations.
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "max",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        monitor: str | None = None,
    ) -> None:
        self.reduce_factor = factor
        self.min_lr = min_lr
        self.eps = eps
        self.monitor = monitor
        self.detector = PlateauDetector(mode, patience, threshold, threshold_mode, cooldown)
        self.current = 1.0
        self.base_lr = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.base_lr = base_lr

    def factor(self, iteration: int) -> float:
        return self.current

    def step_metric(self, value: float) -> bool:
        """Feed one validation value; True when the LR was reduced."""
        if not self.detector.update(value):
            return False
        floor = self.min_lr / self.base_lr if self.base_lr > 0 else 0.0
        reduced = max(self.current * self.reduce_factor, floor)
        # torch ignores reductions smaller than eps (in LR units).
        if (self.current - reduced) * self.base_lr <= self.eps:
            return False
        self.current = reduced
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = float(state["current"])
        self.detector.load_state_dict(state["detector"])


def build_schedule(
    type_name: str | None, kwargs: dict[str, Any], total_iter: int, base_lr: float
) -> Schedule:
    """Build a registered schedule (kwargs already validated) bound to the run."""
    if type_name is None:
        return ConstantLR()
    schedule = SCHEDULER_REGISTRY.get(type_name)(**kwargs)
    bind = getattr(schedule, "bind", None)
    if bind is not None:
        bind(total_iter, base_lr)
    return schedule


def warmup_factor(iteration: int, warmup_iter: int) -> float:
    """Linear warmup over the first `warmup_iter` iterations (<= 0 disables it)."""
    if warmup_iter <= 0 or iteration >= warmup_iter:
        return 1.0
    return (iteration + 1) / warmup_iter

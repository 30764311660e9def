"""torch.optim.lr_scheduler's schedules as factors of the base LR, under torch's names,
arguments and defaults (less `optimizer` and `last_epoch`).

Each `factor(t)` equals torch's LR after `t` calls of `scheduler.step()` on an optimizer
whose LR is 1. Options that torch takes as absolute LRs (`eta_min`, CyclicLR's
`base_lr`/`max_lr`, OneCycleLR's `max_lr`) stay absolute: `bind` turns them into factors of
`optim_g.lr`, so the run's LR is torch's before warmup and the automations' multiplier.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Literal

from traiNNer.automations.plateau import PlateauDetector
from traiNNer.schedulers.base import BadValue, Schedule, need, ratio_of
from traiNNer.utils.registry import SCHEDULER_REGISTRY


def _cosine(progress: float) -> float:
    """Half-cosine weight: 1 at progress 0, 0 at progress 1 (periodic beyond)."""
    return 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULER_REGISTRY.register("constantlr")
class ConstantLR(Schedule):
    """`factor` times the LR for the first `total_iters` iterations, then the LR itself."""

    def __init__(self, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        need(0 <= factor <= 1, "factor", f"must be between 0 and 1 (got {factor})")
        need(total_iters >= 1, "total_iters", f"must be >= 1 (got {total_iters})")
        self.scale = factor
        self.total_iters = total_iters

    def factor(self, iteration: int) -> float:
        return self.scale if iteration < self.total_iters else 1.0


@SCHEDULER_REGISTRY.register("linearlr")
class LinearLR(Schedule):
    """Linear from `start_factor` to `end_factor` over `total_iters` iterations, then held."""

    def __init__(
        self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
    ) -> None:
        need(0 < start_factor <= 1, "start_factor", f"must be in (0, 1] (got {start_factor})")
        need(0 <= end_factor <= 1, "end_factor", f"must be between 0 and 1 (got {end_factor})")
        need(total_iters >= 1, "total_iters", f"must be >= 1 (got {total_iters})")
        self.start = start_factor
        self.end = end_factor
        self.total_iters = total_iters

    def factor(self, iteration: int) -> float:
        done = min(iteration, self.total_iters) / self.total_iters
        return self.start + (self.end - self.start) * done


@SCHEDULER_REGISTRY.register("exponentiallr")
class ExponentialLR(Schedule):
    """Multiply by `gamma` every iteration."""

    def __init__(self, gamma: float) -> None:
        need(gamma > 0, "gamma", f"must be > 0 (got {gamma})")
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma**iteration


@SCHEDULER_REGISTRY.register("steplr")
class StepLR(Schedule):
    """Multiply by `gamma` every `step_size` iterations."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        need(step_size >= 1, "step_size", f"must be >= 1 (got {step_size})")
        self.step_size = step_size
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma ** (iteration // self.step_size)


@SCHEDULER_REGISTRY.register("multisteplr")
class MultiStepLR(Schedule):
    """Multiply by `gamma` at each milestone iteration (a repeated milestone counts twice)."""

    def __init__(self, milestones: list[int], gamma: float = 0.1) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma

    def factor(self, iteration: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, iteration)


@SCHEDULER_REGISTRY.register("polynomiallr")
class PolynomialLR(Schedule):
    """`(1 - t / total_iters) ** power` until `total_iters`, then 0."""

    def __init__(self, total_iters: int = 5, power: float = 1.0) -> None:
        need(total_iters >= 1, "total_iters", f"must be >= 1 (got {total_iters})")
        need(power >= 0, "power", f"must be >= 0 (got {power})")
        self.total_iters = total_iters
        self.power = power

    def factor(self, iteration: int) -> float:
        return (1.0 - min(iteration, self.total_iters) / self.total_iters) ** self.power


@SCHEDULER_REGISTRY.register("cosineannealinglr")
class CosineAnnealingLR(Schedule):
    """Cosine from the LR down to `eta_min` over `T_max` iterations (default: total_iter).

    As in torch, past `T_max` the cosine goes on (back up over the next `T_max`).
    `eta_min` is an absolute LR (torch's); `eta_min_factor` gives the floor as a factor
    of the LR instead and wins when both are set.
    """

    def __init__(
        self, T_max: int | None = None, eta_min: float = 0.0, eta_min_factor: float | None = None
    ) -> None:
        need(T_max is None or T_max >= 1, "T_max", f"must be >= 1 (got {T_max})")
        need(eta_min >= 0, "eta_min", f"must be >= 0 (got {eta_min})")
        self.t_max = T_max
        self.eta_min = eta_min
        self.eta_min_factor = eta_min_factor

    def bind(self, total_iter: int, base_lr: float) -> None:
        if self.t_max is None:
            self.t_max = total_iter
        if self.eta_min_factor is None:
            self.eta_min_factor = ratio_of(self.eta_min, base_lr)

    def factor(self, iteration: int) -> float:
        floor = self.eta_min_factor or 0.0
        return floor + (1 - floor) * _cosine(iteration / (self.t_max or 1))


SCHEDULER_REGISTRY.add("cosineannealing", CosineAnnealingLR)


@SCHEDULER_REGISTRY.register("cosineannealingwarmrestarts")
class CosineAnnealingWarmRestarts(Schedule):
    """SGDR: cosine cycles from the LR to `eta_min` (absolute), the first `T_0` iterations
    long and each next one `T_mult` times longer."""

    def __init__(self, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        need(T_0 >= 1, "T_0", f"must be >= 1 (got {T_0})")
        need(T_mult >= 1, "T_mult", f"must be >= 1 (got {T_mult})")
        need(eta_min >= 0, "eta_min", f"must be >= 0 (got {eta_min})")
        self.t_0 = T_0
        self.t_mult = T_mult
        self.eta_min = eta_min
        self.eta_min_factor = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.eta_min_factor = ratio_of(self.eta_min, base_lr)

    def factor(self, iteration: int) -> float:
        if self.t_mult == 1:
            position, length = iteration % self.t_0, self.t_0
        else:
            # Cycles grow geometrically, so this loop runs O(log iteration) times.
            start, length = 0, self.t_0
            while iteration >= start + length:
                start += length
                length *= self.t_mult
            position = iteration - start
        floor = self.eta_min_factor
        return floor + (1 - floor) * _cosine(position / length)


@SCHEDULER_REGISTRY.register("cycliclr")
class CyclicLR(Schedule):
    """Cyclical LR between `base_lr` and `max_lr` (absolute LRs, as in torch, which
    replaces the optimizer's LR with them): up over `step_size_up` iterations, down over
    `step_size_down` (default: the same). `mode` triangular, triangular2 (amplitude halved
    each cycle) or exp_range (times `gamma ** iteration`). With `cycle_momentum` the
    optimizer's momentum (beta1) cycles inversely between `max_momentum` and
    `base_momentum`. `scale_fn` needs a Python callable and is refused; `scale_mode`
    only matters with it, so it is accepted and has no effect.
    """

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Any = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
    ) -> None:
        need(
            scale_fn is None,
            "scale_fn",
            "needs a Python callable, which an option file cannot give; use `mode`",
        )
        need(base_lr >= 0, "base_lr", f"must be >= 0 (got {base_lr})")
        need(max_lr >= 0, "max_lr", f"must be >= 0 (got {max_lr})")
        need(step_size_up >= 1, "step_size_up", f"must be >= 1 (got {step_size_up})")
        down = step_size_up if step_size_down is None else step_size_down
        need(down >= 0, "step_size_down", f"must be >= 0 (got {step_size_down})")
        del scale_mode  # torch sets it from `mode` when there is no scale_fn
        self.base_lr = base_lr
        self.max_lr = max_lr
        self.total_size = float(step_size_up + down)
        self.step_ratio = step_size_up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self.cycle_momentum = cycle_momentum
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.base_factor = 0.0
        self.max_factor = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.base_factor = ratio_of(self.base_lr, base_lr)
        self.max_factor = ratio_of(self.max_lr, base_lr)

    def _position(self, iteration: int) -> float:
        """Where in the cycle: 0 at the low end, 1 at the peak, times the amplitude scale."""
        cycle = math.floor(1 + iteration / self.total_size)
        x = 1.0 + iteration / self.total_size - cycle
        height = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        if self.mode == "triangular":
            return height
        if self.mode == "triangular2":
            return height / (2.0 ** (cycle - 1))
        return height * self.gamma**iteration

    def factor(self, iteration: int) -> float:
        return self.base_factor + (self.max_factor - self.base_factor) * self._position(iteration)

    def momentum(self, iteration: int) -> float | None:
        if not self.cycle_momentum:
            return None
        span = self.max_momentum - self.base_momentum
        return self.max_momentum - span * self._position(iteration)


@SCHEDULER_REGISTRY.register("onecyclelr")
class OneCycleLR(Schedule):
    """1cycle: from `max_lr / div_factor` up to `max_lr` over the first `pct_start` of
    `total_steps`, then down to `max_lr / div_factor / final_div_factor` (`three_phase`:
    back to the start first, then down); `anneal_strategy` cos or linear. With
    `cycle_momentum` the momentum (beta1) goes inversely between `max_momentum` and
    `base_momentum`.

    `max_lr` is an absolute LR, as in torch (which ignores the optimizer's LR); left out,
    it is `optim_g.lr`. `total_steps` defaults to `epochs * steps_per_epoch` when both are
    given, else to `train.total_iter`. torch raises after `total_steps` steps; here the
    LR then stays where the cycle ended.
    """

    def __init__(
        self,
        max_lr: float | None = None,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        need(max_lr is None or max_lr > 0, "max_lr", f"must be > 0 (got {max_lr})")
        need(
            total_steps is None or total_steps >= 1,
            "total_steps",
            f"must be >= 1 (got {total_steps})",
        )
        need(epochs is None or epochs >= 1, "epochs", f"must be >= 1 (got {epochs})")
        need(
            steps_per_epoch is None or steps_per_epoch >= 1,
            "steps_per_epoch",
            f"must be >= 1 (got {steps_per_epoch})",
        )
        need(0 <= pct_start <= 1, "pct_start", f"must be between 0 and 1 (got {pct_start})")
        need(div_factor > 0, "div_factor", f"must be > 0 (got {div_factor})")
        need(final_div_factor > 0, "final_div_factor", f"must be > 0 (got {final_div_factor})")
        if total_steps is None and epochs is not None and steps_per_epoch is not None:
            total_steps = epochs * steps_per_epoch
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.linear = anneal_strategy == "linear"
        self.cycle_momentum = cycle_momentum
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase
        # (last iteration of the phase, start/end LR factor, start/end momentum)
        self.phases: list[tuple[float, float, float, float, float]] = []

    def bind(self, total_iter: int, base_lr: float) -> None:
        if self.total_steps is None:
            self.total_steps = total_iter
        steps = self.total_steps
        peak = 1.0 if self.max_lr is None else ratio_of(self.max_lr, base_lr)
        start = peak / self.div_factor
        low = start / self.final_div_factor
        up_end = float(self.pct_start * steps) - 1
        high_m, low_m = self.max_momentum, self.base_momentum
        if self.three_phase:
            self.phases = [
                (up_end, start, peak, high_m, low_m),
                (float(2 * self.pct_start * steps) - 2, peak, start, low_m, high_m),
                (steps - 1, start, low, high_m, high_m),
            ]
        else:
            self.phases = [
                (up_end, start, peak, high_m, low_m),
                (steps - 1, peak, low, low_m, high_m),
            ]

    def _anneal(self, begin: float, end: float, pct: float) -> float:
        if self.linear:
            return (end - begin) * pct + begin
        return end + (begin - end) * _cosine(pct)

    def _phase(self, iteration: int) -> tuple[int, float]:
        """The phase holding `iteration` and how far into it (torch's bookkeeping)."""
        step = min(iteration, self.total_steps or 0)
        start = 0.0
        for index, phase in enumerate(self.phases):
            end = phase[0]
            if step <= end or index == len(self.phases) - 1:
                # A phase of no length (e.g. pct_start * total_steps == 1) is at its end.
                pct = (step - start) / (end - start) if end != start else 1.0
                return index, pct
            start = end
        raise AssertionError("OneCycleLR used before bind")

    def factor(self, iteration: int) -> float:
        index, pct = self._phase(iteration)
        _, begin, end, _, _ = self.phases[index]
        return self._anneal(begin, end, pct)

    def momentum(self, iteration: int) -> float | None:
        if not self.cycle_momentum:
            return None
        index, pct = self._phase(iteration)
        _, _, _, begin, end = self.phases[index]
        return self._anneal(begin, end, pct)


@SCHEDULER_REGISTRY.register("reducelronplateau")
class ReduceLROnPlateau(Schedule):
    """torch's ReduceLROnPlateau, fed the validation metric `monitor` after each validation.

    `monitor` names a metric as `<metric>` (first validation set) or `<dataset>/<metric>`;
    by default the first configured metric. `patience` counts validations. `mode` defaults
    to max (torch: min), since the metrics validated are mostly higher-is-better.
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
        need(0 <= factor < 1, "factor", f"must be in [0, 1) (got {factor})")
        need(patience >= 0, "patience", f"must be >= 0 (got {patience})")
        need(cooldown >= 0, "cooldown", f"must be >= 0 (got {cooldown})")
        need(min_lr >= 0, "min_lr", f"must be >= 0 (got {min_lr})")
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
        floor = ratio_of(self.min_lr, self.base_lr)
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


__all__ = [
    "BadValue",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "StepLR",
]

"""traiNNer-redux's own schedules and pytorch-optimizer's warmup-stable-decay, as factors
of the base LR, under traiNNer-redux's names, arguments and defaults."""

from __future__ import annotations

import math
from typing import Literal

from traiNNer.schedulers.base import Schedule, need, ratio_of
from traiNNer.utils.registry import SCHEDULER_REGISTRY


def _cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULER_REGISTRY.register("cosineannealingwarmuplr")
class CosineAnnealingWarmupLR(Schedule):
    """Linear warmup from 0 over `warmup_iters`, then a cosine down to `eta_min_ratio`
    times the LR at `total_iters` (default: total_iter), held after that."""

    def __init__(
        self, total_iters: int | None = None, warmup_iters: int = 0, eta_min_ratio: float = 0.1
    ) -> None:
        need(
            total_iters is None or total_iters >= 1,
            "total_iters",
            f"must be >= 1 (got {total_iters})",
        )
        need(warmup_iters >= 0, "warmup_iters", f"must be >= 0 (got {warmup_iters})")
        need(eta_min_ratio >= 0, "eta_min_ratio", f"must be >= 0 (got {eta_min_ratio})")
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        self.eta_min_ratio = eta_min_ratio

    def bind(self, total_iter: int, base_lr: float) -> None:
        del base_lr
        if self.total_iters is None:
            self.total_iters = total_iter

    def factor(self, iteration: int) -> float:
        if iteration < self.warmup_iters:
            return iteration / self.warmup_iters
        span = max(1, (self.total_iters or 1) - self.warmup_iters)
        progress = min(1.0, (iteration - self.warmup_iters) / span)
        return self.eta_min_ratio + (1 - self.eta_min_ratio) * _cosine(progress)


@SCHEDULER_REGISTRY.register("cosineannealingrestartlr")
class CosineAnnealingRestartLR(Schedule):
    """BasicSR's cosine with restarts: consecutive `periods` (iterations), period `i` a
    half cosine from `eta_min + restart_weights[i] * (LR - eta_min)` down to `eta_min`
    (absolute). A period's last iteration is its low point; the restart is the iteration
    after. After the last period the LR stays at `eta_min` (traiNNer-redux stops there).
    `restart_weights` defaults to 1 for every period.
    """

    def __init__(
        self, periods: list[int], restart_weights: list[float] | None = None, eta_min: float = 0.0
    ) -> None:
        weights = list(restart_weights) if restart_weights is not None else [1.0] * len(periods)
        need(bool(periods), "periods", "needs at least one period")
        need(min(periods) >= 1, "periods", f"every period must be >= 1 (got {list(periods)})")
        need(
            len(weights) == len(periods),
            "restart_weights",
            f"needs one entry per period (got {len(weights)} weights for {len(periods)} periods)",
        )
        need(eta_min >= 0, "eta_min", f"must be >= 0 (got {eta_min})")
        self.periods = [int(p) for p in periods]
        self.weights = [float(w) for w in weights]
        self.eta_min = eta_min
        self.eta_min_factor = 0.0

    def bind(self, total_iter: int, base_lr: float) -> None:
        del total_iter
        self.eta_min_factor = ratio_of(self.eta_min, base_lr)

    def factor(self, iteration: int) -> float:
        floor, restart = self.eta_min_factor, 0
        for period, weight in zip(self.periods, self.weights, strict=True):
            # `<=`: the period's end belongs to it (traiNNer-redux's position lookup).
            if iteration <= restart + period:
                progress = (iteration - restart) / period
                return floor + weight * (1 - floor) * _cosine(progress)
            restart += period
        return floor


@SCHEDULER_REGISTRY.register("kneelr")
class KneeLR(Schedule):
    """Knee schedule (wide-minima exploration): the peak LR for the first `explore_ratio`
    of `total_steps`, then a straight line down to 0 at `total_steps`.

    As in traiNNer-redux, `total_steps` defaults to `train.total_iter` and `peak_lr` to
    `optim_g.lr`; a `peak_lr` given is an absolute LR.
    """

    def __init__(
        self,
        explore_ratio: float = 0.5,
        total_steps: int | None = None,
        peak_lr: float | None = None,
    ) -> None:
        need(
            0 <= explore_ratio <= 1,
            "explore_ratio",
            f"must be between 0 and 1 (got {explore_ratio})",
        )
        need(
            total_steps is None or total_steps >= 1,
            "total_steps",
            f"must be >= 1 (got {total_steps})",
        )
        need(peak_lr is None or peak_lr >= 0, "peak_lr", f"must be >= 0 (got {peak_lr})")
        self.explore_ratio = explore_ratio
        self.total_steps = total_steps
        self.peak_lr = peak_lr
        self.peak = 1.0
        self.explore_steps = 0
        self.decay_steps = 0

    def bind(self, total_iter: int, base_lr: float) -> None:
        total = self.total_steps if self.total_steps is not None else total_iter
        self.peak = 1.0 if self.peak_lr is None else ratio_of(self.peak_lr, base_lr)
        self.explore_steps = int(total * self.explore_ratio)
        self.decay_steps = total - self.explore_steps

    def factor(self, iteration: int) -> float:
        # traiNNer-redux counts the step being taken, one more than those done.
        step = iteration + 1
        if step <= self.explore_steps:
            return self.peak
        if self.decay_steps == 0:
            return 0.0
        into_decay = step - self.explore_steps
        return max(0.0, self.peak - self.peak / self.decay_steps * into_decay)


@SCHEDULER_REGISTRY.register("warmupstabledecaylr")
class WarmupStableDecayLR(Schedule):
    """Warmup-stable-decay (pytorch-optimizer's `get_wsd_schedule`): linear from 0 over
    `num_warmup_steps`, 1 for `num_stable_steps`, a `cooldown_type` decay over
    `num_decay_steps`, then `min_lr_ratio`. Only the cosine decay ends at `min_lr_ratio`
    (over `num_cycles` cycles); the others end near 0, as in pytorch-optimizer.
    """

    def __init__(
        self,
        num_warmup_steps: int,
        num_stable_steps: int,
        num_decay_steps: int,
        min_lr_ratio: float = 0.0,
        num_cycles: float = 0.5,
        cooldown_type: Literal["cosine", "1-sqrt", "linear", "1-square"] = "1-sqrt",
    ) -> None:
        for key, value in (
            ("num_warmup_steps", num_warmup_steps),
            ("num_stable_steps", num_stable_steps),
            ("num_decay_steps", num_decay_steps),
        ):
            need(value >= 0, key, f"must be >= 0 (got {value})")
        need(min_lr_ratio >= 0, "min_lr_ratio", f"must be >= 0 (got {min_lr_ratio})")
        self.warmup = num_warmup_steps
        self.stable = num_stable_steps
        self.decay = num_decay_steps
        self.min_lr_ratio = min_lr_ratio
        self.num_cycles = num_cycles
        self.cooldown_type = cooldown_type

    def factor(self, iteration: int) -> float:
        if iteration < self.warmup:
            return iteration / max(1, self.warmup)
        if iteration < self.warmup + self.stable:
            return 1.0
        if iteration >= self.warmup + self.stable + self.decay:
            return self.min_lr_ratio
        progress = (iteration - self.warmup - self.stable) / self.decay
        if self.cooldown_type == "cosine":
            wave = max(0.0, _cosine(2.0 * self.num_cycles * progress))
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * wave
        if self.cooldown_type == "1-sqrt":
            return 1.0 - math.sqrt(progress)
        if self.cooldown_type == "1-square":
            return 1.0 - progress**2
        return 1.0 - progress


__all__ = ["CosineAnnealingRestartLR", "CosineAnnealingWarmupLR", "KneeLR", "WarmupStableDecayLR"]

"""`lr_scheduling`: lowers the learning rate on a plateau, optionally raises it a little
while the loss falls steadily.

It sets `Knobs.lr_multiplier`, which the trainer multiplies on top of the configured
scheduler and warmup, so neither overwrites the other. Two signals, each optional:
- the training loss (`loss_key`), smoothed by a bias-corrected EMA (decay
  `loss_ema_decay` per step) that advances every `check_interval` iterations over the
  mean of the steps in between (kept on the device, read once per check); a plateau
  is more than `patience` iterations without an improvement beyond `threshold`;
- a validation `metric` with its direction; a plateau is more than `metric_patience`
  validations without improvement.
A plateau multiplies the LR by `factor`; no further change happens for `cooldown`
iterations. The multiplier stays within [lower bound, `max_lr_factor`], where the lower
bound is `min_lr_factor` or `min_lr / base_lr`, whichever is higher.

With `increase`, the multiplier grows by `increase_factor` when the smoothed loss fell
at each of the last `increase_window` checks, by at least `increase_threshold` in total
and by more than three standard deviations of its own noise. Every change restarts
that window, so two increases are at least (window + 1) checks apart, and the
multiplier never exceeds `max_lr_factor`.
"""

from __future__ import annotations

import logging
import math
from itertools import pairwise
from typing import Annotated, Any, Literal

import torch
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
)
from traiNNer.automations.decision_log import LOGGER_NAME
from traiNNer.automations.plateau import PlateauDetector
from traiNNer.automations.registry import register_automation

logger = logging.getLogger(LOGGER_NAME)

# An increase needs a drop larger than this many standard deviations of its noise.
NOISE_SIGMAS = 3.0


class LRSchedulingConfig(AutomationConfig):
    """Options of the `lr_scheduling` automation."""

    monitor_train_loss: Annotated[
        bool, Meta(description="Watch the EMA-smoothed training loss for plateaus.")
    ] = True
    loss_key: Annotated[
        str, Meta(description="Which training loss to watch (a key of the logged losses).")
    ] = "l_g_total"
    loss_ema_decay: Annotated[
        float,
        Meta(ge=0, lt=1, description="EMA decay of the smoothed loss (0.995 averages ~200 steps)."),
    ] = 0.995
    check_interval: Annotated[
        int, Meta(ge=1, description="Iterations between two looks at the smoothed loss.")
    ] = 100
    patience: Annotated[
        int,
        Meta(
            ge=1,
            description="Reduce once the smoothed loss has not improved for more than "
            "this many iterations.",
        ),
    ] = 5000
    metric: Annotated[
        str | None,
        Meta(
            description="Validation metric to watch, e.g. psnr or <dataset>/psnr (None: loss only)."
        ),
    ] = None
    metric_better: BetterOption = "higher"
    metric_patience: Annotated[
        int,
        Meta(ge=0, description="Reduce after more than this many validations without improvement."),
    ] = 3
    factor: Annotated[
        float, Meta(gt=0, lt=1, description="Multiplier applied to the LR on a plateau.")
    ] = 0.5
    threshold: Annotated[
        float, Meta(ge=0, description="Smallest change that counts as an improvement.")
    ] = 1e-3
    threshold_mode: Annotated[
        Literal["rel", "abs"],
        Meta(description="rel: threshold is a fraction of the best value; abs: in its unit."),
    ] = "rel"
    cooldown: Annotated[
        int, Meta(ge=0, description="Iterations after a change during which no change is made.")
    ] = 0
    min_lr: Annotated[
        float,
        Meta(ge=0, description="Absolute LR floor for base LR x multiplier (needs the base LR)."),
    ] = 0.0
    min_lr_factor: Annotated[
        float, Meta(gt=0, le=1, description="Smallest cumulative multiplier.")
    ] = 0.01
    max_lr_factor: Annotated[
        float, Meta(ge=1, description="Largest cumulative multiplier (reached only by increases).")
    ] = 1.0
    increase: Annotated[
        bool, Meta(description="Raise the LR while the smoothed loss falls steadily.")
    ] = False
    increase_factor: Annotated[
        float, Meta(gt=1, description="Multiplier applied on an increase.")
    ] = 1.1
    increase_window: Annotated[
        int,
        Meta(
            ge=2, description="Consecutive loss checks that must each improve before an increase."
        ),
    ] = 5
    increase_threshold: Annotated[
        float,
        Meta(
            gt=0,
            description="Relative drop of the smoothed loss over the window needed to increase.",
        ),
    ] = 0.02
    restore_best_on_reduce: Annotated[
        bool,
        Meta(description="Ask the trainer to restore the best weights when the LR is reduced."),
    ] = False

    def __post_init__(self) -> None:
        if not self.monitor_train_loss and self.metric is None:
            raise ValueError("nothing to watch: set monitor_train_loss: true or a metric")
        if self.increase and self.max_lr_factor <= 1.0:
            raise ValueError("increase: true needs max_lr_factor > 1 to have room to increase")


class SmoothedLoss:
    """Bias-corrected EMA of a per-step loss, and the noise of that EMA.

    Each step writes its loss into a device buffer (one tensor write); at each check
    the buffer is read once and the EMA advances over the mean of those steps with
    the decay of that many steps. Non-finite losses are left out.
    """

    def __init__(self, decay: float, capacity: int) -> None:
        self.decay = decay
        self.capacity = capacity
        self._buffer: torch.Tensor | None = None
        self._pending: list[float] = []  # restored unread losses, written on first use
        self._count = 0  # losses written since the last check
        self._ema = 0.0  # uncorrected EMA of the loss
        self._ema_variance = 0.0  # uncorrected EMA of the per-step variance
        self._weight = 0.0  # total weight of the EMA so far (bias correction)
        self.steps = 0  # finite steps absorbed

    def add(self, loss: torch.Tensor) -> None:
        if self._buffer is None:
            self._buffer = torch.full((self.capacity,), math.nan, device=loss.device)
            if self._pending:
                self._buffer[: len(self._pending)] = torch.tensor(self._pending)
                self._pending = []
        # More steps than the capacity between two checks: the oldest are overwritten.
        self._buffer[self._count % self.capacity] = loss.detach()
        self._count += 1

    def _unread(self) -> list[float]:
        if self._buffer is None:
            return list(self._pending)
        return self._buffer[: min(self._count, self.capacity)].tolist()

    def advance(self) -> bool:
        """Fold the steps since the last call into the EMA; False when none was finite."""
        values = [v for v in self._unread() if math.isfinite(v)]
        self._count = 0
        self._pending = []
        if not values:
            return False
        count = len(values)
        mean = sum(values) / count
        variance = sum((v - mean) ** 2 for v in values) / count
        keep = self.decay**count
        self._ema = keep * self._ema + (1 - keep) * mean
        self._ema_variance = keep * self._ema_variance + (1 - keep) * variance
        self._weight = keep * self._weight + (1 - keep)
        self.steps += count
        return True

    @property
    def value(self) -> float:
        return self._ema / self._weight if self._weight > 0 else math.nan

    @property
    def noise(self) -> float:
        """Standard deviation of `value` around the true mean loss."""
        if self._weight <= 0 or self.steps == 0:
            return math.inf
        variance = self._ema_variance / self._weight
        # An EMA averages like (1+d)/(1-d) samples, early on like the samples seen so far.
        share = max((1 - self.decay) / (1 + self.decay), 1 / self.steps)
        return math.sqrt(variance * share)

    def state_dict(self) -> dict[str, Any]:
        return {
            "unread": self._unread(),
            "ema": self._ema,
            "ema_variance": self._ema_variance,
            "weight": self._weight,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = [float(v) for v in state["unread"]][: self.capacity]
        self._count = len(self._pending)
        self._buffer = None
        self._ema = float(state["ema"])
        self._ema_variance = float(state["ema_variance"])
        self._weight = float(state["weight"])
        self.steps = int(state["steps"])


@register_automation
class LRScheduling(Automation):
    name = "lr_scheduling"
    config_type = LRSchedulingConfig
    actions = frozenset({"restore_best_weights"})
    metric_options = (("metric", "metric_better"),)

    def __init__(self, config: LRSchedulingConfig) -> None:
        super().__init__(config)
        self.options = config
        self.loss_plateau = PlateauDetector(
            "min",
            patience=config.patience // config.check_interval,
            threshold=config.threshold,
            threshold_mode=config.threshold_mode,
        )
        self.metric_plateau = PlateauDetector(
            "max" if config.metric_better == "higher" else "min",
            patience=config.metric_patience,
            threshold=config.threshold,
            threshold_mode=config.threshold_mode,
        )
        self.base_lr: float | None = None
        self.smoothed = SmoothedLoss(config.loss_ema_decay, config.check_interval)
        self._loss_best_iter = 0
        self._metric_best_iter = 0
        self._last_change_iter: int | None = None
        # Smoothed-loss values seen since the last change (for the steady-increase rule).
        self._recent: list[float] = []
        self._last_loss = math.nan

    @property
    def interval(self) -> int:
        return self.options.check_interval if self.options.monitor_train_loss else 0

    def lower_bound(self) -> float:
        bound = self.options.min_lr_factor
        if self.options.min_lr > 0 and self.base_lr:
            bound = max(bound, self.options.min_lr / self.base_lr)
        return min(bound, 1.0)

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.base_lr = info.base_lr
        if self.options.min_lr > 0 and not info.base_lr:
            logger.warning(
                "[lr_scheduling] min_lr is set but the base LR is unknown; "
                "only min_lr_factor bounds the multiplier"
            )
        if self.options.min_lr > 0 and info.base_lr and self.options.min_lr > info.base_lr:
            logger.warning(
                "[lr_scheduling] min_lr %.3g is above the base LR %.3g: the LR will not be reduced",
                self.options.min_lr,
                info.base_lr,
            )
        return []

    def observe_step(self, record: StepRecord) -> None:
        if not self.options.monitor_train_loss:
            return
        loss = record.losses.get(self.options.loss_key)
        if loss is None:
            raise ValueError(
                f"train.automations.lr_scheduling.loss_key: '{self.options.loss_key}' is not "
                f"among the training losses ({', '.join(sorted(record.losses))})"
            )
        self.smoothed.add(loss)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if not self.smoothed.advance():
            return []
        value = self.smoothed.value
        self._last_loss = value
        improved = self.loss_plateau.is_improvement(value)
        plateau = self.loss_plateau.update(value)
        if improved:
            self._loss_best_iter = iteration
        if self._in_cooldown(iteration):
            self.loss_plateau.num_bad = 0
            plateau = False
        # The first averaging span of the EMA is too noisy to call a trend.
        if self.smoothed.steps >= 1 / (1 - self.options.loss_ema_decay):
            self._recent = [*self._recent, value][-(self.options.increase_window + 1) :]
        if plateau:
            reason = (
                f"smoothed {self.options.loss_key} {value:.4g} has not improved by more than "
                f"{self._threshold_text()} for {iteration - self._loss_best_iter} iterations "
                f"(best {self.loss_plateau.best:.4g} at iteration {self._loss_best_iter})"
            )
            return self._reduce(iteration, knobs, reason)
        if self.options.increase:
            return self._maybe_increase(iteration, knobs)
        return []

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        metric = self.options.metric
        if metric is None:
            return []
        if metric not in metrics:
            raise ValueError(
                f"train.automations.lr_scheduling.metric: '{metric}' is not among the "
                f"validation metrics ({', '.join(sorted(metrics))})"
            )
        value = float(metrics[metric])
        bad_before = self.metric_plateau.num_bad
        improved = self.metric_plateau.is_improvement(value)
        plateau = self.metric_plateau.update(value)
        if improved:
            self._metric_best_iter = iteration
        if self._in_cooldown(iteration):
            self.metric_plateau.num_bad = 0
            plateau = False
        if not plateau:
            return []
        reason = (
            f"{metric} has not improved by more than {self._threshold_text()} in "
            f"{bad_before + 1} validations (iterations {self._metric_best_iter}-{iteration}; "
            f"best {self.metric_plateau.best:.4g})"
        )
        return self._reduce(iteration, knobs, reason)

    def scalars(self) -> dict[str, float]:
        return {
            "smoothed_loss": self._last_loss,
            "smoothed_loss_noise": self.smoothed.noise,
            "best_loss": self.loss_plateau.best,
            "bad_checks": float(self.loss_plateau.num_bad),
        }

    # --------------------------------------------------------------- decisions

    def _threshold_text(self) -> str:
        if self.options.threshold_mode == "rel":
            return f"{self.options.threshold:.2%}"
        return f"{self.options.threshold:g}"

    def _in_cooldown(self, iteration: int) -> bool:
        last = self._last_change_iter
        return last is not None and iteration - last < self.options.cooldown

    def _bounds(self) -> tuple[float, float]:
        return (self.lower_bound(), self.options.max_lr_factor)

    def _reduce(self, iteration: int, knobs: Knobs, reason: str) -> list[Decision]:
        current = knobs.lr_multiplier
        new = max(self.lower_bound(), current * self.options.factor)
        decisions = self.decide(knobs, "lr_multiplier", new, reason, self._bounds())
        if not decisions:
            return []
        self._after_change(iteration)
        if self.options.restore_best_on_reduce:
            decisions.append(
                Decision(
                    self.name,
                    "restore_best_weights",
                    None,
                    True,
                    "LR reduced on a plateau: continue from the best weights",
                )
            )
        return decisions

    def _maybe_increase(self, iteration: int, knobs: Knobs) -> list[Decision]:
        recent = self._recent
        if len(recent) <= self.options.increase_window or self._in_cooldown(iteration):
            return []
        falling = all(later < earlier for earlier, later in pairwise(recent))
        drop = (recent[0] - recent[-1]) / abs(recent[0]) if recent[0] != 0 else 0.0
        # The drop must also stand out from the noise of two smoothed values.
        significant = recent[0] - recent[-1] > NOISE_SIGMAS * math.sqrt(2) * self.smoothed.noise
        if not falling or drop < self.options.increase_threshold or not significant:
            return []
        new = min(self.options.max_lr_factor, knobs.lr_multiplier * self.options.increase_factor)
        reason = (
            f"smoothed {self.options.loss_key} fell at each of the last "
            f"{self.options.increase_window} checks ({recent[0]:.4g} -> {recent[-1]:.4g}, "
            f"-{drop:.1%})"
        )
        decisions = self.decide(knobs, "lr_multiplier", new, reason, self._bounds())
        if decisions:
            self._after_change(iteration)
        return decisions

    def _after_change(self, iteration: int) -> None:
        # Both signals start counting afresh, and an increase must requalify from scratch.
        self._last_change_iter = iteration
        self._recent = []
        self.loss_plateau.num_bad = 0
        self.metric_plateau.num_bad = 0

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "smoothed": self.smoothed.state_dict(),
            "loss_plateau": self.loss_plateau.state_dict(),
            "metric_plateau": self.metric_plateau.state_dict(),
            "loss_best_iter": self._loss_best_iter,
            "metric_best_iter": self._metric_best_iter,
            "last_change_iter": self._last_change_iter,
            "recent": list(self._recent),
            "last_loss": self._last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed.load_state_dict(state["smoothed"])
        self.loss_plateau.load_state_dict(state["loss_plateau"])
        self.metric_plateau.load_state_dict(state["metric_plateau"])
        self._loss_best_iter = int(state["loss_best_iter"])
        self._metric_best_iter = int(state["metric_best_iter"])
        last = state["last_change_iter"]
        self._last_change_iter = None if last is None else int(last)
        self._recent = [float(v) for v in state["recent"]]
        self._last_loss = float(state["last_loss"])

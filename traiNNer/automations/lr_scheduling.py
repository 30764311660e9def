"""`lr_scheduling`: lowers the learning rate on a plateau, optionally raises it a little
while the loss falls steadily.

It sets `Knobs.lr_multiplier`, which the trainer multiplies on top of the configured
scheduler and warmup, so neither overwrites the other. Two signals, each optional:
- the training loss (`loss_key`). Every `check_interval` iterations the mean of the steps
  since the last check (kept on the device, read once) becomes one block. A plateau is
  decided statistically: over the last 2 x `patience` iterations of blocks, the mean of
  the later half is compared with the earlier half, with the standard error of that
  difference estimated from the blocks' own scatter. The loss has plateaued when even the
  upper confidence bound of its relative improvement (estimate + `noise_sigmas` standard
  errors) is below `threshold` per `patience` iterations. Noise therefore delays a cut but
  cannot cause one while the loss still falls by `threshold`. By default this rule is on
  only when no decaying LR schedule is configured (`monitor_train_loss: null`): a schedule
  that decays already lowers the LR, and the two would compound.
- a validation `metric` with its direction, decided like the loss: a line is fitted
  through the validations of the last `metric_patience` validation intervals (at the
  option file's `val_freq`, so counted in iterations: validation_frequency does not change
  it), and the metric has plateaued when even the upper confidence bound of the gain that
  line gives over the span (estimate + `noise_sigmas` standard errors) is not above
  `metric_min_delta`, in the metric's own unit (dB for PSNR); the standard error is never
  below what the recent fits' noise gives (`trend.NoiseFloor`). Not beating a noisy best
  is not a plateau; a metric still gaining `metric_min_delta` per span is never cut.
A plateau multiplies the LR by `factor`; afterwards the loss rule needs a fresh 2 x
`patience` iterations, the metric rule a fresh span, and no change at all happens for `cooldown` iterations. The
multiplier stays within [lower bound, `max_lr_factor`], where the lower bound is
`min_lr_factor` or `min_lr / base_lr`, whichever is higher.

With `increase`, the multiplier grows by `increase_factor` when the smoothed loss (an EMA
with decay `loss_ema_decay`) fell at each of the last `increase_window` checks, by at least
`increase_threshold` in total and by more than three standard deviations of its own noise.
Every change restarts that window, so two increases are at least (window + 1) checks
apart, and the multiplier never exceeds `max_lr_factor`.
"""

from __future__ import annotations

import logging
import math
from itertools import pairwise
from typing import Annotated, Any

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
from traiNNer.automations.registry import register_automation
from traiNNer.automations.trend import NoiseFloor

logger = logging.getLogger(LOGGER_NAME)

# An increase needs a drop larger than this many standard deviations of its noise.
NOISE_SIGMAS = 3.0
# Schedules that do not decay: with these (or none) the loss-plateau rule is on by default.
CONSTANT_SCHEDULES = frozenset({"constantlr"})


class LRSchedulingConfig(AutomationConfig):
    """Options of the `lr_scheduling` automation."""

    monitor_train_loss: Annotated[
        bool | None,
        Meta(
            description="Watch the training loss for a plateau (null: only when no decaying "
            "LR schedule is configured, since a decaying schedule already lowers the LR)."
        ),
    ] = None
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
            description="Length in iterations of each of the two windows whose mean "
            "losses are compared (a cut needs 2 x patience iterations of history).",
        ),
    ] = 10000
    metric: Annotated[
        str | None,
        Meta(
            description="Validation metric to watch, e.g. psnr or <dataset>/psnr (None: loss only)."
        ),
    ] = None
    metric_better: BetterOption = None
    metric_patience: Annotated[
        int,
        Meta(
            ge=0,
            description="Validation intervals (at the option file's val_freq, so counted in "
            "iterations) the metric's trend is fitted over.",
        ),
    ] = 10
    metric_min_delta: Annotated[
        float,
        Meta(
            ge=0,
            description="The metric has plateaued when its fitted gain over the span is "
            "surely not above this, in the metric's unit (dB for PSNR).",
        ),
    ] = 0.01
    factor: Annotated[
        float, Meta(gt=0, lt=1, description="Multiplier applied to the LR on a plateau.")
    ] = 0.5
    threshold: Annotated[
        float,
        Meta(
            ge=0,
            description="The loss has plateaued when its relative improvement per `patience` "
            "iterations is, with confidence, below this (0.01 = 1%).",
        ),
    ] = 0.01
    noise_sigmas: Annotated[
        float,
        Meta(
            ge=0,
            description="Standard errors added to the measured improvement before it is "
            "compared with threshold (higher: fewer cuts caused by noise, later cuts).",
        ),
    ] = 2.5
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
        if self.monitor_train_loss is False and self.metric is None:
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
        self.last_mean = math.nan  # mean of the steps folded in by the last `advance`

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
        self.last_mean = mean
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
        config = self.completed(config)
        super().__init__(config)
        self.options = config
        self.base_lr: float | None = None
        self.watch_loss = config.monitor_train_loss is not False
        self.smoothed = SmoothedLoss(config.loss_ema_decay, config.check_interval)
        # Block means of the loss since the last change, one per check (host floats).
        self._blocks: list[float] = []
        self._window = max(1, config.patience // config.check_interval)
        self._last_test: tuple[float, float] = (math.nan, math.nan)  # improvement, its se
        # Metric plateau, counted in iterations at the configured validation interval.
        self._metric_patience_iters = 0
        # Finite validations since the last change, within the span: (iteration, value).
        self._metric_history: list[tuple[int, float]] = []
        self._metric_noise = NoiseFloor()
        self._last_change_iter: int | None = None
        # Smoothed-loss values seen since the last change (for the steady-increase rule).
        self._recent: list[float] = []
        self._last_loss = math.nan

    @property
    def interval(self) -> int:
        return self.options.check_interval if self.options.monitor_train_loss is not False else 0

    def lower_bound(self) -> float:
        bound = self.options.min_lr_factor
        if self.options.min_lr > 0 and self.base_lr:
            bound = max(bound, self.options.min_lr / self.base_lr)
        return min(bound, 1.0)

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.base_lr = info.base_lr
        self._metric_patience_iters = self.options.metric_patience * max(1, info.val_freq)
        if self.options.monitor_train_loss is None:
            self.watch_loss = info.lr_schedule is None or info.lr_schedule in CONSTANT_SCHEDULES
            if not self.watch_loss:
                logger.info(
                    "[lr_scheduling] the %s schedule already lowers the LR: the loss-plateau "
                    "rule is off (monitor_train_loss: true turns it on)",
                    info.lr_schedule,
                )
                if self.options.metric is None:
                    logger.warning("[lr_scheduling] nothing left to watch: set a metric")
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
        if not self.watch_loss:
            return
        loss = record.losses.get(self.options.loss_key)
        if loss is None:
            raise ValueError(
                f"train.automations.lr_scheduling.loss_key: '{self.options.loss_key}' is not "
                f"among the training losses ({', '.join(sorted(record.losses))})"
            )
        self.smoothed.add(loss)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if not self.watch_loss or not self.smoothed.advance():
            return []
        value = self.smoothed.value
        self._last_loss = value
        self._blocks = [*self._blocks, self.smoothed.last_mean][-2 * self._window :]
        # The first averaging span of the EMA is too noisy to call a trend.
        if self.smoothed.steps >= 1 / (1 - self.options.loss_ema_decay):
            self._recent = [*self._recent, value][-(self.options.increase_window + 1) :]
        if self._in_cooldown(iteration):
            return []
        plateau = self._loss_plateau()
        if plateau is not None:
            return self._reduce(iteration, knobs, plateau)
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
        span = self._metric_patience_iters
        if math.isfinite(value):
            self._metric_history = [
                (it, v) for it, v in self._metric_history if iteration - it <= span
            ] + [(iteration, value)]
        points = self._metric_history
        if len(points) < 3 or points[-1][0] - points[0][0] < 0.9 * span:
            return []
        if self._in_cooldown(iteration):
            return []
        fit = self._metric_noise.fitted_gain(points, span)
        if fit is None:
            return []
        sign = 1.0 if self.options.metric_better == "higher" else -1.0
        gain, error = sign * fit[0], fit[1]
        bound = gain + self.options.noise_sigmas * error
        if bound > self.options.metric_min_delta:
            return []
        reason = (
            f"{metric} gained {gain:+.4g} (+/- {error:.2g}) over iterations {points[0][0]}-"
            f"{iteration}; even {self.options.noise_sigmas:g} standard errors up ({bound:+.4g}) "
            f"is not above metric_min_delta {self.options.metric_min_delta:g}"
        )
        return self._reduce(iteration, knobs, reason)

    def scalars(self) -> dict[str, float]:
        improvement, error = self._last_test
        return {
            "smoothed_loss": self._last_loss,
            "smoothed_loss_noise": self.smoothed.noise,
            "loss_improvement": improvement,
            "loss_improvement_se": error,
        }

    # --------------------------------------------------------------- decisions

    def _loss_plateau(self) -> str | None:
        """The reason for a cut when the loss has plateaued (see the module docstring)."""
        n = self._window
        if len(self._blocks) < 2 * n:
            return None
        earlier, later = self._blocks[:n], self._blocks[n:]
        mean_earlier, mean_later = sum(earlier) / n, sum(later) / n
        if mean_earlier <= 0:
            return None
        variance = (_variance(earlier) + _variance(later)) / n
        improvement = (mean_earlier - mean_later) / mean_earlier
        error = math.sqrt(variance) / mean_earlier
        self._last_test = (improvement, error)
        bound = improvement + self.options.noise_sigmas * error
        if bound >= self.options.threshold:
            return None
        return (
            f"mean {self.options.loss_key} improved {improvement:+.2%} (+/- {error:.2%}) over the "
            f"last {self.options.patience} iterations; even {self.options.noise_sigmas:g} standard "
            f"errors up ({bound:+.2%}) is below threshold {self.options.threshold:.2%}"
        )

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
        self._blocks = []
        self._metric_history = []

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "smoothed": self.smoothed.state_dict(),
            "blocks": list(self._blocks),
            "last_test": list(self._last_test),
            "metric_history": [list(point) for point in self._metric_history],
            "metric_noise": self._metric_noise.state_dict(),
            "last_change_iter": self._last_change_iter,
            "recent": list(self._recent),
            "last_loss": self._last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed.load_state_dict(state["smoothed"])
        self._blocks = [float(v) for v in state["blocks"]]
        improvement, error = state["last_test"]
        self._last_test = (float(improvement), float(error))
        self._metric_history = [(int(i), float(v)) for i, v in state["metric_history"]]
        self._metric_noise.load_state_dict(state["metric_noise"])
        last = state["last_change_iter"]
        self._last_change_iter = None if last is None else int(last)
        self._recent = [float(v) for v in state["recent"]]
        self._last_loss = float(state["last_loss"])


def _variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)

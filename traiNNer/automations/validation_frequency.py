"""`validation_frequency`: validates often near a plateau, rarely while far from it.

After each validation the automation fits a line through the last `window`
validations of the watched metric: its slope, in the metric's own unit per 1000
iterations (dB for PSNR; per iteration, so a longer interval does not look like faster
progress), and the slope's standard error from the fit's residuals. A slope confidently
at or above `fast_rate` (slope - `noise_sigmas` x error) means training is far from
converged and validating less often costs nothing: the interval grows. A slope
confidently at or below `slow_rate` (slope + `noise_sigmas` x error) means a plateau is
near, where early stopping and plateau-driven LR decisions want measurements: the
interval shrinks. Otherwise it stays. The interval moves by `factor` within
`[min_interval, max_interval]`, which default to half and twice the option file's
`val.val_freq`, so the validation cost is never more than twice what the user chose.

Checkpoints keep their own frequency (`logger.save_checkpoint_freq`); automations that
read a patience (early stopping, the LR plateau rules) count it in iterations, so a
moving interval does not change what it means.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Better,
    BetterOption,
    Decision,
    Knobs,
    TrainInfo,
    metric_value,
)
from traiNNer.automations.registry import register_automation
from traiNNer.automations.trend import NoiseFloor, fitted_gain

OPTION = "train.automations.validation_frequency"
SCALARS_INTERVAL = 100  # iterations between TensorBoard scalars
Interval = Annotated[int, Meta(ge=1)]


class ValidationFrequencyConfig(AutomationConfig):
    """Options of the `validation_frequency` automation."""

    min_interval: Annotated[
        Interval | None,
        Meta(description="Fewest iterations between validations (null: val_freq / 2)."),
    ] = None
    max_interval: Annotated[
        Interval | None,
        Meta(description="Most iterations between validations (null: 2 x val_freq)."),
    ] = None
    metric: Annotated[
        str | None,
        Meta(
            description='Validation metric watched, "psnr" or "<dataset>/psnr"; null: the '
            "first of val.metrics."
        ),
    ] = None
    better: BetterOption = None
    window: Annotated[int, Meta(ge=3, description="Validations the line is fitted through.")] = 6
    fast_rate: Annotated[
        float,
        Meta(
            gt=0,
            description="Improvement per 1000 iterations, in the metric's unit (dB for PSNR), "
            "at or above which the interval grows.",
        ),
    ] = 0.05
    slow_rate: Annotated[
        float,
        Meta(
            ge=0,
            description="Improvement per 1000 iterations, in the metric's unit, at or below "
            "which the interval shrinks.",
        ),
    ] = 0.002
    noise_sigmas: Annotated[
        float,
        Meta(
            ge=0,
            description="Standard errors of the fitted slope that must clear fast_rate or "
            "slow_rate before the interval moves.",
        ),
    ] = 3.0
    factor: Annotated[
        float, Meta(gt=1, description="The interval is multiplied or divided by this.")
    ] = 2.0
    cooldown: Annotated[
        int, Meta(ge=0, description="Validations after a change before the next one.")
    ] = 2

    def __post_init__(self) -> None:
        if (
            self.min_interval is not None
            and self.max_interval is not None
            and self.min_interval > self.max_interval
        ):
            raise ValueError(
                f"min_interval ({self.min_interval}) must not exceed max_interval "
                f"({self.max_interval})"
            )
        if self.slow_rate >= self.fast_rate:
            raise ValueError(
                f"slow_rate ({self.slow_rate}) must be below fast_rate ({self.fast_rate})"
            )


def improvement_rate(
    history: list[tuple[int, float]], better: Better, noise: NoiseFloor | None = None
) -> tuple[float, float]:
    """(slope, its standard error) per 1000 iterations, positive when improving.

    (-inf, 0) when the last value is not finite. With `noise`, the error is at least what
    the recent fits' noise gives.
    """
    if not math.isfinite(history[-1][1]):
        return -math.inf, 0.0
    points = [(it, v) for it, v in history if math.isfinite(v)]
    fit = noise.fitted_gain(points, 1000.0) if noise is not None else fitted_gain(points, 1000.0)
    if fit is None:
        return 0.0, math.inf
    slope, error = fit
    return (slope if better == "higher" else -slope), error


@register_automation
class ValidationFrequency(Automation):
    name: ClassVar[str] = "validation_frequency"
    config_type: ClassVar[type[AutomationConfig]] = ValidationFrequencyConfig
    metric_options = (("metric", "better"),)
    default_metric_keys = ("metric",)

    def __init__(self, config: ValidationFrequencyConfig) -> None:
        config = self.completed(config)
        super().__init__(config)
        self.cfg = config
        assert config.metric is not None  # completed() filled it in
        self.metric = config.metric
        self.history: list[tuple[int, float]] = []  # (iteration, metric), last `window`
        self.interval_value: int | None = None
        self.since_change = config.cooldown
        self.last_rate: float | None = None
        self.noise = NoiseFloor()
        self.min_interval = config.min_interval or 1
        self.max_interval = config.max_interval or 1_000_000_000

    @property
    def interval(self) -> int:
        # Decisions come from other hooks; the interval only publishes `scalars()`.
        return SCALARS_INTERVAL

    @property
    def bounds(self) -> tuple[float, float]:
        return (float(self.min_interval), float(self.max_interval))

    def _clamp(self, interval: int) -> int:
        return min(max(interval, self.min_interval), self.max_interval)

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        configured = info.val_freq or knobs.val_interval
        self.min_interval = self.cfg.min_interval or max(1, configured // 2)
        self.max_interval = self.cfg.max_interval or max(self.min_interval, 2 * configured)
        if self.interval_value is not None:
            return self.decide(
                knobs,
                "val_interval",
                self.interval_value,
                "resume: keep the validation interval chosen before",
                self.bounds,
            )
        if knobs.val_interval <= 0:
            return []  # validation is off: there is no interval to adapt
        self.interval_value = self._clamp(knobs.val_interval)
        return self.decide(
            knobs,
            "val_interval",
            self.interval_value,
            f"configured interval {knobs.val_interval} is outside "
            f"[min_interval, max_interval] = [{self.min_interval}, {self.max_interval}]",
            self.bounds,
        )

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        value = metric_value(metrics, self.metric, f"{OPTION}.metric")
        self.interval_value = knobs.val_interval  # the controller may have clamped or frozen it
        self.history = [*self.history, (iteration, value)][-self.cfg.window :]
        self.since_change += 1
        if len(self.history) < self.cfg.window:
            return []
        rate, error = improvement_rate(self.history, self.cfg.better or "higher", self.noise)
        self.last_rate = rate
        if self.since_change <= self.cfg.cooldown:
            return []
        current = knobs.val_interval
        margin = self.cfg.noise_sigmas * error
        if rate - margin >= self.cfg.fast_rate:
            target = self._clamp(round(current * self.cfg.factor))
            why = f">= fast_rate {self.cfg.fast_rate:g}: far from converged, validate less often"
        elif rate + margin <= self.cfg.slow_rate:
            target = self._clamp(round(current / self.cfg.factor))
            why = f"<= slow_rate {self.cfg.slow_rate:g}: near a plateau, validate more often"
        else:
            return []
        decisions = self.decide(
            knobs,
            "val_interval",
            target,
            f"{self.cfg.metric} improves {rate:+.4g} (+/- {error:.2g}) per 1000 iterations, "
            f"{self.cfg.noise_sigmas:g} standard errors {why}",
            self.bounds,
        )
        if decisions:
            self.interval_value = target
            self.since_change = 0
        return decisions

    def scalars(self) -> dict[str, float]:
        values: dict[str, float] = {}
        if self.interval_value is not None:
            values["val_interval"] = float(self.interval_value)
        if self.last_rate is not None and math.isfinite(self.last_rate):
            values["improvement_rate"] = self.last_rate
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [[i, v] for i, v in self.history],
            "interval": self.interval_value,
            "since_change": self.since_change,
            "last_rate": self.last_rate,
            "noise": self.noise.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(i), float(v)) for i, v in state["history"]]
        self.interval_value = state["interval"]
        self.since_change = int(state["since_change"])
        self.last_rate = state["last_rate"]
        self.noise.load_state_dict(state["noise"])

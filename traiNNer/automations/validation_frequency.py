"""`validation_frequency`: validates often near a plateau, rarely while far from it.

After each validation the automation measures how fast the watched metric improves:
the relative change over the last `window` validations, per 1000 iterations (per
iteration, so a longer interval does not look like faster progress). Fast progress
(>= `fast_rate`) means training is far from converged and validating less often costs
nothing; slow progress, no progress or a worse metric (<= `slow_rate`) means a plateau
is near, where early stopping and plateau-driven LR decisions need frequent
measurements, so the interval shrinks. The interval moves by `factor` and stays
within `[min_interval, max_interval]`.

Checkpoints keep their own frequency (`logger.save_checkpoint_freq`); automations that
count validations (early stopping patience, plateau detection) stay correct because
they count validations, not iterations.
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

OPTION = "train.automations.validation_frequency"
SCALARS_INTERVAL = 100  # iterations between TensorBoard scalars


class ValidationFrequencyConfig(AutomationConfig):
    """Options of the `validation_frequency` automation."""

    min_interval: Annotated[
        int, Meta(ge=1, description="Fewest iterations between validations.")
    ] = 250
    max_interval: Annotated[int, Meta(ge=1, description="Most iterations between validations.")] = (
        5000
    )
    metric: Annotated[
        str, Meta(description='Validation metric watched, "psnr" or "<dataset>/psnr".')
    ] = "psnr"
    better: BetterOption = "higher"
    window: Annotated[
        int, Meta(ge=2, description="Validations over which the improvement rate is measured.")
    ] = 3
    fast_rate: Annotated[
        float,
        Meta(
            gt=0,
            description="Relative improvement per 1000 iterations at or above which the "
            "interval grows (0.01 = 1%).",
        ),
    ] = 0.01
    slow_rate: Annotated[
        float,
        Meta(
            ge=0,
            description="Relative improvement per 1000 iterations at or below which the "
            "interval shrinks.",
        ),
    ] = 0.001
    factor: Annotated[
        float, Meta(gt=1, description="The interval is multiplied or divided by this.")
    ] = 2.0
    cooldown: Annotated[
        int, Meta(ge=0, description="Validations after a change before the next one.")
    ] = 1

    def __post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval}) must not exceed max_interval "
                f"({self.max_interval})"
            )
        if self.slow_rate >= self.fast_rate:
            raise ValueError(
                f"slow_rate ({self.slow_rate}) must be below fast_rate ({self.fast_rate})"
            )


def improvement_rate(history: list[tuple[int, float]], better: Better) -> float:
    """Relative improvement per 1000 iterations from the first to the last point.

    Negative when the metric got worse; -inf when the last value is not finite.
    """
    (first_iter, first), (last_iter, last) = history[0], history[-1]
    if not math.isfinite(last):
        return -math.inf
    span = max(last_iter - first_iter, 1)
    change = last - first if better == "higher" else first - last
    return change / max(abs(first), 1e-12) / span * 1000.0


@register_automation
class ValidationFrequency(Automation):
    name: ClassVar[str] = "validation_frequency"
    config_type: ClassVar[type[AutomationConfig]] = ValidationFrequencyConfig
    metric_options = (("metric", "better"),)

    def __init__(self, config: ValidationFrequencyConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.history: list[tuple[int, float]] = []  # (iteration, metric), last `window`
        self.interval_value: int | None = None
        self.since_change = config.cooldown
        self.last_rate: float | None = None

    @property
    def interval(self) -> int:
        # Decisions come from other hooks; the interval only publishes `scalars()`.
        return SCALARS_INTERVAL

    @property
    def bounds(self) -> tuple[float, float]:
        return (float(self.cfg.min_interval), float(self.cfg.max_interval))

    def _clamp(self, interval: int) -> int:
        return min(max(interval, self.cfg.min_interval), self.cfg.max_interval)

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
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
            f"[min_interval, max_interval] = [{self.cfg.min_interval}, {self.cfg.max_interval}]",
            self.bounds,
        )

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        value = metric_value(metrics, self.cfg.metric, f"{OPTION}.metric")
        self.interval_value = knobs.val_interval  # the controller may have clamped or frozen it
        self.history = [*self.history, (iteration, value)][-self.cfg.window :]
        self.since_change += 1
        if len(self.history) < 2:
            return []
        rate = improvement_rate(self.history, self.cfg.better)
        self.last_rate = rate
        if self.since_change <= self.cfg.cooldown:
            return []
        current = knobs.val_interval
        if rate >= self.cfg.fast_rate:
            target = self._clamp(round(current * self.cfg.factor))
            why = f">= fast_rate {self.cfg.fast_rate:g}: far from converged, validate less often"
        elif rate <= self.cfg.slow_rate:
            target = self._clamp(round(current / self.cfg.factor))
            why = f"<= slow_rate {self.cfg.slow_rate:g}: near a plateau, validate more often"
        else:
            return []
        decisions = self.decide(
            knobs,
            "val_interval",
            target,
            f"{self.cfg.metric} improves {rate:.3%} per 1000 iterations {why}",
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(i), float(v)) for i, v in state["history"]]
        self.interval_value = state["interval"]
        self.since_change = int(state["since_change"])
        self.last_rate = state["last_rate"]

"""`augmentation_scheduling`: the probability that a batch gets a MoA augmentation.

The trainer passes `Knobs.aug_prob` to `traiNNer.data.moa.BatchAugment`. The value
follows a schedule over training (linear or cosine from `start_prob` to `end_prob`
between the fractions `ramp_start` and `ramp_end` of `total_iter`, in `steps` equal
steps so that the log shows a handful of changes, not one per interval) and, when
`metric` is set, is scaled by a penalty that follows that validation metric's trend.
The finite validations are cut into consecutive windows of `window`; a line is fitted
through each. When two windows in a row fall with confidence (the fitted gain plus
`noise_sigmas` standard errors below zero) the penalty is multiplied by `lower_factor`;
when two in a row rise with confidence while the penalty is below 1 it is divided by
`lower_factor` again (never above 1). Two windows, because the standard error of one
short fit is itself noisy: on a flat metric one window in a hundred looks confident at
3 sigma, two in a row almost never do. A plateau is not a reason to lower (late in a
healthy run the metric is always nearly flat) and the penalty is not a ratchet. The
value never goes below `min_prob` (or the schedule, if that is lower) and never exceeds
the larger of `start_prob` and `end_prob`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    Decision,
    Knobs,
    TrainInfo,
    metric_value,
)
from traiNNer.automations.registry import register_automation
from traiNNer.automations.trend import fitted_gain
from traiNNer.utils.errors import ConfigError

if TYPE_CHECKING:
    from traiNNer.config.schema import Options

OPTION = "train.automations.augmentation_scheduling"
Schedule = Literal["linear", "cosine", "constant"]
UnitFloat = Annotated[float, Meta(ge=0, le=1)]


def scheduled_value(schedule: Schedule, start: float, end: float, progress: float) -> float:
    """The value at `progress` in [0, 1] of a ramp from `start` to `end`.

    Both ramps are monotone, so the result always lies between `start` and `end`;
    "constant" is `end` throughout.
    """
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return end
    if schedule == "linear":
        return start + (end - start) * progress
    return start + (end - start) * (1.0 - math.cos(math.pi * progress)) / 2.0


def ramp_progress(
    iteration: int, total_iter: int, ramp_start: float, ramp_end: float, steps: int
) -> float:
    """Training progress through the ramp, rounded down to one of `steps` levels."""
    fraction = iteration / max(total_iter, 1)
    progress = (fraction - ramp_start) / (ramp_end - ramp_start)
    progress = min(max(progress, 0.0), 1.0)
    return math.floor(progress * steps + 1e-9) / steps


class AugmentationSchedulingConfig(AutomationConfig):
    """Options of the `augmentation_scheduling` automation."""

    schedule: Annotated[
        Schedule, Meta(description="Ramp shape; constant uses end_prob throughout.")
    ] = "linear"
    start_prob: Annotated[UnitFloat, Meta(description="Probability at the ramp start.")] = 0.0
    end_prob: Annotated[UnitFloat, Meta(description="Probability at the ramp end.")] = 1.0
    ramp_start: Annotated[
        UnitFloat, Meta(description="Fraction of total_iter where the ramp begins.")
    ] = 0.0
    ramp_end: Annotated[
        UnitFloat, Meta(description="Fraction of total_iter where the ramp ends.")
    ] = 1.0
    steps: Annotated[
        int, Meta(ge=1, description="The ramp moves in this many equal steps of progress.")
    ] = 20
    update_interval: Annotated[
        int, Meta(ge=1, description="Iterations between schedule updates.")
    ] = 100
    metric: Annotated[
        str | None,
        Meta(
            description='Validation metric whose trend scales the probability ("psnr"); null: off.'
        ),
    ] = None
    better: BetterOption = None
    window: Annotated[
        int,
        Meta(ge=3, description="Validations a line is fitted through to read the metric's trend."),
    ] = 8
    noise_sigmas: Annotated[
        float,
        Meta(
            gt=0,
            description="Standard errors of the fitted gain the trend must clear before the "
            "penalty moves (higher: fewer changes caused by noise).",
        ),
    ] = 3.0
    lower_factor: Annotated[
        float,
        Meta(
            gt=0,
            lt=1,
            description="Penalty multiplier when the metric falls (divisor when it recovers).",
        ),
    ] = 0.5
    min_prob: Annotated[
        UnitFloat, Meta(description="Lowering never goes below this (nor above the schedule).")
    ] = 0.0

    def __post_init__(self) -> None:
        if self.ramp_start >= self.ramp_end:
            raise ValueError(
                f"ramp_start ({self.ramp_start}) must be below ramp_end ({self.ramp_end})"
            )


@register_automation
class AugmentationScheduling(Automation):
    name: ClassVar[str] = "augmentation_scheduling"
    config_type: ClassVar[type[AutomationConfig]] = AugmentationSchedulingConfig
    metric_options = (("metric", "better"),)

    @classmethod
    def check_options(cls, config: AugmentationSchedulingConfig, opt: Options) -> None:
        if opt.train is not None and not opt.train.use_moa:
            raise ConfigError(
                "train.automations.augmentation_scheduling: schedules MoA, which is off; "
                "set train.use_moa: true or disable it"
            )

    def __init__(self, config: AugmentationSchedulingConfig) -> None:
        config = self.completed(config)
        super().__init__(config)
        self.cfg = config
        self.total_iter = 1
        self.penalty = 1.0
        # Finite validations of the window being filled: (iteration, value).
        self.history: list[tuple[int, float]] = []
        # The confident direction of the previous window: -1 fell, +1 rose, 0 neither.
        self.previous_trend = 0
        self.last_value: float | None = None
        self.last_scheduled: float | None = None

    @property
    def interval(self) -> int:
        return self.cfg.update_interval

    @property
    def upper(self) -> float:
        if self.cfg.schedule == "constant":
            return self.cfg.end_prob
        return max(self.cfg.start_prob, self.cfg.end_prob)

    def value_at(self, iteration: int) -> float:
        """Scheduled probability times the plateau penalty, floored and bounded."""
        cfg = self.cfg
        progress = ramp_progress(
            iteration, self.total_iter, cfg.ramp_start, cfg.ramp_end, cfg.steps
        )
        scheduled = scheduled_value(cfg.schedule, cfg.start_prob, cfg.end_prob, progress)
        self.last_scheduled = scheduled
        floor = min(cfg.min_prob, scheduled)
        return round(min(max(scheduled * self.penalty, floor), self.upper), 6)

    def _apply(self, iteration: int, knobs: Knobs, reason: str) -> list[Decision]:
        self.last_value = self.value_at(iteration)
        return self.decide(knobs, "aug_prob", self.last_value, reason, (0.0, self.upper))

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.total_iter = info.total_iter
        return self._apply(info.start_iter, knobs, self._schedule_reason(info.start_iter))

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        return self._apply(iteration, knobs, self._schedule_reason(iteration))

    def _schedule_reason(self, iteration: int) -> str:
        progress = iteration / max(self.total_iter, 1)
        reason = (
            f"{self.cfg.schedule} schedule {self.cfg.start_prob:g} -> {self.cfg.end_prob:g} "
            f"at {progress:.0%} of training"
        )
        if self.penalty < 1.0:
            reason += f", times metric penalty {self.penalty:g}"
        return reason

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        if self.cfg.metric is None:
            return []
        value = metric_value(metrics, self.cfg.metric, f"{OPTION}.metric")
        if not math.isfinite(value):
            return []  # a diverged validation is the precision fallback's business
        self.history.append((iteration, value))
        if len(self.history) < self.cfg.window:
            return []
        window, self.history = self.history, []
        fit = fitted_gain(window, window[-1][0] - window[0][0])
        if fit is None:
            return []
        gain, error = fit
        gain = gain if self.cfg.better == "higher" else -gain
        margin = self.cfg.noise_sigmas * error
        trend = -1 if gain + margin < 0 else 1 if gain - margin > 0 else 0
        confirmed = trend != 0 and trend == self.previous_trend
        self.previous_trend = 0 if confirmed else trend
        if not confirmed or (trend > 0 and self.penalty >= 1.0):
            return []
        if trend < 0:
            self.penalty *= self.cfg.lower_factor
            verb = f"fell with confidence: augmentation x{self.cfg.lower_factor:g}"
        else:
            self.penalty = min(1.0, self.penalty / self.cfg.lower_factor)
            verb = f"rose with confidence: augmentation /{self.cfg.lower_factor:g}"
        cause = (
            f"{self.cfg.metric} {gain:+.4g} (+/- {error:.2g}) over iterations "
            f"{window[0][0]}-{iteration}, the second window in a row that {verb} "
            f"(penalty {self.penalty:g})"
        )
        return self._apply(iteration, knobs, cause)

    def scalars(self) -> dict[str, float]:
        values = {"penalty": self.penalty}
        if self.last_value is not None:
            values["aug_prob"] = self.last_value
        if self.last_scheduled is not None:
            values["scheduled_prob"] = self.last_scheduled
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "penalty": self.penalty,
            "history": [[i, v] for i, v in self.history],
            "previous_trend": self.previous_trend,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.penalty = float(state["penalty"])
        self.history = [(int(i), float(v)) for i, v in state["history"]]
        self.previous_trend = int(state["previous_trend"])
